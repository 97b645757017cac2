"""The command-line flow: train -> compile -> evaluate -> generate, on a tiny model."""

import json

import pytest

from spikestream.board import SHIPPED_IMAGE
import torch

from models import compile as compile_cli, evaluate, generate, train
from spikestream.image import load_image


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    # Stop after the first step (as an interrupted run would), then resume to the end.
    train.main(["--config", "tiny", "--out", str(out), "--max-minutes", "1e-9"])
    first = torch.load(out / "ckpt.pt", weights_only=True)
    train.main(["--config", "tiny", "--out", str(out)])
    return out, first


def test_train_resumes_and_plots(tiny_run, capsys):
    out, first = tiny_run
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert first["step"] < ck["step"] == ck["train"]["steps"]
    assert ck["config"]["hidden"] == [32] and ck["vocab"][0] == "\n"
    assert any("val" in h for h in ck["history"])
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_train_refuses_other_settings(tiny_run):
    out, _ = tiny_run
    with pytest.raises(SystemExit, match="other settings"):
        train.main(["--config", "tiny", "--out", str(out), "--set", "lr=0.1"])


def test_compile_evaluate_generate(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    img = tmp_path / "tiny.img"
    capsys.readouterr()
    compile_cli.main(["--checkpoint", str(out / "ckpt.pt"), "-o", str(img), "--lanes", "4",
                      "--sparsity", "0.6", "--json"])
    image = load_image(img)
    assert image.lanes == 4
    assert image.net.meta["sparsity"] >= 0.6 - 1e-3
    compiled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert compiled["image"] == str(img) and compiled["bytes"] == img.stat().st_size
    assert compiled["lanes"] == 4 and compiled["sparsity"] == image.net.meta["sparsity"]
    assert compiled["neurons"] == sum(p.size for p in image.net.populations)
    assert compiled["synapses"] == image.net.nonzero_synapses
    assert 0 < compiled["block_rams"] <= compiled["block_rams_available"] == 208
    evaluate.main(["--checkpoint", str(out / "ckpt.pt"), "--json", "--chars", "600",
                   "--streams", "4", "--lanes", "4"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("float_val_nats", "golden_val_nats", "synaptic_events_per_token",
                "cycles_per_token", "lanes", "nonzero_synapses"):
        assert key in result
    assert abs(result["float_val_nats"] - result["golden_val_nats"]) < 0.2
    assert result["cycles_per_token"] > result["ideal_route_cycles_per_token"] > 0

    def gen(seed, temperature):
        generate.main(["--image", str(img), "--prompt", "ROMEO:", "--tokens", "30",
                       "--seed", str(seed), "--temperature", str(temperature)])
        return capsys.readouterr().out

    a, b, c = gen(1, 1.0), gen(1, 1.0), gen(2, 1.0)
    assert a == b and a.startswith("ROMEO:") and len(a) == len("ROMEO:") + 30 + 1
    assert a != c
    # --json: the same text again as the last line, with the run's numbers
    generate.main(["--image", str(img), "--prompt", "ROMEO:", "--tokens", "30", "--seed", "1",
                   "--temperature", "1.0", "--json"])
    *shown, last = capsys.readouterr().out.splitlines(keepends=True)
    result = json.loads(last)
    assert "".join(shown) == a and "ROMEO:" + result["text"] + "\n" == a
    assert result["tokens"] == 30 and result["seed"] == 1 and result["seconds"] > 0
    assert result["timesteps"] == len("ROMEO:") + 29 and result["cycles_per_step"] > 0


def test_evaluate_image_or_checkpoint(tiny_run, capsys):
    out, _ = tiny_run
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--image", str(SHIPPED_IMAGE), "--checkpoint", str(out / "ckpt.pt")])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    # a checkpoint named as an image is read as an image, not guessed from its name
    with pytest.raises(SystemExit, match="error: .*bad magic"):
        evaluate.main(["--image", str(out / "ckpt.pt")])


def test_train_json(tmp_path, capsys):
    out = tmp_path / "run"
    train.main(["--config", "tiny", "--out", str(out), "--set", "steps=4", "--set",
                "eval_every=2", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert result["checkpoint"] == str(out / "ckpt.pt") and result["step"] == 4 == ck["step"]
    assert result["val_nats"] == [h["val"] for h in ck["history"] if "val" in h][-1] > 0
    assert result["minutes"] > 0


def test_compile_refuses_what_does_not_fit(tiny_run, tmp_path):
    out, _ = tiny_run
    # (the tiny model fits anything: its memories all go to LUT RAM; the shipped one does not)
    with pytest.raises(SystemExit, match="block RAMs"):
        compile_cli.main(["--checkpoint", str(SHIPPED_IMAGE.with_suffix(".pt")), "-o",
                          str(tmp_path / "x.img"), "--lanes", "16", "--fpga", "12f"])
    with pytest.raises(SystemExit, match="known sizes"):
        compile_cli.main(["--checkpoint", str(out / "ckpt.pt"), "-o", str(tmp_path / "x.img"),
                          "--fpga", "99f"])


def test_bad_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="not a spikestream checkpoint"):
        compile_cli.main(["--checkpoint", str(bad), "-o", str(tmp_path / "x.img")])
    with pytest.raises(SystemExit, match="no such text file"):
        train.main(["--config", "tiny", "--out", str(tmp_path / "r"), "--data",
                    str(tmp_path / "missing.txt")])
    with pytest.raises(SystemExit, match="error: .*bad magic"):
        generate.main(["--image", str(bad)])
