"""spikestream/protocol.py's layouts and CRC: the struct formats, the gateware's views and the CRC
implementations (host, gateware library) agree with each other and with independent
references."""

import random
import struct
import subprocess
import sys

import pytest
from amaranth.lib import data
from amaranth.lib.crc import catalog

from spikestream import protocol as P
from hw.link import CRC_ALGORITHM, RequestHeader, struct_layout

LAYOUTS = [P.REQUEST_HEAD, P.RESPONSE_HEAD, P.BLOCK_BODY, P.GENERATE_BODY, P.TAG_BODY,
           P.RUN_BODY, P.TOKEN_BODY, P.DONE_BODY, P.STATUS_BODY, P.IDENTIFY_BODY]


def table_crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE a byte at a time through a 256-entry table (spikestream.protocol's own
    implementation before it used binascii)."""
    table = []
    for byte in range(256):
        c = byte << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def some_data(rng):
    return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 7, 64, 2048])))


def test_crc16_matches_table_implementation():
    rng = random.Random(11)
    assert P.crc16(b"123456789") == table_crc16(b"123456789") == 0x29B1
    for _ in range(300):
        data_, init = some_data(rng), rng.randrange(1 << 16)
        assert P.crc16(data_) == table_crc16(data_)
        assert P.crc16(data_, init) == table_crc16(data_, init)
    # bytearray, memoryview and a list of byte values as before
    assert P.crc16(bytearray(b"abc")) == P.crc16(memoryview(b"abc")) == P.crc16(list(b"abc")) \
        == table_crc16(b"abc")
    # continuing from a CRC is the CRC of the concatenation
    assert P.crc16(b"def", P.crc16(b"abc")) == P.crc16(b"abcdef")


def test_gateware_crc_algorithm_is_the_catalogue_one():
    """hw.link builds amaranth.lib.crc's processor from the protocol's constants: that is
    CRC-16/CCITT-FALSE of the catalogue, and computes what the host does."""
    lib = catalog.CRC16_CCITT_FALSE
    assert repr(CRC_ALGORITHM) == repr(lib)
    rng = random.Random(12)
    for _ in range(50):
        data_ = some_data(rng)
        assert CRC_ALGORITHM(8).compute(data_) == lib(8).compute(data_) == P.crc16(data_)
    # A frame's payload and CRC (low byte first) leave the library's residue, 0.
    payload = b"\x01\x02spikes"
    crc = P.crc16(payload)
    assert lib(8).residue() == 0
    assert lib(8).compute(payload + bytes([crc >> 8, crc & 0xFF])) == 0


def test_formats_are_the_wire_format():
    """The struct formats made from the layouts are the ones the protocol documents (hosts
    in the field pack with them); version 2 appended the general networks' limits."""
    assert P.IDENTIFY_FORMAT == "<4sHHBBIIIHHIIIIHI" + "HIHHIIB"
    assert P.WRITE_HEADER == P.READ_HEADER == "<BBIH"
    assert P.GENERATE_FORMAT == "<HH"
    assert P.TAG_FORMAT == "<I"
    assert P.TOKEN_FORMAT == "<HHII"
    assert P.DONE_FORMAT == "<H"
    assert P.STATUS_FORMAT == "<BIIIIII"
    assert (P.REQUEST_HEAD.size, P.RESPONSE_HEAD.size, P.RUN_BODY.size) == (2, 3, 2)
    assert P.WRITE_BODY_LIMIT == P.MAX_PAYLOAD - 2 - 8
    assert P.IDENTITY_FIELDS == P.IDENTIFY_BODY.names


def random_values(layout, rng):
    values = {}
    for f in layout.fields:
        if f.raw:
            values[f.name] = bytes(rng.randrange(256) for _ in range(f.size))
        elif f.signed:
            values[f.name] = rng.randrange(-(1 << (f.bits - 1)), 1 << (f.bits - 1))
        else:
            values[f.name] = rng.randrange(1 << f.bits)
    return values


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_layout_pack_unpack_offsets(layout):
    rng = random.Random(layout.name)
    for _ in range(20):
        values = random_values(layout, rng)
        packed = layout.pack(**values)
        assert len(packed) == layout.size
        assert packed == struct.pack(layout.format, *values.values())
        record = layout.unpack_from(b"\xAA" + packed, 1)
        assert record._asdict() == values
        for f in layout.fields:
            at = layout.offset(f.name)
            raw = packed[at:at + f.size]
            assert (raw if f.raw else int.from_bytes(raw, "little", signed=f.signed)) == \
                values[f.name]
    with pytest.raises(TypeError):
        layout.pack(**dict(list(random_values(layout, rng).items())[1:]))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_struct_layout_reads_the_bytes(layout):
    """The gateware's view of a layout reads every field where struct.pack put it."""
    shape = struct_layout(layout)
    assert shape.size == 8 * layout.size
    rng = random.Random(layout.name + "view")
    for _ in range(20):
        values = random_values(layout, rng)
        view = data.Const(shape, int.from_bytes(layout.pack(**values), "little"))
        for f in layout.fields:
            want = values[f.name]
            if f.raw:
                want = int.from_bytes(want, "little")
            assert view[f.name] == want, f.name


def test_request_header_view():
    """RequestHeader over a request's first bytes: op, seq, and each body's fields."""
    rng = random.Random(13)
    assert RequestHeader.size == 8 * (P.REQUEST_HEAD.size + P.BLOCK_BODY.size)
    for _ in range(20):
        head = random_values(P.REQUEST_HEAD, rng)
        block = random_values(P.BLOCK_BODY, rng)
        raw = P.REQUEST_HEAD.pack(**head) + P.BLOCK_BODY.pack(**block)
        view = data.Const(RequestHeader, int.from_bytes(raw, "little"))
        assert (view.op, view.seq) == (head["op"], head["seq"])
        assert {n: view.body.block[n] for n in P.BLOCK_BODY.names} == block
        generate = P.GENERATE_BODY.unpack_from(raw, 2)
        assert (view.body.generate.first, view.body.generate.count) == generate
        assert view.body.tag.tag == P.TAG_BODY.unpack_from(raw, 2).tag


def test_records_keep_their_api():
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, bytes(range(25))))
    assert counters.core_status == 0 and counters.tag == int.from_bytes(bytes(range(21, 25)),
                                                                         "little")
    assert P.TokenResult((1, 2, 3, 4)).spikes == 4
    from spikestream.memory_map import CoreConfig
    config = CoreConfig()
    ident = P.Identity(struct.unpack(P.IDENTIFY_FORMAT, P.identity_of(config, 1e8, 3e6, 7)))
    assert ident.core_config() == config and ident.tag == 7 and ident.magic == P.MAGIC
    assert ident.as_dict()["magic"] == "SPKS"
    with pytest.raises(AttributeError):
        ident.no_such_field


def test_protocol_imports_without_amaranth():
    """Hosts import spikestream.protocol without Amaranth installed."""
    code = "import sys; sys.modules['amaranth'] = None; import spikestream.protocol"
    subprocess.run([sys.executable, "-c", code], check=True)
