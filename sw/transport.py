"""Byte pipes to a board: one interface, three implementations.

The host driver (:mod:`sw.client`) talks to a board only through a :class:`Transport`: a
byte stream in each direction, opened and closed, read with a timeout. What is on the other
end does not matter to it:

* :class:`SerialTransport`: a real board's UART (the ULX3S's FTDI port) through pyserial;
* :class:`GoldenTransport`: :class:`sw.golden_board.GoldenBoard`, a board in software that
  answers the protocol with the golden model, in this process;
* :class:`SimTransport`: the Verilated SoC (RTL simulation, cocotb), its UART pins bridged
  to a pseudo-terminal that the host opens with :class:`SerialTransport`, so the host's
  code path is the one it takes to a board (:mod:`sim.tb_bridge`).

A later PCIe board needs only another subclass: the protocol is a framed byte stream, so a
PCIe transport moves the same bytes through a DMA ring or a character device and implements
:meth:`Transport.write` and :meth:`Transport.read`; nothing above it changes.
"""

import abc
import errno
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from hw.soc import SoC
from sim.bridge_top import BridgeTop
from sim.runner import SimulatorUnavailable, build_and_run
from spikestream.board import DEFAULT_BAUD

from .board import board_clock_hz, board_config
from .errors import NoSuchPort, PortPermission, SimulationError, TransportError
from .golden_board import GoldenBoard, wire_bytes

__all__ = ["Transport", "SerialTransport", "GoldenTransport", "SimTransport",
           "find_board_ports", "ULX3S_USB_IDS"]


ULX3S_USB_IDS = ((0x0403, 0x6015),)
"""USB vendor:product ids of the ULX3S's USB-serial chip (FTDI FT231X)."""


class Transport(abc.ABC):
    """A byte pipe to one board; use it as a context manager (``with ... as t:``).

    Attributes
    ----------
    name : str
        The kind of transport (``serial``, ``golden``, ``sim``).
    response_timeout : float
        Seconds the client waits for a response frame by default: a simulated board
        answers far more slowly than a real one.
    """

    name = "transport"
    response_timeout = 2.0

    @property
    @abc.abstractmethod
    def description(self):
        """One line saying what is on the other end, for messages."""

    @abc.abstractmethod
    def open(self):
        """Open the pipe; raises :class:`~sw.errors.TransportError` with one clear line."""

    @abc.abstractmethod
    def close(self):
        """Close the pipe (closing twice is harmless)."""

    @abc.abstractmethod
    def write(self, data):
        """Send ``data`` (bytes), all of it."""

    @abc.abstractmethod
    def read(self, size=4096, timeout=None):
        """Return up to ``size`` received bytes as soon as at least one is there, or
        ``b""`` when none arrived within ``timeout`` seconds (``None``: return at once)."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.description}>"


def _stderr(line):
    print(line, file=sys.stderr, flush=True)


# --- a real serial port -----------------------------------------------------------------------

def find_board_ports():
    """Serial ports whose USB ids are a ULX3S's (:data:`ULX3S_USB_IDS`), as device paths."""
    from serial.tools import list_ports
    return sorted(p.device for p in list_ports.comports()
                  if (p.vid, p.pid) in ULX3S_USB_IDS)


class SerialTransport(Transport):
    """A serial port (a board's UART, or a pseudo-terminal) through pyserial.

    Parameters
    ----------
    port : str
        Device path (``/dev/ttyUSB0``, ``COM3``) or a pyserial URL.
    baud : int
    response_timeout : float, optional
    """

    name = "serial"

    def __init__(self, port, baud=DEFAULT_BAUD, *, response_timeout=None):
        self.port, self.baud = port, int(baud)
        if self.baud <= 0:
            raise ValueError(f"the baud rate must be positive, not {baud!r}")
        if response_timeout is not None:
            if not (isinstance(response_timeout, (int, float))
                    and math.isfinite(response_timeout) and response_timeout > 0):
                raise ValueError(f"response_timeout must be a positive, finite number of "
                                 f"seconds, not {response_timeout!r}")
            self.response_timeout = response_timeout
        self._serial = None

    @property
    def description(self):
        return f"serial port {self.port} at {self.baud} baud"

    def open(self):
        import serial
        if self._serial is not None:
            return
        try:
            # A short read timeout: read() loops up to its own deadline, so that changing
            # the timeout never reconfigures the port.
            self._serial = serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.05,
                                                 write_timeout=10)
        except serial.SerialException as e:
            code = getattr(e, "errno", None)
            if code == errno.ENOENT:
                raise NoSuchPort(f"no such serial port: {self.port}") from None
            if code in (errno.EACCES, errno.EPERM):
                raise PortPermission(
                    f"permission denied opening {self.port}: add yourself to its group "
                    f"(e.g. sudo usermod -aG dialout $USER, then log in again)") from None
            if code == errno.EBUSY:
                raise PortPermission(f"{self.port} is busy: another program has it "
                                     "open") from None
            raise TransportError(f"cannot open {self.port}: {e}") from None
        except (ValueError, OSError) as e:
            raise TransportError(f"cannot open {self.port}: {e}") from None

    def close(self):
        if self._serial is not None:
            try:
                self._serial.close()
            finally:
                self._serial = None

    def _port(self):
        if self._serial is None:
            raise TransportError(f"{self.description} is not open")
        return self._serial

    def write(self, data):
        import serial
        try:
            self._port().write(bytes(data))
        except (serial.SerialException, OSError) as e:
            raise TransportError(f"writing to {self.port} failed: {e}") from None

    def read(self, size=4096, timeout=None):
        import serial
        port = self._port()
        deadline = time.monotonic() + (timeout or 0)
        try:
            while True:
                waiting = port.in_waiting
                if waiting or timeout is None:
                    return port.read(min(size, waiting)) if waiting else b""
                data = port.read(1)           # waits up to the port's short timeout
                if data:
                    more = port.in_waiting
                    return data + (port.read(min(size - 1, more)) if more else b"")
                if time.monotonic() >= deadline:
                    return b""
        except (serial.SerialException, OSError) as e:
            raise TransportError(f"reading from {self.port} failed: {e}") from None


# --- the golden board in this process ---------------------------------------------------------

class GoldenTransport(Transport):
    """A :class:`sw.golden_board.GoldenBoard` behind the transport interface.

    The board runs in a thread, so a RUN or GENERATE streams its TOKEN frames (a STREAM its
    token bytes) while it works, as a board does. The SoC is busy from the ``END`` that
    closes a frame until its response has gone out and drops what arrives meanwhile; here
    that is the rest of the :meth:`write` that completed the frame, and every write made
    while the board works.

    The serving thread outlives every request: the board answers what it cannot run (see
    :mod:`sw.golden_board`), and should anything still fail in the thread, it logs one line,
    drops that request (the host sees no answer to it) and serves the next.

    Parameters
    ----------
    config : spikestream.memory_map.CoreConfig, optional
        The board's core; default :func:`sw.board.board_config`.
    clock_hz, baud : int, optional
        What IDENTIFY reports; default the ULX3S build's.
    init, tag
        Initial memory contents and image tag, as for ``SoC(init=..., tag=...)``.
    board : GoldenBoard, optional
        Use this board instead of building one.
    log : callable
        Called with one line when the serving thread meets an unexpected error (default:
        print to stderr).
    """

    name = "golden"

    def __init__(self, config=None, *, clock_hz=None, baud=None, init=(), tag=0, board=None,
                 log=_stderr):
        if board is None:
            config = config or board_config()
            board = GoldenBoard(config, clock_hz=clock_hz or board_clock_hz(),
                                baud=baud or DEFAULT_BAUD, init=init, tag=tag)
        self.board = board
        self._cond = threading.Condition()
        self._in = []
        self._out = bytearray()
        self._busy = False
        self._error = None
        self._thread = None
        self._closing = False
        self.log = log
        self.errors = 0             # unexpected errors met by the serving thread

    @property
    def description(self):
        c = self.board.config
        return f"golden-model board ({c.lanes} lanes, in this process)"

    def open(self):
        if self._thread is not None:
            return
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="golden-board", daemon=True)
        self._thread.start()

    def close(self):
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._thread = None

    def write(self, data):
        if self._thread is None:
            raise TransportError(f"{self.description} is not open")
        with self._cond:
            if self._busy:
                self.board.drop(len(data))
            else:
                self._in.append(bytes(data))
                self._cond.notify_all()

    def read(self, size=4096, timeout=None):
        if self._thread is None:
            raise TransportError(f"{self.description} is not open")
        deadline = time.monotonic() + (timeout or 0)
        with self._cond:
            while not self._out and self._error is None:
                left = deadline - time.monotonic()
                if timeout is None or left <= 0:
                    return b""
                self._cond.wait(left)
            if not self._out:
                raise TransportError(f"golden board: {self._error}")
            data = bytes(self._out[:size])
            del self._out[:size]
            return data

    def _serve(self):
        while True:
            with self._cond:
                while not self._in and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                chunk = self._in.pop(0)
                self._busy = True
            try:
                got = self.board.receive(chunk)
                for p in self.board.answer(*got) if got else ():
                    with self._cond:
                        self._out += wire_bytes(p)
                        self._cond.notify_all()
                    if self._closing:
                        return
            except Exception as e:  # noqa: BLE001 - a board stays answerable
                self.errors += 1
                text = str(e).strip().splitlines()
                self.log(f"golden board: {type(e).__name__}"
                         f"{': ' + text[0] if text else ''} (request dropped; still serving)")
            finally:
                with self._cond:
                    self._busy = False


# --- the simulated SoC --------------------------------------------------------------------------

class SimTransport(Transport):
    """The SoC in RTL simulation (cocotb + Verilator), reached through a pseudo-terminal.

    Opening builds (first time only; cached in ``sim_build/``) and starts the simulation
    of :class:`sim.bridge_top.BridgeTop` around the device in a thread of this process;
    the testbench (:mod:`sim.tb_bridge`) opens a pseudo-terminal pair and moves bytes
    between its master side and the device's UART pins. This transport then opens the
    slave side with :class:`SerialTransport`, exactly as it would open a board's port.

    Parameters
    ----------
    device : amaranth component, optional
        The design with ``rx``/``tx`` UART pins; default ``hw.soc.SoC(config, ...)``
        with the image preloaded.
    toplevel : str
        Name of the simulated top (and of its build in the cache).
    config : CoreConfig, optional
        The core to build (default :func:`sw.board.board_config`).
    init, tag
        Memory contents and image tag the SoC starts with (``SoC(init=, tag=)``).
    clock_hz, baud : int
        The SoC's clock and baud rate (IDENTIFY reports them; the clock must be a whole
        multiple of the baud rate). The default clock is 4 x 3 Mbaud, the smallest UART
        divisor, so that simulated time goes to the core rather than to serial bits.
    sim : str, optional
        Simulator (see :func:`sim.runner.pick_simulator`).
    build_dir : path, optional
        Where builds are cached (default ``$SPIKESTREAM_SIM_BUILD`` or ``sim_build/``).
    progress : callable, optional
        Called with one line while the simulation starts (and one if it must compile).
    start_timeout : float
        Seconds to wait for the simulation to come up (a first build included).
    poll_cycles : int
        Clock cycles the simulation runs between looks at the pseudo-terminal.

    An :meth:`open` that fails or is interrupted (Ctrl-C while the simulation is built or
    started) stops the build or simulator processes it started and removes its temporary
    folder before the exception goes on.
    """

    name = "sim"
    response_timeout = 120.0
    ABORT_WAIT = 5.0
    """Seconds an interrupted :meth:`open` waits for the simulation's thread to end."""
    SIM_CLOCK_HZ = 12_000_000
    SIM_BAUD = DEFAULT_BAUD

    def __init__(self, config=None, *, init=(), tag=0, device=None, toplevel="soc_bridge",
                 clock_hz=SIM_CLOCK_HZ, baud=SIM_BAUD, sim=None, build_dir=None,
                 progress=None, start_timeout=1800.0, poll_cycles=2048):
        self.config = config
        self.init, self.tag = list(init), tag
        self.device, self.toplevel = device, toplevel
        self.clock_hz, self.baud = int(clock_hz), int(baud)
        if self.clock_hz % self.baud:
            raise ValueError("the simulated clock must be a whole multiple of the baud rate")
        self.divisor = self.clock_hz // self.baud
        self.sim, self.progress = sim, progress
        self.build_dir = Path(build_dir or os.environ.get("SPIKESTREAM_SIM_BUILD")
                              or Path(__file__).resolve().parent.parent / "sim_build")
        self.start_timeout, self.poll_cycles = start_timeout, poll_cycles
        self._serial = None
        self._port = None
        self._thread = None
        self._error = None
        self._dir = None

    @property
    def description(self):
        where = f" on {self._port}" if self._port else ""
        return f"simulated SoC (RTL simulation){where}"

    def _build_device(self):
        if self.device is not None:
            return self.device
        config = self.config or board_config()
        self.config = config
        return SoC(config, clock_hz=self.clock_hz, baud=self.baud, init=self.init,
                   tag=self.tag)

    def open(self):
        if self._serial is not None:
            return
        top = BridgeTop(self._build_device(), self.divisor)
        self._dir = Path(tempfile.mkdtemp(prefix="spikestream-sim-"))
        ready = self._dir / "pty"
        stop = self._dir / "stop"
        config = {"pty_file": str(ready), "stop_file": str(stop), "depth": top.depth,
                  "clock_ns": 10, "poll_cycles": self.poll_cycles}
        self._stop = stop
        self._done = threading.Event()
        self._aborting = False
        self._run_name = f"bridge-{os.getpid()}-{id(self):x}"

        def run():
            try:
                results = build_and_run(top, self.toplevel, "sim.tb_bridge", config=config,
                                        sim=self.sim, build_dir=self.build_dir,
                                        run_name=self._run_name)
                shutil.rmtree(results.parent, ignore_errors=True)
            except SimulatorUnavailable as e:
                self._error = f"no simulator: {e}"
            except BaseException as e:  # noqa: BLE001 - reported by open() or read()
                self._error = str(e).splitlines()[0] if str(e) else type(e).__name__
            finally:
                if self._aborting:
                    # Stopped while starting: its run folder holds nothing worth keeping.
                    for folder in self.build_dir.glob(f"*/runs/{self._run_name}"):
                        shutil.rmtree(folder, ignore_errors=True)
                self._done.set()

        self._thread = threading.Thread(target=run, name="sim-bridge", daemon=True)
        try:
            self._thread.start()
            t0, said = time.monotonic(), set()
            while not ready.is_file():
                if self._done.wait(0.2):
                    raise SimulationError(f"the simulated SoC did not start: {self._error}")
                if self.progress:
                    waited = time.monotonic() - t0
                    if "build" not in said and self._building(t0):
                        self.progress("sim: compiling the simulated SoC with Verilator (first "
                                      "run for this design and image only, cached in "
                                      "sim_build/; minutes for a full-size core)...")
                        said.add("build")
                    elif not said and waited > 5:
                        self.progress("sim: starting the simulated SoC (converting it to "
                                      "Verilog)...")
                        said.add("start")
                if time.monotonic() - t0 > self.start_timeout:
                    raise SimulationError(f"the simulated SoC did not start within "
                                          f"{self.start_timeout:.0f} s")
            self._port = ready.read_text().strip()
            self._serial = SerialTransport(self._port, self.baud)
            self._serial.open()
        except BaseException:
            # Ctrl-C or a failure while starting: stop what was started, leave nothing.
            self._abort()
            raise

    def _building(self, since):
        """Whether sim.runner is compiling this top (its scratch folder exists)."""
        try:
            return any(p.stat().st_mtime >= time.time() - (time.monotonic() - since) - 1
                       for p in self.build_dir.glob(f".{self.toplevel}-*"))
        except OSError:
            return False

    def _abort(self):
        """Stop a simulation that is starting: tell its testbench to stop, end the build or
        simulator processes it started, wait a little for its thread (which removes the
        build's scratch folder), and remove the temporary folder."""
        self._aborting = True
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        try:
            self._stop.write_text("stop")
        except OSError:
            pass
        self._end_processes()
        if self._thread is not None:
            self._thread.join(timeout=self.ABORT_WAIT)
            self._thread = None
        shutil.rmtree(self._dir, ignore_errors=True)
        self._port = None

    def _end_processes(self):
        """Send SIGTERM to the processes this transport started (a Verilator build or the
        simulator, with everything they started): the children of this process that work
        in this top's build scratch folder or in this run's folder (Linux ``/proc``; a
        simulator left over elsewhere ends by itself when this process ends)."""
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        parent = {}
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        root = self.build_dir.resolve()
        mine = []
        for pid, ppid in parent.items():
            if ppid != os.getpid():
                continue
            try:
                rel = Path(os.readlink(f"/proc/{pid}/cwd")).relative_to(root)
            except (OSError, ValueError):
                continue
            if rel.parts and (rel.parts[0].startswith(f".{self.toplevel}-")
                              or self._run_name in rel.parts):
                mine.append(pid)
        todo = list(mine)
        while todo:
            pid = todo.pop()
            children = [c for c, pp in parent.items() if pp == pid and c not in mine]
            mine += children
            todo += children
        for pid in mine:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    def _shutdown(self):
        if self._thread is None:
            return
        try:
            try:
                self._stop.write_text("stop")
            except OSError:
                pass
            self._thread.join(timeout=60)
        finally:
            # A simulation that will not stop (or a second Ctrl-C while it stops) is ended.
            if self._thread.is_alive():
                self._abort()
            else:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._thread = None

    def close(self):
        try:
            if self._serial is not None:
                self._serial.close()
                self._serial = None
        finally:
            self._shutdown()

    def _check(self):
        if self._serial is None:
            raise TransportError(f"{self.description} is not open")
        if self._done.is_set():
            raise SimulationError(f"the simulated SoC stopped: {self._error or 'no reason given'}")

    def write(self, data):
        self._check()
        self._serial.write(data)

    def read(self, size=4096, timeout=None):
        self._check()
        return self._serial.read(size, timeout)
