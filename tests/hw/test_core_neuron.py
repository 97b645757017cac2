"""hw.core.neuron.NeuronUnit against models.neurons.int_update, one update per cycle.

Every combination of kind, reset mode and spike levels ``K`` that the network checker
accepts runs, interleaved input by input (the population's fields may change every cycle),
on random inputs over the whole legal ranges plus the saturation corners (extreme states,
thresholds, jumps, biases and accumulators, decays 0, 256 and 511, thresholds <= 0 for
binary spikes) and membranes exactly at ``k * thr`` and one either side; some cycles carry no
input. Every output must appear NEURON_LATENCY cycles after its input and equal int_update.
"""

import itertools

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from hw.core.neuron import NeuronUnit
from models.neurons import int_update
from spikestream.formats import (ACC_MAX, ACC_MIN, DECAY_BITS, DECAY_ONE, MAX_LEVEL_BITS,
                                 STATE_MAX, STATE_MIN, NeuronKind, ResetMode)
from spikestream.memory_map import CoreConfig
from spikestream.network import Network, NetworkError, make_population
from spikestream.timing import NEURON_LATENCY

CONFIG = CoreConfig(lanes=1, neurons_per_lane=4, syn_depth=4, ptr_depth=4, max_pops=1,
                    max_projs=1, max_vocab=4, spike_depth=4)
FIELDS = ("v", "a", "s", "acc", "alpha", "theta", "rho", "jump", "bias")
PARAMS = ("alpha", "theta", "rho", "jump", "bias")
RANGES = {
    "v": (STATE_MIN, STATE_MAX), "a": (STATE_MIN, STATE_MAX), "s": (0, 1),
    "acc": (ACC_MIN, ACC_MAX), "alpha": (0, DECAY_ONE), "theta": (STATE_MIN, STATE_MAX),
    "rho": (0, DECAY_ONE), "jump": (STATE_MIN, STATE_MAX), "bias": (STATE_MIN, STATE_MAX),
}
# The checker keeps decays within 0..DECAY_ONE; the unit computes int_update for every value
# its parameter field holds.
DECAY_FIELD_MAX = (1 << DECAY_BITS) - 1
CORNERS = {
    "v": [STATE_MIN, STATE_MIN + 1, -1, 0, 1, STATE_MAX],
    "a": [STATE_MIN, -1, 0, 1, STATE_MAX],
    "s": [0, 1],
    "acc": [ACC_MIN, -(1 << 16), STATE_MIN - 1, 0, STATE_MAX + 1, ACC_MAX],
    "alpha": [0, 1, 127, 128, 255, DECAY_ONE, DECAY_FIELD_MAX],
    "theta": [STATE_MIN, -1, 0, 1, STATE_MAX],
    "rho": [0, 1, 128, DECAY_ONE, DECAY_FIELD_MAX],
    "jump": [STATE_MIN, -1, 0, 1, STATE_MAX],
    "bias": [STATE_MIN, 0, STATE_MAX],
}
# Thresholds of a multi-level population (the checker wants theta >= 1): small ones, where
# every level is reached, and those whose multiples land on the 16-bit limits.
LEVEL_THETAS = [1, 2, 3, 7, 2047, 2048, 4681, 4682, 10922, 16383, 16384, STATE_MAX]


def _mode_ok(kind, reset, level_bits):
    pop = make_population("p", kind, 1, theta=1, reset=reset, level_bits=level_bits)
    try:
        Network._check_mode(pop)
    except NetworkError:
        return False
    return True


MODES = [m for m in itertools.product(NeuronKind, ResetMode, range(1, MAX_LEVEL_BITS + 1))
         if _mode_ok(*m)]


def _random(rng, n, level_bits):
    out = {}
    for f in FIELDS:
        lo, hi = RANGES[f]
        corner = CORNERS[f]
        if f == "theta" and level_bits > 1:
            lo, corner = 1, LEVEL_THETAS
        # Mostly small values (where spikes happen), some full-range, some corners.
        small = rng.integers(max(lo, -600), min(hi, 600) + 1, n)
        full = rng.integers(lo, hi + 1, n)
        pick = rng.choice(corner, n)
        mode = rng.integers(0, 3, n)
        out[f] = np.where(mode == 0, small, np.where(mode == 1, full, pick))
    return out


def _extremes(rng, level_bits):
    """Every combination of extreme states, accumulators, decays and limits."""
    rows = []
    thetas = [1, STATE_MAX] if level_bits > 1 else [STATE_MIN, STATE_MAX]
    for v, a, acc, decay, lim, theta in itertools.product(
            [STATE_MIN, STATE_MAX], [STATE_MIN, 0, STATE_MAX], [ACC_MIN, ACC_MAX],
            [0, DECAY_ONE], [STATE_MIN, STATE_MAX], thetas):
        rows.append(dict(v=v, a=a, s=int(rng.integers(0, 2)), acc=acc, alpha=decay,
                         theta=theta, rho=decay, jump=lim, bias=-lim - 1 if lim < 0 else lim))
    return rows


def _multiples(rng, level_bits):
    """v1 exactly at k * thr and one either side (no leak, a = 0: thr = theta, I = acc +
    bias), for every level k and one above the top; for binary spikes also thr <= 0."""
    rows = []
    thetas = [t for t in LEVEL_THETAS if t * (1 << level_bits) <= STATE_MAX]
    thetas += [] if level_bits > 1 else [-5, 0, STATE_MIN, STATE_MAX]
    for theta in thetas:
        for k in range((1 << level_bits) + 1) if theta > 0 else [1]:
            for delta in (-1, 0, 1):
                target = k * theta + delta
                if not STATE_MIN <= target <= STATE_MAX:
                    continue
                bias = int(rng.integers(-300, 301))
                rows.append(dict(v=k * theta, a=0, s=0, acc=delta - bias, alpha=DECAY_ONE,
                                 theta=theta, rho=0, jump=int(rng.integers(-50, 51)),
                                 bias=bias))
    return rows


def _cases(rng, n):
    """Inputs for every mode, shuffled together: a list of (mode, {field: value})."""
    cases = []
    for mode in MODES:
        k = mode[2]
        r = _random(rng, n, k)
        rows = [{f: int(r[f][j]) for f in FIELDS} for j in range(n)]
        rows += _extremes(rng, k) + _multiples(rng, k)
        cases += [(mode, row) for row in rows]
    order = rng.permutation(len(cases))
    return [cases[j] for j in order]


def _simulate(cases, gaps):
    dut = NeuronUnit(CONFIG, tag_shape=16)
    got = {}

    async def driver(ctx):
        for j, ((kind, reset, level_bits), row) in enumerate(cases):
            if gaps[j]:
                ctx.set(dut.i.valid, 0)
                await ctx.tick().repeat(gaps[j])
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {
                "pop": {"kind": int(kind), "reset": int(reset), "level_bits": level_bits},
                "params": {f: row[f] for f in PARAMS},
                "state": {"v": row["v"], "a": row["a"], "s": row["s"]},
                "acc": row["acc"],
                "tag": j,
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
                got[o.tag] = (o.q, o.state.v, o.state.a, o.state.s)
            else:
                assert len(history) <= NEURON_LATENCY or history[-1 - NEURON_LATENCY] is None

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(driver)
    sim.run()
    return got


def _reference(cases):
    """int_update of every case, population mode by population mode."""
    want = {}
    for mode in MODES:
        idx = [j for j, (m, _) in enumerate(cases) if m == mode]
        t = {f: torch.tensor([cases[j][1][f] for j in idx]) for f in FIELDS}
        q, v, a, s = int_update(*mode, t["v"], t["a"], t["s"], t["acc"],
                                *(t[f] for f in PARAMS))
        for k, j in enumerate(idx):
            want[j] = (int(q[k]), int(v[k]), int(a[k]), int(s[k]))
    return want


def test_modes_cover_the_design():
    """The checker's combinations are the ones the design names (32 of them)."""
    spiking = [k for k in NeuronKind if k not in (NeuronKind.READOUT, NeuronKind.CUBA_LI)]
    assert len(MODES) == 2 + 3 * len(spiking) + 2 * 3 * (MAX_LEVEL_BITS - 1)
    assert all(k == 1 for _, r, k in MODES if r == ResetMode.SUBTRACT_NEXT)


@pytest.mark.parametrize("seed", [1, 2])
def test_neuron_matches_int_update(seed):
    rng = np.random.default_rng(seed)
    cases = _cases(rng, 120)
    n = len(cases)
    gaps = (rng.integers(1, 3, n) * (rng.random(n) < 0.1)).tolist()     # idle cycles before
    got = _simulate(cases, gaps)
    assert sorted(got) == list(range(n))
    want = _reference(cases)
    bad = [j for j in range(n) if got[j] != want[j]]
    assert not bad, "\n".join(
        f"{cases[j][0]} {cases[j][1]}: got {got[j]}, int_update {want[j]}" for j in bad[:10])
    # The cases reach what they are meant to: every level of every spiking mode, spikes
    # with thresholds <= 0, SUBTRACT_NEXT paying for a spike, saturated subtractions.
    for mode in MODES:
        qs = {want[j][0] for j, (m, _) in enumerate(cases) if m == mode}
        spikes = mode[1] != ResetMode.NONE
        assert qs == (set(range(1 << mode[2])) if spikes else {0}), (mode, qs)
    assert any(want[j][0] and r["theta"] <= 0 and r["a"] == 0
               for j, (m, r) in enumerate(cases))
    assert any(m[1] == ResetMode.SUBTRACT_NEXT and r["s"] and want[j][0]
               for j, (m, r) in enumerate(cases))
    assert any(m[1] == ResetMode.SUBTRACT and want[j][0] and want[j][1] == STATE_MAX
               for j, (m, r) in enumerate(cases))
