"""The protocol client against the golden board: identity, loading, reading back, every
error status as an exception, retries over a lossy link, streaming; and STREAM's answers
byte by byte, every damage to them one error line."""

import struct
import time

import pytest

from spikestream.memory_map import CoreReg, Mem, image_writes
from spikestream.protocol import (END, IDENTIFY_FORMAT, MAGIC, MAX_READ, PROTOCOL_VERSION,
                         STREAM_BODY, STREAM_END_BODY, STREAM_START_BODY, Cmd, FrameDecoder,
                         LinkStatus, crc16, frame, identity_of, max_write_words, parse_request,
                         response)
from spikestream.timing import core_timing
from models.golden import GoldenCore
from spikestream.image import Image, image_bytes
from sw.client import FIRST_CHUNK, Client, image_tag
from sw.errors import (BoardMismatch, CommandFailed, ImageDoesNotFit, NoResponse,
                       TransportError)
from sw.transport import GoldenTransport, Transport

from .conftest import LossyTransport, small_network


def test_identify(small_board, small_config):
    ident = Client(small_board).identify()
    assert ident.magic == MAGIC and ident.version == PROTOCOL_VERSION
    assert ident.core_config() == small_config
    assert (ident.clock_hz, ident.baud, ident.tag) == (50_000_000, 3_000_000, 0)


def test_load_read_back_and_skip(small_board, small_image, small_config):
    notes = []
    client = Client(small_board, log=notes.append, progress=False)
    assert client.load_image(small_image, tag=0xABC) is True
    for w in image_writes(small_image, small_config):
        assert client.read(w.mem, w.lane, w.addr, 1) == [w.data]
    assert client.identify().tag == client.status().tag == 0xABC
    sent = client.status().frames_ok
    assert client.load_image(small_image, tag=0xABC) is False     # already there
    assert client.status().frames_ok == sent + 2                  # IDENTIFY + STATUS only
    assert notes == []


def test_load_relays_lanes_with_a_note(small_board, small_config):
    notes = []
    client = Client(small_board, log=notes.append, progress=False)
    eight = Image(net=small_network(), lanes=2)
    client.load_image(eight, tag=5)
    assert notes == [f"note: the image is laid out for 2 lanes; laying it out again for "
                     f"the board's {small_config.lanes}"]
    four = Image(net=eight.net, lanes=small_config.lanes)
    for w in image_writes(four, small_config):
        assert client.read(w.mem, w.lane, w.addr, 1) == [w.data]


def test_image_too_big_is_refused_before_sending(small_board, small_config):
    lossy = LossyTransport(small_board)
    client = Client(lossy, progress=False)
    big = Image(net=small_network(hidden=(40, 5)), lanes=small_config.lanes)
    with pytest.raises(ImageDoesNotFit, match="neurons per lane: needs"):
        client.load_image(big, tag=1)
    assert [parse_request(FrameDecoder().feed(d)[0][1])[0] for d in lossy.sent] == [Cmd.IDENTIFY]


def test_image_tag_is_the_files_crc(shipped_image):
    import zlib
    data = image_bytes(shipped_image.net, shipped_image.lanes)
    assert image_tag(data) == zlib.crc32(data) != 0
    assert image_tag(b"") == 1          # CRC-32 of nothing is 0, which means "no image"


def test_writes_and_reads_are_chunked(small_config):
    config = small_config.replace(syn_depth=1024)
    with GoldenTransport(config, clock_hz=1, baud=1) as board:
        lossy = LossyTransport(board)
        client = Client(lossy, progress=False)
        client.identify()
        words = [(k * 37) % 1000 for k in range(max_write_words(config) + 5)]
        client.write(Mem.SYN, 1, 0, words)
        assert lossy.writes == 1 + 2
        assert client.read(Mem.SYN, 1, 0, len(words)) == words
        assert lossy.writes == 1 + 2 + -(-len(words) // MAX_READ)


def test_every_error_status_is_an_exception(small_board, small_image, small_config):
    client = Client(small_board, progress=False)
    client.identify()
    c = small_config
    cases = [
        (lambda: client.write(Mem.ACC, 0, 0, [1]), LinkStatus.BAD_MEMORY),
        (lambda: client.write(Mem.SYN, c.lanes, 0, [1]), LinkStatus.OUT_OF_RANGE),
        (lambda: client.write(Mem.CORE, 0, CoreReg.POPS, [c.max_pops + 1]), LinkStatus.OUT_OF_RANGE),
        (lambda: client.read(15, 0, 0, 1), LinkStatus.BAD_MEMORY),
        (lambda: client.read(Mem.PTR, 0, c.ptr_depth - 1, 2), LinkStatus.OUT_OF_RANGE),
        (lambda: list(client.run([0])), LinkStatus.BAD_TOKEN),          # nothing loaded
        (lambda: client._request(0x55), LinkStatus.BAD_OPCODE),
        (lambda: client._request(Cmd.RESET, b"x"), LinkStatus.BAD_LENGTH),
    ]
    for call, status in cases:
        with pytest.raises(CommandFailed) as info:
            call()
        assert info.value.status == status
        assert "\n" not in str(info.value) and status.name in str(info.value)
    client.load_image(small_image, tag=3)
    with pytest.raises(CommandFailed, match=r"BAD_TOKEN .* after 2 timesteps"):
        list(client.run([1, 2, small_image.net.vocab_size]))


class FakeBoard(Transport):
    """Answers IDENTIFY with a given body; or nothing at all."""
    name = "fake"
    response_timeout = 0.2

    def __init__(self, body=None):
        self.body, self.out = body, b""

    description = "fake board"

    def open(self):
        pass

    def close(self):
        pass

    def write(self, data):
        for st, payload in FrameDecoder().feed(data):
            if self.body is not None:
                self.out += frame(response(payload[0], payload[1], 0, self.body))

    def read(self, size=4096, timeout=None):
        data, self.out = self.out[:size], self.out[size:]
        return data


def _identity(magic=MAGIC, version=PROTOCOL_VERSION):
    return struct.pack(IDENTIFY_FORMAT, magic, version, 4, 2, 66, 8, 64, 64, 4, 8, 8, 8,
                       1, 1, 2046, 0, 15, 256, 32, 4, 256, 1024, 4)


def test_wrong_bitstream_and_version():
    with pytest.raises(BoardMismatch, match="not as a spikestream SoC"):
        Client(FakeBoard(_identity(magic=b"XXXX"))).identify()
    with pytest.raises(BoardMismatch, match="not as a spikestream SoC"):
        Client(FakeBoard(b"hello")).identify()
    with pytest.raises(BoardMismatch, match=f"protocol version {PROTOCOL_VERSION + 1}, this "
                                            f"host version {PROTOCOL_VERSION}"):
        Client(FakeBoard(_identity(version=PROTOCOL_VERSION + 1))).identify()


def test_silent_board_times_out_after_retries():
    fake = FakeBoard()
    client = Client(fake, retries=2)
    with pytest.raises(NoResponse, match="no answer from fake board: is the board powered"):
        client.identify()
    assert client.retried == 2


@pytest.mark.parametrize("damage", [
    {"lose_writes": {1}},             # a request lost on the way out
    {"corrupt_writes": {1, 3}},       # requests damaged: the board NACKs them (BAD_CRC)
    {"lose_reads": {1}},              # a response lost on the way back
    {"corrupt_reads": {1, 2}},        # responses damaged on the way back
])
def test_retries_over_a_lossy_link(small_board, small_image, damage):
    lossy = LossyTransport(small_board, **damage)
    client = Client(lossy, progress=False)
    client.identify()
    client.load_image(small_image, tag=77)
    assert client.identify().tag == 77
    assert client.retried >= 1
    for w in image_writes(small_image, client.config)[:20]:
        assert client.read(w.mem, w.lane, w.addr, 1) == [w.data]


def test_generation_is_not_repeated_after_a_timeout(small_board, small_image):
    client = Client(small_board, progress=False)
    client.load_image(small_image, tag=1)
    lossy = LossyTransport(small_board, lose_writes={0})
    with pytest.raises(NoResponse, match="no answer to GENERATE"):
        list(Client(lossy).generate(1, 3))
    assert lossy.writes == 1


def test_run_and_generate_equal_the_golden_model(small_board, small_image, small_config):
    client = Client(small_board, progress=False)
    client.load_image(small_image, tag=1)
    client.reset()
    client.settings(temperature_word=30, seed=4)
    golden = GoldenCore(small_image.net, small_config.lanes, core_timing(small_config.stages))
    expected = golden.generate([1, 2, 3], 30, temperature_word=30, seed=4)
    results = list(client.run([1, 2, 3]))
    assert [r.index for r in results] == [0, 1, 2]
    tokens = [results[-1].token] + [r.token for r in client.generate(results[-1].token, 29)]
    assert tokens == expected


def test_stream_equals_generate_and_the_golden_model(small_board, small_image, small_config):
    client = Client(small_board, progress=False)
    client.load_image(small_image, tag=1)
    golden = GoldenCore(small_image.net, small_config.lanes, core_timing(small_config.stages))
    expected = golden.generate([1, 2, 3], 300, temperature_word=30, seed=4)
    results = {}
    for how in ("generate", "stream"):
        client.reset()
        client.settings(temperature_word=30, seed=4)
        last = list(client.run([1, 2, 3]))[-1]
        before = client.status()
        if how == "generate":
            steps = list(client.generate(last.token, 299))
            results[how] = ([r.token for r in steps], sum(r.cycles for r in steps),
                            sum(r.spikes for r in steps))
        else:
            chunks = list(client.stream(last.token, 299))
            assert [c.index for c in chunks] == \
                [sum(len(c.tokens) for c in chunks[:k]) for k in range(len(chunks))]
            results[how] = ([t for c in chunks for t in c.tokens], sum(c.cycles for c in chunks),
                            sum(c.spikes for c in chunks))
        after = client.status()
        assert after.steps - before.steps == 299
        assert after.cycles - before.cycles == results[how][1] & 0xFFFFFFFF
        assert [last.token] + results[how][0] == expected
    assert results["stream"] == results["generate"]
    assert results["stream"][1] > 299 and results["stream"][2] > 0


def test_stream_requests_are_chunked(small_board, small_image):
    """STREAM counts start at FIRST_CHUNK and follow the board's speed, as GENERATE's do;
    the tokens of every chunk come back in order."""
    lossy = LossyTransport(small_board)
    lossy.response_timeout = 10
    client = Client(lossy, progress=False)
    client.load_image(small_image, tag=2)
    client.reset()
    t0 = time.monotonic()
    chunks = list(client.stream(1, 500))
    rate = 500 / (time.monotonic() - t0)
    counts = []
    for data in lossy.sent:
        for st, payload in FrameDecoder().feed(data):
            op, _, body = parse_request(payload)
            if op == Cmd.STREAM:
                counts.append(STREAM_BODY.unpack_from(body).count)
    assert counts == [len(c.tokens) for c in chunks]
    assert counts[0] == FIRST_CHUNK and sum(counts) == 500 and max(counts) > FIRST_CHUNK
    assert all(b <= 8 * a for a, b in zip(counts, counts[1:])), counts
    assert max(counts) < rate, f"a request of {max(counts)} timesteps at {rate:.0f}/s"


def test_stream_is_not_repeated_after_a_timeout(small_board, small_image):
    client = Client(small_board, progress=False)
    client.load_image(small_image, tag=1)
    lossy = LossyTransport(small_board, lose_writes={1})         # after the IDENTIFY
    with pytest.raises(NoResponse, match="no answer to STREAM"):
        list(Client(lossy).stream(1, 3))
    assert lossy.writes == 2


def test_stream_refused_is_one_line(small_board, small_image):
    client = Client(small_board, progress=False)
    client.load_image(small_image, tag=1)
    with pytest.raises(CommandFailed, match=r"refused STREAM: BAD_TOKEN .* after 0 "
                                            r"timesteps") as info:
        list(client.stream(small_image.net.vocab_size, 5))
    assert info.value.status == LinkStatus.BAD_TOKEN and "\n" not in str(info.value)
    assert client.identify().tag == 1


def test_a_stream_interrupted_leaves_the_link_clean(small_board, small_image, monkeypatch):
    """Ctrl-C while a STREAM's token bytes arrive: the client lets the board finish the
    chunk (its bytes pass the frame decoder as junk) and the link is answerable at once."""
    client = Client(small_board, progress=False)
    client.load_image(small_image, tag=1)
    list(client.stream(1, 8))                  # measured: the next chunk is larger
    read = small_board.read
    calls = []

    def interrupted(size=4096, timeout=None):
        calls.append(size)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read(size, timeout)
    monkeypatch.setattr(small_board, "read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        list(client.stream(1, 10_000))
    monkeypatch.setattr(small_board, "read", read)
    steps = small_board.board.steps
    assert client.status().steps == steps       # the chunk had ended
    assert client.identify().tag == 1


class StreamBoard(Transport):
    """A board that answers IDENTIFY as a core of ``config`` and every STREAM with the bytes
    ``answer(seq, first, count)`` makes, handed out ``piece`` bytes per read."""

    name = "scripted"
    description = "scripted board"
    response_timeout = 0.3

    def __init__(self, config, answer, piece=4096):
        self.config, self.answer, self.piece = config, answer, piece
        self.out = b""

    def open(self):
        pass

    def close(self):
        pass

    def write(self, data):
        for st, payload in FrameDecoder().feed(data):
            op, seq, body = parse_request(payload)
            if op == Cmd.IDENTIFY:
                self.out += frame(response(op, seq, 0, identity_of(self.config, 1, 1)))
            elif op == Cmd.STREAM:
                self.out += self.answer(seq, *STREAM_BODY.unpack_from(body))

    def read(self, size=4096, timeout=None):
        data, self.out = self.out[:min(size, self.piece)], self.out[min(size, self.piece):]
        return data


def _token(i):
    """Tokens that hold every byte SLIP would escape."""
    return (END, 0xDB, 0xDC, 0xDD, 0, 17)[i % 6]


def _answer(seq, first, count, *, raw=None, start=None, steps=None, crc=None, status=0,
            end=None, tail=b""):
    good = bytes(_token(i) for i in range(count))
    raw = good if raw is None else raw(good)
    start = STREAM_START_BODY.pack(count=count, token_bytes=1) if start is None else start
    end = STREAM_END_BODY.pack(steps=count if steps is None else steps, cycles=700 * count,
                               spikes=40 * count, crc=crc16(good) if crc is None else crc) \
        if end is None else end
    return (frame(response(Cmd.STREAM_START, seq, 0, start)) + raw +
            frame(response(Cmd.STREAM, seq, status, end)) + tail)


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_stream_bytes_are_taken_raw(small_config, piece):
    """Token bytes that SLIP would escape (END, ESC) are raw in a STREAM: every one arrives
    as sent, whatever pieces the transport hands them out in."""
    config = small_config.replace(max_vocab=256)
    client = Client(StreamBoard(config, _answer, piece), progress=False)
    chunks = list(client.stream(1, FIRST_CHUNK + 5))
    assert [t for c in chunks for t in c.tokens] == [_token(i) for i in range(FIRST_CHUNK)] + \
        [_token(i) for i in range(5)]
    assert [(c.index, c.cycles, c.spikes) for c in chunks] == \
        [(0, 700 * FIRST_CHUNK, 40 * FIRST_CHUNK), (FIRST_CHUNK, 3500, 200)]


def _drop(k):
    return lambda raw: raw[:k] + raw[k + 1:]


DAMAGED = [
    # A byte lost: the final frame's leading END is read as the last token byte, the frame
    # still decodes, and its CRC tells.
    ("lost byte", dict(raw=_drop(3)), TransportError, r"CRC of its 8 token bytes"),
    ("lost last byte", dict(raw=_drop(7)), TransportError, r"CRC of its 8 token bytes"),
    ("two lost", dict(raw=lambda r: r[2:]), TransportError, r"arrived corrupted: a damaged"),
    # A byte added: a stray byte before the final frame's END, a damaged frame.
    ("added byte", dict(raw=lambda r: r + b"\x05"), TransportError,
     r"a damaged frame \(TOO_SHORT\)"),
    ("added byte inside", dict(raw=lambda r: r[:4] + b"\x05" + r[4:]), TransportError,
     r"arrived corrupted"),
    ("added END", dict(raw=lambda r: r[:1] + bytes([END]) + r[1:]), TransportError,
     r"CRC of its 8 token bytes"),
    ("flipped byte", dict(raw=lambda r: r[:5] + bytes([r[5] ^ 0x10]) + r[6:]), TransportError,
     r"CRC of its 8 token bytes"),
    ("wrong crc", dict(crc=0x1234), TransportError, r"the board's 0x1234"),
    ("truncated", dict(raw=lambda r: r[:5], end=b"", status=None), NoResponse,
     r"5 of its 8 token bytes came"),
    ("no final frame", dict(end=b"", status=None), NoResponse, r"no final frame within"),
    ("count", dict(start=STREAM_START_BODY.pack(count=9, token_bytes=1)), BoardMismatch,
     r"announced 9 tokens of 1 bytes for a STREAM of 8 tokens of 1"),
    ("width", dict(start=STREAM_START_BODY.pack(count=8, token_bytes=2)), BoardMismatch,
     r"announced 8 tokens of 2 bytes"),
    ("short start", dict(start=b"\x08"), BoardMismatch, r"STREAM_START frame of 1 bytes"),
    ("steps", dict(steps=7), BoardMismatch, r"ended STREAM \(OK\) after 7 timesteps"),
    ("final body", dict(end=bytes(STREAM_END_BODY.size + 1)), BoardMismatch,
     r"ended STREAM with a 23-byte body, not 22"),
    ("final status", dict(status=LinkStatus.BAD_TOKEN), BoardMismatch,
     r"ended STREAM with BAD_TOKEN after sending its 8 tokens"),
]


@pytest.mark.parametrize("case, damage, error, message", DAMAGED, ids=[d[0] for d in DAMAGED])
@pytest.mark.parametrize("piece", [1, 4096])
def test_a_damaged_stream_is_one_error_line(small_config, case, damage, error, message, piece):
    config = small_config.replace(max_vocab=256)

    def answer(seq, first, count):
        wire = _answer(seq, first, count, **{k: v for k, v in damage.items()
                                             if k != "status" or v is not None})
        if damage.get("status", 0) is None:          # the final frame never comes
            wire = wire[:wire.rindex(bytes([END]), 0, len(wire) - 1)]
        return wire

    client = Client(StreamBoard(config, answer, piece), progress=False)
    with pytest.raises(error, match=message) as info:
        list(client.stream(1, FIRST_CHUNK))
    assert "\n" not in str(info.value)
    assert client._inflight is None


def test_a_token_outside_the_vocabulary_in_a_stream(small_config):
    """Bytes that arrive as sent (the CRC agrees) but name a token the network lacks."""
    client = Client(StreamBoard(small_config.replace(max_vocab=256), _answer), progress=False)
    client.identify()
    client.vocab_size = 100
    with pytest.raises(BoardMismatch, match="sampled token 221, outside the vocabulary of 100"):
        list(client.stream(1, FIRST_CHUNK))


def test_a_stream_answered_without_its_tokens(small_config):
    def answer(seq, first, count):
        return frame(response(Cmd.STREAM, seq, 0, STREAM_END_BODY.pack(
            steps=count, cycles=1, spikes=1, crc=0xFFFF)))
    client = Client(StreamBoard(small_config, answer), progress=False)
    with pytest.raises(BoardMismatch, match=r"ended STREAM \(OK\) without sending its 8 tokens"):
        list(client.stream(1, FIRST_CHUNK))


def test_stopping_a_stream_early_leaves_the_link_clean(small_board, small_image):
    client = Client(small_board, progress=False)
    client.load_image(small_image, tag=1)
    stream = client.generate(1, 50)
    next(stream)
    stream.close()
    assert client.status().steps >= 1
    assert client.identify().tag == 1


def test_a_closed_transport_says_so(small_config):
    t = GoldenTransport(small_config, clock_hz=1, baud=1)
    with pytest.raises(TransportError, match="not open"):
        Client(t).identify()
