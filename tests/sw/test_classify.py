"""sw.classify: ``spikestream classify`` on the shipped TextCNN images — the golden backend
against ``spikestream run``'s own path and against the host procedure on the golden board;
hostile inputs."""

import json

import numpy as np
import pytest

from models.mr import tokenize
from models.textcnn import encode_sentence, read_text_meta
from spikestream import cli
from spikestream.image import load_image
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
