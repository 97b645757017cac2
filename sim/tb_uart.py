"""cocotb testbench for :class:`sim.uart_echo.UARTEcho`, driven at the pins.

Bytes go in on ``rx`` from ``cocotbext.uart.UartSource`` and come back on ``tx`` into
``UartSink``: an independent model of the line, sharing no code with :mod:`hw.uart`. The
receiver's error flags are watched through the hierarchy (``dut.uart_rx.err``).

Run through :func:`sim.runner.build_and_run`; settings arrive as its ``config``:

``divisor`` (int, required)
    Clock cycles per bit the top was built with; the clock is 100 MHz.
``count`` (int, default 64)
    Random bytes per echo test.
``corrupt_expected`` (bool, default False)
    Compare the echo against wrong bytes, so that the random-echo test fails: used to test
    how the runner reports a failing testbench.
"""

import logging
import random
import warnings

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer, with_timeout
from cocotbext.uart import UartSink, UartSource

from hw.uart import FRAME_BITS
from sim.runner import load_config


CLK_NS = 10


def _config():
    config = load_config({})
    if "divisor" not in config:
        raise RuntimeError("tb_uart needs config['divisor'] from sim.runner.build_and_run")
    return config


def _baud(bit_ns):
    # cocotbext-uart times bits as int(1e9 / baud) ns: aim a quarter ns high so that the
    # truncation lands exactly on bit_ns.
    return 1e9 / (bit_ns + 0.25)


class TB:
    """Clock, reset, UART source and sink, and error-flag counters for one test.

    Parameters
    ----------
    dut : cocotb handle
        The ``UARTEcho`` top.
    source_error : float
        Relative baud-rate error of the source (the host's transmitter): 0.02 means its bits
        last 2% longer than the design's.
    """

    def __init__(self, dut, *, source_error=0.0):
        self.dut = dut
        self.config = _config()
        self.bit_ns = self.config["divisor"] * CLK_NS
        source_bit_ns = round(self.bit_ns * (1 + source_error))
        with warnings.catch_warnings():
            # cocotbext-uart 0.1.4 still calls setimmediatevalue, deprecated in cocotb 2.0;
            # keep that from failing runs made with PYTHONWARNINGS=error.
            warnings.filterwarnings("ignore", r"Use `handle\.set\(Immediate", DeprecationWarning)
            self.source = UartSource(dut.rx, baud=_baud(source_bit_ns))
        self.sink = UartSink(dut.tx, baud=_baud(self.bit_ns))
        for model in (self.source, self.sink):
            model.log.setLevel(logging.WARNING)  # one line per byte drowns long runs
        self.frame_errors = 0
        self.overflows = 0
        Clock(dut.clk, CLK_NS, unit="ns").start()
        cocotb.start_soon(self._watch_errors())

    async def reset(self):
        """Hold ``rst`` for a few cycles."""
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    async def _watch_errors(self):
        # Wake on changes only, not every clock: a Python wake-up per cycle would cost more
        # than the whole Verilator model. Each flag is a one-cycle pulse, so every change to
        # a non-zero value is a new event.
        err = self.dut.uart_rx.err
        while True:
            await err.value_change
            value = int(err.value)
            self.frame_errors += value & 1
            self.overflows += (value >> 1) & 1

    async def drive_frame(self, byte, *, stop):
        """Bit-bang one frame on ``rx`` with the given stop bit, then return the line high.

        Only while the source is idle: it does not expect anyone else on its line.
        """
        for level in [0, *((byte >> n) & 1 for n in range(8)), stop]:
            self.dut.rx.value = level
            await Timer(self.bit_ns, "ns")
        self.dut.rx.value = 1
        await Timer(self.bit_ns, "ns")

    async def receive(self, count):
        """Return ``count`` bytes from the sink, failing if the echo stalls."""
        data = bytearray()
        while len(data) < count:
            # Two frame times per byte is plenty, even for the slowest source.
            data += await with_timeout(self.sink.read(), 2 * FRAME_BITS * self.bit_ns, "ns")
        return bytes(data)

    async def expect_quiet(self):
        """Check that nothing more comes back within three frame times."""
        await Timer(3 * FRAME_BITS * self.bit_ns, "ns")
        assert self.sink.empty(), f"unexpected extra bytes echoed: {self.sink.read_nowait()!r}"


@cocotb.test()
async def test_echo_random_bytes(dut):
    """Random bytes sent back to back come back unchanged and in order."""
    tb = TB(dut)
    await tb.reset()
    sent = bytes(random.randrange(256) for _ in range(tb.config.get("count", 64)))
    await tb.source.write(sent)
    got = await tb.receive(len(sent))
    expected = bytes(b ^ 0xFF for b in sent) if tb.config.get("corrupt_expected") else sent
    assert got == expected, f"wrong echo: expected {expected.hex()}, got {got.hex()}"
    await tb.expect_quiet()
    assert (tb.frame_errors, tb.overflows) == (0, 0)


@cocotb.test()
@cocotb.parametrize(source_error=[-0.03, 0.03])
async def test_echo_baud_mismatch(dut, source_error):
    """The receiver tolerates a host whose baud rate is 3% off.

    Bytes are spaced by an idle bit so that a fast host cannot outrun the transmitter, which
    runs at the design's own rate.
    """
    tb = TB(dut, source_error=source_error)
    await tb.reset()
    sent = bytes(random.randrange(256) for _ in range(16))
    for byte in sent:
        await tb.source.write([byte])
        await tb.source.wait()
        await Timer(tb.bit_ns, "ns")
    assert await tb.receive(len(sent)) == sent
    await tb.expect_quiet()
    assert (tb.frame_errors, tb.overflows) == (0, 0)


@cocotb.test()
async def test_framing_error_dropped(dut):
    """A frame whose stop bit is 0 is flagged and not echoed; the bytes around it are."""
    tb = TB(dut)
    await tb.reset()
    pattern = [True, False, True, False, False, True, True, False, True]
    good = []
    for ok in pattern:
        byte = random.randrange(256)
        if ok:
            good.append(byte)
            await tb.source.write([byte])
            await tb.source.wait()
            await Timer(tb.bit_ns, "ns")
        else:
            await tb.drive_frame(byte, stop=0)
    assert await tb.receive(len(good)) == bytes(good)
    await tb.expect_quiet()
    assert tb.frame_errors == pattern.count(False)
    assert tb.overflows == 0
