"""Quantisation-aware training: the float model run forward as the compiled core computes,
and fine-tuning from a checkpoint (``models.train --init ... --set qat_steps=N``)."""

import json

import pytest
import torch

from models import compile as compile_cmd
from models import train
from models.checkpoint import load_checkpoint, read_checkpoint, training_record
from models.compile import SHIPPED_CHECKPOINT, compile_model, quantise
from models.data import Vocab, load_text, split
from models.evaluate import float_loss, golden_loss
from models.lm import LMConfig, SpikingLM
from models.neurons import fake_quant


def test_fake_quant_rounds_forward_and_passes_gradients_straight_through():
    x = torch.tensor([0.26, -0.26, 0.375, 0.125, -0.375], requires_grad=True)
    y = fake_quant(x, 4.0)                       # grid 0.25; halves to even, as np.rint
    assert y.tolist() == [0.25, -0.25, 0.5, 0.0, -0.5]
    assert fake_quant(x, 4.0, half_up=True).tolist() == [0.25, -0.25, 0.5, 0.25, -0.25]
    (y * torch.arange(5.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_compiler_quantises_on_the_models_own_grids():
    """One definition of the integer grid: the compiled weights, thresholds and scales are
    what ``SpikingLM.quant_scales`` says, neuron by neuron."""
    torch.manual_seed(0)
    m = SpikingLM(LMConfig(vocab_size=6, hidden=(10, 5), recurrent=(False, True)).check())
    with torch.no_grad():
        m.weights["ff0"][:, 3] *= 40            # one neuron whose weights set its own scale
        m.out_bias.normal_()
    vocab = Vocab(list("abcdef"))
    net = quantise(m, vocab)
    scales = m.quant_scales()
    for l, pop in enumerate(net.populations):
        assert torch.equal(torch.as_tensor(pop.scale), scales[l])
    assert scales[0][3] < scales[0][2] / 10
    assert (torch.as_tensor(net.populations[0].theta)
            == torch.round(scales[0] * m.theta)).all()
    assert len(set(scales[2].tolist())) == 1     # the readout: one scale for every token


@pytest.fixture(scope="module")
def shipped():
    model, vocab, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    train_text, val = split(load_text(None))
    return model, vocab, train_text, val


def test_the_quantised_forward_is_the_golden_models_loss(shipped):
    """On the shipped model the quantised float forward scores what the golden model
    scores (it lacks only saturation and float32's rounding), and the plain float forward
    does not: quantisation-aware training optimises the number the board gets. (The shipped
    model was fine-tuned so: its plain float forward is the worse one.)"""
    model, vocab, train_text, val = shipped
    chars, streams = 6000, 8
    f = float_loss(model, torch.tensor(vocab.encode(val))[:chars], streams)["nats"]
    model.quantised = True
    try:
        fq = float_loss(model, torch.tensor(vocab.encode(val))[:chars], streams)["nats"]
    finally:
        model.quantised = False
    net = compile_model(model, vocab, 16, text=train_text)
    core_ids = torch.tensor(Vocab(net.vocab).encode(val))[:chars]
    g = golden_loss(net, 16, core_ids, streams)["nats"]
    # (On 6,000 characters a few flipped spikes move it by a few thousandths; on the whole
    # split the two differ by 0.0017 nats, the plain float model by 0.0082.)
    assert abs(fq - g) < 0.005, (f, fq, g)
    assert abs(f - g) > 2 * abs(fq - g), (f, fq, g)


def test_quantisation_aware_fine_tuning_from_a_checkpoint(tmp_path, capsys):
    base = tmp_path / "base"
    train.main(["--config", "tiny", "--out", str(base)])
    out = tmp_path / "qat"
    train.main(["--config", "tiny", "--out", str(out), "--init", str(base / "ckpt.pt"),
                "--set", "steps=6", "--set", "qat_steps=4", "--set", "eval_every=2",
                "--set", "warmup=0", "--json"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["step"] == 6
    ck = read_checkpoint(out / "ckpt.pt")
    assert ck["init"]["checkpoint"] == "ckpt.pt" and ck["init"]["step"] == 30
    assert ck["init"]["train"]["steps"] == 30
    vals = [h for h in ck["history"] if "val" in h]
    assert [h["step"] for h in vals] == [2, 4, 6]
    assert [h.get("quantised", False) for h in vals] == [False, True, True]
    # It started from the checkpoint's weights and masks, not from random ones.
    before, after = load_checkpoint(base / "ckpt.pt")[0], load_checkpoint(out / "ckpt.pt")[0]
    assert torch.equal(before.mask_ff0, after.mask_ff0) and before.mask_ff0.eq(0).any()
    fresh = SpikingLM(before.cfg)
    d_init = (after.weights["ff0"] - before.weights["ff0"]).abs().max()
    d_fresh = (after.weights["ff0"] - fresh.weights["ff0"]).abs().max()
    assert d_init < d_fresh / 5, (d_init, d_fresh)
    # Its record counts both runs, also in the checkpoint written beside an image.
    compile_cmd.main(["--checkpoint", str(out / "ckpt.pt"), "-o", str(tmp_path / "q.img"),
                      "--lanes", "2", "--with-checkpoint"])
    for ck in (read_checkpoint(out / "ckpt.pt"), read_checkpoint(tmp_path / "q.pt")):
        steps, minutes, text = training_record(ck)
        assert steps == 36 and minutes > 0
        assert text == "30 steps, then 6 more (4 of them quantisation-aware)"
    # Run again: it resumes (the init is not read again) and has nothing left to do.
    train.main(["--config", "tiny", "--out", str(out), "--set", "steps=6", "--set",
                "qat_steps=4", "--set", "eval_every=2", "--set", "warmup=0"])
    assert "resuming from" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--set", "qat_steps=31"], "qat_steps must be an integer in [0, steps=30]"),
    (["--set", "qat_steps=-1"], "qat_steps must be an integer in [0, steps=30]"),
    (["--init", "NOPE"], "--init"),
    (["--set", "hidden=[16]", "--init", "BASE"], "holds another model"),
])
def test_bad_fine_tuning_settings_are_one_line_errors(tmp_path, capsys, args, words):
    base = tmp_path / "base"
    if "BASE" in args:
        train.main(["--config", "tiny", "--out", str(base), "--set", "steps=1"])
        args = [str(base / "ckpt.pt") if a == "BASE" else a for a in args]
    args = [str(tmp_path / "missing.pt") if a == "NOPE" else a for a in args]
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "tiny", "--out", str(tmp_path / "r")] + args)
    assert str(e.value).startswith("error:") and words in str(e.value)
    assert "\n" not in str(e.value)
