"""Seeded random networks for checking the core against the golden model.

:func:`random_network` is the small mixed network of the amaranth.sim tests: a few hidden
populations of the given kinds, random projections (delay 0 and 1, recurrent, empty rows,
saturating parameters in some populations). :func:`recipe_network` builds the networks the
cocotb tests run, each aimed at a corner of the core, from a recipe name, a lane count and
a seed:

``mixed``
    :func:`random_network` with two or three hidden populations.
``deep``
    Four hidden populations in a delay-0 chain, every kind, with recurrent, backward and
    self projections of delay 1 and the previous token (token shift).
``extremes``
    A large population that always fires (every neuron, every step) driving dense rows of
    +127 and -128, so that the accumulator leaves 16 bits in both directions and the input
    current saturates at both ends; populations whose membrane saturates high and low,
    whose adaptation saturates high and low, and one that never fires.
``rows``
    Long rows: dense rows (a whole lane's share of a large target population), rows
    whose synapses all lie in one lane, single-synapse and empty rows, routed from a
    population that always fires, so the spike buffer and segment queue fill and drain.
``general``
    A random general network (:func:`general_network`): every neuron kind and reset mode,
    multi-level spikes, delays up to :data:`MAX_TEST_DELAY` (recurrence through any delay
    of 1 or more), spike inputs, a token input or not, a readout or not, output
    populations.
``delays``
    :func:`general_network` with a token input, a readout and long delays: chains and
    loops through delays up to :data:`MAX_TEST_DELAY`, from the token and spike inputs too.
``sensor``
    :func:`general_network` without a token input or readout: spike inputs only, several
    outputs (one of them non-spiking), mostly multi-level spikes (the first two
    populations' of 4 and 3 bits, reaching their top values).

Every network is checked (``Network.check``) and is a pure function of its arguments;
:func:`stimulus` gives a network's inputs, timestep by timestep.
"""

import numpy as np

from spikestream.formats import (DECAY_ONE, STATE_MAX, STATE_MIN, WEIGHT_MAX, WEIGHT_MIN,
                                 NeuronKind, ResetMode)
from spikestream.network import INPUT, Network, Projection, make_population, spike_input

__all__ = ["random_network", "general_network", "example_network", "MAX_TEST_DELAY", "RECIPES", "recipe_network",
           "stimulus"]

SPIKING = [NeuronKind.LIF, NeuronKind.ALIF, NeuronKind.IF]


def _vocab(n):
    return [chr(97 + k) for k in range(n)]          # "a", "b", ...: n distinct tokens


def random_network(rng, kinds, vocab=5, sizes=(1, 9)):
    """A small random network: hidden populations of ``kinds``, then the readout."""
    pops = []
    for i, kind in enumerate(kinds):
        n = int(rng.integers(*sizes, endpoint=True))
        corner = rng.random() < 0.3
        pops.append(make_population(
            f"h{i}", kind, n,
            alpha=DECAY_ONE if kind == NeuronKind.IF else rng.integers(0, DECAY_ONE + 1, n),
            theta=(rng.integers(-20, 400, n) if not corner
                   else rng.choice([STATE_MIN, -1, 0, 1, STATE_MAX], n)),
            rho=rng.integers(0, DECAY_ONE + 1, n),
            jump=(rng.integers(-300, 300, n) if not corner
                  else rng.choice([STATE_MIN, STATE_MAX], n)),
            bias=(rng.integers(-50, 120, n) if not corner
                  else rng.choice([STATE_MIN, STATE_MAX, 0], n))))
    pops.append(make_population("readout", NeuronKind.READOUT, vocab,
                                alpha=rng.integers(0, DECAY_ONE + 1, vocab),
                                bias=rng.integers(-30, 30, vocab)))

    def size_of(s):
        return vocab if s == INPUT else pops[s].size

    projs = []
    for dst in range(len(pops)):
        sources = [(INPUT, 0), (INPUT, 1)] + [(s, 0) for s in range(dst)] + \
                  [(s, 1) for s in range(len(pops))]
        picked = [sources[k] for k in rng.permutation(len(sources))[:int(rng.integers(1, 4))]]
        for src, delay in picked:
            shape = (size_of(src), pops[dst].size)
            density = rng.choice([0.2, 0.5, 0.9])
            big = rng.random() < 0.25
            w = rng.integers(-127 if big else -40, 128 if big else 60, shape)
            w = w * (rng.random(shape) < density)
            w[rng.random(shape[0]) < 0.3] = 0          # some rows entirely empty
            projs.append(Projection(src, dst, delay, w.astype(np.int64)))
    return Network(vocab=_vocab(vocab), populations=pops, projections=projs,
                   readout=len(pops) - 1).check()


def _population(rng, name, kind, n, **fixed):
    """A population of random, mostly firing parameters; ``fixed`` overrides any of them."""
    params = dict(
        alpha=DECAY_ONE if kind == NeuronKind.IF else rng.integers(120, DECAY_ONE + 1, n),
        theta=rng.integers(20, 300, n), rho=rng.integers(0, DECAY_ONE + 1, n),
        jump=rng.integers(-50, 200, n), bias=rng.integers(-40, 80, n))
    params.update(fixed)
    return make_population(name, kind, n, **params)


def _weights(rng, shape, lo=-60, hi=90, density=0.5):
    w = rng.integers(lo, hi, shape) * (rng.random(shape) < density)
    return w.astype(np.int64)


def _mixed(rng, lanes):
    kinds = [SPIKING[int(k)] for k in rng.integers(0, 3, int(rng.integers(2, 4)))]
    return random_network(rng, kinds, vocab=int(rng.integers(3, 12)),
                          sizes=(1, max(9, 3 * lanes)))


def _deep(rng, lanes):
    vocab = int(rng.integers(4, 10))
    kinds = [NeuronKind.LIF, NeuronKind.ALIF, NeuronKind.IF, NeuronKind.ALIF]
    sizes = [int(rng.integers(1, 2 * lanes + 6)) for _ in kinds]
    pops = [_population(rng, f"d{i}", k, n) for i, (k, n) in enumerate(zip(kinds, sizes))]
    pops.append(_population(rng, "readout", NeuronKind.READOUT, vocab,
                            bias=rng.integers(-20, 20, vocab)))
    R = len(pops) - 1
    size = [p.size for p in pops]
    src_size = lambda s: vocab if s == INPUT else size[s]
    edges = [
        (INPUT, 0, 0), (INPUT, 0, 1), (0, 0, 1), (3, 0, 1),       # token shift, self, backward
        (0, 1, 0), (1, 1, 1), (2, 1, 1),                           # chain, self, forward d1
        (INPUT, 2, 0), (1, 2, 0), (0, 2, 0),                       # skip connection
        (2, 3, 0), (3, 3, 1), (R, 3, 1),                           # the readout, delayed
        (3, R, 0), (1, R, 0), (R, R, 1), (INPUT, R, 1),
    ]
    projs = [Projection(s, d, dl, _weights(rng, (src_size(s), size[d]), -70, 110,
                                           float(rng.choice([0.3, 0.7, 1.0]))))
             for s, d, dl in edges]
    return Network(vocab=_vocab(vocab), populations=pops, projections=projs,
                   readout=R).check()


def _extremes(rng, lanes):
    vocab = int(rng.integers(3, 8))
    big = 300                  # 300 * 127 > 2**15: the accumulator leaves 16 bits
    n = max(3, lanes + 1)
    pops = [
        # fires every step: the threshold is the lowest state there is
        _population(rng, "all", NeuronKind.LIF, big, theta=STATE_MIN, jump=0),
        # +127 from every one of them, bias at the top: current and membrane saturate high
        _population(rng, "high", NeuronKind.IF, n, bias=STATE_MAX,
                    theta=rng.choice([STATE_MAX, 1000], n), jump=rng.integers(-5, 5, n)),
        # -128 from all, bias at the bottom: saturate low and never fire
        _population(rng, "low", NeuronKind.ALIF, n, bias=STATE_MIN, theta=STATE_MAX,
                    jump=STATE_MAX, rho=DECAY_ONE),
        # adaptation pushed to both ends (no decay, jumps of the extreme values)
        _population(rng, "adapt", NeuronKind.ALIF, 2 * n, theta=rng.integers(-200, 200, 2 * n),
                    rho=DECAY_ONE, jump=np.where(np.arange(2 * n) % 2, STATE_MAX, STATE_MIN),
                    bias=rng.integers(0, 400, 2 * n)),
        # saturating readout membranes, both signs
        _population(rng, "readout", NeuronKind.READOUT, vocab, alpha=DECAY_ONE,
                    bias=np.where(np.arange(vocab) % 2, STATE_MAX, STATE_MIN)),
    ]
    size = [p.size for p in pops]
    full = lambda shape, w: np.full(shape, w, dtype=np.int64)
    projs = [
        Projection(INPUT, 0, 0, _weights(rng, (vocab, big))),
        Projection(0, 1, 0, full((big, n), WEIGHT_MAX)),
        Projection(1, 1, 1, _weights(rng, (n, n))),
        Projection(0, 2, 0, full((big, n), WEIGHT_MIN)),
        Projection(INPUT, 3, 0, _weights(rng, (vocab, 2 * n), 0, 128, 1.0)),
        Projection(3, 3, 1, _weights(rng, (2 * n, 2 * n), -128, 128, 0.5)),
        Projection(3, 4, 0, _weights(rng, (2 * n, vocab))),
    ]
    return Network(vocab=_vocab(vocab), populations=pops, projections=projs,
                   readout=len(pops) - 1).check()


def _rows(rng, lanes):
    vocab = int(rng.integers(lanes + 1, lanes + 9))    # more tokens than lanes
    src = 40                    # always fires: more spikes than the segment queue holds
    dst = max(48, 3 * lanes)    # a lane's share of it is longer than the segment queue
    pops = [
        _population(rng, "src", NeuronKind.IF, src, theta=STATE_MIN, jump=0),
        _population(rng, "dst", NeuronKind.ALIF, dst, theta=rng.integers(200, 2000, dst)),
        _population(rng, "readout", NeuronKind.READOUT, vocab, bias=rng.integers(-9, 9, vocab)),
    ]
    w = np.zeros((src, dst), dtype=np.int64)
    for row in range(src):
        style = row % 5
        if style == 0:                                  # dense: every lane's whole share
            w[row] = rng.integers(1, 40, dst) * rng.choice([-1, 1], dst)
        elif style == 1 and row % 2:                    # all in one lane
            lane = int(rng.integers(0, lanes))
            w[row, lane::lanes] = rng.integers(-30, 50, len(range(lane, dst, lanes))) | 1
        elif style == 1:            # every other neuron of one lane: targets of one parity,
            lane = int(rng.integers(0, lanes))          # a long tail (pads at one lane)
            w[row, lane::2 * lanes] = rng.integers(-30, 50, len(range(lane, dst, 2 * lanes))) | 1
        elif style == 2:                                # one synapse
            w[row, int(rng.integers(0, dst))] = int(rng.integers(-60, 60)) | 1
        elif style == 3:                                # random, half full
            w[row] = _weights(rng, (dst,), -40, 60, 0.5)
        # style 4: empty
    order = rng.permutation(src)                        # long and short rows interleaved
    projs = [
        Projection(INPUT, 0, 0, _weights(rng, (vocab, src))),
        Projection(0, 1, 0, w[order]),
        Projection(INPUT, 1, 1, _weights(rng, (vocab, dst), -30, 60, 0.3)),
        Projection(1, 1, 1, _weights(rng, (dst, dst), -20, 20, 0.1)),
        Projection(1, 2, 0, _weights(rng, (dst, vocab), -50, 50, 0.6)),
        Projection(0, 2, 1, _weights(rng, (src, vocab), -50, 50, 0.2)),
    ]
    return Network(vocab=_vocab(vocab), populations=pops, projections=projs,
                   readout=len(pops) - 1).check()


MAX_TEST_DELAY = 15
"""Longest delay of the general recipes: the default build's ``max_delay``."""

SPIKING_KINDS = [NeuronKind.LIF, NeuronKind.ALIF, NeuronKind.IF, NeuronKind.CUBA_LIF]
QUIET_KINDS = [NeuronKind.READOUT, NeuronKind.CUBA_LI]
RESETS = [ResetMode.ZERO, ResetMode.SUBTRACT, ResetMode.SUBTRACT_NEXT]


def _general_population(rng, name, kind, n, levels, output):
    """A population of ``kind`` with random parameters that keep it active: multi-level
    ones (``levels`` > 1) get small thresholds and large currents so that high values
    occur; a third of the binary ones get the kind's own reset, the rest any."""
    spiking = kind not in QUIET_KINDS
    reset = None
    if spiking:
        choices = RESETS if levels == 1 else RESETS[:2]
        reset = choices[int(rng.integers(0, len(choices)))] if rng.random() < 0.7 else None
        if levels > 1 and reset is None:
            reset = ResetMode.SUBTRACT if kind != NeuronKind.LIF and \
                kind != NeuronKind.CUBA_LIF else ResetMode.ZERO
    if levels > 1:
        theta = rng.integers(1, 25, n)
        bias = rng.integers(-10, 200, n)
    else:
        theta = rng.integers(1 if kind == NeuronKind.CUBA_LIF else -20, 300, n)
        bias = rng.integers(-50, 150, n)
    corner = rng.random() < 0.2
    if corner:                        # saturation at both ends of v and a
        bias = rng.choice([STATE_MIN, STATE_MAX, 0, 500], n)
    return make_population(
        name, kind, n,
        alpha=DECAY_ONE if kind == NeuronKind.IF or rng.random() < 0.15
        else rng.integers(0, DECAY_ONE + 1, n),
        theta=theta, rho=rng.integers(0, DECAY_ONE + 1, n),
        jump=(rng.integers(0, 60, n) if levels > 1       # theta + a >= 1: jump >= 0
              else rng.integers(-300, 300, n) if not corner
              else rng.choice([STATE_MIN, STATE_MAX], n)),
        bias=bias, reset=reset, level_bits=levels if spiking else 1, output=output)


def general_network(rng, lanes, *, token=None, readout=None, inputs=None, pops=None,
                    max_delay=MAX_TEST_DELAY, graded=0.4, long_delays=0.3, quiet_output=False):
    """A random general network for ``lanes`` lanes. ``token`` and ``readout`` (booleans)
    and ``inputs``, ``pops`` (counts) are drawn when ``None``; a share ``graded`` of the
    spiking populations is multi-level (2 to 4 bits), a share ``long_delays`` of the
    projections has a delay of 2 to ``max_delay`` (the rest 0 or 1). With
    ``quiet_output`` the last population (before any readout) is a non-spiking output."""
    token = bool(rng.random() < 0.5) if token is None else token
    readout = bool(rng.random() < 0.6) if readout is None else readout
    n_inputs = int(rng.integers(0 if token else 1, 4)) if inputs is None else inputs
    n_pops = int(rng.integers(2, 5)) if pops is None else pops
    vocab = int(rng.integers(2, lanes + 6)) if token or readout else 0
    big = max(9, 2 * lanes + 3)
    specs = [(f"in{k}", int(rng.integers(1, big + 1))) for k in range(n_inputs)]
    populations = []
    for i in range(n_pops):
        quiet = quiet_output and i == n_pops - 1
        kind = SPIKING_KINDS[int(rng.integers(0, 4))] if i == 0 or (rng.random() < 0.8
                                                                     and not quiet) \
            else QUIET_KINDS[int(rng.integers(0, 2))]
        levels = int(rng.integers(2, 5)) if kind in (NeuronKind.LIF, NeuronKind.IF,
                                                     NeuronKind.CUBA_LIF) \
            and rng.random() < graded else 1
        populations.append(_general_population(rng, f"p{i}", kind, int(rng.integers(1, big + 1)),
                                               levels, output=quiet or rng.random() < 0.4))
        if i < 2 and quiet_output and not quiet:
            # Multi-level populations (4 and 3 bits) driven to their top values.
            n = populations[i].size
            populations[i] = make_population(
                f"p{i}", NeuronKind.IF, n, alpha=DECAY_ONE, theta=rng.integers(1, 5, n),
                bias=rng.integers(60, 300, n), reset=ResetMode.SUBTRACT, level_bits=4 - i,
                output=True)
    if readout:
        kind = QUIET_KINDS[int(rng.integers(0, 2))]
        populations.append(_general_population(rng, "readout", kind, vocab, 1,
                                               output=bool(rng.random() < 0.5)))
    P = len(populations)
    size = [p.size for p in populations]
    spiking = [p.spiking for p in populations]

    def delay():
        if rng.random() < long_delays:
            return int(rng.integers(2, max_delay + 1))
        return int(rng.integers(0, 2))

    projs = []
    for dst in range(P):
        sources = ([INPUT] if token else []) + [spike_input(k) for k in range(n_inputs)]
        sources += [s for s in range(P) if spiking[s]]
        picked = {sources[k] for k in rng.permutation(len(sources))[:int(rng.integers(1, 4))]}
        if dst == 0:                 # every input is read (the token by the first population)
            picked |= {INPUT} if token else set()
        if dst == min(P - 1, 1):
            picked |= {spike_input(k) for k in range(n_inputs)}
        for src in sorted(picked, reverse=True):
            d = delay()
            if src >= dst and d == 0:
                d = int(rng.integers(1, max_delay + 1))     # recurrence through a delay
            n_src = vocab if src == INPUT else specs[-2 - src][1] if src < 0 else size[src]
            shape = (n_src, size[dst])
            big_w = rng.random() < 0.25
            w = rng.integers(-127 if big_w else -40, 128 if big_w else 70, shape)
            w = w * (rng.random(shape) < rng.choice([0.2, 0.5, 0.9]))
            w[rng.random(shape[0]) < 0.2] = 0
            projs.append(Projection(src, dst, d, w.astype(np.int64)))
    return Network(vocab=_vocab(vocab), populations=populations, projections=projs,
                   readout=P - 1 if readout else None, inputs=specs).check()


def _general(rng, lanes):
    return general_network(rng, lanes)


def _delays(rng, lanes):
    return general_network(rng, lanes, token=True, readout=True, inputs=int(rng.integers(1, 3)),
                           pops=int(rng.integers(3, 5)), long_delays=0.7, graded=0.3)


def _sensor(rng, lanes):
    net = general_network(rng, lanes, token=False, readout=False,
                          inputs=int(rng.integers(1, 4)), pops=int(rng.integers(3, 6)),
                          graded=0.8, quiet_output=True)
    for p in net.populations[-2:]:
        p.output = True
    return net.check()


RECIPES = {"mixed": _mixed, "deep": _deep, "extremes": _extremes, "rows": _rows,
           "general": _general, "delays": _delays, "sensor": _sensor}


def recipe_network(recipe, lanes, seed):
    """The network of ``recipe`` (a key of :data:`RECIPES`) for ``lanes`` lanes and ``seed``."""
    return RECIPES[recipe](np.random.default_rng([seed, lanes, list(RECIPES).index(recipe)]),
                           lanes)


def stimulus(net, seed, steps):
    """``steps`` timesteps of inputs for ``net``: per step ``(token, spikes)``, the token (0
    without a token input) and one 0/1 vector per spike input (mostly sparse, sometimes
    empty or full)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for _ in range(steps):
        token = int(rng.integers(0, net.vocab_size)) if net.has_token_input else 0
        spikes = []
        for spec in net.inputs:
            density = rng.choice([0.0, 0.1, 0.3, 0.6, 1.0], p=[0.1, 0.3, 0.3, 0.2, 0.1])
            spikes.append((rng.random(spec.size) < density).astype(np.int64))
        out.append((token, spikes))
    return out


def example_network(seed=1):
    """A small hand-shaped general network for end-to-end tests: two spike inputs (8 and 4
    neurons), four populations (LIF with SUBTRACT_NEXT, a 3-bit multi-level IF, a CUBA LIF
    and a readout), delays 0..3, recurrence, three outputs and three class labels."""
    rng = np.random.default_rng(seed)
    h = make_population("h", NeuronKind.LIF, 12, alpha=200, theta=40,
                        reset=ResetMode.SUBTRACT_NEXT, output=True, perm=rng.permutation(12))
    g = make_population("g", NeuronKind.IF, 6, alpha=DECAY_ONE, theta=30, level_bits=3,
                        output=True)
    c = make_population("c", NeuronKind.CUBA_LIF, 5, alpha=220, rho=180, theta=50, output=True)
    ro = make_population("ro", NeuronKind.READOUT, 3, alpha=DECAY_ONE, scale=4.0)
    w = lambda lo, hi, shape: rng.integers(lo, hi, shape)
    projs = [Projection(spike_input(0), 0, 0, w(-20, 60, (8, 12))),
             Projection(0, 0, 3, w(-30, 30, (12, 12))),
             Projection(spike_input(1), 1, 2, w(0, 40, (4, 6))),
             Projection(0, 1, 0, w(-10, 30, (12, 6))),
             Projection(1, 2, 1, w(-10, 30, (6, 5))),
             Projection(2, 3, 0, w(-10, 30, (5, 3)))]
    return Network(vocab=["neg", "pos", "mid"], populations=[h, g, c, ro], projections=projs,
                   readout=3, inputs=[("a", 8), ("b", 4)]).check()
