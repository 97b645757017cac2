"""Hostile and careless inputs to the model commands (issue 14): each reproducer is a test.

Every case must end in one clear line and a non-zero exit (``SystemExit`` with an
``error:`` message here), or in a correct result with an explicit warning; never in code
run from a file, an overwritten input, a traceback or a silently wrong number.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models import compile as compile_cli, evaluate, generate, train
from models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from models.data import load_text
from spikestream.board import SHIPPED_IMAGE
from spikestream.image import load_image, save_image
from models.lm import LMConfig, SpikingLM

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CKPT = SHIPPED_IMAGE.with_suffix(".pt")


class _Evil:
    """Unpickling this runs ``touch MARKER``: the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_checkpoint(path, marker):
    ck = torch.load(SHIPPED_CKPT, weights_only=True)
    ck["history"] = [_Evil(marker)]
    torch.save(ck, path)
    return path


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _exit_line(excinfo):
    """The message of a ``SystemExit``: one line starting with ``error:``."""
    msg = str(excinfo.value.code)
    assert "\n" not in msg.strip(), msg
    assert msg.startswith("error: "), msg
    return msg


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    return _evil_checkpoint(tmp_path / "evil.pt", marker), marker


# --- checkpoints: nothing is unpickled ------------------------------------------------------

def test_the_pickle_reproducer_is_refused_everywhere(evil, tmp_path):
    path, marker = evil
    with pytest.raises(CheckpointError, match="posix.system.*nothing was run"):
        read_checkpoint(path)
    with pytest.raises(SystemExit) as e:
        compile_cli.main(["--checkpoint", str(path), "-o", str(tmp_path / "x.img")])
    assert "refused" in _exit_line(e)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(path), "--chars", "100"])
    assert "refused" in _exit_line(e)
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt.pt").write_bytes(path.read_bytes())
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "tiny", "--out", str(run)])
    assert "refused" in _exit_line(e)
    assert not marker.exists(), "the checkpoint ran code"


def test_the_shipped_checkpoint_loads_without_unpickling():
    model, vocab, ck = load_checkpoint(SHIPPED_CKPT)
    assert len(vocab) == 65 and ck["config"]["hidden"] == [896, 192]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not-a-dict",
                                    "bad-vocab", "wrong-shape", "no-model"])
def test_broken_checkpoints_are_one_line_errors(tmp_path, damage):
    path = tmp_path / "ck.pt"
    ck = torch.load(SHIPPED_CKPT, weights_only=True)
    if damage == "truncated":
        path.write_bytes(SHIPPED_CKPT.read_bytes()[:100_000])
    elif damage == "garbage":
        path.write_bytes(os.urandom(5000))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not-a-dict":
        torch.save([1, 2, 3], path)
    elif damage == "bad-vocab":
        ck["vocab"] = [7] + ck["vocab"][1:]
        torch.save(ck, path)
    elif damage == "wrong-shape":
        ck["model"]["weights.ff0"] = torch.zeros(3, 3)
        torch.save(ck, path)
    elif damage == "no-model":
        del ck["model"]
        torch.save(ck, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_a_truncated_checkpoint_does_not_resume(tmp_path):
    out = tmp_path / "run"
    train.main(["--config", "tiny", "--out", str(out), "--set", "steps=2", "--set",
                "eval_every=1"])
    ck = out / "ckpt.pt"
    ck.write_bytes(ck.read_bytes()[:-500])
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "tiny", "--out", str(out), "--set", "steps=2", "--set",
                    "eval_every=1"])
    assert "--fresh" in _exit_line(e)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


# --- outputs never overwrite inputs -----------------------------------------------------------

def test_compile_refuses_to_overwrite_its_checkpoint(tmp_path):
    ck = tmp_path / "ckpt.pt"
    ck.write_bytes(SHIPPED_CKPT.read_bytes())
    before = _digest(ck)
    for argv in ([str(ck), "-o", str(tmp_path / "ckpt.img"), "--with-checkpoint"],
                 [str(ck), "-o", str(ck)],
                 [str(ck), "-o", str(tmp_path / "x.pt"), "--with-checkpoint"],
                 [str(ck), "-o", str(tmp_path / "." / "ckpt.pt")]):
        with pytest.raises(SystemExit) as e:
            compile_cli.main(["--checkpoint", *argv])
        _exit_line(e)
    assert _digest(ck) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_compile_checks_the_output_folder_before_the_work(tmp_path):
    # An unusable checkpoint shows that the folder is checked first, before it is read.
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        compile_cli.main(["--checkpoint", str(tmp_path / "missing.pt"), "-o",
                          str(tmp_path / "no" / "x.img")])
    assert "does not exist" in _exit_line(e)
    assert time.monotonic() - t0 < 5


def test_compile_refuses_a_vocabulary_the_core_cannot_hold(tmp_path):
    chars = [chr(0x100 + k) for k in range(400)]
    model = SpikingLM(LMConfig(vocab_size=400, hidden=(8,)))
    path = tmp_path / "big.pt"
    torch.save({"config": model.cfg.to_dict(), "vocab": chars, "model": model.state_dict()},
               path)
    with pytest.raises(SystemExit) as e:
        compile_cli.main(["--checkpoint", str(path), "-o", str(tmp_path / "big.img")])
    assert "at most 256" in _exit_line(e)
    assert not (tmp_path / "big.img").exists()


def test_generate_checks_the_raster_path_first(tmp_path):
    with pytest.raises(SystemExit) as e:
        generate.main(["--tokens", "3", "--raster", str(tmp_path / "no" / "r.png")])
    assert "does not exist" in _exit_line(e)


# --- images do not lead elsewhere -------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return load_image(SHIPPED_IMAGE)


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_evaluate_never_follows_a_path_out_of_the_images_folder(tmp_path, shipped, evil, where,
                                                                capsys):
    ck, marker = evil
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = tmp_path / "good.pt"
    good.write_bytes(SHIPPED_CKPT.read_bytes())
    name = {"absolute": str(good), "parent": "../good.pt", "symlink": "link.pt"}[where]
    if where == "symlink":
        (folder / "link.pt").symlink_to(good)
    img = folder / "x.img"
    save_image(shipped.net, shipped.lanes, img, meta={"checkpoint": name})
    result = evaluate.main(["--image", str(img), "--chars", "300", "--streams", "4"])
    err = capsys.readouterr().err
    assert "ignoring" in err
    assert result["float_val_nats"] is None
    assert not marker.exists()


def test_evaluate_uses_a_checkpoint_beside_the_image(tmp_path, shipped):
    img = tmp_path / "x.img"
    (tmp_path / "x.pt").write_bytes(SHIPPED_CKPT.read_bytes())
    save_image(shipped.net, shipped.lanes, img, meta={"checkpoint": "x.pt"})
    result = evaluate.main(["--image", str(img), "--chars", "300", "--streams", "4"])
    assert result["float_val_nats"] is not None


# --- arguments and text -----------------------------------------------------------------------

@pytest.mark.parametrize("setting, words", [
    ("steps=abc", "expected int"), ("steps=ten", "expected int"),
    ("hidden=[0]", "hidden"), ("hidden=5", "list"), ("lr=nan", "expected float"),
    ("unknown=1", "unknown setting"), ("kind=XX", "kind"), ("sparsity=1.5", "sparsity"),
    ("recurrent=maybe", "expected bool"), ("steps", "KEY=VALUE"),
    ("recurrent=[1,0]", "expected a bool or a list of them"),
    ("readout=[false]", "readout must include hidden layer 0"),
    ("token_shift=[true,true]", "token_shift must be true or false, or a list of 1"),
    ("dense=[1]", "expected projection names"), ("dense=rec5", "dense must list projections"),
    ("adaptation=tanh", "adaptation must be softplus or relu")])
def test_train_settings_are_checked(tmp_path, setting, words):
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "tiny", "--out", str(tmp_path / "r"), "--set", setting])
    assert words in _exit_line(e)


def test_train_refuses_a_window_longer_than_the_text(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be, that is the question\n" * 30)
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "tiny", "--out", str(tmp_path / "r"), "--data", str(short),
                    "--set", "seq=5000"])
    assert "seq=5000" in _exit_line(e)
    assert not (tmp_path / "r" / "ckpt.pt").exists()


@pytest.mark.parametrize("chars", ["1", "0", "-5"])
def test_evaluate_chars_must_be_at_least_two(chars):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--chars", chars])
    assert "--chars" in _exit_line(e)


def test_evaluate_says_how_many_characters_it_skipped(tmp_path, capsys):
    text = tmp_path / "mixed.txt"
    base = load_text()[:4000]
    text.write_text(base[:3600] + "Привет, мир! " * 20 + base[3600:])
    result = evaluate.main(["--data", str(text), "--streams", "2"])
    err = capsys.readouterr().err
    val = text.read_text()[int(len(text.read_text()) * 0.9):]
    unknown = sum(1 for c in val if c not in load_image(SHIPPED_IMAGE).net.vocab)
    assert unknown > 0
    assert f"{unknown:,} of {len(val):,} validation characters are not in" in err
    assert result["unknown_chars_skipped"] == unknown
    assert result["val_chars"] == len(val) - unknown


def test_evaluate_refuses_text_with_no_known_character(tmp_path):
    text = tmp_path / "cyrillic.txt"
    text.write_text("Приветмир" * 200)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--data", str(text)])
    assert "none of the" in _exit_line(e)


@pytest.mark.parametrize("temperature", ["nan", "inf", "-1"])
def test_generate_refuses_a_temperature_that_is_not_a_number(temperature):
    with pytest.raises(SystemExit) as e:
        generate.main(["--temperature", temperature, "--tokens", "2"])
    assert "temperature" in _exit_line(e)


def test_text_files_must_be_regular(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, words in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"),
                        (tmp_path, "folder")):
        t0 = time.monotonic()
        with pytest.raises(SystemExit) as e:
            load_text(path)
        assert words in _exit_line(e) and time.monotonic() - t0 < 2


# --- Ctrl-C ------------------------------------------------------------------------------------

def _interrupt(args, wait_for, tmp_path):
    """Start ``python -m ARGS``, send SIGINT once ``wait_for`` is on its stdout or stderr,
    and return (seconds to exit after the signal, exit status, stderr)."""
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=o, stderr=e)
        try:
            deadline = time.monotonic() + 120
            while wait_for not in out.read_text() + err.read_text():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "the command never started"
                time.sleep(0.1)
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            status = proc.wait(timeout=30)
            return time.monotonic() - t0, status, err.read_text()
        finally:
            proc.kill()
            proc.wait()


def test_ctrl_c_stops_generate_at_once(tmp_path):
    dt, status, err = _interrupt(["models.generate", "--tokens", "100000"], "ROMEO:", tmp_path)
    print(f"stopped {dt:.2f} s after SIGINT")
    assert status == 130 and dt < 2
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"


def test_ctrl_c_stops_train_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    dt, status, err = _interrupt(["models.train", "--config", "tiny", "--out", str(out),
                                  "--set", "steps=100000", "--set", "eval_every=5",
                                  "--threads", "1"], "step 5:", tmp_path)
    assert status == 130 and dt < 5
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert read_checkpoint(out / "ckpt.pt")["step"] >= 5


def test_the_loss_plot_imports_no_extension_module(tmp_path):
    """A Ctrl-C that lands while a C extension initialises surfaces as ``ImportError:
    initialization failed`` (a traceback), not KeyboardInterrupt. Training plots right after
    its first checkpoint, when a Ctrl-C is most likely (bench.hostile sends one the moment
    the checkpoint appears): the plot must not import one (matplotlib's Agg canvas did)."""
    subprocess.run([sys.executable, "-c", "import sys, importlib.machinery as M\n"
                    "from models.train import plot_history\n"
                    "before = set(sys.modules)\n"
                    f"plot_history([{{'step': 1, 'train': 2.0}}, {{'step': 2, 'val': 1.9}}], "
                    f"{str(tmp_path / 'loss.png')!r}, 't')\n"
                    "new = [n for n in set(sys.modules) - before if str(getattr(sys.modules[n], "
                    "'__file__', None) or '').endswith(tuple(M.EXTENSION_SUFFIXES))]\n"
                    "assert not new, new\n"], cwd=ROOT, check=True, timeout=120)
    assert (tmp_path / "loss.png").stat().st_size > 1000
