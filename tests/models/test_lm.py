"""models.lm: per-layer settings, the adaptation's parametrisation, dense projections."""

import pytest
import torch

from models import train
from models.checkpoint import load_checkpoint
from models.lm import PER_LAYER, LMConfig, SpikingLM
from spikestream.board import SHIPPED_IMAGE

SHIPPED_CHECKPOINT = SHIPPED_IMAGE.with_suffix(".pt")


def _names(**kw):
    return [sp.name for sp in SpikingLM(LMConfig(vocab_size=5, **kw).check()).specs]


def test_per_layer_settings_choose_the_projections():
    assert _names(hidden=(4,), recurrent=False) == ["ff0", "shift0", "out0", "out_in"]
    assert _names(hidden=(4, 3)) == ["ff0", "shift0", "rec0", "ff1", "shift1", "rec1",
                                      "out0", "out1", "out_in"]
    assert _names(hidden=(4, 3), recurrent=(False, True), token_shift=(True, False),
                  readout=(False, True)) == ["ff0", "shift0", "ff1", "rec1", "out1", "out_in"]
    m = SpikingLM(LMConfig(vocab_size=5, hidden=(4, 3), kind=("IF", "ALIF")).check())
    assert [k.name for k in m.kinds] == ["IF", "ALIF"]
    assert not m.jump[0].requires_grad and m.jump[1].requires_grad


@pytest.mark.parametrize("kw, words", [
    (dict(recurrent=(True,)), "recurrent must be true or false, or a list of 2"),
    (dict(readout=(True, False)), "readout must include hidden layer 1"),
    (dict(kind=("ALIF", "GRU")), "kind must be LIF, ALIF or IF"),
    (dict(token_shift=(1, 0)), "token_shift must be true or false"),
    (dict(adaptation="exp"), "adaptation must be softplus or relu"),
    (dict(dense=("out0", "nope")), "dense must list projections of this model"),
])
def test_bad_per_layer_settings_are_one_line_errors(kw, words):
    with pytest.raises(ValueError, match=words):
        LMConfig(vocab_size=5, hidden=(4, 3), **kw).check()


def test_a_config_round_trips_and_old_checkpoints_keep_relu():
    cfg = LMConfig(vocab_size=5, hidden=(4, 3), kind=("IF", "ALIF"), readout=(False, True),
                   dense=("out_in",)).check()
    d = cfg.to_dict()
    assert d["readout"] == [False, True] and d["dense"] == ["out_in"]
    assert LMConfig.from_dict(d) == cfg
    old = dict(d, kind="ALIF", readout=True)
    del old["adaptation"], old["dense"]
    assert LMConfig.from_dict(old).adaptation == "relu"
    model = SpikingLM(LMConfig.from_dict(dict(old, hidden=[4])).check())
    with torch.no_grad():
        model.jump[0].copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
    assert model.neuron_params(0)[3].tolist() == [0.0, 0.0, 0.5, 2.0]


def test_a_softplus_adaptation_cannot_die():
    """A jump trained below zero keeps a positive value and a gradient (relu's has none)."""
    for adaptation, alive in (("softplus", True), ("relu", False)):
        m = SpikingLM(LMConfig(vocab_size=5, hidden=(4,), adaptation=adaptation).check())
        with torch.no_grad():
            m.jump[0].fill_(-3.0)
        jump = m.neuron_params(0)[3]
        jump.sum().backward()
        assert (jump > 0).all().item() == alive
        assert (m.jump[0].grad != 0).all().item() == alive
    fresh = SpikingLM(LMConfig(vocab_size=5, hidden=(4,)).check())
    assert torch.allclose(fresh.neuron_params(0)[3], torch.full((4,), 0.2))


def test_pruning_keeps_dense_projections_dense():
    m = SpikingLM(LMConfig(vocab_size=5, hidden=(40,), dense=("out_in",)).check())
    m.prune_(0.75)
    assert m.mask_out_in.eq(1).all()
    for name in ("ff0", "shift0", "rec0", "out0"):
        mask = getattr(m, f"mask_{name}")
        assert abs(mask.mean().item() - 0.25) < 0.02, name


def test_per_layer_settings_from_the_command_line(tmp_path):
    out = tmp_path / "r"
    train.main(["--config", "tiny", "--out", str(out), "--set", "steps=2", "--set",
                "eval_every=2", "--set", "hidden=[8,4]", "--set", "recurrent=[false,true]",
                "--set", "readout=[false,true]", "--set", "kind=[\"IF\",\"ALIF\"]",
                "--set", "dense=out_in"])
    model = load_checkpoint(out / "ckpt.pt")[0]
    assert [sp.name for sp in model.specs] == ["ff0", "shift0", "ff1", "shift1", "rec1",
                                               "out1", "out_in"]
    assert [k.name for k in model.kinds] == ["IF", "ALIF"]
    assert model.mask_out_in.eq(1).all() and model.mask_ff0.eq(0).any()


def test_a_layer_beside_the_one_below_hears_the_token():
    cfg = LMConfig(vocab_size=5, hidden=(6, 4), stacked=(True, False), recurrent=(False, True))
    m = SpikingLM(cfg.check())
    assert [(sp.name, sp.src, sp.dst) for sp in m.specs] == [
        ("ff0", -1, 0), ("shift0", -1, 0), ("ff1", -1, 1), ("shift1", -1, 1), ("rec1", 1, 1),
        ("out0", 0, 2), ("out1", 1, 2), ("out_in", -1, 2)]
    assert m.weights["ff1"].shape == (5, 4)
    tokens = torch.randint(0, 5, (2, 7), generator=torch.Generator().manual_seed(0))
    logits, _, (s0, s1) = m(tokens, return_spikes=True)
    # Layer 1 does not depend on layer 0: silencing layer 0 changes nothing in it.
    with torch.no_grad():
        m.weights["ff0"].zero_()
        m.weights["shift0"].zero_()
        m.bias[0].fill_(-100.0)
    _, _, (t0, t1) = m(tokens, return_spikes=True)
    assert t0.sum() == 0 and torch.equal(s1, t1)
    with pytest.raises(ValueError, match="readout must include hidden layer 0"):
        LMConfig(vocab_size=5, hidden=(6, 4), stacked=(True, False),
                 readout=(False, True)).check()


def test_the_shipped_checkpoint_is_the_shakespeare_config():
    """``spikestream train --config shakespeare`` trains the shipped model's architecture."""
    model = load_checkpoint(SHIPPED_CHECKPOINT)[0]
    want = train.CONFIGS["shakespeare"][0]
    got = model.cfg
    assert got.hidden == want.hidden and got.dense == want.dense
    assert got.adaptation == want.adaptation == "softplus"
    for key in PER_LAYER:
        assert [got.layer(key, l) for l in range(len(got.hidden))] == \
            [want.layer(key, l) for l in range(len(want.hidden))], key
