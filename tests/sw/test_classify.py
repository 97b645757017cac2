"""sw.classify: ``spikestream classify`` on the shipped TextCNN images — the golden backend
against ``spikestream run``'s own path and against the host procedure on the golden board;
the simulated SoC (a tiny trained classifier on a small core; the shipped images on the
default 16-lane SoC with ``SPIKESTREAM_SLOW_SIM=1``); hostile inputs."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import textcnn as tc
from models.mr import build_vocab, fold_indices, load_mr, tokenize
from models.textcnn import encode_sentence, read_text_meta
from sim.runner import available_simulators
from spikestream import cli
from spikestream.image import Image, load_image, save_image
from spikestream.memory_map import CoreConfig
from sw import classify
from sw import run as sw_run
from sw.client import Client
from sw.transport import GoldenTransport

PRETRAINED = classify.__file__.rsplit("/", 2)[0] + "/models/pretrained"
LAS = f"{PRETRAINED}/mr-las-k4.img"
LV = f"{PRETRAINED}/mr-lv.img"
SENTENCES = ["a gripping, funny and moving film", "dull, tedious and far too long",
             "the zorblaxian flimflam"]


@pytest.fixture(scope="module")
def las():
    image = load_image(LAS)
    return image, read_text_meta(image.net)


def test_classify_prints_the_class_and_the_readout(capsys):
    out = cli.main(["classify", LAS, "--text", SENTENCES[0], "--json"]) or None
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])["results"][0]
    assert out is None
    assert result["class"] in ("positive", "negative") and lines[0].startswith(result["class"])
    readout = result["readout"]
    assert set(readout) == {"negative", "positive"}
    # the class is the readout's argmax (the first on a tie)
    assert result["class"] == max(readout, key=lambda k: (readout[k], k == "negative"))
    assert f"positive {readout['positive']}" in lines[0]


@pytest.mark.parametrize("path", [LAS, LV])
def test_golden_classify_equals_spikestream_run(path):
    """The batched golden run of classify equals the per-step path of ``spikestream run``
    on the same spikes (readout and class), for both conversions."""
    image = load_image(path)
    tm = read_text_meta(image.net)
    got = classify.classify_golden(image, tm, SENTENCES)
    for s, r in zip(SENTENCES, got):
        x = encode_sentence(tm, tm.vocab.encode(tokenize(s))).astype(np.int64)
        raw = sw_run.run_golden(image, None, sw_run.read_spikes(x, image.net))
        arrays = sw_run.output_arrays(image.net, raw)
        assert list(arrays["readout/readout"][-1]) == [r["readout"]["negative"],
                                                        r["readout"]["positive"]]
        assert image.net.vocab[arrays["tokens"][-1]] == r["class"]
    assert got[2]["unknown_words"] == 2


def test_the_shipped_las_image_tells_the_polarity(las):
    image, tm = las
    got = classify.classify_golden(image, tm, SENTENCES[:2])
    assert [r["class"] for r in got] == ["positive", "negative"]


def test_the_board_procedure_gives_the_golden_classes(las):
    """classify_board through the protocol on the golden board (the default 16-lane core:
    the image is loaded word by word) equals the golden backend."""
    image, tm = las
    want = classify.classify_golden(image, tm, SENTENCES[:2])
    with GoldenTransport() as transport:
        client = Client(transport, progress=False)
        client.identify()
        got = classify.classify_board(client, image, tm, SENTENCES[:2])
    assert got == want


def test_a_file_of_sentences(tmp_path, capsys):
    f = tmp_path / "s.txt"
    f.write_bytes("\n".join(SENTENCES).encode("latin-1") + b"\n\n")
    results = classify.main([LAS, "--data", str(f)])
    assert len(results) == 3
    assert "3 sentences on golden" in capsys.readouterr().out


@pytest.mark.parametrize("args, problem", [
    (["--text", "  ... --- "], "no words"),
    (["--text", "x" * (classify.MAX_TEXT_CHARS + 1)], "characters"),
    (["--data", "/nonexistent/s.txt"], "no such"),
    (["--text", "good", "--backend", "serial", "--port", "/nonexistent/tty"],
     "no such serial port"),
])
def test_bad_inputs_get_one_line(args, problem):
    with pytest.raises(SystemExit) as e:
        classify.main([LAS] + args)
    assert str(e.value).startswith("error: ") and problem in str(e.value)
    assert "\n" not in str(e.value)


def test_binary_file_and_wrong_image_get_one_line(tmp_path):
    f = tmp_path / "bin"
    f.write_bytes(b"\0\1\2")
    with pytest.raises(SystemExit, match="NUL"):
        classify.main([LAS, "--data", str(f)])
    with pytest.raises(SystemExit, match="not a sentence classifier"):
        classify.main([f"{PRETRAINED}/shakespeare.img", "--text", "good"])
    with pytest.raises(SystemExit, match="error: "):
        classify.main([str(f), "--text", "good"])


# The simulated SoC (RTL in Verilator behind the pseudo-terminal) ----------------------------

@pytest.fixture(scope="module")
def tiny_las(tmp_path_factory):
    """A tiny MR classifier really trained (600 sentences of fold 0's training folds, 4
    filters per width, LAS at K = 2), its image written as ``spikestream classify`` reads
    it, and the core config of 2 lanes that holds it (a SoC that compiles in a minute)."""
    data = load_mr()
    train, _ = fold_indices(len(data), 0)
    idx = train[:600]
    cfg = tc.TextCNNConfig(emb_dim=6, filters=4, float_epochs=2, qat_epochs=1)
    vocab = build_vocab([data.sentences[i] for i in idx], cfg.min_count, 300)
    ids = [vocab.encode(data.sentences[i]) for i in idx]
    torch.set_num_threads(1)
    _, quant = tc.train_model(cfg, ids, data.labels[idx], (2,), log=lambda line: None)
    m = tc.integer_model(quant[2], ids)
    net = tc.las_network(m)
    net.meta = tc.text_meta(m, vocab, "las", 1, {"fold": 0})
    path = tmp_path_factory.mktemp("tiny") / "tiny-las.img"
    save_image(net, 2, path)
    return str(path), CoreConfig.for_image(Image(net=net, lanes=2))


@pytest.mark.skipif(not available_simulators(), reason="no simulator (Verilator or Icarus)")
def test_classify_on_the_simulated_soc_equals_golden(tiny_las, monkeypatch, capsys):
    """``spikestream classify --backend sim``: the SoC built with the image loaded (here a
    small core: sw.run.board_config stands in for the default board's), the sentences
    streamed as spike inputs over the link word by word, the class and the readout read
    back; all equal to ``--backend golden``."""
    path, config = tiny_las
    monkeypatch.setattr("sw.run.board_config", lambda fpga="85f": config)
    texts = SENTENCES + ["an intelligent , funny and touching film about love and loss"]
    f = Path(path).parent / "s.txt"
    f.write_text("\n".join(texts) + "\n", encoding="latin-1")
    want = classify.main([path, "--data", str(f), "--json"])
    got = classify.main([path, "--data", str(f), "--backend", "sim", "--json"])
    assert got == want
    # a real computation: every sentence leaves its own readout
    assert len({tuple(r["readout"].values()) for r in want}) == len(texts)
    out = capsys.readouterr().out
    assert f"{len(texts)} sentences on sim" in out


@pytest.mark.skipif(os.environ.get("SPIKESTREAM_SLOW_SIM") != "1",
                    reason="builds the default 16-lane SoC with the image (minutes): "
                           "SPIKESTREAM_SLOW_SIM=1")
@pytest.mark.parametrize("path", [LAS, LV])
def test_shipped_images_on_the_default_simulated_soc(path):
    want = classify.main([path, "--text", SENTENCES[0]])
    assert classify.main([path, "--text", SENTENCES[0], "--backend", "sim"]) == want
