"""``sluice run``: a module or a file as the target; an app that fails to import is one error line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sluice.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def sluice(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def run_to_end(*args: str, cwd: Path) -> tuple[int, str]:
    proc = sluice(*args, cwd=cwd)
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_run_a_file_path_with_an_attribute_and_sibling_imports(kafka, topic_factory, tmp_path):
    src, out = topic_factory(), topic_factory()
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "names.py").write_text(f"OUT = {out!r}\n")  # imported as `python apps/clicks.py` would
    (apps / "clicks.py").write_text(
        textwrap.dedent(f"""
            from sluice import App
            from names import OUT

            pipeline = App("file-app-{uuid.uuid4().hex[:6]}", brokers={kafka.bootstrap!r}, commit_interval="100ms")
            pipeline.stream({src!r}).map(lambda v: v.upper()).to(OUT)
        """)
    )
    kafka.produce(src, [(None, b'"a"'), (None, b'"b"'), (None, b'"c"')])  # JSON, the default format
    proc = sluice("run", "apps/clicks.py:pipeline", cwd=tmp_path)
    try:
        records = kafka.drain(out, expected=3, timeout=45)
    finally:
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=60)
    assert sorted(r.value for r in records) == [b'"A"', b'"B"', b'"C"'], stderr
    assert proc.returncode == 0, stderr


def test_run_a_file_path_defaults_to_the_attribute_app(kafka_bootstrap, tmp_path):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    (tmp_path / "myapp.py").write_text(
        f"from sluice import App\napp = App('x', brokers={kafka_bootstrap!r})\napp.stream({missing!r}).to('o')\n"
    )
    for target in ("myapp.py", "./myapp.py", str(tmp_path / "myapp.py"), "myapp:app", "myapp"):
        code, err = run_to_end("run", target, cwd=tmp_path)
        # loaded and run: it reached the broker and found no source topic
        assert code == 1, (target, err)
        assert f"sluice: error: source topic {missing!r} does not exist" in err, (target, err)


APP_ERRORS = {
    "config": (
        "from sluice import App\napp = App('x', group_idd='g')\n",
        "sluice: error: unknown App option 'group_idd' (did you mean 'group_id'?) (broken.py, line 2)",
    ),
    "duration": (
        "from sluice import App\napp = App('x')\napp.stream('t').window(tumbling=60000)\n",
        "sluice: error: window: tumbling=60000 has no unit",
    ),
    "syntax": (
        "from sluice import App\napp = App('x'\n",
        "sluice: error: importing {target} failed: SyntaxError: '(' was never closed (broken.py, line 2)",
    ),
    "missing module": (
        "import no_such_dependency_of_the_app\n",
        "sluice: error: importing {target} failed: ModuleNotFoundError: "
        "No module named 'no_such_dependency_of_the_app' (broken.py, line 1)",
    ),
    "any exception": (
        "settings = {}\nBROKERS = settings['brokers']\n",
        "sluice: error: importing {target} failed: KeyError: 'brokers' (broken.py, line 2)",
    ),
}


@pytest.mark.parametrize("kind", list(APP_ERRORS))
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("target", ["broken.py", "broken:app"])
def test_an_error_while_importing_the_app_is_one_error_line(tmp_path, kind, log_format, target):
    source, expected = APP_ERRORS[kind]
    (tmp_path / "broken.py").write_text(source)
    module = target.removesuffix(":app")
    code, err = run_to_end("run", target, "--log-format", log_format, cwd=tmp_path)
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(expected.format(target=module)), err


def test_a_missing_target_is_a_usage_error_naming_it(tmp_path):
    code, err = run_to_end("run", "nowhere/app.py", cwd=tmp_path)
    assert code == 2
    assert "no file 'nowhere/app.py'" in err
    code, err = run_to_end("run", "nomodule_here:app", cwd=tmp_path)
    assert code == 2
    assert "no module named 'nomodule_here'" in err


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [(), *(p for p, _ in _commands(cli))], ids=" ".join)
def test_help_is_whole_sentences_without_rest_markup(path):
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0
    for markup in ("``", ":class:", ":func:", ":meth:", ":ref:"):
        assert markup not in result.output, f"{markup} in sluice {' '.join(path)} --help"
    _usage, _, listing = result.output.partition("Commands:")
    assert "..." not in listing, result.output
    command = cli
    for name in path:
        command = command.commands[name]
    for sub in getattr(command, "commands", {}).values():
        first = " ".join(sub.help.split("\n\n")[0].split())
        assert first.endswith((".", ")")), first
        # the whole first paragraph is listed, wrapped but not cut
        assert " ".join(result.output.split()).count(first) == 1, (first, result.output)
