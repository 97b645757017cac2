"""hw.streams: the stream register."""

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from hw.streams import StreamRegister

WORD = data.StructLayout({"addr": 11, "data": 30, "last": 1})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_register_passes_every_word_once_in_order(seed):
    # Random valid on its input and random ready on its output: the words out are the words
    # in, each offered LATENCY cycles after it was taken at the earliest, and its input's
    # ready is the inverse of its output's valid (both flip-flops).
    rng = random.Random(seed)
    words = [{"addr": rng.randrange(1 << 11), "data": rng.randrange(1 << 30),
              "last": rng.randrange(2)} for _ in range(80)]
    dut = StreamRegister(WORD)
    taken, given, trace = [], [], []

    async def source(ctx):
        for word in words:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, word)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(8)

    async def sink(ctx):
        while True:
            ctx.set(dut.o.ready, rng.random() < 0.6)
            await ctx.tick()

    async def monitor(ctx):
        cycle = 0
        async for _clk, _rst, iv, ir, ip, ov, orr, op in ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.i.payload, dut.o.valid, dut.o.ready,
                dut.o.payload):
            if iv and ir:
                taken.append((cycle, ip.as_value().value))
            if ov and orr:
                given.append((cycle, op.as_value().value))
            trace.append((ir, ov))
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(monitor, background=True)
    sim.run()

    packed = [WORD.const(w).as_value().value for w in words]
    assert [w for _, w in taken] == packed
    assert [w for _, w in given] == packed
    assert all(g >= t + StreamRegister.LATENCY for (t, _), (g, _) in zip(taken, given))
    assert all(ready == 1 - valid for ready, valid in trace)
