"""hw.core.sampler.Sampler against spikestream.sampler.sample.

Several timesteps of random readout membranes are streamed (with idle cycles between
values, and ties) at temperature 0 and at several temperature words, from several seeds
(0 included: it maps to a fixed non-zero state). After each timestep the token and the
generator state must equal the reference's.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.core.sampler import Sampler
from spikestream.timing import SAMPLER_LATENCY
from spikestream.formats import STATE_MAX, STATE_MIN
from spikestream.sampler import sample, seed_state


@pytest.mark.parametrize("temperature", [0, 1, 256, 3000, 65535])
def test_sampler_matches_reference(temperature):
    rng = np.random.default_rng(temperature)
    dut = Sampler(token_bits=8)
    steps = []
    for t in range(6):
        n = int(rng.integers(1, 40))
        kind = t % 3
        if kind == 0:
            logits = rng.integers(STATE_MIN, STATE_MAX + 1, n)
        elif kind == 1:
            logits = rng.integers(-3, 3, n)                 # many ties
        else:
            logits = rng.choice([STATE_MIN, STATE_MAX, 0], n)
        steps.append(logits.tolist())
    seeds = [0, 1, 0xDEADBEEF, 12345]

    async def testbench(ctx):
        for seed in seeds:
            ctx.set(dut.seed.valid, 1)
            ctx.set(dut.seed.payload, seed)
            await ctx.tick()
            ctx.set(dut.seed.valid, 0)
            ctx.set(dut.temperature, temperature)
            state = seed_state(seed)
            assert ctx.get(dut.state) == state
            for logits in steps:
                want, state = sample(logits, temperature, state)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                for k, v in enumerate(logits):
                    ctx.set(dut.i.valid, 1)
                    ctx.set(dut.i.payload, v)
                    await ctx.tick()
                    if k % 7 == 3:
                        ctx.set(dut.i.valid, 0)
                        await ctx.tick()
                ctx.set(dut.i.valid, 0)
                # The token includes the last value SAMPLER_LATENCY cycles after it went in.
                await ctx.tick().repeat(SAMPLER_LATENCY - 1)
                assert ctx.get(dut.token) == want, (seed, logits)
                assert ctx.get(dut.state) == state

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
