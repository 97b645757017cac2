"""The trees (hw.core.broadcast) and the broadcaster order of a LaneArray (hw.core.fabric).

* Broadcast: every output is the input ``stages`` cycles later.
* Reduce: OR / AND of all inputs ``stages`` cycles later.
* Scatter: output ``k`` gets elements ``k, k + 1`` ``stages`` cycles later, from registers
  that hold only what the outputs below them use.
* LaneArray: after an UPDATE in which chosen neurons fire, a ROUTE with the prefix sums of
  the lanes' spike counts as windows makes the lanes emit the spiking neuron ids on the
  gather tree one per cycle, with no gap, in lane-major order (lane 0's by address, then
  lane 1's, ...), the first one ``stages + 1 + READ_LATENCY + stages`` cycles after the op.
"""

import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from hw.core.broadcast import Broadcast, Reduce, Scatter
from hw.core.fabric import LaneArray
from hw.core.layouts import LaneOp
from spikestream.timing import NEURON_LATENCY, READ_LATENCY
from spikestream.memory_map import CoreConfig, Mem
from models.cycles import lane_major_order
from spikestream.formats import STATE_MAX, STATE_MIN, NeuronKind, ResetMode


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("count, stages", [(1, 1), (3, 1), (4, 1), (5, 2), (16, 2), (17, 3)])
def test_broadcast_latency(count, stages):
    dut = Broadcast(8, count, stages)
    values = list(range(1, 40))

    async def testbench(ctx):
        seen = []
        for v in values + [0] * (stages + 1):
            ctx.set(dut.i, v)
            await ctx.tick()
            outs = [ctx.get(dut.o[k]) for k in range(count)]
            assert len(set(outs)) == 1
            seen.append(outs[0])
        # After the edge that took value n, the outputs show value n - stages + 1.
        assert seen[stages - 1:stages - 1 + len(values)] == values

    _run(dut, testbench)


@pytest.mark.parametrize("op", ["or", "and"])
@pytest.mark.parametrize("count, stages", [(1, 1), (4, 1), (7, 2), (16, 2)])
def test_reduce(op, count, stages):
    dut = Reduce(6, count, stages, op)
    rng = np.random.default_rng(count)
    vectors = rng.integers(0, 64, (30, count))

    async def testbench(ctx):
        seen = []
        for vec in list(vectors) + [np.zeros(count, int)] * (stages + 1):
            for k in range(count):
                ctx.set(dut.i[k], int(vec[k]))
            await ctx.tick()
            seen.append(ctx.get(dut.o))
        want = [int(np.bitwise_or.reduce(v) if op == "or" else np.bitwise_and.reduce(v))
                for v in vectors]
        assert seen[stages - 1:stages - 1 + len(want)] == want

    _run(dut, testbench)


@pytest.mark.parametrize("lanes, size, seed", [(1, 7, 0), (3, 20, 1), (4, 29, 2), (4, 8, 3)])
def test_broadcaster_order(lanes, size, seed):
    config = CoreConfig(lanes=lanes, neurons_per_lane=8, syn_depth=16, ptr_depth=16,
                        max_pops=2, max_projs=2, max_vocab=4, spike_depth=32)
    rng = np.random.default_rng(seed)
    fire = rng.random(size) < 0.5
    fire[-1] = True                      # the last lane's last row spikes too
    rows = -(-size // lanes)
    base = 1
    dut = LaneArray(config)
    param = config.layout(Mem.PARAM)
    T = config.stages

    def bus(**fields):
        b = {"op": LaneOp.NOP, "lane": 0, "mem": 0, "addr": 0, "data": 0, "count": 0,
             "qbase": 0, "ptr_base": 0, "size": 0, "bounds": [0] * (lanes + 1),
             "mode": {"kind": 0, "reset": 0, "level_bits": 0}, "push": 0,
             "spike": {"valid": 0, "ptr": 0, "q": 0}}
        b.update(fields)
        return b

    async def testbench(ctx):
        # Neurons that fire get the lowest threshold: v = 0 >= -32768.
        for n in range(size):
            word = param.pack(alpha=0, theta=STATE_MIN if fire[n] else STATE_MAX, rho=0,
                              jump=0, bias=0)
            ctx.set(dut.bus, bus(op=LaneOp.WRITE, lane=n % lanes, mem=Mem.PARAM,
                                 addr=base + n // lanes, data=word))
            await ctx.tick()
        ctx.set(dut.bus, bus(op=LaneOp.CLEAR))
        await ctx.tick()
        ctx.set(dut.bus, bus())
        await ctx.tick().repeat(config.neurons_per_lane + T + 2)
        mode = {"kind": int(NeuronKind.LIF), "reset": int(ResetMode.ZERO), "level_bits": 1}
        phase = bus(addr=base, count=rows, size=size, mode=mode, push=1,
                    qbase=config.neurons_per_lane + base)
        ctx.set(dut.bus, {**phase, "op": LaneOp.UPDATE})
        await ctx.tick()
        ctx.set(dut.bus, phase)
        await ctx.tick().repeat(T + rows + READ_LATENCY + NEURON_LATENCY + 2)
        counts = [ctx.get(dut.counts[k]) for k in range(lanes)]
        assert counts == [int(fire[k::lanes].sum()) for k in range(lanes)]
        bounds = [0] + np.cumsum(counts).tolist()
        phase = bus(count=bounds[-1], qbase=config.neurons_per_lane + base, bounds=bounds)
        ctx.set(dut.bus, {**phase, "op": LaneOp.ROUTE})
        trace = []
        for _ in range(T + 1 + READ_LATENCY + T + bounds[-1] + 4):
            await ctx.tick()
            ctx.set(dut.bus, phase)
            trace.append(ctx.get(dut.gather.payload) if ctx.get(dut.gather.valid) else None)
        first = T + 1 + READ_LATENCY + T - 1
        assert all(x is None for x in trace[:first])
        ids = [int(n) for n in lane_major_order(size, lanes) if fire[n]]
        # Each spike leaves as its row-pointer address (ptr_base 0: its id) and value 1.
        assert trace[first:first + len(ids)] == [n | 1 << config.ptr_bits for n in ids]
        assert all(x is None for x in trace[first + len(ids):])

    _run(dut, testbench)


@pytest.mark.parametrize("count, stages", [(1, 1), (4, 1), (5, 2), (16, 2), (17, 3)])
def test_scatter_gives_each_output_its_window(count, stages):
    dut = Scatter(8, count, stages, window=2)
    rng = np.random.default_rng(count)
    arrays = rng.integers(0, 256, (12, count + 1))

    async def testbench(ctx):
        seen = []
        for arr in list(arrays) + [np.zeros(count + 1, int)] * (stages + 1):
            ctx.set(dut.i, [int(x) for x in arr])
            await ctx.tick()
            seen.append([[ctx.get(dut.o[k][w]) for w in range(2)] for k in range(count)])
        want = [[[int(arr[k]), int(arr[k + 1])] for k in range(count)] for arr in arrays]
        assert seen[stages - 1:stages - 1 + len(want)] == want

    _run(dut, testbench)


def test_scatter_registers_only_what_each_output_uses():
    """16 outputs, 2 stages (arity 4): 4 nodes of 5 elements, then 16 of 2 (a Broadcast of
    the whole array would hold 20 copies of 17)."""
    text = rtlil.convert(Scatter(8, 16, 2, window=2), name="scatter")
    widths = re.findall(r"cell \$dff .*?parameter \\WIDTH (\d+)", text, re.S)
    assert sum(int(w) for w in widths) == (4 * 5 + 16 * 2) * 8
