"""bench.textcnn: the configurations measured and how folds are summed (the measurement itself
is the hour-long ``python -m bench.textcnn``; its pieces are tested in tests/models)."""

import pytest

from bench import textcnn as bt


def _row(acc, mismatches):
    return {"accuracy_float": 0.7, "accuracy_quantised": 0.71, "accuracy_golden": acc,
            "mismatches": mismatches, "sentences": 100, "timesteps_per_example": 24.0,
            "synaptic_events_per_example": 1e6, "cycles_per_example": 1e5}


def test_configurations():
    c = bt.configurations([1, 3], 2)
    assert list(c) == ["las-k2", "las-k3", "las-k4", "lv-t1", "lv-t3", "lv-ft-t1", "lv-ft-t3"]
    assert c["lv-ft-t3"] == ("lv", 4, 3, 2) and c["lv-t1"] == ("lv", 4, 1, 0)
    assert "lv-ft-t1" not in bt.configurations([1], 0)


def test_aggregate_over_folds():
    folds = [{"configs": {"las-k2": _row(0.8, 0), "lv-t3": _row(0.7, None)}},
             {"configs": {"las-k2": _row(0.6, 0), "lv-t3": _row(0.7, 0)}},
             {"configs": {"las-k2": _row(0.7, 0)}}]
    rows = bt.aggregate(folds, 80.0)
    assert rows["las-k2"]["folds"] == 3 and rows["las-k2"]["mismatches"] == 0
    assert rows["las-k2"]["accuracy_golden"] == pytest.approx(0.7)
    assert rows["las-k2"]["sentences"] == 300
    assert rows["lv-t3"]["folds"] == 2
    assert rows["lv-t3"]["mismatches"] is None          # one fold did not check it
    assert rows["las-k2"]["projected_sentences_per_s"] == pytest.approx(800.0)
