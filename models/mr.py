"""MR, the movie-review sentence polarity data (Pang & Lee 2005), as the TextCNN reads it.

``models/data/mr/`` ships ``rt-polarity.pos`` and ``rt-polarity.neg`` (5,331 snippets each,
Latin-1, one a line; SOURCES.txt says where they come from); ``--data POS NEG`` reads
anyone's two files instead. Every file is untrusted: :func:`load_mr` reads it as a regular
file of at most :data:`MAX_FILE_BYTES`, refuses binary or empty files, and raises
:class:`MRDataError` with one line.

* **Tokens** are Kim's (2014) ``clean_str``: every character but ``A-Za-z0-9(),!?'``` ` ``
  becomes a space, clitics (``'s``, ``n't``, ...) and ``, ! ( ) ?`` are split off, the
  result is lower-cased and split on whitespace (Kim's code writes ``\\(`` for a bracket, a
  slip of its regular-expression replacement; here a bracket is ``(``).
* **Folds**: :data:`FOLDS` folds from one seeded permutation (``numpy.random.default_rng(
  SPLIT_SEED).permutation(n)``): fold ``i`` is ``perm[i::FOLDS]``, so the folds differ in
  size by at most one (Kim draws each sentence's fold at random instead).
* **Vocabulary** (:class:`WordVocab`): built on the training folds only; words seen at least
  ``min_count`` times, the ``cap`` most frequent (ties by the word); id 0 is the one id of
  every unknown word.
"""

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikestream.files import FileProblem, read_regular

__all__ = ["DATA_DIR", "MR_FILES", "FOLDS", "SPLIT_SEED", "MAX_FILE_BYTES", "MAX_SENTENCES",
           "MAX_WORDS", "UNK", "MRDataError", "clean_str", "tokenize", "MRData", "load_mr",
           "fold_indices", "WordVocab", "build_vocab"]

DATA_DIR = Path(__file__).parent / "data" / "mr"
MR_FILES = (DATA_DIR / "rt-polarity.pos", DATA_DIR / "rt-polarity.neg")
"""The shipped copy: positive snippets, negative snippets."""
FOLDS = 10
SPLIT_SEED = 19
"""Seed of the permutation that makes the folds (issue 19)."""
MAX_FILE_BYTES = 64 << 20
"""Largest data file read (the shipped ones are 0.6 MiB each)."""
MAX_SENTENCES = 1 << 20
"""Most snippets one file may hold."""
MAX_WORDS = 256
"""Longest sentence kept, in words (MR's longest has 56); longer ones are cut, since the
core streams one word per timestep and a sentence must not run for ever."""
UNK = "<unk>"
"""The vocabulary's entry 0: every word not in the vocabulary."""


class MRDataError(ValueError):
    """A data file that cannot be used; the message says why, in one line."""


def clean_str(s):
    """Kim's TextCNN ``clean_str`` (lower-cased; brackets as ``(``, see the module)."""
    s = re.sub(r"[^A-Za-z0-9(),!?\'\`]", " ", s)
    for clitic in ("'s", "'ve", "n't", "'re", "'d", "'ll"):
        s = s.replace(clitic, " " + clitic)
    s = re.sub(r"([,!()?])", r" \1 ", s)
    s = re.sub(r"\s{2,}", " ", s)
    return s.strip().lower()


def tokenize(s):
    """The words of sentence ``s`` (:func:`clean_str`, split), at most :data:`MAX_WORDS`."""
    return clean_str(s).split()[:MAX_WORDS]


def read_sentences(path, what="data file"):
    """The lines of the text file ``path`` (Latin-1) as a list of strings, empty lines
    dropped; :class:`MRDataError` (one line) for a missing, oversized, binary or empty
    file."""
    try:
        raw = read_regular(path, MAX_FILE_BYTES, what)
    except FileProblem as e:
        raise MRDataError(str(e)) from None
    if b"\0" in raw:
        raise MRDataError(f"{path}: holds NUL bytes; not a text file of sentences")
    # Latin-1 maps every byte to a character, so any file decodes; clean_str keeps ASCII.
    # Only "\n" ends a line: str.splitlines would also cut at Latin-1's NEL (0x85) and
    # form feeds, which MR's snippets hold.
    lines = [ln.strip() for ln in raw.decode("latin-1").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise MRDataError(f"{path}: holds no sentences (one a line)")
    if len(lines) > MAX_SENTENCES:
        raise MRDataError(f"{path}: {len(lines):,} lines; at most {MAX_SENTENCES:,} are read")
    return lines


@dataclass
class MRData:
    """Sentences as word lists, labels (1 positive, 0 negative) and the files read."""
    sentences: list
    labels: np.ndarray
    files: tuple

    def __len__(self):
        return len(self.sentences)


def load_mr(pos=None, neg=None):
    """MR from the two files ``pos`` and ``neg`` (default: the shipped copy); tokenised
    with :func:`tokenize`. Sentences that hold no word after cleaning are kept (as empty
    lists) so that line numbers and folds do not depend on the tokeniser."""
    pos = Path(pos) if pos is not None else MR_FILES[0]
    neg = Path(neg) if neg is not None else MR_FILES[1]
    p, n = read_sentences(pos, "positive data file"), read_sentences(neg, "negative data file")
    sents = [tokenize(s) for s in p + n]
    labels = np.array([1] * len(p) + [0] * len(n), np.int64)
    return MRData(sents, labels, (str(pos), str(neg)))


def fold_indices(n, fold, folds=FOLDS, seed=SPLIT_SEED):
    """``(train, test)`` index arrays of fold ``fold`` of ``folds`` over ``n`` examples (see
    the module: one seeded permutation, fold ``i`` is ``perm[i::folds]``)."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be 0..{folds - 1}, not {fold}")
    if n < folds:
        raise MRDataError(f"{n} sentences cannot be split into {folds} folds")
    perm = np.random.default_rng(seed).permutation(n)
    test = np.sort(perm[fold::folds])
    mask = np.ones(n, bool)
    mask[test] = False
    return np.flatnonzero(mask), test


class WordVocab:
    """Words to ids: ``words[0]`` is :data:`UNK`, the id of every unknown word."""

    def __init__(self, words):
        words = list(words)
        if not words or words[0] != UNK:
            raise ValueError(f"a word vocabulary starts with {UNK!r}")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        if len(self.index) != len(words):
            raise ValueError("a word vocabulary holds a word twice")

    def __len__(self):
        return len(self.words)

    def encode(self, words):
        """Ids of ``words`` (a list of tokens); unknown words get 0."""
        return [self.index.get(w, 0) for w in words]


def build_vocab(sentences, min_count=2, cap=10000):
    """The :class:`WordVocab` of ``sentences`` (word lists: the training folds only): words
    seen at least ``min_count`` times, at most ``cap`` of them (the most frequent; ties by
    the word, so the result does not depend on the order of the sentences)."""
    counts = Counter(w for s in sentences for w in s)
    kept = sorted((w for w, c in counts.items() if c >= min_count and w != UNK),
                  key=lambda w: (-counts[w], w))[:cap]
    return WordVocab([UNK] + kept)
