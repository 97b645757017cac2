"""models.mr: MR loading, Kim's tokeniser, the seeded folds, the training-fold vocabulary and
hostile data files."""

import numpy as np
import pytest

from models import mr
from models import textcnn


def test_clean_str_is_kims():
    assert mr.tokenize("It's a gripping, FUNNY film (isn't it?)!") == [
        "it", "'s", "a", "gripping", ",", "funny", "film", "(", "is", "n't", "it", "?", ")",
        "!"]
    assert mr.tokenize("caf\xe9 -- 10/10 ; `quoted'") == ["caf", "10", "10", "`quoted'"]
    assert mr.tokenize("") == []
    assert len(mr.tokenize("word " * 1000)) == mr.MAX_WORDS


def test_the_shipped_copy_loads_with_one_line_per_snippet():
    data = mr.load_mr()
    assert len(data) == 10662
    assert int(data.labels.sum()) == 5331 and data.labels[0] == 1 and data.labels[-1] == 0
    assert data.sentences[0][:4] == ["the", "rock", "is", "destined"]
    assert (mr.DATA_DIR / "SOURCES.txt").read_text().count("Pang") >= 1


def test_only_newline_ends_a_line(tmp_path):
    """Latin-1 NEL (0x85) and form feeds inside a snippet do not split it."""
    pos, neg = tmp_path / "p", tmp_path / "n"
    pos.write_bytes(b"good \x85 film\nfine\x0cwork\n\n")
    neg.write_bytes(b"bad film\r\n")
    data = mr.load_mr(pos, neg)
    assert [len(s) for s in data.sentences] == [2, 2, 2]
    assert data.labels.tolist() == [1, 1, 0]


def test_folds_partition_the_data_and_are_fixed():
    n = 10662
    tests = []
    for fold in range(mr.FOLDS):
        tr, te = mr.fold_indices(n, fold)
        assert len(tr) + len(te) == n and not set(tr) & set(te)
        assert len(te) in (n // mr.FOLDS, n // mr.FOLDS + 1)
        tests.append(te)
    assert sorted(np.concatenate(tests).tolist()) == list(range(n))
    assert np.array_equal(mr.fold_indices(n, 3)[1], mr.fold_indices(n, 3)[1])
    assert not np.array_equal(mr.fold_indices(n, 3, seed=1)[1], mr.fold_indices(n, 3)[1])
    with pytest.raises(ValueError):
        mr.fold_indices(n, 10)


def test_the_vocabulary_sees_only_the_training_folds():
    train = [["a", "b", "a"], ["b", "c"], ["a"]]
    vocab = mr.build_vocab(train, min_count=2, cap=10)
    assert vocab.words == [mr.UNK, "a", "b"]
    assert vocab.encode(["a", "c", "zebra", "b"]) == [1, 0, 0, 2]
    assert mr.build_vocab(train, min_count=1, cap=2).words == [mr.UNK, "a", "b"]
    # on MR: a word that occurs only in the test fold is unknown
    data = mr.load_mr()
    tr, te = mr.fold_indices(len(data), 0)
    vocab = mr.build_vocab([data.sentences[i] for i in tr])
    seen = {w for i in tr for w in data.sentences[i]}
    only_test = {w for i in te for w in data.sentences[i]} - seen
    assert only_test and all(vocab.encode([w]) == [0] for w in only_test)


@pytest.mark.parametrize("make, problem", [
    (lambda p: None, "no such"),
    (lambda p: p.mkdir(), "folder"),
    (lambda p: p.write_bytes(b""), "no sentences"),
    (lambda p: p.write_bytes(b"\n \n"), "no sentences"),
    (lambda p: p.write_bytes(b"ok\0\x01\x02"), "NUL"),
])
def test_bad_data_files_get_one_line(tmp_path, make, problem):
    bad = tmp_path / "bad"
    make(bad)
    with pytest.raises(mr.MRDataError, match=problem) as e:
        mr.load_mr(bad, mr.MR_FILES[1])
    assert "\n" not in str(e.value)


def test_the_train_command_refuses_bad_data_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(SystemExit) as e:
        textcnn.main(["train", "--out-dir", str(tmp_path), "--data", str(bad),
                      str(mr.MR_FILES[1])])
    assert str(e.value).startswith("error: ") and "NUL" in str(e.value)
    assert "\n" not in str(e.value)


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big"
    big.write_bytes(b"word\n" * 100)
    monkeypatch.setattr(mr, "MAX_FILE_BYTES", 64)
    with pytest.raises(mr.MRDataError, match="larger than"):
        mr.load_mr(big, big)
