"""hw.core.walker: the segment queue and the walker against a slot-by-slot reference.

Segments arrive in bursts and gaps (the queue's LUT RAM fills and drains), the walker is
paused at random; every segment must be walked in arrival order, ``max(1, slots)`` slots
each, one read per slot of a non-empty segment, of one word or of a pair (an even address
and the next) as spikestream.network.pair_row lays rows out, with its spike's value, and
``walked`` must count them. The accumulator, on the memory
the lane gives it, must sum every synapse exactly however close its repeats.
"""

import numpy as np
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hw.core.bram import PipelinedRAM
from hw.core.walker import Accumulator, SegmentQueue, Walker, synapse_layout
from spikestream.formats import ACC_BITS
from spikestream.memory_map import CoreConfig
from spikestream.network import pair_row
from spikestream.timing import SKID_DEPTH

CONFIG = CoreConfig(lanes=1, neurons_per_lane=64, syn_depth=2048, ptr_depth=64, max_pops=2,
                    max_projs=2, max_vocab=4, spike_depth=128)


class _Pair(Elaboratable):
    """The queue feeding the walker, as the lane wires them."""

    def __init__(self):
        self.queue, self.walker = SegmentQueue(CONFIG), Walker(CONFIG)

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue, m.submodules.walker = self.queue, self.walker
        wiring.connect(m, self.queue.o, self.walker.i)
        return m


def _reference(segments):
    """Per segment: the (address, pair, q) reads its slots issue."""
    out = []
    for start, words, tail, q in segments:
        reads, a, end = [], start, start + words
        while a < end:
            single = a % 2 == 1 or end - a <= tail
            reads.append((a, int(not single), q))
            a += 1 if single else 2
        out.append(reads)
    return out


def _slots(start, words, tail):
    return (words + start % 2 + tail) // 2


def _run(segments, arrive_every, enable_p, seed):
    rng = np.random.default_rng(seed)
    dut = _Pair()
    reads, slots, walked = [], [0], []

    async def testbench(ctx):
        q, w = dut.queue, dut.walker
        ctx.set(q.clear, 1)
        await ctx.tick()
        ctx.set(q.clear, 0)
        pending, in_queue, cycle = list(segments), 0, 0
        while pending or ctx.get(q.o.valid) or not ctx.get(w.idle):
            # The producer keeps at most SKID_DEPTH + 1 segments in the queue and head (as
            # the lane's spike buffer does), offering one every `arrive_every` cycles.
            offer = bool(pending) and cycle % arrive_every == 0 and in_queue < SKID_DEPTH + 1
            if offer:
                start, words, tail, value = pending[0]
                ctx.set(q.i.valid, 1)
                ctx.set(q.i.payload.seg.start, start)
                ctx.set(q.i.payload.seg.slots, _slots(start, words, tail))
                ctx.set(q.i.payload.seg.tail, tail)
                ctx.set(q.i.payload.q, value)
            else:
                ctx.set(q.i.valid, 0)
            ctx.set(w.enable, int(rng.random() < enable_p))
            taken = ctx.get(w.i.valid) and ctx.get(w.i.ready)
            if ctx.get(w.o.valid):
                reads.append((ctx.get(w.o.payload.addr), ctx.get(w.o.payload.pair),
                              ctx.get(w.o.payload.q)))
            if taken or not ctx.get(w.idle):
                slots[0] += 1
            await ctx.tick()
            if offer:
                pending.pop(0)
                in_queue += 1
            if taken:
                in_queue -= 1
            cycle += 1
            assert cycle < 20 * (len(segments) + 1) * 90, "the walker stalled"
        walked.append(ctx.get(w.walked))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return reads, slots[0], walked[0]


def _segments(rng, n):
    """Rows of random even and odd synapse counts (tails up to 40, so pads too) laid out as
    pair_row does, at random starts: (start, words, tail, q)."""
    out = []
    for _ in range(n):
        even, odd = (int(rng.choice([0, 1, 2, int(rng.integers(3, 40))])) for _ in range(2))
        start = int(rng.integers(0, CONFIG.syn_depth - 120))
        _, _, tail, pads, cycles = pair_row(even, odd, start % 2)
        words = even + odd + int(pads)
        assert max(1, _slots(start, words, int(tail))) == cycles
        out.append((start, words, int(tail), int(rng.integers(0, 1 << CONFIG.q_bits))))
    return out


def test_walks_every_segment_in_order():
    rng = np.random.default_rng(7)
    for arrive_every, enable_p in ((1, 1.0), (1, 0.6), (3, 0.9)):
        segments = _segments(rng, 60)
        reads, slots, walked = _run(segments, arrive_every, enable_p, seed=arrive_every)
        assert reads == [r for seg in _reference(segments) for r in seg]
        assert slots == sum(max(1, _slots(s, n, t)) for s, n, t, _ in segments)
        assert walked == len(segments)


def test_clear_forgets_queued_segments():
    dut = _Pair()

    async def testbench(ctx):
        q, w = dut.queue, dut.walker
        ctx.set(w.enable, 0)
        for start in range(5):                 # five segments wait, the walker paused
            ctx.set(q.i.valid, 1)
            ctx.set(q.i.payload.seg.start, 100 * start)
            ctx.set(q.i.payload.seg.slots, 3)
            await ctx.tick()
        ctx.set(q.i.valid, 0)
        assert ctx.get(q.o.valid)
        ctx.set(q.clear, 1)
        ctx.set(w.clear, 1)
        await ctx.tick()
        ctx.set(q.clear, 0)
        ctx.set(w.clear, 0)
        ctx.set(w.enable, 1)
        for _ in range(10):
            assert not ctx.get(q.o.valid) and not ctx.get(w.o.valid)
            await ctx.tick()
        assert ctx.get(w.walked) == 0 and ctx.get(w.idle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


class _AccHarness(Elaboratable):
    """The accumulator on a PipelinedRAM, wired as the lane wires them: the memory's read
    address is the next cycle's synapse's target."""

    def __init__(self):
        self.acc = Accumulator(CONFIG)
        self.ram = PipelinedRAM(ACC_BITS, CONFIG.neurons_per_lane, name="acc",
                                row_words=32)
        self.nxt = Signal(synapse_layout(CONFIG))
        self.nxt_valid = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc, m.submodules.ram = self.acc, self.ram
        m.d.sync += [self.acc.i.valid.eq(self.nxt_valid), self.acc.i.payload.eq(self.nxt)]
        m.d.comb += [
            self.ram.raddr.eq(self.nxt.addr),
            self.acc.raw.eq(self.ram.rdata),
            self.ram.we.eq(self.acc.o.valid),
            self.ram.waddr.eq(self.acc.o.payload.addr),
            self.ram.wdata.eq(self.acc.o.payload.value),
        ]
        return m


def test_accumulator_forwards_writes_in_flight():
    """Synapses on few targets, back to back and with gaps (every distance of a repeated
    target: 1, 2, 3 cycles), graded values: every word must end as the exact sum."""
    rng = np.random.default_rng(3)
    n = 600
    targets = rng.integers(0, 4, n)
    weights = rng.integers(-128, 128, n)
    values = rng.integers(0, 1 << CONFIG.q_bits, n)
    valid = rng.random(n) < 0.8
    expect = np.zeros(CONFIG.neurons_per_lane, dtype=np.int64)
    for t, w, q, v in zip(targets, weights, values, valid):
        expect[t] += int(v) * int(w) * int(q)
    dut = _AccHarness()
    got = []

    async def testbench(ctx):
        for t, w, q, v in zip(targets, weights, values, valid):
            ctx.set(dut.nxt_valid, int(v))
            ctx.set(dut.nxt, {"addr": int(t), "weight": int(w), "q": int(q)})
            await ctx.tick()
        ctx.set(dut.nxt_valid, 0)
        for k in range(8):
            ctx.set(dut.nxt.addr, k)
            await ctx.tick().repeat(4)
            got.append(ctx.get(dut.ram.rdata.as_signed()))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert got == [int(x) for x in expect[:8]]

