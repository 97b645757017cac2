"""The link protocol between a host and the SoC: the one definition gateware and host import.

Pure Python (no Amaranth): ``hw.link`` builds the gateware from these constants, ``sw``
speaks them, and the golden board (``sw.golden_board``) answers them. docs/protocol.md
explains the protocol; this module is its reference.

Framing
-------
A frame on the wire is ``END, slip(payload + crc16(payload)), END`` with SLIP escaping
(``END`` = 0xC0 becomes ``ESC ESC_END``, ``ESC`` = 0xDB becomes ``ESC ESC_ESC``). The CRC is
CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR),
sent least significant byte first. An empty frame (two ``END`` in a row) is ignored, so a
sender may start every frame with ``END`` to flush line noise. SLIP needs no look-ahead:
both ends encode and decode a byte at a time.

Payloads
--------
All multi-byte fields are little-endian. Every header and body is declared once below as a
:class:`Layout` of named fields; the :mod:`struct` formats (``WRITE_HEADER``,
``STATUS_FORMAT``, ...) and the gateware's ``StructLayout`` views are both made from those.

* request:  ``op u8, seq u8, body``
* response: ``op u8, seq u8, status u8, body`` — ``op`` and ``seq`` echo the request.

A frame that fails the CRC, is shorter than a request header, is longer than
:data:`MAX_PAYLOAD`, holds a bad escape or a UART framing error is answered by one
response with ``op`` = :data:`NACK_OP`, ``seq`` = 0 and the status saying why; nothing
else happens. Every other frame is answered by exactly one final response (``RUN`` and
``GENERATE`` first stream one ``TOKEN`` frame per timestep). A request is checked
completely before it acts: a rejected request changes no memory and no state.
Bytes that arrive while a request executes are dropped (counted in ``STATUS``).

Requests in detail
------------------
(Clarifications made with the gateware, ``hw.link``; :func:`check_request` is their
reference.) A request whose CRC is good is checked in this order, and the first failing
check is its status: ``BAD_OPCODE`` (``op`` not a request of :class:`Cmd`; ``TOKEN``,
``STREAM_START`` and ``NACK_OP`` are not requests) -> ``BAD_LENGTH`` -> ``BAD_MEMORY`` ->
``OUT_OF_RANGE``.

* Bodies: ``IDENTIFY``, ``RESET``, ``STATUS`` empty; ``TAG``, ``GENERATE`` 4 bytes; ``STREAM``
  6 bytes; ``READ`` 8 bytes; ``RUN`` 1 to :data:`MAX_RUN` tokens (an even, non-zero length);
  ``WRITE`` its 8-byte header and exactly ``count`` words of :func:`word_bytes` bytes each.
* ``BAD_MEMORY``: a memory id that is not a :class:`spikestream.memory_map.Mem`, or a ``WRITE`` to a
  read-only memory (``ACC``).
* ``OUT_OF_RANGE``: ``count`` < 1; ``addr + count`` beyond the memory's depth; a lane
  memory's ``lane`` >= lanes or a global memory's ``lane`` != 0; ``READ`` of more than
  :data:`MAX_READ` words; a ``CORE`` ``WRITE`` of other than exactly one word; any ``WRITE``
  word the core's write port would refuse (:func:`spikestream.memory_map.write_problem`: a value
  wider than the port's ``data_bits``, or a ``CORE`` register value above its limit);
  ``GENERATE`` or ``STREAM`` of 0 tokens. A ``WRITE`` is all or nothing.
* Response bodies: ``OK`` responses as :class:`Cmd` says; every error status has an empty
  body, except that ``RUN``/``GENERATE`` answer ``OK`` and ``BAD_TOKEN`` with
  :data:`DONE_FORMAT`. A NACK has an empty body.
* ``RUN``/``GENERATE`` do not reset the core first; the TOKEN frames carry ``seq`` of the
  request and status ``OK``; ``index`` counts from 0. A response is final unless it is a
  ``TOKEN`` frame with status ``OK`` (a request with ``op`` = ``TOKEN`` is answered
  ``(TOKEN, seq, BAD_OPCODE)``, which is final). A token outside the vocabulary stops
  the request before that timestep runs (``GENERATE``: only its first token can be).
* ``STREAM`` is ``GENERATE`` with a compact answer, for throughput: one ``STREAM_START``
  frame (``op`` = ``STREAM_START``, the request's ``seq``, ``OK``; :data:`STREAM_START_BODY`),
  then ``count`` sampled tokens as raw bytes, :func:`stream_token_bytes` each, little-endian,
  neither framed nor escaped, then the final ``(STREAM, seq, OK)`` frame with
  :data:`STREAM_END_BODY` (steps, cycles, spikes, and the CRC of the raw bytes). The host reads
  exactly ``count * token_bytes`` raw bytes after ``STREAM_START``; the final frame's CRC and
  steps tell it whether a byte was lost, added or damaged. A first token outside the
  vocabulary is answered by the final frame alone, status ``BAD_TOKEN`` and steps 0 (no
  ``STREAM_START``, no raw bytes); ``STREAM`` of 0 tokens is ``OUT_OF_RANGE``; its body is 6
  bytes (``BAD_LENGTH`` otherwise). ``STREAM_START`` is a response only, like ``TOKEN``.
* ``STATUS`` counts every request answered before it (not itself): ``frames_ok`` final
  responses with ``OK``, ``frames_rejected`` NACKs and final responses with any other status.
  ``core_status`` normally reads 0: the link clears the sticky flags it provokes itself (a
  refused ``CORE`` value, a ``BAD_TOKEN``), so a set flag there means a fault.
* The tag: ``TAG`` sets it; an accepted ``WRITE`` to ``PARAM``, ``PTR``, ``SYN``, ``POP``,
  ``PROJ`` or to a ``CORE`` register other than ``TEMPERATURE``/``SEED`` sets it to 0
  (:func:`clears_tag`); rejected requests do not touch it.
* Busy: the link is busy from the ``END`` that closes a frame until the last byte of its
  response has gone to the transmitter; bytes arriving meanwhile (and UART errors) are
  dropped, and the decoder then starts afresh as if it had just seen an ``END``.
"""

import binascii
import collections
import enum
import struct
from typing import NamedTuple

from .memory_map import LANE_MEMS, READ_ONLY_MEMS, CoreConfig, CoreReg, Mem, Write, write_problem

__all__ = [
    "PROTOCOL_VERSION", "MAGIC", "END", "ESC", "ESC_END", "ESC_ESC", "MAX_PAYLOAD",
    "MAX_RUN", "MAX_READ", "NACK_OP", "Cmd", "LinkStatus", "Field", "Layout", "REQUEST_HEAD",
    "RESPONSE_HEAD", "BLOCK_BODY", "GENERATE_BODY", "TAG_BODY", "RUN_BODY", "TOKEN_BODY",
    "DONE_BODY", "STREAM_BODY", "STREAM_START_BODY", "STREAM_END_BODY", "STATUS_BODY",
    "IDENTIFY_BODY", "IDENTIFY_FORMAT", "Identity",
    "WRITE_HEADER", "READ_HEADER", "TOKEN_FORMAT", "TokenResult", "STATUS_FORMAT",
    "LinkCounters", "GENERATE_FORMAT", "DONE_FORMAT", "TAG_FORMAT", "WRITE_BODY_LIMIT",
    "crc16", "slip_encode", "frame", "FrameDecoder", "ProtocolError", "word_bytes",
    "max_write_words", "stream_token_bytes", "pack_stream", "unpack_stream", "request",
    "response", "parse_request", "parse_response",
    "pack_words", "unpack_words", "identity_of", "check_request", "clears_tag",
]

PROTOCOL_VERSION = 3
MAGIC = b"SPKS"

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD

MAX_PAYLOAD = 2046
"""Largest request payload in bytes (header and body; the CRC comes on top). The SoC keeps
a whole request in one 2048-byte block RAM until its CRC is checked."""

MAX_RUN = 512
"""Most tokens in one ``RUN`` request."""

MAX_READ = 128
"""Most words in one ``READ`` request."""

NACK_OP = 0xFF
"""``op`` of the response to a frame that could not be read as a request."""

CRC_POLY = 0x1021
CRC_INIT = 0xFFFF


class Cmd(enum.IntEnum):
    """Request opcodes (and the ``op`` of their responses)."""
    IDENTIFY = 0x01  # -> Identity
    WRITE = 0x02     # mem u8, lane u8, addr u32, count u16, count words -> (empty)
    READ = 0x03      # mem u8, lane u8, addr u32, count u16 -> count words
    RESET = 0x04     # clear v, a, accumulators and spikes -> (empty)
    RUN = 0x05       # tokens u16 * n -> n TOKEN frames, then DONE
    GENERATE = 0x06  # first token u16, count u16 -> count TOKEN frames (each sampled token is
                     # the next input), then DONE
    STATUS = 0x07    # -> LinkCounters
    TAG = 0x08       # tag u32: name the loaded image -> (empty)
    STREAM = 0x09    # first token u16, count u32 -> STREAM_START, count raw tokens (each
                     # stream_token_bytes(config) bytes, no frame), then STREAM's final frame
    TOKEN = 0x10     # response only: one timestep of a RUN or GENERATE (TokenResult)
    STREAM_START = 0x11  # response only: a STREAM's raw tokens follow this frame (StreamStart)


class LinkStatus(enum.IntEnum):
    """The status byte of every response."""
    OK = 0
    BAD_CRC = 1        # NACK: the CRC did not match
    BAD_FRAME = 2      # NACK: a bad SLIP escape or a UART framing/overrun error in the frame
    TOO_LONG = 3       # NACK: longer than MAX_PAYLOAD (the rest up to END was dropped)
    TOO_SHORT = 4      # NACK: shorter than a request header
    BAD_OPCODE = 5     # no such request
    BAD_LENGTH = 6     # the body's length does not match the request
    BAD_MEMORY = 7     # no such memory, or (WRITE) a read-only one
    OUT_OF_RANGE = 8   # lane, address or count outside the memory, or a bad CORE value
    BAD_TOKEN = 9      # a token outside the vocabulary (RUN/GENERATE/STREAM stop before it)


# --- layouts --------------------------------------------------------------------------------

class Field(NamedTuple):
    """One field of a :class:`Layout`: its name, its size in bytes, whether it is a signed
    number, and whether it is a byte string (``raw``; IDENTIFY's magic) rather than a number.
    Every number is little-endian."""
    name: str
    size: int
    signed: bool = False
    raw: bool = False

    @property
    def bits(self):
        return 8 * self.size

    @property
    def code(self):
        """Its :mod:`struct` format code."""
        if self.raw:
            return f"{self.size}s"
        code = {1: "B", 2: "H", 4: "I", 8: "Q"}[self.size]
        return code.lower() if self.signed else code


class Layout:
    """A packed sequence of named fields: one header or body of this protocol.

    The one declaration of a layout: the :mod:`struct` format (:attr:`format`) the host packs
    with, and the Amaranth ``StructLayout`` the gateware reads it through
    (:func:`hw.link.struct_layout`), both come from it. :attr:`record` is a named tuple of
    the values, built from any iterable of them (``record(struct.unpack(format, data))``).
    """

    def __init__(self, name, *fields):
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"layout {name}: a field name used twice")
        self.name = name
        self.fields = tuple(fields)
        self.names = tuple(names)
        self.format = "<" + "".join(f.code for f in fields)
        self.size = struct.calcsize(self.format)

        class record(collections.namedtuple(name, names)):
            __slots__ = ()
            __doc__ = f"The fields of a {name}: {', '.join(names)}."

            def __new__(cls, values):
                return super().__new__(cls, *values)

            def __getnewargs__(self):
                return (tuple(self),)

        record.__name__ = record.__qualname__ = name
        self.record = record

    def field(self, name):
        """The :class:`Field` called ``name``."""
        return self.fields[self.names.index(name)]

    def offset(self, name):
        """The byte offset of field ``name``."""
        at = 0
        for f in self.fields:
            if f.name == name:
                return at
            at += f.size
        raise KeyError(name)

    def pack(self, **values):
        """The bytes of the layout with these field values (every field, by name)."""
        if set(values) != set(self.names):
            raise TypeError(f"{self.name} needs exactly the fields {', '.join(self.names)}")
        return struct.pack(self.format, *(values[n] for n in self.names))

    def unpack_from(self, data, offset=0):
        """The :attr:`record` at ``offset`` in ``data``."""
        return self.record(struct.unpack_from(self.format, data, offset))

    def __repr__(self):
        return f"Layout({self.name!r}, {self.format!r})"


REQUEST_HEAD = Layout("RequestHead", Field("op", 1), Field("seq", 1))
"""The start of every request payload; its body follows."""
RESPONSE_HEAD = Layout("ResponseHead", Field("op", 1), Field("seq", 1), Field("status", 1))
"""The start of every response payload: ``op`` and ``seq`` echo the request."""

BLOCK_BODY = Layout("Block", Field("mem", 1), Field("lane", 1), Field("addr", 4),
                    Field("count", 2))
"""READ's body, and WRITE's before its words: a block of ``count`` words of memory ``mem``
(a :class:`spikestream.memory_map.Mem`) in ``lane`` from ``addr``."""
GENERATE_BODY = Layout("Generate", Field("first", 2), Field("count", 2))
"""GENERATE body: first input token, tokens to generate (at least 1)."""
TAG_BODY = Layout("Tag", Field("tag", 4))
"""TAG body: the image tag (0 means "no image"; any WRITE to the network's memories or the
network registers sets the tag back to 0)."""
RUN_BODY = Layout("RunToken", Field("token", 2))
"""One input token of a RUN body (which holds 1 to :data:`MAX_RUN` of them)."""

TOKEN_BODY = Layout("TokenResult", Field("index", 2), Field("token", 2), Field("cycles", 4),
                    Field("spikes", 4))
"""TOKEN body: index in the request, sampled token, cycles, spikes of the timestep."""
STREAM_BODY = Layout("Stream", Field("first", 2), Field("count", 4))
"""STREAM body: first input token, tokens to generate (at least 1)."""
STREAM_START_BODY = Layout("StreamStart", Field("count", 4), Field("token_bytes", 1))
"""STREAM_START body (the frame before a STREAM's raw tokens): tokens that follow, bytes per
token (:func:`stream_token_bytes`)."""
STREAM_END_BODY = Layout("StreamEnd", Field("steps", 4), Field("cycles", 8), Field("spikes", 8),
                         Field("crc", 2))
"""Final STREAM response body: timesteps run (0 after a BAD_TOKEN, else the count asked), their
cycles and spikes (sums), and :func:`crc16` of the raw token bytes sent (``CRC_INIT`` for
none), so that a lost, added or damaged byte is detected."""
DONE_BODY = Layout("Done", Field("steps", 2))
"""Final RUN/GENERATE response body: timesteps run (fewer than asked after a BAD_TOKEN)."""
STATUS_BODY = Layout("LinkCounters", Field("core_status", 1), Field("frames_ok", 4),
                     Field("frames_rejected", 4), Field("bytes_dropped", 4), Field("steps", 4),
                     Field("cycles", 4), Field("tag", 4))
"""STATUS body: core status word (spikestream.memory_map.Status bits), frames answered OK, frames
rejected (NACK or error status), bytes dropped, timesteps run, cycles run (low 32 bits),
image tag."""
IDENTIFY_BODY = Layout(
    "Identity", Field("magic", 4, raw=True), Field("version", 2), Field("lanes", 2),
    Field("stages", 1), Field("data_bits", 1), Field("neurons_per_lane", 4),
    Field("syn_depth", 4), Field("ptr_depth", 4), Field("max_pops", 2), Field("max_projs", 2),
    Field("max_vocab", 4), Field("spike_depth", 4), Field("clock_hz", 4), Field("baud", 4),
    Field("max_payload", 2), Field("tag", 4), Field("max_delay", 2), Field("queue_depth", 4),
    Field("max_regions", 2), Field("max_inputs", 2), Field("input_ids", 4),
    Field("input_depth", 4), Field("max_level_bits", 1))
"""Body of the IDENTIFY response: see :class:`Identity`."""

# The struct formats by their established names (hosts and tests pack with these).
IDENTIFY_FORMAT = IDENTIFY_BODY.format
"""Body of the IDENTIFY response: see :class:`Identity` (fields in that order)."""
IDENTITY_FIELDS = IDENTIFY_BODY.names
WRITE_HEADER = BLOCK_BODY.format
"""WRITE body before its words: memory id, lane, first address, word count."""
READ_HEADER = BLOCK_BODY.format
"""READ body: memory id, lane, first address, word count."""
GENERATE_FORMAT = GENERATE_BODY.format
"""GENERATE body: first input token, tokens to generate (at least 1)."""
TAG_FORMAT = TAG_BODY.format
"""TAG body: the image tag."""
TOKEN_FORMAT = TOKEN_BODY.format
"""TOKEN body: index in the request, sampled token, cycles, spikes of the timestep."""
DONE_FORMAT = DONE_BODY.format
"""Final RUN/GENERATE response body: timesteps run (fewer than asked after a BAD_TOKEN)."""
STATUS_FORMAT = STATUS_BODY.format
"""STATUS body: see :data:`STATUS_BODY`."""

WRITE_BODY_LIMIT = MAX_PAYLOAD - REQUEST_HEAD.size - BLOCK_BODY.size
"""Bytes of words one WRITE can carry."""


class Identity(IDENTIFY_BODY.record):
    """What IDENTIFY returns: the build's configuration, clock, baud rate and image tag
    (one attribute per field of :data:`IDENTIFY_BODY`)."""
    __slots__ = ()

    def as_dict(self):
        d = dict(zip(IDENTIFY_BODY.names, self))
        d["magic"] = d["magic"].decode("ascii", "replace")
        return d

    def core_config(self):
        """The :class:`spikestream.memory_map.CoreConfig` the board was built with."""
        return CoreConfig(lanes=self.lanes, neurons_per_lane=self.neurons_per_lane,
                          syn_depth=self.syn_depth, ptr_depth=self.ptr_depth,
                          max_pops=self.max_pops, max_projs=self.max_projs,
                          max_vocab=self.max_vocab, spike_depth=self.spike_depth,
                          stages=self.stages, max_delay=self.max_delay,
                          queue_depth=self.queue_depth, max_regions=self.max_regions,
                          max_inputs=self.max_inputs, input_ids=self.input_ids,
                          input_depth=self.input_depth, max_level_bits=self.max_level_bits)


def identity_of(config, clock_hz, baud, tag=0):
    """The IDENTIFY body a SoC built for ``config`` answers with."""
    return IDENTIFY_BODY.pack(
        magic=MAGIC, version=PROTOCOL_VERSION, lanes=config.lanes, stages=config.stages,
        data_bits=config.data_bits, neurons_per_lane=config.neurons_per_lane,
        syn_depth=config.syn_depth, ptr_depth=config.ptr_depth, max_pops=config.max_pops,
        max_projs=config.max_projs, max_vocab=config.max_vocab,
        spike_depth=config.spike_depth, clock_hz=int(clock_hz), baud=int(baud),
        max_payload=MAX_PAYLOAD, tag=tag, max_delay=config.max_delay,
        queue_depth=config.queue_depth, max_regions=config.max_regions,
        max_inputs=config.max_inputs, input_ids=config.input_ids,
        input_depth=config.input_depth, max_level_bits=config.max_level_bits)


TokenResult = TOKEN_BODY.record
"""One TOKEN frame: ``index, token, cycles, spikes``."""
LinkCounters = STATUS_BODY.record
"""The STATUS body."""


def stream_token_bytes(config):
    """Bytes per token in a STREAM's raw part: the narrowest whole bytes that hold every token
    of a vocabulary of ``config.max_vocab`` (little-endian; 1 up to 256 tokens)."""
    return max(1, -(-(config.max_vocab - 1).bit_length() // 8))


def pack_stream(tokens, nbytes):
    """The raw bytes of a STREAM for ``tokens``, ``nbytes`` bytes each."""
    return b"".join(int(t).to_bytes(nbytes, "little") for t in tokens)


def unpack_stream(data, nbytes):
    """The tokens of a STREAM's raw bytes, ``nbytes`` bytes each."""
    return unpack_words(data, nbytes)


def word_bytes(config):
    """Bytes per memory word on the link: the core's data width rounded up to bytes."""
    return -(-config.data_bits // 8)


def max_write_words(config):
    """Most words one WRITE request can carry for a core built for ``config``."""
    return WRITE_BODY_LIMIT // word_bytes(config)


def pack_words(words, nbytes):
    return b"".join(int(w).to_bytes(nbytes, "little") for w in words)


def unpack_words(data, nbytes):
    if len(data) % nbytes:
        raise ProtocolError(f"{len(data)} bytes are not whole {nbytes}-byte words")
    return [int.from_bytes(data[i:i + nbytes], "little") for i in range(0, len(data), nbytes)]


# --- framing --------------------------------------------------------------------------------

class ProtocolError(Exception):
    """A frame or payload that does not follow this protocol."""


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``), continuing from
    ``crc``. :func:`binascii.crc_hqx` is this CRC (polynomial 0x1021, MSB first, no final
    XOR) with the initial value as an argument."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(list(data))            # an iterable of byte values
    return binascii.crc_hqx(data, crc)


def slip_encode(data):
    """SLIP-escape ``data`` (no ``END`` bytes added)."""
    return bytes(data).replace(bytes([ESC]), bytes([ESC, ESC_ESC])).replace(
        bytes([END]), bytes([ESC, ESC_END]))


def frame(payload):
    """The bytes on the wire for ``payload``: ``END, slip(payload + crc), END``."""
    payload = bytes(payload)
    return bytes([END]) + slip_encode(payload + crc16(payload).to_bytes(2, "little")) + \
        bytes([END])


class FrameDecoder:
    """Turns a byte stream into frames, a byte at a time, as the gateware does.

    :meth:`feed` returns a list of ``(status, payload)``: :attr:`LinkStatus.OK` with the
    payload (CRC removed), or a NACK status (``BAD_CRC``, ``BAD_FRAME``, ``TOO_LONG``,
    ``TOO_SHORT``) with the bytes received. ``min_length`` is the shortest payload that is
    not ``TOO_SHORT`` (the size of :data:`REQUEST_HEAD` for requests, the default; of
    :data:`RESPONSE_HEAD` for responses); ``max_length`` the longest.
    """

    def __init__(self, max_length=MAX_PAYLOAD, min_length=REQUEST_HEAD.size):
        self.max_length = max_length
        self.min_length = min_length
        self._buf = bytearray()
        self._esc = False
        self._bad = False
        self._long = False

    def mark_bad(self):
        """Mark the frame being received as damaged (e.g. a UART framing error)."""
        self._bad = True

    def feed(self, data):
        out = []
        for b in bytes(data):
            if b == END:
                if self._buf or self._bad or self._long:
                    out.append(self._finish())
                self._buf.clear()
                self._esc = self._bad = self._long = False
                continue
            if self._esc:
                self._esc = False
                if b == ESC_END:
                    b = END
                elif b == ESC_ESC:
                    b = ESC
                else:
                    self._bad = True
                    continue
            elif b == ESC:
                self._esc = True
                continue
            if len(self._buf) >= self.max_length + 2:
                self._long = True
            else:
                self._buf.append(b)
        return out

    def _finish(self):
        buf = bytes(self._buf)
        if self._bad or self._esc:
            return LinkStatus.BAD_FRAME, buf
        if self._long:
            return LinkStatus.TOO_LONG, buf
        if len(buf) < self.min_length + 2:
            return LinkStatus.TOO_SHORT, buf
        payload, crc = buf[:-2], int.from_bytes(buf[-2:], "little")
        if crc16(payload) != crc:
            return LinkStatus.BAD_CRC, buf
        return LinkStatus.OK, payload


# --- payloads -------------------------------------------------------------------------------

def request(op, seq, body=b""):
    """A request payload (``op`` and ``seq`` taken modulo 256)."""
    return REQUEST_HEAD.pack(op=int(op) & 0xFF, seq=seq & 0xFF) + bytes(body)


def response(op, seq, status, body=b""):
    """A response payload (``op`` and ``seq`` taken modulo 256)."""
    return RESPONSE_HEAD.pack(op=int(op) & 0xFF, seq=seq & 0xFF, status=int(status)) + \
        bytes(body)


def parse_request(payload):
    """``(op, seq, body)`` of a request payload (``op`` may be any byte)."""
    if len(payload) < REQUEST_HEAD.size:
        raise ProtocolError(f"a request is at least {REQUEST_HEAD.size} bytes (op, seq)")
    op, seq = REQUEST_HEAD.unpack_from(payload)
    return op, seq, bytes(payload[REQUEST_HEAD.size:])


def parse_response(payload):
    """``(op, seq, status, body)`` of a response payload; ``status`` a :class:`LinkStatus`
    where it is one."""
    if len(payload) < RESPONSE_HEAD.size:
        raise ProtocolError(f"a response is at least {RESPONSE_HEAD.size} bytes "
                            "(op, seq, status)")
    op, seq, status = RESPONSE_HEAD.unpack_from(payload)
    try:
        status = LinkStatus(status)
    except ValueError:
        pass
    return op, seq, status, bytes(payload[RESPONSE_HEAD.size:])


# --- the reference of request checking ------------------------------------------------------

def clears_tag(mem, addr):
    """Whether an accepted WRITE to memory ``mem`` at ``addr`` sets the image tag to 0."""
    if mem == Mem.CORE:
        return addr not in (CoreReg.TEMPERATURE, CoreReg.SEED)
    # The network's memories; not STATE, the read-only ones, nor a timestep's spike inputs.
    return mem in (Mem.PARAM, Mem.PTR, Mem.SYN, Mem.POP, Mem.PROJ, Mem.SRC)


def check_request(payload, config):
    """The status a SoC built for ``config`` gives the request ``payload`` (its CRC good)
    before acting on it: :attr:`LinkStatus.OK` if it will run, else the error it answers.

    This is the reference of the order and the rules in this module's docstring; the
    gateware (``hw.link``) and the golden board must agree with it. ``BAD_TOKEN`` is not
    decided here: it comes up while ``RUN``/``GENERATE`` run.
    """
    op, _, body = parse_request(payload)
    if op not in set(Cmd) or op in (Cmd.TOKEN, Cmd.STREAM_START):
        return LinkStatus.BAD_OPCODE
    op, n = Cmd(op), len(body)
    wb = word_bytes(config)
    block = BLOCK_BODY.size
    if op in (Cmd.IDENTIFY, Cmd.RESET, Cmd.STATUS):
        length_ok = n == 0
    elif op == Cmd.TAG:
        length_ok = n == TAG_BODY.size
    elif op == Cmd.GENERATE:
        length_ok = n == GENERATE_BODY.size
    elif op == Cmd.STREAM:
        length_ok = n == STREAM_BODY.size
    elif op == Cmd.READ:
        length_ok = n == block
    elif op == Cmd.RUN:
        length_ok = n % RUN_BODY.size == 0 and RUN_BODY.size <= n <= RUN_BODY.size * MAX_RUN
    else:
        length_ok = n >= block and n == block + BLOCK_BODY.unpack_from(body).count * wb
    if not length_ok:
        return LinkStatus.BAD_LENGTH
    if op in (Cmd.GENERATE, Cmd.STREAM):
        layout = GENERATE_BODY if op == Cmd.GENERATE else STREAM_BODY
        return LinkStatus.OUT_OF_RANGE if layout.unpack_from(body).count == 0 \
            else LinkStatus.OK
    if op not in (Cmd.READ, Cmd.WRITE):
        return LinkStatus.OK
    mem, lane, addr, count = BLOCK_BODY.unpack_from(body)
    if mem not in set(Mem) or (op == Cmd.WRITE and mem in READ_ONLY_MEMS):
        return LinkStatus.BAD_MEMORY
    mem = Mem(mem)
    lane_ok = lane < config.lanes if mem in LANE_MEMS else lane == 0
    if (not lane_ok or count < 1 or addr + count > config.depth(mem)
            or (op == Cmd.READ and count > MAX_READ)
            or (op == Cmd.WRITE and mem == Mem.CORE and count != 1)):
        return LinkStatus.OUT_OF_RANGE
    if op == Cmd.WRITE:
        for k, word in enumerate(unpack_words(body[block:], wb)):
            if write_problem(Write(mem, lane, addr + k, word), config) is not None:
                return LinkStatus.OUT_OF_RANGE
    return LinkStatus.OK
