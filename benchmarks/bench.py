"""The benchmark suite: sluice against the systems users would pick instead, in one run.

Scenarios (``benchmarks.suite.scenarios``): stateless, windowed, io, latency, memory, join.
Contenders (``benchmarks.suite.contenders``): sluice (one process and ``--workers 2``),
a hand-written confluent-kafka loop, the librdkafka consume-only ceiling, the seed
kafka-python loop, Quix Streams, Faust, Bytewax, FastStream and Kafka Streams; each
peer in its own virtualenv (``make bench-peers``), skipped with a printed reason when
that is missing.

Usage:
    python -m benchmarks.bench                       # full sizes; writes benchmarks/results/<date>.*
    python -m benchmarks.bench --smoke               # tiny inputs, nothing saved; exit 1 on a wrong output
    python -m benchmarks.bench --scenarios stateless,latency --contenders sluice,hand,ceiling,quix
    python -m benchmarks.bench --scenarios windowed --contenders sluice,hand --sluice-ref main   # before/after
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path

from benchmarks._harness import ROOT, snapshot
from benchmarks.stateless import machine_facts
from benchmarks.suite.contenders import CONTENDERS, SCENARIOS, Contender, plan
from benchmarks.suite.report import REFERENCES, markdown, ratios, sluice_rank
from benchmarks.suite.scenarios import FULL, SMOKE, Sizes, run_scenario

RESULTS = ROOT / "benchmarks" / "results"
PLOT_PY = ROOT / "benchmarks" / ".venv-plot" / "bin" / "python"

#: pairs known to give a wrong answer, and why: reported as WRONG, but they do not fail --smoke
KNOWN_WRONG: dict[tuple[str, str], str] = {
    (
        "faust",
        "windowed",
    ): "Faust closes windows on the wall clock, not on stream time (see benchmarks/peers/faust_peer.py)",
}


def _default_version(contender: str, facts: dict) -> str:
    """The version of a contender that does not report one (those run in sluice's venv)."""
    client = f"confluent-kafka {version('confluent-kafka')}, librdkafka {facts['librdkafka']}"
    return {
        "sluice": f"sluice {facts['sluice']}",
        "sluice-w2": f"sluice {facts['sluice']}",
        "sluice-eos": f"sluice {facts['sluice']}",
        "hand": client,
        "floor": client,
        "ceiling": client,
        "kafka-python": f"kafka-python {facts['kafka_python']}",
        "sluice-ref": f"sluice {facts.get('sluice_ref', '')}",
    }.get(contender, "")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny inputs, contenders in parallel, nothing saved")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument(
        "--parallel", type=int, default=None, help="contenders at once (default: 1; smoke: 10, all of them)"
    )
    p.add_argument("--scale", type=float, default=1.0, help="multiply the full input sizes (a reduced run)")
    p.add_argument(
        "--latency-rate", type=int, default=None, help="records/s of the latency scenario (default 10,000)"
    )
    p.add_argument("--no-save", action="store_true")
    p.add_argument(
        "--sluice-ref",
        help="also run sluice (one process) from this git commit, as contender sluice-ref (same run, same input)",
    )
    p.add_argument(
        "--profile", action="store_true", help="profile sluice (pyinstrument) where it is not first"
    )
    args = p.parse_args(argv)
    for s in _csv(args.scenarios):
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    for c in _csv(args.contenders):
        if c not in CONTENDERS:
            p.error(f"unknown contender {c!r}; choose from {', '.join(CONTENDERS)}")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    sizes = _scaled(args)
    return replace(sizes, latency_rate=args.latency_rate) if args.latency_rate else sizes


def _scaled(args: argparse.Namespace) -> Sizes:
    if args.smoke:
        return SMOKE
    if args.scale == 1.0:
        return FULL
    s = args.scale
    return replace(
        FULL,
        stateless=int(FULL.stateless * s),
        windowed=int(FULL.windowed * s),
        io=max(200, int(FULL.io * s)),
        latency_seconds=max(5.0, FULL.latency_seconds * s),
        memory=int(FULL.memory * s),
        memory_cap_s=max(10.0, FULL.memory_cap_s * s),
        join=int(FULL.join * s),
        join_keys=max(100, int(FULL.join_keys * s)),
    )


def plot(json_path: Path) -> dict[str, str]:
    """Charts by the plotting venv (matplotlib is no dependency of sluice); {} when it is missing."""
    if not PLOT_PY.exists():
        print(f"charts skipped: no {PLOT_PY.parent.parent.relative_to(ROOT)} (make bench-peers)")
        return {}
    out = subprocess.run(
        [str(PLOT_PY), "-m", "benchmarks.plot", str(json_path)], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        print("charts failed:\n" + out.stderr[-2000:])
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile_sluice(scenario: str, sizes: Sizes, workdir: Path, stamp: str) -> str | None:
    """Re-run sluice on ``scenario`` under pyinstrument (latency and memory: on stateless); the profile's path."""
    runs = "stateless" if scenario in ("latency", "memory") else scenario
    path = RESULTS / f"{stamp}-profile-{scenario}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, _ = run_scenario(runs, [CONTENDERS["sluice"]], sizes, workdir, extra=["--profile", str(path)])
    print(f"  profiled sluice on {runs}: {rows[0].verdict}; {path.relative_to(ROOT)}")
    return str(path.relative_to(ROOT)) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = sizes_for(args)
    parallel = args.parallel or (10 if args.smoke else 1)
    command = "python -m benchmarks.bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-suite-"))
    facts = machine_facts()
    facts["sluice_code"] = snapshot(workdir, None)
    ref: Contender | None = None
    if args.sluice_ref:
        facts["sluice_ref"] = snapshot(workdir / "ref", args.sluice_ref)
        ref = replace(
            CONTENDERS["sluice"], name="sluice-ref", label=f"sluice @ {args.sluice_ref}", cwd=workdir / "ref"
        )
    stamp = dt.date.today().isoformat()
    print(
        f"suite ({'smoke' if args.smoke else 'full' if args.scale == 1 else f'scale {args.scale}'}): {command}"
    )
    print(
        f"machine: {facts['nproc']} cpus, Python {facts['python']}, Kafka {facts['kafka']}; sluice {facts['sluice_code']}"
    )
    data: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "smoke": args.smoke,
        "scale": args.scale,
        "sizes": asdict(sizes),
        "machine": facts,
        "scenarios": {},
    }
    failed: list[str] = []
    findings: list[str] = []  # peers' wrong or unfinished outputs at full size
    try:
        for scenario in _csv(args.scenarios):
            p = plan(scenario, _csv(args.contenders), workdir)
            if ref is not None and CONTENDERS["sluice"] in p.run:
                p.run.insert(p.run.index(CONTENDERS["sluice"]) + 1, ref)
            print(f"\n{scenario}: {sizes.describe()[scenario]}", flush=True)
            for name, why in p.skipped.items():
                print(f"  {scenario:>9} {name:>13}: skipped: {why}")
                if CONTENDERS[name].required and "not available yet" not in why:
                    failed.append(f"{scenario}/{name}: {why}")
            t0 = time.monotonic()
            rows, info = run_scenario(scenario, p.run, sizes, workdir, parallel)
            for r in rows:
                r.version = r.version or _default_version(r.contender, facts)
                known = KNOWN_WRONG.get((r.contender, scenario))
                if r.ok:
                    continue
                if known is not None:
                    r.verdict += f" (known: {known})"
                elif args.smoke or r.contender.startswith("sluice") or r.contender in (*REFERENCES, "hand"):
                    failed.append(f"{scenario}/{r.contender}: {r.verdict}")
                else:  # a peer too slow at full size, or wrong: a finding of the run, in its results
                    findings.append(f"{scenario}/{r.contender}: {r.verdict}")
            print(f"  ({scenario} took {time.monotonic() - t0:.0f}s)", flush=True)
            data["scenarios"][scenario] = {
                "description": sizes.describe()[scenario],
                "info": info,
                "seconds": round(time.monotonic() - t0, 1),
                "rows": [r.as_dict() for r in rows],
                "skipped": p.skipped,
                "ratios_to_sluice": ratios(rows),
                "sluice_rank": sluice_rank(rows),
            }
            if args.profile and sluice_rank(rows) not in (1, None):
                data["scenarios"][scenario]["profile"] = profile_sluice(scenario, sizes, workdir, stamp)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_save and not args.smoke:
        RESULTS.mkdir(parents=True, exist_ok=True)
        json_path = RESULTS / f"{stamp}.json"
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        for scenario, chart in plot(json_path).items():
            data["scenarios"][scenario]["chart"] = chart
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        (RESULTS / f"{stamp}.md").write_text(markdown(data))
        print(f"\nwrote {json_path.relative_to(ROOT)} and {json_path.with_suffix('.md').relative_to(ROOT)}")
    else:
        print("\n" + markdown(data))
    if findings:
        print("peers with a wrong or unfinished output (in the results, not a failure of the suite):")
        print("\n".join("  " + f for f in findings))
    if failed:
        print("FAILED:\n" + "\n".join("  " + f for f in failed))
        return 1
    return 0


if __name__ == "__main__":
    t = time.monotonic()
    code = main()
    print(f"(suite took {time.monotonic() - t:.0f}s)")
    sys.exit(code)
