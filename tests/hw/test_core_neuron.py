"""hw.core.neuron.NeuronUnit against models.neurons.int_step, every kind, one per cycle.

Inputs are random over the whole legal ranges plus the saturation corners (extreme states,
thresholds, jumps, biases and accumulators, decays 0 and 256); some cycles carry no input.
Every output must appear NEURON_LATENCY cycles after its input and equal int_step.
"""

import itertools

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from hw.core.neuron import NeuronUnit
from spikestream.timing import NEURON_LATENCY
from spikestream.memory_map import CoreConfig
from spikestream.formats import (ACC_MAX, ACC_MIN, DECAY_ONE, STATE_MAX, STATE_MIN, NeuronKind)
from models.neurons import int_step

CONFIG = CoreConfig(lanes=1, neurons_per_lane=4, syn_depth=4, ptr_depth=4, max_pops=1,
                    max_projs=1, max_vocab=4, spike_depth=4)
FIELDS = ("v", "a", "acc", "alpha", "theta", "rho", "jump", "bias")


def _cases(rng, n):
    corner = {
        "v": [STATE_MIN, STATE_MIN + 1, -1, 0, 1, STATE_MAX],
        "a": [STATE_MIN, -1, 0, 1, STATE_MAX],
        "acc": [ACC_MIN, -(1 << 16), STATE_MIN - 1, 0, STATE_MAX + 1, ACC_MAX],
        "alpha": [0, 1, 127, 128, 255, DECAY_ONE],
        "theta": [STATE_MIN, -1, 0, 1, STATE_MAX],
        "rho": [0, 1, 128, DECAY_ONE],
        "jump": [STATE_MIN, -1, 0, 1, STATE_MAX],
        "bias": [STATE_MIN, 0, STATE_MAX],
    }
    ranges = {
        "v": (STATE_MIN, STATE_MAX), "a": (STATE_MIN, STATE_MAX), "acc": (ACC_MIN, ACC_MAX),
        "alpha": (0, DECAY_ONE), "theta": (STATE_MIN, STATE_MAX), "rho": (0, DECAY_ONE),
        "jump": (STATE_MIN, STATE_MAX), "bias": (STATE_MIN, STATE_MAX),
    }
    out = {}
    for f in FIELDS:
        lo, hi = ranges[f]
        # Mostly small values (where spikes happen), some full-range, some corners.
        small = rng.integers(max(lo, -600), min(hi, 600) + 1, n)
        full = rng.integers(lo, hi + 1, n)
        pick = rng.choice(corner[f], n)
        mode = rng.integers(0, 3, n)
        out[f] = np.where(mode == 0, small, np.where(mode == 1, full, pick))
    return out


def _simulate(kind, cases, gaps):
    dut = NeuronUnit(CONFIG, tag_shape=16)
    n = len(cases["v"])
    got = {}

    async def driver(ctx):
        for k in range(n):
            if gaps[k]:
                ctx.set(dut.i.valid, 0)
                await ctx.tick().repeat(gaps[k])
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {
                "kind": int(kind),
                "params": {f: int(cases[f][k]) for f in ("alpha", "theta", "rho", "jump", "bias")},
                "state": {"v": int(cases["v"][k]), "a": int(cases["a"][k])},
                "acc": int(cases["acc"][k]),
                "tag": k,
            })
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(NEURON_LATENCY + 2)

    async def monitor(ctx):
        history = []
        async for _, _, i_valid, i_tag, o_valid, o in ctx.tick().sample(
                dut.i.valid, dut.i.payload.tag, dut.o.valid, dut.o.payload):
            history.append(i_tag if i_valid else None)
            if o_valid:
                # The output now is the input NEURON_LATENCY edges ago.
                assert history[-1 - NEURON_LATENCY] == o.tag
                got[o.tag] = (o.spike, o.state.v, o.state.a)
            else:
                assert len(history) <= NEURON_LATENCY or history[-1 - NEURON_LATENCY] is None

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(driver)
    sim.run()
    return got


@pytest.mark.parametrize("kind", list(NeuronKind))
def test_neuron_matches_int_step(kind):
    rng = np.random.default_rng(int(kind) + 1)
    n = 600
    cases = _cases(rng, n)
    # Append every combination of the extreme states, accumulators and thresholds.
    extremes = list(itertools.product([STATE_MIN, STATE_MAX], [STATE_MIN, 0, STATE_MAX],
                                      [ACC_MIN, ACC_MAX], [0, DECAY_ONE], [STATE_MIN, STATE_MAX]))
    for v, a, acc, decay, lim in extremes:
        for f, x in zip(FIELDS, (v, a, acc, decay, lim, decay, lim, -lim - 1 if lim < 0 else lim)):
            cases[f] = np.append(cases[f], x)
    n = len(cases["v"])
    gaps = (rng.integers(1, 3, n) * (rng.random(n) < 0.2)).tolist()     # idle cycles before
    got = _simulate(kind, cases, gaps)
    assert sorted(got) == list(range(n))
    if kind != NeuronKind.READOUT:
        assert 50 < sum(x[0] for x in got.values()) < n - 50     # both outcomes well covered
    t = {f: torch.as_tensor(cases[f]) for f in FIELDS}
    s, v, a = int_step(kind, t["v"], t["a"], t["acc"], t["alpha"], t["theta"], t["rho"],
                       t["jump"], t["bias"])
    for k in range(n):
        want = (int(s[k]), int(v[k]), int(a[k]))
        assert got[k] == want, f"case {k}: { {f: int(cases[f][k]) for f in FIELDS} }: " \
                               f"got {got[k]}, int_step {want}"
