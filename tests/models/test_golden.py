"""models.golden: the integer core against the float model, the sampler, batching and reset."""

import math

import numpy as np
import pytest
import torch

from models import golden
from models.compile import quantise
from models.data import Vocab
from spikestream.board import SHIPPED_IMAGE
from spikestream.formats import DECAY_ONE, STATE_MAX, NeuronKind
from models.golden import GoldenCore
from spikestream.image import image_bytes, load_image, parse_image
from models.lm import LMConfig, SpikingLM
from spikestream.network import INPUT, Network, Projection, make_population
from spikestream.sampler import GUMBEL, sample, seed_state, temperature_word, xorshift32
from sim.netgen import random_network

SCALE = 64      # every weight below is k / SCALE with |k| <= 127, one of them 127 per neuron


# -- (a) golden core == float model when quantisation is exact -------------------------------

def _exact_draws(seed):
    """``k(lo, hi, *shape)``: random multiples of 1/SCALE in ``[lo, hi] / SCALE``."""
    g = torch.Generator().manual_seed(seed)
    return lambda lo, hi, *shape: torch.randint(lo, hi + 1, shape, generator=g).float() / SCALE


def _one_zero(n):
    """Logits whose sigmoids are exactly 1 and 0 in turn (decays of 1 and 0)."""
    return torch.tensor([200.0 if i % 2 else -200.0 for i in range(n)])


def _exact_first_layer(model, k):
    """Token -> layer 0 weights of 6 tokens x 8 neurons, each neuron with one 127/SCALE."""
    ff = k(-40, 90, 6, 8)
    ff[torch.arange(8) % 6, torch.arange(8)] = 127 / SCALE
    model.weights["ff0"].copy_(ff)
    model.weights["shift0"].copy_(k(-60, 40, 6, 8))


def _exact_model(kind, seed=0):
    """A small SpikingLM whose quantisation loses nothing.

    Every weight, bias and jump is a multiple of 1/64 of magnitude at most 127/64, and each
    hidden neuron (and the readout as a whole) has one incoming weight of exactly 127/64, so
    the compiler's scale min(127 / max|w|, 4096 / theta) is exactly 64 and every quantised
    value is the float value times 64, exactly. Decays are exactly 0 or 1 (alpha_logit and
    rho_logit of +-200 give sigmoid 1.0 and 0.0 in float32), so no decay multiply rounds;
    alpha = 1/2 would round in the integer form and differ from float. All sums are
    multiples of 1/64 far inside float32's exact range, so the float model is exact too.
    """
    cfg = LMConfig(vocab_size=6, hidden=(8,), kind=kind, recurrent=True, token_shift=True,
                   adaptation="relu")          # a jump of k/64 exactly (softplus would round)
    torch.manual_seed(seed)
    model = SpikingLM(cfg)
    k = _exact_draws(seed)
    with torch.no_grad():
        _exact_first_layer(model, k)
        rec = k(-48, 40, 8, 8)
        rec[:, :3] = 0          # uneven synaptic load, so the compiler reorders neurons
        model.weights["rec0"].copy_(rec)
        out = k(-127, 127, 8, 6)
        out[0, 0] = 127 / SCALE
        model.weights["out0"].copy_(out)
        model.weights["out_in"].copy_(k(-127, 127, 6, 6))
        model.out_bias.copy_(k(-64, 64, 6))
        model.bias[0].copy_(k(-16, 16, 8))
        model.alpha_logit[0].copy_(_one_zero(8))
        model.rho_logit[0].copy_(_one_zero(8).flip(0))
        model.jump[0].copy_(k(0, 40, 8))
    alpha, theta, rho, jump, _ = model.neuron_params(0)
    assert set(alpha.tolist()) <= {0.0, 1.0} and set(rho.tolist()) <= {0.0, 1.0}
    assert theta.tolist() == [1.0] * 8
    return model


@pytest.mark.parametrize("kind", ["LIF", "ALIF", "IF"])
def test_golden_matches_float_model(kind):
    model = _exact_model(kind)
    vocab = Vocab("abcdef")
    # Firing rates let the compiler balance lanes; it reorders neurons, so perm matters.
    rates = [np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4])]
    net = quantise(model, vocab, lanes=3, rates=rates)
    hidden, readout = net.populations
    perm = hidden.perm
    assert sorted(perm.tolist()) == list(range(8)) and perm.tolist() != list(range(8))
    assert hidden.scale.tolist() == [SCALE] * 8 and readout.scale.tolist() == [SCALE] * 6
    assert hidden.theta.tolist() == [SCALE] * 8
    assert set(hidden.alpha.tolist()) == ({DECAY_ONE} if kind == "IF" else {0, DECAY_ONE})

    T, B = 30, 2
    tokens = torch.randint(0, 6, (B, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _, (spikes,) = model(tokens, return_spikes=True)
    # The compiler relabels the vocabulary too (readout neuron i is the model's token
    # vperm[i], and so is input id i): the image's vocabulary says which character is which.
    vperm = torch.as_tensor(readout.perm)
    assert net.vocab == [vocab.chars[i] for i in readout.perm]
    core_id = torch.argsort(vperm)
    core = GoldenCore(net, lanes=3, batch=B)
    for t in range(T):
        r = core.step(core_id[tokens[:, t]])
        # Far from saturation, where the integer form is exactly the float one.
        assert int(r.v[0].abs().max()) < STATE_MAX and int(r.a[0].abs().max()) < STATE_MAX
        assert torch.equal(r.spikes[0], spikes[:, t, perm].bool()), f"step {t}"
        assert torch.equal(r.logits.double() / SCALE, logits[:, t][:, vperm].double()), f"step {t}"
    rate = spikes.mean().item()
    assert 0.1 < rate < 0.9


def _exact_two_layer_model(stacked, seed=0):
    """Like :func:`_exact_model`, with per-layer settings: layer 0 ALIF with a token shift,
    layer 1 LIF and recurrent, read out; stacked on layer 0 (which is then not read out) or
    beside it, hearing the token (both read out)."""
    cfg = LMConfig(vocab_size=6, hidden=(8, 5), kind=("ALIF", "LIF"), recurrent=(False, True),
                   token_shift=(True, False), readout=(not stacked, True),
                   stacked=(True, stacked), adaptation="relu", dense=("out_in",)).check()
    torch.manual_seed(seed)
    model = SpikingLM(cfg)
    assert [sp.name for sp in model.specs] == ["ff0", "shift0", "ff1", "rec1"] + (
        ["out1"] if stacked else ["out0", "out1"]) + ["out_in"]
    k = _exact_draws(seed)
    with torch.no_grad():
        _exact_first_layer(model, k)
        ff1 = k(-50, 60, 8 if stacked else 6, 5)
        ff1[torch.arange(5) + 1, torch.arange(5)] = 127 / SCALE
        model.weights["ff1"].copy_(ff1)
        model.weights["rec1"].copy_(k(-48, 40, 5, 5))
        out = k(-127, 127, 5, 6)
        out[0, 0] = 127 / SCALE
        model.weights["out1"].copy_(out)
        if not stacked:
            model.weights["out0"].copy_(k(-127, 127, 8, 6))
        model.weights["out_in"].copy_(k(-127, 127, 6, 6))
        model.out_bias.copy_(k(-64, 64, 6))
        for l, n in enumerate(cfg.hidden):
            model.bias[l].copy_(k(-16, 16, n))
            model.alpha_logit[l].copy_(_one_zero(n))
            model.rho_logit[l].copy_(_one_zero(n).flip(0))
        model.jump[0].copy_(k(0, 40, 8))
    assert model.neuron_params(1)[3].tolist() == [0.0] * 5        # LIF: no adaptation
    return model


@pytest.mark.parametrize("stacked", [True, False])
def test_golden_matches_a_two_layer_model_with_per_layer_settings(stacked):
    model = _exact_two_layer_model(stacked)
    vocab = Vocab("abcdef")
    rates = [np.linspace(0.9, 0.1, 8), np.linspace(0.2, 0.8, 5)]
    net = quantise(model, vocab, lanes=2, rates=rates)
    assert [p.kind.name for p in net.populations] == ["ALIF", "LIF", "READOUT"]
    assert [(pr.src, pr.dst, pr.delay) for pr in net.projections] == [
        (INPUT, 0, 0), (INPUT, 0, 1), (0 if stacked else INPUT, 1, 0), (1, 1, 1)] + (
        [] if stacked else [(0, 2, 0)]) + [(1, 2, 0), (INPUT, 2, 0)]
    for pop in net.populations:
        assert pop.scale.tolist() == [SCALE] * pop.size
    T, B = 40, 2
    tokens = torch.randint(0, 6, (B, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _, spikes = model(tokens, return_spikes=True)
    vperm = torch.as_tensor(net.populations[2].perm)
    core_id = torch.argsort(vperm)
    core = GoldenCore(net, lanes=2, batch=B)
    for t in range(T):
        r = core.step(core_id[tokens[:, t]])
        for l in range(2):
            perm = net.populations[l].perm
            assert torch.equal(r.spikes[l], spikes[l][:, t, perm].bool()), f"layer {l} step {t}"
        assert torch.equal(r.logits.double() / SCALE, logits[:, t][:, vperm].double()), f"step {t}"
    for l in range(2):
        assert 0.05 < spikes[l].mean().item() < 0.95, l


# -- (b) the sampler -------------------------------------------------------------------------

def _ref_xorshift32(x):
    """Marsaglia's xorshift32 with shifts (13, 17, 5), on 32-bit words."""
    m = 0xFFFFFFFF
    x = (x ^ (x << 13)) & m
    x = x ^ (x >> 17)
    return (x ^ (x << 5)) & m


def _ref_gumbel(u):
    p = (u + 0.5) / 1024
    return math.floor(256 * -math.log(-math.log(p)) + 0.5)


def _ref_sample(logits, temp, state):
    scores = []
    for v in logits:
        state = _ref_xorshift32(state)
        scores.append(v if temp == 0 else v * 256 + temp * _ref_gumbel(state >> 22))
    return scores.index(max(scores)), state


def test_xorshift32_and_gumbel_table():
    # 1 ^ 1<<13 = 8193; 8193 >> 17 = 0; 8193 ^ 8193<<5 = 8193 ^ 262176 = 270369.
    assert xorshift32(1) == _ref_xorshift32(1) == 270369
    x = y = 0xDEADBEEF
    for _ in range(1000):
        x, y = xorshift32(x), _ref_xorshift32(y)
        assert x == y and 0 < x < 1 << 32
    assert len(GUMBEL) == 1024
    assert list(GUMBEL) == [_ref_gumbel(u) for u in range(1024)]
    # u = 0: p = 0.5/1024, 256 * -ln(-ln p) = -520.03; u = 1023: 1951.84; u = 511: 93.47.
    assert (GUMBEL[0], GUMBEL[511], GUMBEL[1023]) == (-520, 93, 1952)
    assert seed_state(0) != 0 and seed_state(5) == 5 and seed_state(1 << 32) == seed_state(0)
    assert seed_state(-1) == 0xFFFFFFFF


def test_sample_matches_reference():
    g = np.random.default_rng(0)
    state = seed_state(12345)
    for _ in range(300):
        n = int(g.integers(1, 20))
        logits = g.integers(-3000, 3000, n).tolist()
        temp = int(g.choice([0, 1, 7, 64, 1000, 65535]))
        expected = _ref_sample(logits, temp, state)
        assert sample(logits, temp, state) == expected
        state = expected[1]


def test_temperature_zero_is_argmax_lowest_index():
    state = seed_state(3)
    token, after = sample([3, 7, 1, 7, -2], 0, state)
    assert token == 1
    for _ in range(5):           # the generator still advances once per readout neuron
        state = xorshift32(state)
    assert after == state
    assert sample([-5, -5, -5], 0, 9)[0] == 0
    assert temperature_word(0.0, 64.0) == 0 and temperature_word(1.5, 64.0) == 96
    assert temperature_word(1e9, 64.0) == 65535
    with pytest.raises(ValueError):
        temperature_word(-1.0, 64.0)


def _readout_net(w_tok, bias=0, delay=0):
    """A network that is just a readout driven by the token input."""
    w_tok = np.asarray(w_tok, dtype=np.int64)
    v = w_tok.shape[0]
    # A small spiking layer beside it, so the network has the usual two populations.
    h = make_population("h", NeuronKind.IF, 2, alpha=DECAY_ONE, theta=3)
    ro = make_population("readout", NeuronKind.READOUT, v, theta=0, bias=bias)
    return Network(vocab=[chr(97 + i) for i in range(v)], populations=[h, ro], readout=1,
                   projections=[Projection(INPUT, 0, 0, np.ones((v, 2), np.int64)),
                                Projection(INPUT, 1, delay, w_tok)])


def test_golden_argmax_ties():
    # Token 0 gives logits [1, 5, 0, 5]: a tie between 1 and 3.
    net = _readout_net([[1, 5, 0, 5], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    rng = []
    for sample_tokens in (True, False):
        core = GoldenCore(net, lanes=2)
        r = core.step([0], sample_tokens=sample_tokens)
        assert r.logits.tolist() == [[1, 5, 0, 5]] and r.token.tolist() == [1]
        # All-zero logits: token 0.
        assert core.step([1], sample_tokens=sample_tokens).token.tolist() == [0]
        rng.append(core.get_state().rng)
    # Skipping the sampler still advances the generator once per readout neuron per step.
    state = seed_state(0)
    for _ in range(2 * 4):
        state = xorshift32(state)
    assert rng == [[state], [state]]


def test_generation_is_deterministic_per_seed():
    net = _exact_net()
    core = GoldenCore(net, lanes=2)
    word = temperature_word(1.0, float(net.populations[net.readout].scale[0]))
    assert word == SCALE
    a = core.generate([0, 1, 2], 50, temperature_word=word, seed=7)
    b = core.generate([0, 1, 2], 50, temperature_word=word, seed=7)
    c = core.generate([0, 1, 2], 50, temperature_word=word, seed=8)
    assert a == b and a != c and len(a) == 50
    assert len(set(a)) > 1
    # Temperature 0: each token is the argmax of the previous step's logits, and the seed
    # does not matter.
    greedy = core.generate([0, 1, 2], 20, temperature_word=0, seed=7)
    assert greedy == core.generate([0, 1, 2], 20, temperature_word=0, seed=99)
    core.reset()
    for t in [0, 1]:
        core.step([t])
    r = core.step([2])
    for nxt in greedy:
        assert nxt == int(r.logits[0].argmax())
        r = core.step([nxt])


def test_step_sampling_matches_reference_sampler():
    net = _exact_net()
    core = GoldenCore(net, lanes=2)
    core.seed(42)
    core.set_temperature_word(100)
    state = seed_state(42)
    for t in [0, 3, 5, 1, 1, 2, 4, 0]:
        r = core.step([t])
        tok, state = _ref_sample(r.logits[0].tolist(), 100, state)
        assert int(r.token[0]) == tok


def _exact_net():
    return quantise(_exact_model("ALIF"), Vocab("abcdef"), lanes=2)


# -- (c) batch independence ------------------------------------------------------------------

def test_batch_equals_separate_streams():
    net = _exact_net()
    B, T = 3, 25
    tokens = torch.randint(0, 6, (B, T), generator=torch.Generator().manual_seed(5))
    batch = GoldenCore(net, lanes=2, batch=B)
    batch.seed(10)
    batch.set_temperature_word(80)
    singles = [GoldenCore(net, lanes=2) for _ in range(B)]
    for b, core in enumerate(singles):
        core.seed(10 + b)               # stream b of a batch is seeded with seed + b
        core.set_temperature_word(80)
    for t in range(T):
        rb = batch.step(tokens[:, t])
        for b, core in enumerate(singles):
            rs = core.step(tokens[b:b + 1, t])
            for x, y in zip(rb.spikes + rb.v + rb.a, rs.spikes + rs.v + rs.a):
                assert torch.equal(x[b], y[0])
            for name in ("logits", "token", "cycles", "route_cycles", "events"):
                assert torch.equal(getattr(rb, name)[b], getattr(rs, name)[0]), (t, b, name)


# -- (d) reset and delays --------------------------------------------------------------------

def test_reset_clears_state():
    net = _exact_net()
    core = GoldenCore(net, lanes=2)
    seq = [0, 4, 2, 2, 5, 1, 3, 0, 1, 5]
    first = [core.step([t]) for t in seq]
    assert any(int(r.v[0].abs().sum()) for r in first)
    core.reset()
    st = core.get_state()
    for x in st.v + st.a + st.s:
        assert not x.any()
    assert st.history and not any(x.any() for h in st.history.values() for x in h)
    core.seed(0)
    again = [core.step([t]) for t in seq]
    for r1, r2 in zip(first, again):
        for x, y in zip(r1.spikes + r1.v + r1.a, r2.spikes + r2.v + r2.a):
            assert torch.equal(x, y)
        assert torch.equal(r1.logits, r2.logits) and torch.equal(r1.token, r2.token)
        assert torch.equal(r1.cycles, r2.cycles)


def test_delay_one_input_sees_previous_token():
    eye = np.eye(4, dtype=np.int64) * np.array([1, 2, 3, 4])
    core = GoldenCore(_readout_net(eye, delay=1), lanes=2)
    r = core.step([2])
    assert r.logits.tolist() == [[0, 0, 0, 0]]          # nothing before the first token
    assert int(r.events[0]) == 2                         # only input -> h (2 synapses)
    r = core.step([0])
    assert r.logits.tolist() == [[0, 0, 3, 0]]          # token 2, one step late
    r = core.step([3])
    assert r.logits.tolist() == [[1, 0, 0, 0]]
    core.reset()
    r = core.step([1])
    assert r.logits.tolist() == [[0, 0, 0, 0]]          # reset forgets the previous token
    # With delay 0 the same projection sees the current token.
    core = GoldenCore(_readout_net(eye, delay=0), lanes=2)
    assert core.step([2]).logits.tolist() == [[0, 0, 3, 0]]


def test_delay_one_recurrence_sees_previous_spikes():
    # h: two IF neurons, theta 3; token 0 drives neuron 0 to spike; h -> h (delay 1) makes a
    # spike of neuron 0 drive neuron 1 by 5 one step later; h -> readout copies h's spikes.
    h = make_population("h", NeuronKind.IF, 2, alpha=DECAY_ONE, theta=3)
    ro = make_population("readout", NeuronKind.READOUT, 2, theta=0)
    net = Network(vocab=["x", "y"], populations=[h, ro], readout=1, projections=[
        Projection(INPUT, 0, 0, np.array([[3, 0], [0, 0]])),
        Projection(0, 0, 1, np.array([[0, 5], [0, 0]])),
        Projection(0, 1, 0, np.array([[1, 0], [0, 1]]))])
    core = GoldenCore(net, lanes=1)
    assert core.step([0]).spikes[0].tolist() == [[True, False]]
    r = core.step([1])
    assert r.spikes[0].tolist() == [[False, True]] and r.logits.tolist() == [[0, 1]]
    # v of neuron 1: 5 - 3 = 2 after its spike; nothing more arrives.
    assert r.v[0].tolist() == [[0, 2]]
    assert core.step([1]).spikes[0].tolist() == [[False, False]]


# -- sparse and dense routing -----------------------------------------------------------------

def _run(net, lanes, tokens, dense_fill, monkeypatch, batch=4):
    """Every step's spikes, membranes, logits, cycles and events, with projections routed
    densely or sparsely as ``dense_fill`` (models.golden.DENSE_FILL) decides."""
    monkeypatch.setattr(golden, "DENSE_FILL", dense_fill)
    core = GoldenCore(net, lanes=lanes, batch=batch)
    assert {s.dense for s in core.synapses} == {dense_fill == 0.0}
    out = []
    for t in tokens:
        r = core.step(t)
        out.append([x.tolist() for x in (*r.spikes, *r.v, *r.a, r.logits, r.token, r.cycles,
                                         r.route_cycles, r.events)])
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_routing_equals_dense_routing(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    net = random_network(rng, [NeuronKind.ALIF, NeuronKind.LIF, NeuronKind.IF], vocab=7,
                         sizes=(3, 40))
    tokens = rng.integers(0, 7, (15, 4))
    dense = _run(net, 3, tokens, 0.0, monkeypatch)
    assert _run(net, 3, tokens, 2.0, monkeypatch) == dense
    # and a loaded (sparse) copy of the network is the same network
    loaded = parse_image(image_bytes(net, 3)).net
    assert _run(loaded, 3, tokens, 2.0, monkeypatch) == dense


def test_sparse_routing_equals_dense_routing_on_the_shipped_model(monkeypatch):
    img = load_image(SHIPPED_IMAGE)
    tokens = np.random.default_rng(5).integers(0, img.net.vocab_size, (12, 2))
    dense = _run(img.net, img.lanes, tokens, 0.0, monkeypatch, batch=2)
    assert _run(img.net, img.lanes, tokens, 2.0, monkeypatch, batch=2) == dense
    # some spikes must have been routed, or the comparison shows nothing
    assert any(any(any(row) for row in step[0]) for step in dense)


def test_the_shipped_model_routes_densely():
    # its projections are about half full: a dense matrix product is the faster way
    img = load_image(SHIPPED_IMAGE)
    assert all(s.dense for s in GoldenCore(img.net, img.lanes).synapses)


def test_state_can_be_taken_and_restored():
    net = _exact_net()
    core = GoldenCore(net, lanes=2)
    core.seed(7)
    for t in [0, 4, 2, 2, 5]:
        core.step([t])
    saved = core.get_state()
    later = [core.step([t]) for t in [1, 3, 0, 5]]
    core.set_state(saved)
    again = [core.step([t]) for t in [1, 3, 0, 5]]
    for r1, r2 in zip(later, again):
        for x, y in zip(r1.spikes + r1.v + r1.a, r2.spikes + r2.v + r2.a):
            assert torch.equal(x, y)
        assert torch.equal(r1.token, r2.token)
    assert not torch.equal(later[0].v[0], saved.v[0]) or not torch.equal(later[0].a[0], saved.a[0])
    wrong = core.get_state()
    wrong.v = wrong.v[:-1]
    with pytest.raises(ValueError, match="state.v"):
        core.set_state(wrong)
    wrong = core.get_state()
    wrong.rng = []
    with pytest.raises(ValueError, match="rng"):
        core.set_state(wrong)
