"""The golden board at the byte level: every status it answers, and its memories and core
against the golden model."""

import struct

import numpy as np
import pytest

from spikestream.memory_map import CoreReg, Mem, image_writes, settings_writes
from spikestream.network import core_layout
from spikestream.protocol import (IDENTIFY_BODY, DONE_FORMAT, END, ESC, GENERATE_FORMAT, MAGIC,
                         MAX_PAYLOAD, MAX_READ, MAX_RUN, NACK_OP, PROTOCOL_VERSION,
                         READ_HEADER, STATUS_FORMAT, STREAM_BODY, STREAM_END_BODY,
                         STREAM_START_BODY, TOKEN_FORMAT, WRITE_HEADER, Cmd, FrameDecoder,
                         LinkStatus, crc16, frame, pack_stream, pack_words, parse_response,
                         request, response, slip_encode, stream_token_bytes, unpack_words,
                         word_bytes)
from spikestream.timing import core_timing
from models.golden import GoldenCore
from spikestream.sampler import seed_state
from sw.golden_board import GoldenBoard, GoldenBoardError, Raw

S = LinkStatus


def make_board(config, image=None, tag=0):
    init = image_writes(image, config) if image is not None else ()
    return GoldenBoard(config, clock_hz=50_000_000, baud=3_000_000, init=init, tag=tag)


def answers(board, data):
    """``[(op, seq, status, body)]`` of everything the board sends back for ``data``."""
    out = []
    for st, payload in FrameDecoder(min_length=3).feed(board.respond(data)):
        assert st == S.OK, "the board sent a damaged frame"
        out.append(parse_response(payload))
    return out


def ask(board, op, seq=7, body=b""):
    return answers(board, frame(request(op, seq, body)))


def write_body(mem, lane, addr, words, config):
    return struct.pack(WRITE_HEADER, mem, lane, addr, len(words)) + \
        pack_words(words, word_bytes(config))


def read(board, config, mem, lane, addr, count):
    (op, seq, st, body), = ask(board, Cmd.READ, 3, struct.pack(READ_HEADER, mem, lane, addr, count))
    assert st == S.OK
    return unpack_words(body, word_bytes(config))


def status(board):
    (_, _, st, body), = ask(board, Cmd.STATUS)
    assert st == S.OK
    return struct.unpack(STATUS_FORMAT, body)


def test_identify(small_config):
    (op, seq, st, body), = ask(make_board(small_config, tag=0x1234), Cmd.IDENTIFY, 42)
    assert (op, seq, st) == (Cmd.IDENTIFY, 42, S.OK)
    f = IDENTIFY_BODY.unpack_from(body)
    assert f[:3] == (MAGIC, PROTOCOL_VERSION, small_config.lanes)
    assert f.data_bits == small_config.data_bits and f.tag == 0x1234
    assert f.max_payload == MAX_PAYLOAD and f.max_delay == small_config.max_delay


def _nack(board, wire):
    (op, seq, st, body), = answers(board, wire)
    assert (op, seq) == (NACK_OP, 0)
    return st


def test_nacks(small_config):
    board = make_board(small_config)
    good = request(Cmd.STATUS, 1)
    crc = crc16(good).to_bytes(2, "little")
    assert _nack(board, bytes([END]) + slip_encode(good + bytes([crc[0] ^ 1, crc[1]])) +
                 bytes([END])) == S.BAD_CRC
    assert _nack(board, bytes([END, ESC, 0x01]) + slip_encode(good + crc) + bytes([END])) \
        == S.BAD_FRAME
    assert _nack(board, frame(b"\x07")) == S.TOO_SHORT
    assert _nack(board, frame(bytes(MAX_PAYLOAD + 1))) == S.TOO_LONG
    # empty frames are ignored; a good frame after the bad ones is answered
    assert answers(board, bytes([END, END]) + frame(good))[0][2] == S.OK
    # OK: the STATUS above (a STATUS reports the counts before its own); rejected: 4 NACKs
    assert status(board)[1:3] == (1, 4)


def test_error_statuses_change_nothing(small_config, small_image):
    board = make_board(small_config, small_image, tag=99)
    c = small_config
    before = [read(board, c, Mem.SYN, lane, 0, 8) for lane in range(c.lanes)]
    cases = [
        (Cmd.IDENTIFY, b"x", S.BAD_LENGTH),
        (0x42, b"", S.BAD_OPCODE),
        (Cmd.TOKEN, b"", S.BAD_OPCODE),
        (Cmd.WRITE, b"\x04\x00", S.BAD_LENGTH),
        (Cmd.WRITE, write_body(Mem.SYN, 0, 0, [1, 2], c)[:-1], S.BAD_LENGTH),
        (Cmd.WRITE, write_body(13, 0, 0, [1], c), S.BAD_MEMORY),
        (Cmd.WRITE, write_body(Mem.ACC, 0, 0, [1], c), S.BAD_MEMORY),
        (Cmd.WRITE, write_body(Mem.SYN, c.lanes, 0, [1], c), S.OUT_OF_RANGE),
        (Cmd.WRITE, write_body(Mem.POP, 1, 0, [1], c), S.OUT_OF_RANGE),
        (Cmd.WRITE, write_body(Mem.SYN, 0, c.syn_depth - 1, [1, 2], c), S.OUT_OF_RANGE),
        (Cmd.WRITE, write_body(Mem.CORE, 0, CoreReg.VOCAB, [c.max_vocab + 1], c), S.OUT_OF_RANGE),
        (Cmd.WRITE, write_body(Mem.SYN, 0, 0, [], c), S.OUT_OF_RANGE),
        (Cmd.READ, struct.pack(READ_HEADER, Mem.SYN, 0, 0, 1) + b"\0", S.BAD_LENGTH),
        (Cmd.READ, struct.pack(READ_HEADER, 15, 0, 0, 1), S.BAD_MEMORY),
        (Cmd.READ, struct.pack(READ_HEADER, Mem.PTR, 0, c.ptr_depth, 1), S.OUT_OF_RANGE),
        (Cmd.READ, struct.pack(READ_HEADER, Mem.SYN, 0, 0, MAX_READ + 1), S.OUT_OF_RANGE),
        (Cmd.READ, struct.pack(READ_HEADER, Mem.SYN, 0, 0, 0), S.OUT_OF_RANGE),
        (Cmd.RESET, b"\0", S.BAD_LENGTH),
        (Cmd.RUN, b"", S.BAD_LENGTH),
        (Cmd.RUN, b"\x01\x00\x02", S.BAD_LENGTH),
        (Cmd.RUN, bytes(2 * (MAX_RUN + 1)), S.BAD_LENGTH),
        (Cmd.GENERATE, b"\x01\x00", S.BAD_LENGTH),
        (Cmd.GENERATE, struct.pack(GENERATE_FORMAT, 1, 0), S.OUT_OF_RANGE),
        (Cmd.STREAM, struct.pack(GENERATE_FORMAT, 1, 3), S.BAD_LENGTH),
        (Cmd.STREAM, STREAM_BODY.pack(first=1, count=3) + b"\0", S.BAD_LENGTH),
        (Cmd.STREAM, STREAM_BODY.pack(first=1, count=0), S.OUT_OF_RANGE),
        (Cmd.STREAM_START, b"", S.BAD_OPCODE),
        (Cmd.STATUS, b"\0", S.BAD_LENGTH),
        (Cmd.TAG, b"\0\0", S.BAD_LENGTH),
    ]
    for op, body, expected in cases:
        (rop, seq, st, _), = ask(board, op, 5, body)
        assert (rop, seq, st) == (op, 5, expected), (Cmd(op).name if op in set(Cmd) else op, body)
    assert [read(board, c, Mem.SYN, lane, 0, 8) for lane in range(c.lanes)] == before
    assert status(board)[6] == 99, "a refused WRITE must not clear the tag"
    assert status(board)[2] == len(cases)


def test_bad_token_stops_before_it(small_config, small_image):
    board = make_board(small_config, small_image)
    vocab = small_image.net.vocab_size
    out = ask(board, Cmd.RUN, 9, struct.pack("<3H", 1, vocab, 2))
    assert [o[0] for o in out] == [Cmd.TOKEN, Cmd.RUN]
    assert out[-1][2:] == (S.BAD_TOKEN, struct.pack(DONE_FORMAT, 1))
    out = ask(board, Cmd.GENERATE, 9, struct.pack(GENERATE_FORMAT, vocab, 3))
    assert out == [(Cmd.GENERATE, 9, S.BAD_TOKEN, struct.pack(DONE_FORMAT, 0))]
    # STREAM: the final frame alone, no STREAM_START and no token bytes.
    wire = board.respond(frame(request(Cmd.STREAM, 9, STREAM_BODY.pack(first=vocab, count=3))))
    assert wire == frame(response(Cmd.STREAM, 9, S.BAD_TOKEN, _end(0, 0, 0, 0xFFFF)))
    assert status(board)[2] == 3 and status(board)[4] == 1
    # An empty board has no vocabulary: every token is refused.
    out = ask(make_board(small_config), Cmd.RUN, 1, struct.pack("<H", 0))
    assert out[-1][2] == S.BAD_TOKEN


def test_memories_read_back_word_for_word(small_config, small_image):
    c = small_config
    board = make_board(c)
    writes = image_writes(small_image, c)
    for w in writes:
        assert ask(board, Cmd.WRITE, 1, write_body(w.mem, w.lane, w.addr, [w.data], c))[0][2] == S.OK
    for w in writes:
        assert read(board, c, w.mem, w.lane, w.addr, 1) == [w.data]
    # Words are cut to their memory's width, as the memories store them.
    syn_bits = c.layout(Mem.SYN).bits
    ask(board, Cmd.WRITE, 1, write_body(Mem.SYN, 1, 3, [(1 << 40) | 5], c))
    assert read(board, c, Mem.SYN, 1, 3, 1) == [5 & ((1 << syn_bits) - 1)]
    # The accumulators always read 0 between requests; SEED reads the generator's state.
    assert read(board, c, Mem.ACC, 0, 0, 4) == [0] * 4
    ask(board, Cmd.WRITE, 1, write_body(Mem.CORE, 0, CoreReg.SEED, [0], c))
    assert read(board, c, Mem.CORE, 0, CoreReg.SEED, 1) == [seed_state(0)]


def test_tag_cleared_by_network_writes_only(small_config, small_image):
    c = small_config
    board = make_board(c, small_image, tag=7)
    for mem, addr, value in ((Mem.STATE, 0, 3), (Mem.CORE, CoreReg.TEMPERATURE, 5),
                             (Mem.CORE, CoreReg.SEED, 5)):
        ask(board, Cmd.WRITE, 1, write_body(mem, 0, addr, [value], c))
        assert status(board)[6] == 7
    for mem, addr in ((Mem.SYN, 0), (Mem.PARAM, 0), (Mem.PTR, 0), (Mem.POP, 0), (Mem.PROJ, 0),
                      (Mem.CORE, CoreReg.READOUT)):
        ask(board, Cmd.TAG, 1, struct.pack("<I", 7))
        word = read(board, c, mem, 0, addr, 1)[0]
        ask(board, Cmd.WRITE, 1, write_body(mem, 0, addr, [word], c))
        assert status(board)[6] == 0, mem


def _end(steps, cycles, spikes, crc):
    return STREAM_END_BODY.pack(steps=steps, cycles=cycles, spikes=spikes, crc=crc)


def _stream(first, count, seq=3):
    return frame(request(Cmd.STREAM, seq, STREAM_BODY.pack(first=first, count=count)))


def _token_frames(out):
    return [struct.unpack(TOKEN_FORMAT, body) for op, _, st, body in out if op == Cmd.TOKEN]


@pytest.mark.parametrize("temperature, seed", [(0, 0), (40, 11)])
def test_steps_equal_the_golden_model(small_config, small_image, temperature, seed):
    c = small_config
    board = make_board(c, small_image)
    for w in settings_writes(temperature, seed):
        ask(board, Cmd.WRITE, 1, write_body(w.mem, w.lane, w.addr, [w.data], c))
    ask(board, Cmd.RESET)
    golden = GoldenCore(small_image.net, c.lanes, core_timing(c.stages))
    golden.reset(), golden.seed(seed), golden.set_temperature_word(temperature)
    prompt = [1, 4, 0, 2]
    got = _token_frames(ask(board, Cmd.RUN, 2, struct.pack("<4H", *prompt)))
    got += _token_frames(ask(board, Cmd.GENERATE, 3, struct.pack("<HH", got[-1][1], 20)))
    expected, token = [], None
    for k in range(24):
        r = golden.step([prompt[k] if k < 4 else token])
        token = int(r.token[0])
        expected.append((k if k < 4 else k - 4, token, int(r.cycles[0]),
                         sum(int(s.sum()) for s in r.spikes)))
    assert got == expected
    # The STATE words hold exactly the golden model's v and a.
    lanes = c.lanes
    for i, pop in enumerate(small_image.net.populations):
        base = golden.layout.pop_base[i]
        for n in range(pop.size):
            word = read(board, c, Mem.STATE, n % lanes, base + n // lanes, 1)[0]
            fields = c.layout(Mem.STATE).unpack(word)
            assert (fields["v"], fields["a"]) == (int(golden.v[i][0, n]), int(golden.a[i][0, n]))
    st = status(board)
    assert st[4] == 24 and st[5] == sum(e[2] for e in expected)


@pytest.mark.parametrize("temperature, seed", [(0, 0), (40, 11)])
def test_stream_answers_what_generate_answers_word_for_word(small_config, small_image,
                                                            temperature, seed):
    """The same timesteps as GENERATE (and the golden model), sent as STREAM_START, one raw
    byte per token and the final frame with the sums and the CRC of those bytes."""
    c = small_config
    boards = [make_board(c, small_image), make_board(c, small_image)]
    for board in boards:
        for w in settings_writes(temperature, seed):
            ask(board, Cmd.WRITE, 1, write_body(w.mem, w.lane, w.addr, [w.data], c))
        ask(board, Cmd.RESET)
    steps = _token_frames(ask(boards[0], Cmd.GENERATE, 3, struct.pack("<HH", 1, 40)))
    tokens = [t for _, t, _, _ in steps]
    golden = GoldenCore(small_image.net, c.lanes, core_timing(c.stages))
    assert tokens == golden.generate([1], 40, temperature_word=temperature, seed=seed)
    assert stream_token_bytes(c) == 1
    raw = pack_stream(tokens, 1)
    assert raw == bytes(tokens)
    wire = boards[1].respond(_stream(1, 40))
    assert wire == (
        frame(response(Cmd.STREAM_START, 3, S.OK, STREAM_START_BODY.pack(count=40,
                                                                         token_bytes=1)))
        + raw + frame(response(Cmd.STREAM, 3, S.OK, _end(
            40, sum(s[2] for s in steps), sum(s[3] for s in steps), crc16(raw)))))
    # Counters and state alike afterwards.
    assert status(boards[0]) == status(boards[1])
    assert [read(b, c, Mem.STATE, 1, 0, c.neurons_per_lane) for b in boards] == \
        [read(boards[0], c, Mem.STATE, 1, 0, c.neurons_per_lane)] * 2


def test_a_stream_is_made_a_timestep_at_a_time(small_config, small_image):
    """A STREAM of 2**32 - 1 tokens: nothing is made for the count up front; each token's
    byte comes as its timestep ends (here the request is dropped after three)."""
    board = make_board(small_config, small_image)
    items = board.answer(S.OK, request(Cmd.STREAM, 4, STREAM_BODY.pack(first=1,
                                                                       count=(1 << 32) - 1)))
    start = parse_response(next(items))
    assert start == (Cmd.STREAM_START, 4, S.OK,
                     STREAM_START_BODY.pack(count=(1 << 32) - 1, token_bytes=1))
    raw = [next(items) for _ in range(3)]
    assert all(isinstance(r, Raw) and len(r) == 1 for r in raw)
    items.close()
    assert board.steps == 3


def test_state_writes_act_on_the_next_step(small_config, small_image):
    c = small_config
    board, golden = make_board(c, small_image), GoldenCore(small_image.net, c.lanes,
                                                           core_timing(c.stages))
    ask(board, Cmd.RUN, 1, struct.pack("<2H", 1, 2))
    golden.step([1]), golden.step([2])
    # Kick the first neuron of the first population to its maximum membrane.
    word = c.layout(Mem.STATE).pack(v=30000, a=int(golden.a[0][0, 0]),
                                    s=int(golden.get_state().s[0][0, 0]))
    ask(board, Cmd.WRITE, 1, write_body(Mem.STATE, 0, 0, [word], c))
    st = golden.get_state()
    st.v[0][0, 0] = 30000
    golden.set_state(st)
    got = _token_frames(ask(board, Cmd.RUN, 1, struct.pack("<H", 3)))
    r = golden.step([3])
    assert got == [(0, int(r.token[0]), int(r.cycles[0]), sum(int(s.sum()) for s in r.spikes))]
    # RESET clears every STATE word.
    ask(board, Cmd.RESET)
    assert all(read(board, c, Mem.STATE, lane, 0, c.neurons_per_lane) ==
               [0] * c.neurons_per_lane for lane in range(c.lanes))


def test_network_edits_are_decoded_again(small_config, small_image):
    """A WRITE to a synapse changes what the next STEP computes (the cache is dropped)."""
    c = small_config
    board = make_board(c, small_image)
    same = lambda net: len(net.projections) == len(small_image.net.projections) and all(
        any((a.src, a.dst, a.delay) == (b.src, b.dst, b.delay) and
            np.array_equal(a.weights, b.weights) for b in net.projections)
        for a in small_image.net.projections)
    # The PROJ words are route groups (one per source and delay); decoded, each target
    # population a group reaches is one projection again.
    net, _, groups = board.network()
    assert same(net) and len(groups) < len(net.projections)
    syn = c.layout(Mem.SYN)
    word = read(board, c, Mem.SYN, 0, 0, 1)[0]
    f = syn.unpack(word)
    ask(board, Cmd.WRITE, 1, write_body(Mem.SYN, 0, 0, [syn.pack(addr=f["addr"], weight=-f["weight"] or 1)], c))
    ask(board, Cmd.RUN, 1, struct.pack("<H", 0))
    assert not same(board.network()[0])


def test_half_loaded_memories_are_refused_not_guessed(small_config, small_image):
    """A RUN or GENERATE the golden model cannot run is answered BAD_TOKEN before its first
    timestep (the module docstring), and the board goes on answering."""
    c = small_config
    board = make_board(c)
    for w in image_writes(small_image, c):
        if w.mem == Mem.CORE:        # the registers, but no tables
            ask(board, Cmd.WRITE, 1, write_body(w.mem, w.lane, w.addr, [w.data], c))
    with pytest.raises(GoldenBoardError, match="golden model"):
        board.network()
    assert board.fault is None
    (op, seq, st, body), = ask(board, Cmd.RUN, 4, struct.pack("<2H", 0, 1))
    assert (op, seq, st, body) == (Cmd.RUN, 4, S.BAD_TOKEN, struct.pack(DONE_FORMAT, 0))
    assert "golden model" in board.fault and "\n" not in board.fault
    (op, seq, st, body), = ask(board, Cmd.GENERATE, 5, struct.pack(GENERATE_FORMAT, 1, 3))
    assert (op, seq, st, body) == (Cmd.GENERATE, 5, S.BAD_TOKEN, struct.pack(DONE_FORMAT, 0))
    # STREAM: refused before STREAM_START, by its final frame alone.
    assert board.respond(_stream(1, 3, seq=6)) == \
        frame(response(Cmd.STREAM, 6, S.BAD_TOKEN, _end(0, 0, 0, 0xFFFF)))
    assert board.faults == 3
    (op, _, st, _), = ask(board, Cmd.IDENTIFY, 6)
    assert (op, st) == (Cmd.IDENTIFY, S.OK)
    assert status(board)[2] == 3        # the three refusals are counted as rejected


def test_an_unexpected_failure_is_answered_and_the_board_serves_on(small_config, small_image,
                                                                   monkeypatch):
    board = make_board(small_config, small_image)
    step = board._step

    def broken_step(token):
        raise RuntimeError("a bug\nwith two lines")
    monkeypatch.setattr(board, "_step", broken_step)
    (op, seq, st, body), = ask(board, Cmd.GENERATE, 8, struct.pack(GENERATE_FORMAT, 1, 3))
    assert (op, seq, st, body) == (Cmd.GENERATE, 8, S.BAD_TOKEN, struct.pack(DONE_FORMAT, 0))
    assert board.fault == "RuntimeError: a bug"
    # A STREAM that fails after two timesteps: the final frame follows the two bytes sent.
    good = make_board(small_config, small_image)
    steps = _token_frames(ask(good, Cmd.GENERATE, 1, struct.pack(GENERATE_FORMAT, 1, 2)))
    calls = iter(range(3))
    monkeypatch.setattr(board, "_step", lambda token: (step(token) if next(calls) < 2 else
                                                       broken_step(token)))
    raw = bytes(t for _, t, _, _ in steps)
    assert board.respond(_stream(1, 5, seq=7)) == (
        frame(response(Cmd.STREAM_START, 7, S.OK, STREAM_START_BODY.pack(count=5,
                                                                         token_bytes=1)))
        + raw + frame(response(Cmd.STREAM, 7, S.BAD_TOKEN, _end(
            2, sum(s[2] for s in steps), sum(s[3] for s in steps), crc16(raw)))))
    assert board.fault == "RuntimeError: a bug" and board.faults == 2
    monkeypatch.setattr(board, "_status", lambda seq, body: 1 / 0)
    (op, seq, st, body), = ask(board, Cmd.STATUS, 9)
    assert (op, seq, st, body) == (Cmd.STATUS, 9, S.OUT_OF_RANGE, b"")
    assert board.fault.startswith("ZeroDivisionError") and board.faults == 3
    (op, _, st, _), = ask(board, Cmd.IDENTIFY, 10)
    assert (op, st) == (Cmd.IDENTIFY, S.OK)


@pytest.mark.parametrize("dst, problem", [
    (2, "a synapse targets no neuron of its population or a later one"),
    (0, "delay 0 from source 0 routed before population 0, which does not follow it")])
def test_route_group_order_is_checked(small_config, small_image, dst, problem):
    """A PROJ word is a route group: its phase runs before population ``dst`` is updated,
    so every synapse must target ``dst`` or a later population, and a delay-0 source must
    be updated before ``dst``. Tables that break either are refused, not run differently
    from the golden model."""
    c = small_config
    board = make_board(c, small_image)
    groups = core_layout(small_image.net, small_image.lanes).groups
    g = next(k for k, gr in enumerate(groups) if (gr.src, gr.delay) == (0, 0))
    assert groups[g].dst == 1 and len(groups[g].members) == 2     # into h1 and the readout
    proj = c.layout(Mem.PROJ)
    f = proj.unpack(read(board, c, Mem.PROJ, 0, g, 1)[0])
    (_, _, st, _), = ask(board, Cmd.WRITE, 1, write_body(Mem.PROJ, 0, g,
                                                         [proj.pack(**{**f, "dst": dst})], c))
    assert st == S.OK
    with pytest.raises(GoldenBoardError, match=problem):
        board.network()
