"""``python -m sw.generate``: the same text as models.generate, and one clear line for each
error a user can meet."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikestream.protocol import PROTOCOL_VERSION
from sw import generate as cli
from spikestream.board import SHIPPED_IMAGE

ROOT = Path(__file__).resolve().parent.parent.parent


def _error_line(info):
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_golden_backend_prints_what_models_generate_prints(golden_text, capsys):
    cli.main(["--backend", "golden", "--prompt", "KING:", "--tokens", "120", "--seed", "5",
              "--temperature", "0.7", "--json"])
    out, err = capsys.readouterr()
    *text, last = out.splitlines(keepends=True)
    assert "".join(text) == golden_text
    result = json.loads(last)
    assert result["backend"] == "golden" and result["tokens"] == 120
    assert "KING:" + result["text"] + "\n" == golden_text
    assert result["tokens_per_second"] > 0 and 100 < result["cycles_per_token"] < 5000
    # the shipped image is laid out for the default board's lanes: loaded as it is
    assert "laying it out again" not in err
    assert "tokens/s" in err.splitlines()[-1]


def test_no_such_port_exits_with_one_line():
    r = subprocess.run([sys.executable, "-m", "sw.generate", "--port", "/dev/ttyNOPE9"],
                       capture_output=True, text=True, cwd="/", timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode != 0
    assert r.stderr.strip() == "error: no such serial port: /dev/ttyNOPE9"


def test_board_not_answering():
    master, slave = os.openpty()
    try:
        with pytest.raises(SystemExit) as info:
            cli.main(["--port", os.ttyname(slave), "--timeout", "0.1"])
        assert "no answer from serial port" in _error_line(info)
    finally:
        os.close(master), os.close(slave)


def test_wrong_protocol_version(monkeypatch):
    monkeypatch.setattr("sw.client.PROTOCOL_VERSION", 99)
    with pytest.raises(SystemExit) as info:
        cli.main(["--backend", "golden", "--tokens", "1"])
    assert f"protocol version {PROTOCOL_VERSION}, this host version 99" in _error_line(info)


def test_image_does_not_fit(monkeypatch, small_config):
    # the golden board's core is the default board's (sw.transport imports board_config)
    monkeypatch.setattr("sw.transport.board_config", lambda fpga="85f": small_config)
    with pytest.raises(SystemExit) as info:
        cli.main(["--backend", "golden", "--tokens", "1"])
    assert "image does not fit the core: neurons per lane: needs" in _error_line(info)


@pytest.mark.parametrize("args, message", [
    (["--image", "/nonexistent.img"], "/nonexistent.img: no such image file"),
    (["--image", str(ROOT / "README.md")], "bad magic"),
    (["--prompt", "ROMEO\u00e9"], "prompt: characters not in the model's vocabulary"),
    (["--prompt", ""], "the prompt is empty"),
    (["--tokens", "-1"], "must not be negative"),
])
def test_input_errors(args, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["--backend", "golden", *args])
    assert message in _error_line(info)


def test_default_image_is_found_from_any_folder():
    assert SHIPPED_IMAGE.is_file()
    assert SHIPPED_IMAGE.is_absolute()


def test_no_board_falls_back_to_the_simulation(monkeypatch, capsys):
    monkeypatch.setattr(cli, "find_board_ports", lambda: [])

    class Args:
        port = None
        backend = None
        baud = 3_000_000

    from spikestream.image import load_image
    transport = cli.open_transport(Args, load_image(SHIPPED_IMAGE), tag=1)
    assert transport.name == "sim"
    err = capsys.readouterr().err
    assert err.startswith("no board found (no USB serial device 0403:6015): using the "
                          "simulated board") and err.count("\n") == 1
