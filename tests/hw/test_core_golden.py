"""hw.core.Core against the golden model (models/golden.py), timestep by timestep.

Small random networks (1 to 4 lanes, two or three populations of every neuron kind,
recurrent delay-1 projections, empty rows, saturating weights and biases) are loaded
through the write port; after every STEP the sampled token, the cycle count (both the one
the core reports and the one measured on its ports), the spike total and every neuron's
``v`` and ``a`` (read back through the read port) must equal ``GoldenCore`` run with the
core's own timing. General networks (sim.netgen's ``general``, ``delays`` and ``sensor``:
spike inputs written before every STEP, delays up to 15, multi-level spikes, no readout)
are checked the same way, and their outputs as the host reads them.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.core import Core
from hw.core.simhost import command, read_outputs, read_state, write_words
from spikestream.timing import COMMAND_LATENCY
from spikestream.memory_map import CoreConfig, Op, image_writes, input_writes, settings_writes
from spikestream.formats import NeuronKind
from models.golden import GoldenCore
from spikestream.image import Image
from spikestream.network import lane_layout
from sim.core_check import golden_outputs
from sim.netgen import random_network, recipe_network, stimulus


def run_against_golden(net, lanes, tokens, *, temperature=0, seed=0, reset_at=(), spikes=None,
                       config=None):
    """``tokens`` (and per step the spike inputs' vectors, ``spikes``) through a core built
    for ``config`` (default: the smallest for the network) and the golden model."""
    run_in_sequence([(net, tokens, spikes)], lanes, temperature=temperature, seed=seed,
                    reset_at=reset_at, config=config)


def run_in_sequence(runs, lanes, *, temperature=0, seed=0, reset_at=(), config=None):
    """Each ``(net, tokens, spikes)`` of ``runs`` in turn on one core (loaded through the
    write port, then RESET), against a fresh golden model each."""
    images = [Image(net=net, lanes=lanes) for net, _, _ in runs]
    config = config or CoreConfig.for_image(images[0])
    core = Core(config)

    async def testbench(ctx):
        for image, (net, tokens, spikes) in zip(images, runs):
            await check_run(ctx, core, image, tokens, spikes, temperature, seed, reset_at)

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


async def check_run(ctx, core, image, tokens, spikes, temperature, seed, reset_at):
    net, lanes, config = image.net, image.lanes, core.config
    golden = GoldenCore(net, lanes, timing=core.timing)
    golden.set_temperature_word(temperature)
    golden.seed(seed)
    lay = lane_layout(net, lanes)
    await write_words(ctx, core, image_writes(image, config) +
                      settings_writes(temperature_word=temperature, seed=seed))
    out = await command(ctx, core, Op.RESET)
    assert not out.error
    for t, tok in enumerate(tokens):
        if t in reset_at:
            await command(ctx, core, Op.RESET)
            golden.reset()
        given = spikes[t] if spikes is not None else []
        if any(x.any() for x in given) or t % 2:
            await write_words(ctx, core, input_writes(image, config, given))
        # (else nothing is written: no spikes, whatever the input's entry held before)
        ref = golden.step([tok] if net.has_token_input else None, spikes=given)
        out = await command(ctx, core, Op.STEP, tok)
        where = f"step {t} (token {tok})"
        assert not out.error, where
        assert out.cycles == out.latency - COMMAND_LATENCY == int(ref.cycles[0]), \
            f"{where}: cycles {out.cycles} / measured {out.latency}, golden {int(ref.cycles[0])}"
        assert out.token == int(ref.token[0]), f"{where}: token {out.token}, golden {int(ref.token[0])}"
        assert out.spikes == sum(int(s.sum()) for s in ref.spikes), f"{where}: spike total"
        for i, pop in enumerate(net.populations):
            v, a = await read_state(ctx, core, lay.pop_base[i], pop.size)
            assert v == ref.v[i][0].tolist(), f"{where}: {pop.name}.v {v} != {ref.v[i][0].tolist()}"
            assert a == ref.a[i][0].tolist(), f"{where}: {pop.name}.a {a} != {ref.a[i][0].tolist()}"
        got, want = await read_outputs(ctx, core, image), golden_outputs(ref, net)
        assert got == want, f"{where}: outputs {got} != {want}"


KINDS = [NeuronKind.LIF, NeuronKind.ALIF, NeuronKind.IF]


@pytest.mark.parametrize("lanes, seed", [(1, 1), (2, 2), (3, 3), (4, 4)])
def test_random_networks(lanes, seed):
    rng = np.random.default_rng(seed)
    kinds = [KINDS[(seed + k) % 3] for k in range(int(rng.integers(1, 3)))]
    net = random_network(rng, kinds)
    tokens = rng.integers(0, net.vocab_size, 6).tolist()
    run_against_golden(net, lanes, tokens)


def test_temperature_sampling_and_reset():
    rng = np.random.default_rng(11)
    net = random_network(rng, [NeuronKind.ALIF, NeuronKind.LIF])
    tokens = rng.integers(0, net.vocab_size, 6).tolist()
    run_against_golden(net, 2, tokens, temperature=300, seed=12345, reset_at=(3,))


def test_reset_forgets_the_last_timesteps_spikes():
    # RESET zeroes the spike table: after it, a delay-1 (recurrent) projection must route
    # nothing from the timestep before the reset, whose spike counts are still in the table
    # (this network fails here if CLEAR skips the table; the others above do not).
    rng = np.random.default_rng(5)
    net = random_network(rng, [NeuronKind.IF, NeuronKind.LIF])
    tokens = rng.integers(0, net.vocab_size, 7).tolist()
    run_against_golden(net, 2, tokens, reset_at=(2, 3, 5))


@pytest.mark.parametrize("recipe, lanes, seed", [("general", 1, 1), ("general", 3, 2),
                                                 ("delays", 2, 3), ("sensor", 3, 4)])
def test_general_networks(recipe, lanes, seed):
    net = recipe_network(recipe, lanes, seed)
    steps = stimulus(net, seed, 9)
    spikes = [sp for _, sp in steps]
    for t in (2, 4):                   # without any spikes (nothing written for them)
        spikes[t] = [0 * x for x in spikes[t]]
    run_against_golden(net, lanes, [tok for tok, _ in steps], spikes=spikes, reset_at=(6,))


def test_networks_in_sequence():
    # A network's words leave the core's history (the token ring, the sources' and
    # projections' entries) where the next network's words and a RESET start it afresh:
    # here a network with inputs, delays and 20 steps, then one whose first step routes
    # the token of that very step (delay 0), then the first again.
    lanes = 2
    first, second = recipe_network("delays", lanes, 7), recipe_network("mixed", lanes, 8)
    steps = stimulus(first, 7, 20)
    tokens = np.random.default_rng(8).integers(0, second.vocab_size, 4).tolist()
    assert any(pr.src == -1 and pr.delay == 0 for pr in second.projections)
    config = CoreConfig.for_image(Image(net=first, lanes=lanes), max_vocab=16, max_pops=8,
                                  max_projs=32, neurons_per_lane=64, syn_depth=2048,
                                  ptr_depth=1024, spike_depth=64)
    run_in_sequence([(first, [t for t, _ in steps], [sp for _, sp in steps]),
                     (second, tokens, None),
                     (first, [t for t, _ in steps[:5]], [sp for _, sp in steps[:5]])],
                    lanes, config=config)
