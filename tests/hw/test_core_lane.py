"""hw.core.lane.Lane: synapse routing against a numpy reference, and its timing.

The lane's bus is driven directly. Row pointers and synapse words are written through host
WRITE ops, the accumulators cleared, then a ROUTE phase delivers a list of spikes one per
cycle (as the broadcast tree does), each with a value ``q`` (1 for a binary spike).
Afterwards every accumulator, read back with READ ops, must equal the numpy sum of the
walked segments' weights times their spikes' values, and ``done`` must rise exactly
``WALK_LATENCY + sum(max(1, slots))`` cycles after the first spike arrived (a row's slots
as spikestream.network.pair_row counts them: pairs of an even and an odd target, one word
at an odd start and in the tail): the lane never starves, whatever mix of long, short and
empty segments it gets.

Segments are chosen freely (not as a compiler would make them) to provoke accumulator
hazards: the same target in back-to-back slots, within a segment and across spikes, and
at distance two; each is laid out in pairs here, by the rule, independently of the
compiler's code.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.core.lane import Lane
from hw.core.layouts import LaneOp
from spikestream.formats import MAX_TAIL
from spikestream.timing import HOST_READ_LATENCY, WALK_LATENCY
from spikestream.memory_map import CoreConfig, Mem
from spikestream.network import pair_row

CONFIG = CoreConfig(lanes=1, neurons_per_lane=64, syn_depth=2048, ptr_depth=64, max_pops=2,
                    max_projs=2, max_vocab=4, spike_depth=128)


def _bus(**fields):
    bus = {"op": LaneOp.NOP, "lane": 0, "mem": 0, "addr": 0, "data": 0, "count": 0,
           "qbase": 0, "ptr_base": 0, "size": 0, "mode": {"kind": 0, "reset": 0,
                                                          "level_bits": 0}, "push": 0,
           "window": [0, 0], "spike": {"valid": 0, "ptr": 0, "q": 0}}
    bus.update(fields)
    return bus


def _route_case(segments, spikes, gaps=None):
    """Run one route phase.

    ``segments``: per row pointer, a list of (target, weight). ``spikes``: the row pointers
    delivered, in order, each alone (value 1) or as ``(pointer, value)``. ``gaps``: idle
    cycles before each spike (default none).
    Returns ``(acc, done_latency)``: the accumulators and the cycles from the first spike's
    arrival to ``done``.
    """
    ptr_l, syn_l = CONFIG.layout(Mem.PTR), CONFIG.layout(Mem.SYN)
    writes, start = [], 0
    for k, seg in enumerate(segments):
        words, tail, _ = _lay_row(seg, start)
        writes.append((Mem.PTR, k, ptr_l.pack(start=start, tail=tail)))
        for target, weight in words:
            writes.append((Mem.SYN, start, syn_l.pack(addr=target, weight=weight)))
            start += 1
    writes.append((Mem.PTR, len(segments), ptr_l.pack(start=start, tail=0)))   # the end
    assert len(spikes) <= CONFIG.max_source      # a phase delivers at most a population
    assert start <= CONFIG.syn_depth
    gaps = gaps or [0] * len(spikes)
    out = {}
    dut = Lane(CONFIG, 0)

    async def testbench(ctx):
        for mem, addr, word in writes:
            ctx.set(dut.bus, _bus(op=LaneOp.WRITE, mem=mem, addr=addr, data=word))
            await ctx.tick()
        ctx.set(dut.bus, _bus(op=LaneOp.CLEAR))
        await ctx.tick()
        ctx.set(dut.bus, _bus())
        await ctx.tick().repeat(CONFIG.neurons_per_lane + 2)
        phase = _bus(count=len(spikes))
        ctx.set(dut.bus, {**phase, "op": LaneOp.ROUTE})
        await ctx.tick()
        ctx.set(dut.bus, phase)
        await ctx.tick().repeat(3)
        first = None
        cycle = 0
        for spike, gap in zip(spikes, gaps):
            ptr, q = spike if isinstance(spike, tuple) else (spike, 1)
            for _ in range(gap):
                ctx.set(dut.bus, phase)
                assert not ctx.get(dut.done)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.bus, {**phase, "spike": {"valid": 1, "ptr": ptr, "q": q}})
            first = cycle if first is None else first
            assert not ctx.get(dut.done)
            await ctx.tick()
            cycle += 1
        ctx.set(dut.bus, phase)
        while not ctx.get(dut.done):
            await ctx.tick()
            cycle += 1
            assert cycle < 100_000
        out["latency"] = cycle - first
        await ctx.tick().repeat(8)
        acc = []
        for addr in range(CONFIG.neurons_per_lane):
            ctx.set(dut.bus, _bus(op=LaneOp.READ, mem=Mem.ACC, addr=addr))
            await ctx.tick()
            ctx.set(dut.bus, _bus())
            await ctx.tick().repeat(HOST_READ_LATENCY - 1)
            assert ctx.get(dut.gather.valid)
            word = ctx.get(dut.gather.payload) & ((1 << 24) - 1)
            acc.append(word - (1 << 24) if word >> 23 else word)
        out["acc"] = acc

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return out["acc"], out["latency"]


def _lay_row(seg, start):
    """Row ``seg`` of ``(target, weight)`` laid out from ``start`` as pair_row says: its
    words (a lead of the more numerous parity at an odd start, pairs with the even target
    first, the tail; pads of weight 0 at address 0 or 1), its tail and its cycles."""
    even = [s for s in seg if s[0] % 2 == 0]
    odd = [s for s in seg if s[0] % 2 == 1]
    lead, pairs, tail, pads, cycles = (int(x) for x in pair_row(len(even), len(odd),
                                                                start % 2))
    major, minor = (odd, even) if len(odd) > len(even) else (even, odd)
    minor = minor + [(int(major is even), 0)] * pads
    words = major[:lead]
    for a, b in zip(major[lead:lead + pairs], minor[:pairs]):
        words += sorted([a, b], key=lambda s: s[0] % 2)
    words += major[lead + pairs:] + minor[pairs:]
    assert len(words) == lead + 2 * pairs + tail
    return words, tail, cycles


def _reference(segments, spikes):
    acc = np.zeros(CONFIG.neurons_per_lane, np.int64)
    spikes = [s if isinstance(s, tuple) else (s, 1) for s in spikes]
    for ptr, q in spikes:
        for target, weight in segments[ptr]:
            acc[target] += weight * q
    cost, start = [], 0                  # each row's cycles, laid out as _route_case does
    for seg in segments:
        words, _, cycles = _lay_row(seg, start)
        cost.append(cycles)
        start += len(words)
    return acc.tolist(), WALK_LATENCY + sum(cost[ptr] for ptr, _ in spikes)


def _segment(rng, n, targets=16):
    """``n`` random synapses ``(target, weight)``: targets below ``targets``, weights of the
    whole 8-bit range."""
    return [(int(t), int(w)) for t, w in zip(rng.integers(0, targets, n),
                                             rng.integers(-128, 128, n))]


def _check(segments, spikes, gaps=None):
    acc, latency = _route_case(segments, spikes, gaps)
    want_acc, want_latency = _reference(segments, spikes)
    assert acc == want_acc
    if gaps is None:
        assert latency == want_latency
    return latency


def test_back_to_back_same_target():
    # Every slot hits address 3: distance-1 hazards within a segment and across spikes.
    segs = [[(3, 5)] * 4, [(3, -7)], [(3, 100)], [], [(3, 1), (3, 2)]]
    _check(segs, [0, 1, 2, 1, 3, 4, 0, 2, 2, 2])


def test_distance_two_hazards():
    segs = [[(1, 10), (2, 20), (1, 30), (2, 40), (1, -5)], [(2, 1)], [(1, 2)], [(5, 1), (1, 1)]]
    _check(segs, [0, 1, 2, 1, 2, 3, 3, 0])


def test_empty_segments_cost_one_cycle():
    segs = [[], [], [(0, 1)], []]
    latency = _check(segs, [0, 1, 0, 2, 3, 1])
    assert latency == WALK_LATENCY + 6


def test_long_then_short_segments():
    # A long segment fills the segment queue and the spike buffer; then a run of empty and
    # one-synapse segments drains them at one spike per cycle: the walker must not starve.
    rng = np.random.default_rng(5)
    segs = [_segment(rng, 64), [], [(7, 3)], [(7, -3), (8, 4)]]
    spikes = [0] + [int(x) for x in rng.integers(1, 4, 40)] + [0] + [1] * 20
    _check(segs, spikes)


def test_long_tails_are_padded():
    # Rows of one parity longer than a row pointer's tail can say (MAX_TAIL): laid out with
    # pads (weight 0, at address 0 or 1) that pair with the excess; the second row starts
    # at an odd word (the first is 25 words: 20 synapses, 5 pads).
    segs = [[(2 * k + 1, k - 9) for k in range(20)], [(2 * k, 7 - k) for k in range(25)],
            [(3, 1)], [(5, 2), (4, -3), (6, 9)]]
    assert _lay_row(segs[0], 0)[:2] == (_lay_row(segs[0], 0)[0], MAX_TAIL)
    assert len(_lay_row(segs[0], 0)[0]) == 25 and len(_lay_row(segs[1], 25)[0]) == 34
    _check(segs, [0, 1, 2, 0, 3, 1, 1])


@pytest.mark.parametrize("seed", range(4))
def test_random_segments(seed):
    rng = np.random.default_rng(seed)
    segs = []
    for _ in range(40):
        n = int(rng.choice([0, 0, 1, 1, 2, 3, 8, 25]))
        segs.append(_segment(rng, n))
    spikes = [int(x) for x in rng.integers(0, 40, int(rng.integers(1, 65)))]
    _check(segs, spikes)
    # The same with idle cycles between arrivals: sums still exact.
    _check(segs, spikes, gaps=[int(g) for g in rng.integers(0, 4, len(spikes))])


@pytest.mark.parametrize("seed", range(2))
def test_graded_spikes(seed):
    # Spike values 1..15 scale every weight of their segments (weights of both extremes),
    # through the same hazards: back-to-back targets, spikes waiting in the spike buffer.
    rng = np.random.default_rng(100 + seed)
    segs = [[(3, -128), (3, 127), (4, -1)], [(3, 127)], [], [(5, -128)] * 3]
    segs += [_segment(rng, n, targets=8) for n in rng.choice([0, 1, 2, 9, 20], 12)]
    spikes = [(int(p), int(q)) for p, q in zip(rng.integers(0, len(segs), 40),
                                                rng.integers(1, 16, 40))]
    _check(segs, [(0, 15), (1, 15), (3, 15), (2, 7)] + spikes)


def test_every_row_of_a_full_pointer_table():
    # As many rows as the table holds (its last word is the last row's end), so the last
    # row reads the odd bank's last word and the even bank's last word; rows at even and
    # odd pointers alike, empty ones among them.
    rng = np.random.default_rng(9)
    rows = CONFIG.ptr_depth - 1
    segs = [_segment(rng, n) for n in rng.choice([0, 1, 2, 5], rows)]
    _check(segs, [rows - 1, rows - 2, 0, 1] + [int(x) for x in rng.integers(0, rows, 30)])


def test_pointer_words_read_back():
    # The host reads the words it wrote, even and odd addresses from their two banks.
    ptr_l = CONFIG.layout(Mem.PTR)
    words = [int(x) for x in np.random.default_rng(4).integers(0, 1 << ptr_l.bits,
                                                                CONFIG.ptr_depth)]
    dut = Lane(CONFIG, 0)
    got = []

    async def testbench(ctx):
        for addr, word in enumerate(words):
            ctx.set(dut.bus, _bus(op=LaneOp.WRITE, mem=Mem.PTR, addr=addr, data=word))
            await ctx.tick()
        for addr in range(CONFIG.ptr_depth):
            ctx.set(dut.bus, _bus(op=LaneOp.READ, mem=Mem.PTR, addr=addr))
            await ctx.tick()
            ctx.set(dut.bus, _bus())
            await ctx.tick().repeat(HOST_READ_LATENCY - 1)
            assert ctx.get(dut.gather.valid)
            got.append(ctx.get(dut.gather.payload))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert got == words
