"""The ``spikestream`` console entry: dispatch, help, errors, and one meaning per flag."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikestream import cli

ROOT = Path(__file__).resolve().parent.parent

# The python -m program of each subcommand, as the README names it.
PYTHON_M = {"train": "models.train", "compile": "models.compile",
            "evaluate": "models.evaluate", "generate": "sw.generate",
            "golden": "models.generate", "run": "sw.run", "classify": "sw.classify",
            "nir": "models.nirio",
            "build": "hw.build"}


def _run(capsys, argv):
    """``spikestream ARGV`` in process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _parser(name):
    return importlib.import_module(cli.COMMANDS[name].module).argument_parser(
        f"spikestream {name}")


def _options(name):
    """``{option string: action}`` of a subcommand's parser (``-h`` left out)."""
    return {s: a for a in _parser(name)._actions for s in a.option_strings
            if s not in ("-h", "--help")}


def test_the_table_is_the_python_m_programs():
    assert {name: c.module for name, c in cli.COMMANDS.items()} == PYTHON_M


def test_top_level_help_lists_every_command_with_its_summary(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    status, out, _ = _run(capsys, ["--help"])
    assert status == 0 and out.startswith("usage: spikestream ")
    for name, command in cli.COMMANDS.items():
        assert f"  {name}" in out and command.summary in out


def test_help_is_fast_and_imports_no_command():
    # spikestream --help from an unrelated folder, as the installed script runs it: none of
    # the commands' modules (nor torch or Amaranth) is imported for it.
    code = ("import sys; from spikestream import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit as e:\n    status = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'amaranth', 'models', 'hw', 'sw', 'sim', 'boards'))\n"
            "print(status, heavy, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                       timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "0 []"
    assert "Run 'spikestream COMMAND --help'" in r.stdout
    r = subprocess.run([sys.executable, "-m", "spikestream.cli", "nosuch"], capture_output=True,
                       text=True, cwd="/", timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: unknown command 'nosuch'") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("name", list(PYTHON_M))
def test_each_subcommand_dispatches(capsys, name):
    status, out, err = _run(capsys, [name, "--help"])
    assert status == 0 and err == ""
    assert out.startswith(f"usage: spikestream {name} ")
    # ... and the python -m form keeps its own name
    with pytest.raises(SystemExit) as info:
        importlib.import_module(PYTHON_M[name]).main(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {PYTHON_M[name]} ")


@pytest.mark.parametrize("argv, words", [
    (["nosuch"], "error: unknown command 'nosuch'; the commands are: train, compile"),
    ([], "error: name a command: train, compile"),
    (["--nosuch"], "error: "),
    (["golden", "--tokens", "abc"],
     "error: argument --tokens: invalid int value: 'abc' (see spikestream golden --help)"),
    (["train", "--device", "cpu"], "error: unrecognized arguments: --device cpu"),
    (["build", "--seed", "3"], "error: unrecognized arguments: --seed 3"),
    (["evaluate", "--image", "a.img", "--checkpoint", "b.pt"],
     "error: argument --checkpoint: not allowed with argument --image"),
])
def test_bad_command_lines_are_one_line_errors(capsys, argv, words):
    status, out, err = _run(capsys, argv)
    assert status == 2 and out == ""
    assert err.startswith(words) and err.count("\n") == 1, err


def test_a_subcommand_runs_as_its_python_m_program(capsys):
    argv = ["--prompt", "KING:", "--tokens", "12", "--seed", "3", "--json"]
    cli.main(["golden", *argv])
    via_cli = capsys.readouterr().out.splitlines()
    importlib.import_module("models.generate").main(argv)
    direct = capsys.readouterr().out.splitlines()
    assert via_cli[:-1] == direct[:-1] and via_cli[0].startswith("KING:")
    a, b = json.loads(via_cli[-1]), json.loads(direct[-1])
    assert a["text"] == b["text"] and a["tokens"] == 12 and a["seed"] == 3


def test_no_command_has_device_and_fpga_is_the_fpga_size():
    have_fpga = set()
    for name in PYTHON_M:
        options = _options(name)
        assert "--device" not in options, name
        if "--fpga" in options:
            have_fpga.add(name)
            action = options["--fpga"]
            assert action.metavar == "SIZE" and "FPGA size" in action.help
            assert action.default in (None, "85f")
    assert have_fpga == {"compile", "build"}
    assert [n for n in PYTHON_M if "--torch-device" in _options(n)] == ["train"]


def test_seed_is_only_the_samplers():
    with_seed = {n for n in PYTHON_M if "--seed" in _options(n)}
    assert with_seed == {"generate", "golden", "run"}
    for name in with_seed:
        assert "sampler" in _options(name)["--seed"].help
    assert "--pnr-seed" in _options("build")
    assert "seed=" in _options("train")["--set"].help        # training's seed is a setting


POSITIONAL = {"run": ["image"], "classify": ["image"], "nir": ["action", "source"]}


def test_images_and_checkpoints_are_named_the_same_way():
    for name in PYTHON_M:
        options = _options(name)
        for flag in ("--image", "--checkpoint"):
            if flag in options:
                assert options[flag].metavar == "PATH", (name, flag)
        # Flags only, but for the commands that act on one file named first (as the issue
        # that made them wrote them: `spikestream run IMAGE`, `spikestream nir import GRAPH`).
        positional = [a.dest for a in _parser(name)._actions if not a.option_strings]
        assert positional == POSITIONAL.get(name, []), (name, positional)
    assert {n for n in PYTHON_M if "--image" in _options(n)} == {
        "evaluate", "generate", "golden", "build"}
    assert {n for n in PYTHON_M if "--checkpoint" in _options(n)} == {"compile", "evaluate"}


def test_every_command_has_json_and_every_flag_has_help_with_its_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")              # one line per flag: no wrapping
    for name in PYTHON_M:
        parser = _parser(name)
        assert "--json" in _options(name), name
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            assert action.help, (name, action.option_strings)
            if action.default not in (None, False, [], "==SUPPRESS=="):
                shown = f"(default: {action.default})" in text or "default" in action.help
                assert shown, (name, action.option_strings, action.default)
