"""Who runs which scenario, with which command, and why a pair does not run."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CONTENDERS", "SCENARIOS", "Contender", "Plan", "plan"]

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
KSTREAMS = BENCH / "peers" / "kafka-streams"

#: the suite's scenarios, in run order
SCENARIOS = ("stateless", "windowed", "io", "latency", "memory", "join")
#: the program scenario each suite scenario runs
PROGRAM = {
    "stateless": "stateless",
    "windowed": "windowed",
    "io": "io",
    "latency": "stateless",
    "memory": "stateless",
    "join": "join",
}


@dataclass(frozen=True)
class Contender:
    """A system measured by the suite.

    ``modules`` maps a program scenario to the Python module run with ``-m`` (None: a
    non-Python command, see ``argv``). ``unsupported`` maps a suite scenario to why
    this contender does not run it. ``self_exit``: it stops by itself after
    ``--records`` (else the harness sends SIGTERM once the output is complete).
    ``venv``: the peer's own virtualenv, built by ``make bench-peers``.
    ``workers``: how many ``first_consumed`` lines mean the whole group is consuming.
    ``cwd``: run in this directory instead of the suite's (``--sluice-ref``: another commit's sluice).
    """

    name: str
    label: str
    modules: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    self_exit: bool = False
    venv: str | None = None
    required: bool = False
    #: processes that consume (``--workers N``): the latency run starts once each one has
    workers: int = 1
    cwd: Path | None = None

    def python(self) -> Path | None:
        return BENCH / f".venv-{self.venv}" / "bin" / "python" if self.venv else None

    def missing(self) -> str | None:
        """Why it cannot run at all here (its venv or build is missing), or None."""
        if self.name == "kafka-streams":
            if not (KSTREAMS / "target" / "classes").is_dir():
                return "not built (make bench-peers: mvn -q package in benchmarks/peers/kafka-streams)"
            return None
        py = self.python()
        if py is not None and not py.exists():
            return f"no {py.parent.parent.relative_to(ROOT)} (make bench-peers)"
        if self.name == "kafka-python":
            try:
                import kafka  # noqa: F401
            except ImportError:
                return "kafka-python not installed (the bench extra)"
        return None

    def argv(self, scenario: str, common: list[str]) -> list[str]:
        """The command for suite scenario ``scenario``; ``common`` = ``--brokers ... --records N``."""
        program = PROGRAM[scenario]
        args = [*common, "--scenario", scenario if self.name == "ceiling" else program]
        if self.name == "kafka-streams":
            cp = f"{KSTREAMS / 'target' / 'classes'}:{KSTREAMS / 'target' / 'dependency'}/*"
            return [
                "java",
                "-Xss1m",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                cp,
                "sluice.bench.StreamsPeer",
                *args,
            ]
        if self.name == "sluice-w2":
            return [
                sys.executable,
                "-m",
                "sluice",
                "run",
                "benchmarks.contenders.sluice_cli_app:app",
                "--workers",
                "2",
                "--log-level",
                "warning",
            ]
        py = str(self.python() or sys.executable)
        module = self.modules.get(program) or self.modules["*"]
        return [py, "-m", module, *args]

    def env(self, scenario: str, brokers: str, input_topic: str, output: str, group: str) -> dict[str, str]:
        if self.name != "sluice-w2":
            return {}
        return {
            "SLUICE_BENCH_SCENARIO": PROGRAM[scenario],
            "SLUICE_BENCH_BROKERS": brokers,
            "SLUICE_BENCH_INPUT": input_topic,
            "SLUICE_BENCH_OUTPUT": output,
            "SLUICE_BENCH_GROUP": group,
        }


_EOS_ONLY = "the exactly-once cost is measured on the stateless pipeline (benchmarks.exactly_once)"
_FLOOR_ONLY = "a latency reference: it commits nothing, so its throughput is not comparable"
_NO_JOIN = "no stream-table join program written for it"
_NO_CONCURRENCY = "processes one record at a time per partition: no concurrent I/O to measure"

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            "sluice",
            "sluice (one process)",
            {
                "stateless": "benchmarks.contenders.sluice_pipeline",
                "windowed": "benchmarks.contenders.sluice_windowed",
                "io": "benchmarks.contenders.sluice_io",
                "join": "benchmarks.contenders.sluice_join",
            },
            self_exit=True,
            required=True,
        ),
        Contender(
            "sluice-w2", "sluice --workers 2", {"*": "sluice"}, unsupported={"join": _NO_JOIN}, workers=2
        ),
        Contender(
            "sluice-eos",
            "sluice exactly-once (one process)",
            {"stateless": "benchmarks.contenders.sluice_eos"},
            unsupported={
                "windowed": _EOS_ONLY,
                "io": _EOS_ONLY,
                "memory": _EOS_ONLY,
                "join": _EOS_ONLY,
            },
            self_exit=True,
        ),
        Contender(
            "hand",
            "hand-written confluent-kafka loop",
            {
                "stateless": "benchmarks.contenders.hand_loop",
                "windowed": "benchmarks.contenders.hand_windowed",
                "io": "benchmarks.contenders.hand_io",
                "join": "benchmarks.contenders.hand_join",
            },
            self_exit=True,
            required=True,
        ),
        Contender(
            "floor",
            "latency floor: consume(500, 10 ms) -> produce, no commit",
            {"stateless": "benchmarks.contenders.latency_floor"},
            unsupported={s: _FLOOR_ONLY for s in ("stateless", "windowed", "io", "memory", "join")},
            self_exit=True,
        ),
        Contender(
            "ceiling",
            "librdkafka consume-only (ceiling)",
            {"*": "benchmarks.contenders.ceiling"},
            self_exit=True,
            required=True,
        ),
        Contender(
            "kafka-python",
            "seed kafka-python loop",
            {"stateless": "benchmarks.contenders.kafka_python_loop"},
            unsupported={
                "windowed": "the seed loop has no windows",
                "io": "the seed loop is sequential: " + _NO_CONCURRENCY,
                "join": "the seed loop has no tables",
            },
            self_exit=True,
        ),
        Contender(
            "quix",
            "Quix Streams",
            {"*": "benchmarks.peers.quix_peer"},
            unsupported={"io": _NO_CONCURRENCY},
            venv="quix",
        ),
        Contender(
            "faust",
            "Faust (faust-streaming)",
            {"*": "benchmarks.peers.faust_peer"},
            unsupported={"join": _NO_JOIN},
            venv="faust",
        ),
        Contender(
            "bytewax",
            "Bytewax",
            {"*": "benchmarks.peers.bytewax_peer"},
            unsupported={
                "io": "one item at a time per worker: no concurrent I/O to measure",
                "join": _NO_JOIN,
            },
            venv="bytewax",
        ),
        Contender(
            "faststream",
            "FastStream",
            {"*": "benchmarks.peers.faststream_peer"},
            unsupported={
                "windowed": "stateless only (no windows)",
                "io": "stateless only in this suite",
                "join": "stateless only (no tables)",
            },
            venv="faststream",
        ),
        Contender(
            "kafka-streams",
            "Kafka Streams (Java)",
            unsupported={"io": "one record at a time per stream thread: no concurrent I/O to measure"},
        ),
    )
}


def sluice_has_window(cwd: Path) -> bool:
    """Whether the sluice copied to ``cwd`` has ``Stream.window`` (the stateful API)."""
    probe = "import sluice.dataflow.stream as s; print(hasattr(s.Stream, 'window'))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True)
    return out.stdout.strip() == "True"


@dataclass(frozen=True)
class Plan:
    """Which contenders run a scenario, and why the others do not."""

    run: list[Contender]
    skipped: dict[str, str]


def plan(scenario: str, names: list[str], cwd: Path) -> Plan:
    runs: list[Contender] = []
    skipped: dict[str, str] = {}
    window = scenario != "windowed" or sluice_has_window(cwd)
    for name in names:
        c = CONTENDERS[name]
        why = c.unsupported.get(scenario) or c.missing()
        if why is None and c.name.startswith("sluice") and not window:
            why = "not available yet (this sluice has no Stream.window; the contender is written against it)"
        if why is None:
            runs.append(c)
        else:
            skipped[name] = why
    return Plan(runs, skipped)
