"""models.textcnn: the quantised TextCNN in integers, its LAS and Lv networks, the host's
encoding, loss-less LAS (golden model == quantised ANN, sentence by sentence) and hostile
image metadata."""

import base64
import json
import zlib

import numpy as np
import pytest
import torch

from boards.ulx3s import core_config
from models import evaluate
from models import textcnn as tc
from models.mr import WordVocab, UNK
from spikestream.image import Image, image_bytes, parse_image, save_image
from spikestream.network import spike_input


def small_model(K=3, seed=0, filters=6, emb_dim=5, vocab=40):
    """A random quantised TextCNN, its clips calibrated, and random training sentences."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = tc.TextCNNConfig(emb_dim=emb_dim, filters=filters, act_bits=K)
    model = tc.TextCNN(cfg, vocab)
    with torch.no_grad():
        for conv in model.convs:
            conv.bias.uniform_(-0.1, 0.3)
        model.fc.weight.normal_()
    ids = [rng.integers(0, vocab, rng.integers(0, 14)).tolist() for _ in range(120)]
    labels = rng.integers(0, 2, len(ids))
    tc._calibrate(model, ids, labels, pct=90)
    model.quantised = True
    model.eval()
    with torch.no_grad():       # a bias that splits the sentences between the classes
        x, n, _ = next(tc._batches(ids, labels, len(ids)))
        logits = model(x, n)
        model.fc.bias += torch.tensor([0.0, -float((logits[:, 1] - logits[:, 0]).median())])
    return model, ids


def meta_net(m, conversion="las", T=1, vocab=40):
    words = WordVocab([UNK] + [f"w{i}" for i in range(1, vocab)])
    net = tc.las_network(m) if conversion == "las" else tc.lv_network(m, T)
    net.meta = tc.text_meta(m, words, conversion, T, {"fold": 0})
    return net


@pytest.mark.parametrize("K", [2, 3, 4])
def test_las_golden_equals_the_quantised_ann_on_every_sentence(K):
    model, ids = small_model(K, seed=K)
    m = tc.integer_model(model, ids)
    net = meta_net(m)
    decision, readout = tc.quantised_decisions(m, ids)
    g = tc.golden_run(Image(net, 4), tc.read_text_meta(net), ids, batch=37)
    assert np.array_equal(g["readout"], readout)          # every membrane, not only the class
    assert np.array_equal(g["decision"], decision)
    assert 0 < decision.sum() < len(ids)                  # both classes occur: a real test
    conv_codes = next(tc._code_batches(m, ids))
    assert conv_codes.max() == m.act_levels and (conv_codes == 0).any()


def test_the_integer_model_is_the_fake_quantised_model():
    """The quantised float model and its integer form agree on (almost) every pooled activation: the
    integer thresholds are exact, only half-way roundings of the bias may differ."""
    model, ids = small_model(4, seed=7)
    m = tc.integer_model(model, ids)
    with torch.no_grad():
        q = [model.features(x, n) for x, n, _ in tc._batches(ids, np.zeros(len(ids)), 500)][0]
    codes = next(tc._code_batches(m, ids))
    steps = (codes.lengths + m.pad_steps).double()
    s_a = torch.tensor(np.repeat(m.act_step, model.cfg.filters))
    pooled = codes.sum(1) * s_a / steps[:, None]
    off = ((pooled.float() - q).abs() > 1e-4).float().mean()
    assert off < 0.01, f"{off:.2%} of the pooled activations differ"


def test_las_network_structure():
    model, ids = small_model(3)
    m = tc.integer_model(model, ids)
    net = tc.las_network(m)
    E1, F = m.emb_dim + 1, model.cfg.filters
    assert [p.name for p in net.populations] == ["emb", "conv", "readout"]
    assert net.populations[0].level_bits == m.emb_bits and net.populations[1].level_bits == 3
    assert (net.populations[1].alpha == 0).all()           # memoryless: one code per word
    assert net.inputs[0].size == m.emb_bits * E1
    planes = net.projections[0]
    assert planes.src == spike_input(0) and planes.delay == 0
    assert planes.weights[2 * E1 + 1, 1] == 4 and planes.nonzero == m.emb_bits * E1
    convs = [p for p in net.projections if p.dst == 1]
    assert [p.delay for p in convs] == [0, 1, 2, 3, 4]
    # delay 3 and 4 reach only the filters of widths 4 and 5 (and 5)
    assert not convs[3].weights[:, :F].any() and not convs[4].weights[:, :2 * F].any()
    w5 = m.w[2]
    assert np.array_equal(convs[4].weights[:, 2 * F:], w5[:, :, 0].T)     # oldest word


def test_the_default_size_fits_the_85f_core():
    """The shipped shape (32-d embedding, 3 x 256 filters) fits the default 16-lane 85F core
    in both conversions (the check a board load makes)."""
    cfg = tc.TextCNNConfig()
    model = tc.TextCNN(cfg, 50)
    model.quantised = True
    rng = np.random.default_rng(0)
    m = tc.integer_model(model, [rng.integers(0, 50, 20).tolist() for _ in range(10)])
    config = core_config("85f")
    for net in (tc.las_network(m), tc.lv_network(m, 3)):
        config.check_image(Image(net, config.lanes))
    assert 100_000 < tc.las_network(m).nonzero_synapses <= config.lanes * config.syn_depth


def test_lv_network_and_its_sub_steps():
    model, ids = small_model(4)
    m = tc.integer_model(model, ids)
    net = tc.lv_network(m, 3)
    assert [p.delay for p in net.projections if p.dst == 0] == [0, 3, 6, 9, 12]
    assert net.populations[0].kind.name == "IF" and net.populations[0].level_bits == 1
    with pytest.raises(ValueError, match="substeps"):
        tc.lv_network(m, 4)                  # 4 x 4 = 16 > the core's 15 timesteps of delay
    net = meta_net(m, "lv", 2)
    g = tc.golden_run(Image(net, 4), tc.read_text_meta(net), ids[:20])
    assert np.array_equal(g["steps"], [2 * (len(s) + m.pad_steps) for s in ids[:20]])


@pytest.mark.parametrize("T", [1, 2, 3])
def test_the_pytorch_lv_snn_is_the_core(T):
    """LvSNN (what fine-tuning trains) gives the golden model's final readout, every
    membrane, on every sentence: as converted and after fine-tuning; and fine-tuning
    learns (labels that contradict every decision of the converted network are mostly
    met after a few epochs, through the surrogate gradient and the rounding)."""
    model, ids = small_model(4, seed=3)
    m = tc.integer_model(model, ids)
    net = meta_net(m, "lv", T)
    d0, r0 = tc.lv_decisions(tc.LvSNN(m, tc.lv_params(m, T)), ids)
    g = tc.golden_run(Image(net, 4), tc.read_text_meta(net), ids, batch=41)
    assert np.array_equal(g["readout"], r0) and np.array_equal(g["decision"], d0)
    y = 1 - d0
    p = tc.finetune_lv(m, T, ids, y, epochs=4, lr=1.0, log=lambda line: None)
    assert p.theta.tolist() == tc.lv_params(m, T).theta.tolist()     # thresholds kept
    assert np.abs(p.taps).max() <= 127 and not p.taps[3:, :, :m.w[0].shape[0]].any()
    d1, r1 = tc.lv_decisions(tc.LvSNN(m, p), ids)
    assert np.mean(d1 == y) >= 0.6, np.mean(d1 == y)
    net = tc.lv_network(m, T, p)
    net.meta = meta_net(m, "lv", T).meta
    g = tc.golden_run(Image(net, 4), tc.read_text_meta(net), ids, batch=41)
    assert np.array_equal(g["readout"], r1)


def test_encoding_bit_planes_and_rate_code():
    model, ids = small_model(4)
    m = tc.integer_model(model, ids)
    tm = tc.read_text_meta(meta_net(m))
    x = tc.encode_sentence(tm, [3, 0, 7])
    E1 = m.emb_dim + 1
    assert x.shape == (3 + m.pad_steps, m.emb_bits * E1) and set(np.unique(x)) <= {0, 1}
    codes = sum(x[:, j * E1:(j + 1) * E1].astype(int) << j for j in range(m.emb_bits))
    assert np.array_equal(codes[:3, :-1], m.codes[[3, 0, 7]])
    assert (codes[:3, -1] == m.emb_levels).all() and not codes[3:].any()
    c = np.arange(16)
    spikes = tc._rate_code(c, 15, 3)
    assert np.array_equal(spikes.sum(0), np.floor(c * 3 / 15 + 0.5))


def _tampered(net, **changes):
    net.meta = {**net.meta, "textcnn": {**net.meta["textcnn"], **changes}}
    return parse_image(image_bytes(net, 4)).net


@pytest.mark.parametrize("changes, problem", [
    ({"words": "<unk> good \x1b[2J"}, "cleaned words"),
    ({"words": "<unk> good good"}, "twice"),
    ({"words": "good"}, "cleaned words"),
    ({"codes": "!!!"}, "base64"),
    ({"codes": base64.b64encode(zlib.compress(b"\0" * 10)).decode()}, "codes holds"),
    ({"codes": base64.b64encode(zlib.compress(b"\0" * (1 << 26))).decode()}, "codes holds"),
    ({"conversion": "magic"}, "conversion"),
    ({"emb_bits": 9}, "emb_bits"),
    ({"substeps": "3"}, "substeps"),
])
def test_hostile_metadata_is_refused_in_one_line(changes, problem):
    model, ids = small_model(3)
    net = meta_net(tc.integer_model(model, ids))
    bad = _tampered(net, **changes)
    with pytest.raises(tc.TextMetaError, match=problem) as e:
        tc.read_text_meta(bad)
    assert "\n" not in str(e.value)


def test_codes_out_of_range_and_other_tasks_are_refused():
    model, ids = small_model(3)
    m = tc.integer_model(model, ids)
    net = meta_net(m)
    big = np.full_like(m.codes, 255)
    bad = _tampered(net, codes=base64.b64encode(zlib.compress(big.tobytes())).decode())
    with pytest.raises(tc.TextMetaError, match="exceed"):
        tc.read_text_meta(bad)
    net.meta = {"task": "lm"}
    with pytest.raises(tc.TextMetaError, match="not a sentence classifier"):
        tc.read_text_meta(net)


def test_evaluate_reports_a_classifier_image(tmp_path, capsys):
    """``python -m models.evaluate IMAGE --json`` on a classifier image: the keys the issue
    asks for, the golden accuracy on the image's test fold of the given data."""
    model, ids = small_model(3)
    m = tc.integer_model(model, ids)
    net = meta_net(m)
    net.meta["textcnn"].update(accuracy_float=0.5, accuracy_quantised=0.25, act_bits=3)
    path = tmp_path / "c.img"
    save_image(net, 4, path)
    rng = np.random.default_rng(1)
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    for f in (pos, neg):
        f.write_text("\n".join(" ".join(f"w{i}" for i in rng.integers(1, 40, 6))
                               for _ in range(15)) + "\n")
    result = evaluate.main(["--image", str(path), "--mr", str(pos), str(neg), "--json"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == result
    for key in ("task", "accuracy_float", "accuracy_quantised", "accuracy_golden",
                "timesteps_per_example", "synaptic_events_per_example", "cycles_per_example"):
        assert key in result, key
    assert result["task"] == tc.TASK and result["sentences"] == 3
    assert result["accuracy_quantised"] == 0.25 and result["timesteps_per_example"] == 6 + 4
    assert result["synaptic_events_per_example"] > 0 and result["cycles_per_example"] > 0
    with pytest.raises(SystemExit, match="error: "):
        evaluate.main(["--image", str(path), "--mr", str(pos), str(tmp_path / "none")])
