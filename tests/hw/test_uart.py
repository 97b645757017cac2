# amaranth: UnusedElaboratable=no
"""Simulation tests for :mod:`hw.uart`.

Every case runs through :func:`_simulate`, which records chosen signals once per clock cycle;
the cases then judge those traces. The receiver is driven by :func:`_line_runs`, a reference
bit-banger that does not share code with the transmitter.

(The first line silences UnusedElaboratable: a component whose constructor raises still
leaves a half-built object behind, which ``test_bad_divisor`` does on purpose.)
"""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.sim import Simulator

from hw.uart import FRAME_BITS, UARTRx, UARTTx, check_parameters


def frame_bits(byte, *, stop=1):
    """Return the line levels of one 8N1 frame: start bit, data LSB first, stop bit."""
    return [0] + [(byte >> n) & 1 for n in range(8)] + [stop]


def _line_runs(bits, period):
    """Turn line levels, one per bit, into ``(level, cycles)`` runs.

    ``period`` is the bit time in clock cycles and may be fractional, to model a transmitter
    whose baud rate differs from the receiver's; bit edges fall at ``round(k * period)``.
    """
    runs = []
    for k, level in enumerate(bits):
        cycles = round((k + 1) * period) - round(k * period)
        if runs and runs[-1][0] == level:
            runs[-1] = (level, runs[-1][1] + cycles)
        else:
            runs.append((level, cycles))
    return runs


def _expand(bits, cycles_per_bit):
    """Per-cycle line levels for ``bits`` at an exact integer bit time."""
    return [level for level in bits for _ in range(cycles_per_bit)]


def _rising(trace):
    """Indices of the cycles at which a 0/1 trace goes from 0 to 1."""
    return [n for n in range(1, len(trace)) if trace[n] and not trace[n - 1]]


def _transfers(traces, stream):
    """Payloads that crossed a stream, from its ``valid``/``ready``/``payload`` traces."""
    return [p for v, r, p in zip(traces[f"{stream}.valid"], traces[f"{stream}.ready"],
                                 traces[f"{stream}.payload"]) if v and r]


def _simulate(dut, probes, *testbenches):
    """Simulate ``dut`` at 100 MHz until the testbenches finish; trace ``probes`` each cycle.

    Parameters
    ----------
    dut : Elaboratable
        Design under test.
    probes : dict of str to Value
        Signals to record, sampled at each rising clock edge.
    *testbenches : async callables
        The first runs in the foreground and ends the simulation; the rest run in the
        background.

    Returns
    -------
    dict of str to list of int
        One trace per probe; index ``n`` is the value at the ``n``-th clock edge.
    """
    traces = {name: [] for name in probes}

    async def monitor(ctx):
        while True:
            _clk, _rst, *values = await ctx.tick().sample(*probes.values())
            for name, value in zip(probes, values):
                traces[name].append(value)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(monitor, background=True)
    foreground, *background = testbenches
    for testbench in background:
        sim.add_testbench(testbench, background=True)
    sim.add_testbench(foreground)
    sim.run()
    return traces


# Transmitter ---------------------------------------------------------------------------------


def _tx_case(divisor, data, *, lead=20):
    """Offer ``data`` back to back after ``lead`` idle cycles; return tx-side traces."""
    dut = UARTTx(divisor)

    async def testbench(ctx):
        await ctx.tick().repeat(lead)
        for byte in data:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat((FRAME_BITS + 2) * divisor)

    probes = {"tx": dut.tx, "i.valid": dut.i.valid, "i.ready": dut.i.ready,
              "i.payload": dut.i.payload}
    return _simulate(dut, probes, testbench)


@pytest.mark.parametrize("divisor", [4, 7, 16, 217])
def test_tx_waveform(divisor):
    data = [0x55, 0x00, 0xFF, 0xA3]
    traces = _tx_case(divisor, data)
    tx = traces["tx"]
    start = tx.index(0)
    # Idle high from reset until the first start bit, which follows the first handshake.
    assert all(tx[:start])
    assert start == 20 + 1
    # Cycles per bit, measured on the pin from 0x55 (a transition at every bit).
    runs = []
    for level in tx[start:start + FRAME_BITS * divisor]:
        if runs and runs[-1][0] == level:
            runs[-1][1] += 1
        else:
            runs.append([level, 1])
    assert runs == [[n % 2, divisor] for n in range(FRAME_BITS)]
    # Every frame exactly where expected, back to back, then idle high.
    expected = _expand([b for byte in data for b in frame_bits(byte)], divisor)
    assert tx[start:start + len(expected)] == expected
    assert all(tx[start + len(expected):])
    assert _transfers(traces, "i") == data


def test_tx_ready_cadence():
    traces = _tx_case(16, [1, 2, 3])
    handshakes = [n for n, (v, r) in enumerate(zip(traces["i.valid"], traces["i.ready"]))
                  if v and r]
    assert [b - a for a, b in zip(handshakes, handshakes[1:])] == [FRAME_BITS * 16] * 2


def _rx_case(divisor, runs, *, ready_at=0):
    """Drive the receiver's line with ``runs`` and return rx-side traces.

    ``o.ready`` is held low until cycle ``ready_at`` and high from then on.
    """
    dut = UARTRx(divisor)

    async def driver(ctx):
        for level, cycles in runs:
            ctx.set(dut.rx, level)
            await ctx.tick().repeat(cycles)

    async def consumer(ctx):
        if ready_at:
            await ctx.tick().repeat(ready_at)
        ctx.set(dut.o.ready, 1)

    probes = {"rx": dut.rx, "o.valid": dut.o.valid, "o.ready": dut.o.ready,
              "o.payload": dut.o.payload, "frame": dut.err.frame,
              "overflow": dut.err.overflow, "brk": dut.brk}
    return _simulate(dut, probes, driver, consumer)


def _idle(divisor, bits=2):
    return [(1, bits * divisor)]


def _frames(data, period, **kwargs):
    return _line_runs([b for byte in data for b in frame_bits(byte, **kwargs)], period)


@pytest.mark.parametrize("divisor, period", [
    (4, 4), (7, 7), (16, 16), (217, 217),
    # The transmitter's baud rate 3% off the receiver's, either way.
    (16, 15.52), (16, 16.48), (217, 210.5), (217, 223.5),
])
def test_rx_reference(divisor, period):
    rng = random.Random(divisor * 1000 + int(period * 100))
    count = 6 if divisor > 100 else 24
    data = [0x00, 0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(count - 5)]
    traces = _rx_case(divisor, _idle(divisor) + _frames(data, period) + _idle(divisor))
    assert _transfers(traces, "o") == data
    assert not any(traces["frame"]) and not any(traces["overflow"])
    # Back-to-back 0x00 frames keep the line low for 9 of every 10 bits: not a break.
    assert not any(traces["brk"])


def test_rx_idle_gaps():
    rng = random.Random(7)
    data = [rng.randrange(256) for _ in range(16)]
    runs = []
    for byte in data:
        runs += [(1, rng.randrange(1, 40))] + _frames([byte], 16)
    traces = _rx_case(16, runs + _idle(16))
    assert _transfers(traces, "o") == data


def test_rx_glitch_start_bit():
    # A low pulse shorter than half a bit is not a start bit.
    runs = _idle(16) + [(0, 5), (1, 30)] + _frames([0x3C], 16) + _idle(16)
    traces = _rx_case(16, runs)
    assert _transfers(traces, "o") == [0x3C]
    assert not any(traces["frame"])


def test_rx_frame_error():
    runs = (_idle(16) + _frames([0x12], 16) + _frames([0x34], 16, stop=0) + _idle(16, 1) +
            _frames([0x56], 16) + _idle(16))
    traces = _rx_case(16, runs)
    assert _transfers(traces, "o") == [0x12, 0x56]
    # One pulse, one cycle long, from the middle of the bad stop bit (+2 cycles of
    # synchroniser, +1 of output register).
    bad_stop = (2 + 2 * FRAME_BITS - 1) * 16
    assert [n for n, f in enumerate(traces["frame"]) if f] == [bad_stop + 16 // 2 + 3]
    assert not any(traces["overflow"]) and not any(traces["brk"])


def test_rx_overflow():
    # Nobody takes bytes until well after the second frame: it must be dropped.
    runs = (_idle(16) + _frames([0xA5, 0x5A], 16) + _idle(16, 4) + _frames([0xC3], 16) +
            _idle(16))
    ready_at = (2 + 2 * FRAME_BITS + 2) * 16
    traces = _rx_case(16, runs, ready_at=ready_at)
    assert _transfers(traces, "o") == [0xA5, 0xC3]
    assert sum(traces["overflow"]) == 1
    assert _rising(traces["overflow"])[0] < ready_at
    # The waiting byte stays valid and unchanged until it is taken.
    first = traces["o.valid"].index(1)
    assert all(traces["o.valid"][first:ready_at + 1])
    assert set(traces["o.payload"][first:ready_at + 1]) == {0xA5}
    assert not any(traces["frame"])


def test_rx_break():
    divisor, hold = 16, 5 * FRAME_BITS * 16
    runs = (_idle(divisor) + _frames([0x81], divisor) + [(0, hold)] + _idle(divisor) +
            _frames([0x7E], divisor) + _idle(divisor))
    traces = _rx_case(divisor, runs)
    # A break yields one frame error and no byte; the next good byte gets through.
    assert _transfers(traces, "o") == [0x81, 0x7E]
    assert sum(traces["frame"]) == 1
    # brk rises after more than a whole frame of low line (2 cycles of synchroniser) and
    # falls once the line is high again.
    line_fall = (2 + FRAME_BITS) * divisor
    line_rise = line_fall + hold
    brk = traces["brk"]
    assert _rising(brk) == [line_fall + 2 + FRAME_BITS * divisor + 1]
    assert all(brk[line_fall + 2 + FRAME_BITS * divisor + 1:line_rise + 2 + 1])
    assert not any(brk[line_rise + 2 + 1:])


# Both ----------------------------------------------------------------------------------------


class _Loopback(Elaboratable):
    def __init__(self, divisor):
        self.tx = UARTTx(divisor)
        self.rx = UARTRx(divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = self.tx
        m.submodules.rx = self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


@pytest.mark.parametrize("divisor, count", [(4, 48), (7, 32), (16, 16), (217, 5)])
def test_loopback(divisor, count):
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(count)]
    dut = _Loopback(divisor)

    async def producer(ctx):
        ctx.set(dut.rx.o.ready, 1)
        for byte in data:
            ctx.set(dut.tx.i.valid, 1)
            ctx.set(dut.tx.i.payload, byte)
            await ctx.tick().until(dut.tx.i.ready)
        ctx.set(dut.tx.i.valid, 0)
        await ctx.tick().repeat((FRAME_BITS + 2) * divisor)

    probes = {"i.valid": dut.tx.i.valid, "i.ready": dut.tx.i.ready,
              "i.payload": dut.tx.i.payload, "o.valid": dut.rx.o.valid,
              "o.ready": dut.rx.o.ready, "o.payload": dut.rx.o.payload,
              "frame": dut.rx.err.frame, "overflow": dut.rx.err.overflow,
              "brk": dut.rx.brk}
    traces = _simulate(dut, probes, producer)
    assert _transfers(traces, "i") == data
    assert _transfers(traces, "o") == data
    assert not any(traces["frame"] + traces["overflow"] + traces["brk"])


# Parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("divisor", [3, 0, -16, 16.0, "16", True])
def test_bad_divisor(divisor):
    with pytest.raises(ValueError, match="divisor"):
        check_parameters(divisor=divisor)
    with pytest.raises(ValueError, match="divisor"):
        UARTRx(divisor)
    with pytest.raises(ValueError, match="divisor"):
        UARTTx(divisor)
