"""The protocol client against the golden board: identity, loading, reading back, every
error status as an exception, retries over a lossy link, streaming."""

import struct

import pytest

from spikestream.memory_map import CoreReg, Mem, image_writes
from spikestream.protocol import (IDENTIFY_FORMAT, MAGIC, MAX_READ, PROTOCOL_VERSION, Cmd, FrameDecoder,
                         LinkStatus, frame, max_write_words, parse_request, response)
from spikestream.timing import core_timing
from models.golden import GoldenCore
from spikestream.image import Image, image_bytes
from sw.client import Client, image_tag
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
