"""The serial transport end to end: pyserial on a pseudo-terminal, the golden board behind it
(the simulated SoC behind one is in test_sim.py)."""

import errno

import pytest
import serial

from sw import generate as cli
from sw.client import Client
from sw.errors import NoSuchPort, PortPermission, TransportError
from sw.pty_board import PtyBoard
from sw.transport import GoldenTransport, SerialTransport, find_board_ports


def test_generate_over_a_pty_equals_models_generate(golden_text, capsys):
    with PtyBoard() as board:
        cli.main(["--port", board.path, "--prompt", "KING:", "--tokens", "120", "--seed", "5",
                  "--temperature", "0.7"])
        out, err = capsys.readouterr()
        assert out == golden_text
        assert err.splitlines()[-1].startswith("[serial: 120 tokens")
        # A second run finds the image already loaded (same tag) and sends none of it.
        cli.main(["--port", board.path, "--prompt", "KING:", "--tokens", "5", "--seed", "5",
                  "--temperature", "0.7"])
        out, err = capsys.readouterr()
        assert out == golden_text[:len("KING:") + 5] + "\n"
        assert "laying it out again" not in err


def test_client_over_a_pty(small_config, small_image):
    with PtyBoard(GoldenTransport(small_config, clock_hz=1, baud=1)) as board, \
            SerialTransport(board.path) as link:
        client = Client(link, progress=False)
        client.load_image(small_image, tag=9)
        assert client.status().tag == 9
        assert "serial port" in link.description and board.path in link.description


def test_serial_errors(monkeypatch):
    with pytest.raises(NoSuchPort, match="no such serial port: /dev/ttyNOPE"):
        SerialTransport("/dev/ttyNOPE").open()

    def refuse(code):
        def open_(*args, **kwargs):
            raise serial.SerialException(code, "could not open port")
        return open_
    monkeypatch.setattr(serial, "serial_for_url", refuse(errno.EACCES))
    with pytest.raises(PortPermission, match="permission denied opening /dev/ttyUSB0: add "
                                             "yourself to its group"):
        SerialTransport("/dev/ttyUSB0").open()
    monkeypatch.setattr(serial, "serial_for_url", refuse(errno.EBUSY))
    with pytest.raises(PortPermission, match="busy"):
        SerialTransport("/dev/ttyUSB0").open()
    with pytest.raises(TransportError, match="not open"):
        SerialTransport("/dev/ttyUSB0").write(b"x")


def test_board_discovery_by_usb_ids(monkeypatch):
    from serial.tools import list_ports
    from serial.tools.list_ports_common import ListPortInfo

    def port(device, vid, pid):
        p = ListPortInfo(device)
        p.vid, p.pid = vid, pid
        return p
    monkeypatch.setattr(list_ports, "comports", lambda: [
        port("/dev/ttyUSB1", 0x0403, 0x6015), port("/dev/ttyACM0", 0x2341, 0x0043),
        port("/dev/ttyS0", None, None)])
    assert find_board_ports() == ["/dev/ttyUSB1"]
