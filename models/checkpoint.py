"""Training checkpoints: read safely, checked completely, written atomically.

A checkpoint is a ``torch.save`` file holding one dict: ``config`` (the model's
:class:`~models.lm.LMConfig` as a dict), ``train`` (the training settings), ``vocab`` (the
characters), ``model`` (the state dict), ``step``, ``history`` and, while training,
``optim`` and ``rng``. It holds only tensors, numbers, strings, lists and dicts, so it is
read with ``torch.load(weights_only=True)``: a file that holds anything else (a pickle
that would run code, say) is refused without running it.
"""

import io
import pickle
import re
import warnings
import zipfile

import torch

from .data import Vocab
from spikestream.files import FileProblem, atomic_write, read_regular
from .lm import LMConfig, SpikingLM
from spikestream.network import check_vocab

__all__ = ["MAX_CHECKPOINT_BYTES", "CheckpointError", "read_checkpoint", "load_checkpoint",
           "save_checkpoint", "training_record"]

MAX_CHECKPOINT_BYTES = 1 << 30
"""Largest checkpoint file read (1 GiB; the shipped one is 1.7 MB)."""


class CheckpointError(ValueError):
    """The file is not a usable checkpoint; the message is one line."""


def read_checkpoint(path):
    """The dict inside the checkpoint file ``path``, read without unpickling anything but
    tensors and plain data; :class:`CheckpointError` (one line) for anything else."""
    try:
        data = read_regular(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    except FileProblem as e:
        raise CheckpointError(str(e)) from None
    try:
        with warnings.catch_warnings():
            # (torch warns about pickle protocols it did not write: the file is judged below)
            warnings.simplefilter("ignore")
            ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            # weights_only refused to build a Python object: that is how a pickle runs code.
            raise CheckpointError(f"{path}: refused: it asks to build the Python object "
                                  f"{found.group(1)[:60]}, which a checkpoint never holds "
                                  "(unpickling it could run code); nothing was run") from None
        raise CheckpointError(f"{path}: not a spikestream checkpoint (not a torch file "
                              "of tensors and plain data)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            AttributeError, TypeError, IndexError, MemoryError) as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: not a spikestream checkpoint (holds a "
                              f"{type(ck).__name__}, not a dict)")
    return ck


def load_checkpoint(path):
    """Load a checkpoint for inference; returns ``(model, vocab, checkpoint dict)``.

    Raises :class:`CheckpointError` (one line) for a file that is not a complete, consistent
    spikestream checkpoint.
    """
    ck = read_checkpoint(path)
    missing = [k for k in ("config", "vocab", "model") if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: not a spikestream checkpoint (no {', '.join(missing)})")
    try:
        check_vocab(ck["vocab"])
        if not all(isinstance(c, str) for c in ck["vocab"]):
            raise ValueError("the vocabulary is not a list of characters")
        if not isinstance(ck["config"], dict):
            raise ValueError("config is not a dict")
        cfg = LMConfig.from_dict(ck["config"])
        cfg.check()
        if cfg.vocab_size != len(ck["vocab"]):
            raise ValueError(f"the model reads {cfg.vocab_size} tokens but the vocabulary "
                             f"has {len(ck['vocab'])}")
        model = SpikingLM(cfg)
        if not isinstance(ck["model"], dict):
            raise ValueError("model is not a state dict")
        model.load_state_dict(ck["model"])
        for name, p in model.state_dict().items():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                raise ValueError(f"{name} holds NaN or infinite values")
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a usable spikestream checkpoint ({reason})") from None
    return model, Vocab(ck["vocab"]), ck


def save_checkpoint(ck, path):
    """Write the checkpoint dict ``ck`` to ``path`` atomically (a temporary file renamed
    over it: an interrupted save keeps the previous checkpoint)."""
    with atomic_write(path, "wb") as f:
        torch.save(ck, f)


def training_record(ck):
    """What a checkpoint dict says of its training: ``(steps, minutes, text)``, ``steps``
    and ``minutes`` over the run and the run it was fine-tuned from (``init``, written by
    ``models.train --init``), ``minutes`` None where nothing was recorded, ``text`` one
    phrase for a table ("11000 steps, then 1000 more (1000 of them quantisation-aware)").
    Tolerates anything a checkpoint file may hold in these fields."""
    num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
    hist = ck.get("history") if isinstance(ck.get("history"), list) else []
    times = [h["minutes"] for h in hist if isinstance(h, dict) and num(h.get("minutes"))]
    minutes = max(times) if times else None
    step = ck.get("step") if num(ck.get("step")) else None
    text = f"{step} steps"
    init = ck.get("init") if isinstance(ck.get("init"), dict) else None
    if init and num(init.get("step")) and step is not None:
        train = ck.get("train") if isinstance(ck.get("train"), dict) else {}
        qat = train.get("qat_steps") if num(train.get("qat_steps")) else 0
        text = (f"{init['step']} steps, then {step} more"
                f"{f' ({qat} of them quantisation-aware)' if qat else ''}")
        step += init["step"]
        if minutes is not None and num(init.get("minutes")):
            minutes += init["minutes"]
    return step, minutes, text
