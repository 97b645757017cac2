"""Text corpora: loading, the character vocabulary, the train/validation split, batches."""

from pathlib import Path

import torch

from spikestream.files import FileProblem, read_regular

__all__ = ["DEFAULT_TEXT", "MAX_TEXT_BYTES", "load_text", "Vocab", "split", "random_windows",
           "stream_batches"]

MAX_TEXT_BYTES = 256 << 20
"""Largest text file read (256 MiB; WikiText-103's training text is about 540 MB, so
larger corpora need splitting)."""

DEFAULT_TEXT = Path(__file__).parent / "data" / "tinyshakespeare.txt"
"""tiny-shakespeare (public domain), shipped so that no command needs a download."""


def load_text(path=None):
    """Read a UTF-8 text file (default: the shipped tiny-shakespeare)."""
    path = Path(path) if path else DEFAULT_TEXT
    try:
        data = read_regular(path, MAX_TEXT_BYTES, "text file")
    except FileProblem as e:
        if not path.exists() and not path.is_symlink():
            raise SystemExit(f"error: no such text file: {path}") from None
        raise SystemExit(f"error: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {path} is not UTF-8 text (byte {e.start}: "
                         f"{e.reason})") from None
    if len(text) < 1000:
        raise SystemExit(f"error: {path} holds only {len(text)} characters; need at least 1000")
    return text


class Vocab:
    """Character vocabulary: token id = index in ``chars``."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def encode(self, text, strict=True):
        """Token ids of ``text``. Unknown characters raise, or are dropped if not strict."""
        if strict:
            missing = sorted(set(c for c in text if c not in self.index))
            if missing:
                raise ValueError(f"characters not in the model's vocabulary: {missing!r}")
        return [self.index[c] for c in text if c in self.index]

    def unknown(self, text):
        """How many characters of ``text`` are not in the vocabulary."""
        return sum(1 for c in text if c not in self.index)

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


def split(text, train_fraction=0.9):
    """First ``train_fraction`` for training, the rest for validation."""
    n = int(len(text) * train_fraction)
    return text[:n], text[n:]


def random_windows(ids, batch, length, generator):
    """``[batch, length + 1]`` random windows of the id tensor ``ids``."""
    starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=generator)
    return torch.stack([ids[s:s + length + 1] for s in starts.tolist()])


def stream_batches(ids, streams):
    """Cut ``ids`` into ``streams`` equal contiguous streams: ``[streams, n]`` (tail dropped)."""
    n = len(ids) // streams
    return ids[:n * streams].reshape(streams, n)
