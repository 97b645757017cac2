"""bench.lm: the Kneser-Ney baselines are distributions and behave like n-gram models."""

import json
import math
import random

import pytest

from bench.lm import KneserNey
from bench.lstm import CharLSTM, lstm_hidden_for, main

TEXT = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat.\n" * 20
        + "zebra quiz")


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_history_gets_a_distribution(order):
    m = KneserNey(TEXT[:1500], order, TEXT)
    rng = random.Random(order)
    histories = ["", "zz", "qqqq", "the ", " on the "] + [
        "".join(rng.choice(m.vocab) for _ in range(order)) for _ in range(20)]
    for h in histories:
        total = sum(m.prob(h, c) for c in m.vocab)
        assert abs(total - 1) < 1e-12, (h, total)
        assert min(m.prob(h, c) for c in m.vocab) > 0        # the uniform floor


def test_longer_contexts_predict_repeated_text_better():
    train, test = TEXT[:1400], TEXT[1400:1600]
    nats = [KneserNey(train, n, TEXT).nats(test) for n in (1, 2, 3, 4)]
    assert nats == sorted(nats, reverse=True) and nats[3] < 0.5 * nats[0]
    # A unigram model's loss is the entropy of the characters' (smoothed) frequencies.
    assert nats[0] < math.log(len(set(TEXT)))


def test_an_order_below_one_is_refused():
    with pytest.raises(ValueError, match="order must be at least 1"):
        KneserNey(TEXT, 0, TEXT)


def test_the_lstm_baseline_matches_a_parameter_count_and_records_its_run(tmp_path, capsys):
    h = lstm_hidden_for(116_000, 65)
    size = lambda n: sum(p.numel() for p in CharLSTM(65, n).parameters())
    assert abs(size(h) - 116_000) <= min(abs(size(h - 1) - 116_000), abs(size(h + 1) - 116_000))
    out = tmp_path / "lstm.json"
    main(["--params", "3000", "--minutes", "0.01", "--steps", "20", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["steps"] <= 20 and r["params"] == size(lstm_hidden_for(3000, 65))
    assert r["val_chars"] == 111_540 and 1.0 < r["val_nats"] < math.log(65) + 0.5
