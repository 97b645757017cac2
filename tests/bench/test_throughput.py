"""bench.throughput: the line bytes it counts, the rates it derives, its committed build result."""

import json
import subprocess
import sys
from pathlib import Path

from bench import throughput as T
from boards.ulx3s import core_config
from spikestream.protocol import stream_token_bytes

REPO = Path(__file__).resolve().parents[2]


def test_line_bytes_counts_every_stream_byte():
    config = core_config("85f")
    line = T.line_bytes(40, config)
    # each request's frames (START and final, about 41 bytes) on top of one byte per token
    assert line["token_bytes"] == stream_token_bytes(config) == 1
    assert line["requests"] >= 1
    over = line["down_bytes"] - line["tokens"]
    assert 30 * line["requests"] <= over <= 60 * line["requests"]
    assert line["up_bytes"] >= 12 * line["requests"]


def _row(lanes, cycles=800.0, events=8000.0):
    return {"lanes": lanes, "cycles_per_token": cycles, "events_per_token": events,
            "routing_efficiency": 0.8}


def test_derive_core_bound_and_link_bound():
    config = core_config("85f")
    line = {"tokens": 1000, "requests": 10, "down_bytes": 1000 + 410, "up_bytes": 120,
            "token_bytes": 1}
    r = T.derive([_row(8), _row(config.lanes)], line, 100.0, 1000.0, config)
    assert r["compute_tokens_per_second"] == 100e6 / 800
    # 41 bytes of frames per request, spread over a quarter second of tokens
    assert abs(r["line_bytes_per_token"] - (1 + 41 / r["tokens_per_request"])) < 1e-12
    assert 299_000 < r["link_tokens_per_second"] < 300_000
    assert r["board_tokens_per_second"] <= r["compute_tokens_per_second"]
    assert r["board_tokens_per_second"] > 0.99 * r["compute_tokens_per_second"]
    assert r["gsops"] == 8000 * r["board_tokens_per_second"] / 1e9
    assert r["bram_bound_gsops"] == 2 * r["synapse_dp16kd"] * 100e6 / 1e9
    assert r["speedup_vs_cpu"] == r["board_tokens_per_second"] / 1000.0
    # a core ten times faster: the line sets the rate
    fast = T.derive([_row(config.lanes, cycles=80.0)], line, 100.0, 1000.0, config)
    assert fast["board_tokens_per_second"] <= fast["link_tokens_per_second"]
    assert fast["board_tokens_per_second"] < fast["compute_tokens_per_second"]


def test_the_board_runs_at_the_target_when_timing_was_met_else_at_fmax():
    assert T.board_clock_mhz({"fmax_mhz": 100.68, "target_mhz": 100.0, "timing_met": True}) \
        == 100.0
    assert T.board_clock_mhz({"fmax_mhz": 96.86, "target_mhz": 100.0, "timing_met": False}) \
        == 96.86
    config = core_config("85f")
    line = {"tokens": 1000, "requests": 10, "down_bytes": 1410, "up_bytes": 120,
            "token_bytes": 1}
    r = T.derive([_row(config.lanes)], line, 100.68, 1000.0, config, clock_mhz=100.0)
    assert r["fmax_mhz"] == 100.68 and r["clock_mhz"] == 100.0
    assert r["compute_tokens_per_second"] == 100e6 / 800
    assert r["bram_bound_gsops"] == 2 * r["synapse_dp16kd"] * 100e6 / 1e9


def test_committed_build_result_is_readable():
    result = T.build_result()
    assert 10 < float(result["fmax_mhz"]) < 500
    assert isinstance(result["timing_met"], bool)


def test_bad_build_result_is_one_line(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    out = subprocess.run([sys.executable, "-m", "bench.throughput", "--build-result", str(bad)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert out.stderr.strip().startswith("error: no usable build result")
    assert len(out.stderr.strip().splitlines()) == 1
    missing = subprocess.run([sys.executable, "-m", "bench.throughput", "--build-result",
                              str(tmp_path / "none.json")], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_json_line(tmp_path):
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"fmax_mhz": 90.0, "timing_met": False}))
    out = subprocess.run([sys.executable, "-m", "bench.throughput", "--chars", "60",
                          "--streams", "1", "--lanes", "16", "--stream-tokens", "30",
                          "--tokens", "5", "--build-result", str(result), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("cycles_per_token", "fmax_mhz", "compute_tokens_per_second",
                "link_tokens_per_second", "board_tokens_per_second",
                "synaptic_events_per_token", "gsops", "bram_bound_gsops",
                "cpu_float_tokens_per_second", "speedup_vs_cpu"):
        assert r[key] > 0, key
    assert r["fmax_mhz"] == 90.0
    assert r["board_tokens_per_second"] == min(r["board_tokens_per_second"],
                                               r["compute_tokens_per_second"],
                                               r["link_tokens_per_second"])
