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
All multi-byte fields are little-endian.

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
check is its status: ``BAD_OPCODE`` (``op`` not a request of :class:`Cmd`; ``TOKEN`` and
``NACK_OP`` are not requests) -> ``BAD_LENGTH`` -> ``BAD_MEMORY`` -> ``OUT_OF_RANGE``.

* Bodies: ``IDENTIFY``, ``RESET``, ``STATUS`` empty; ``TAG``, ``GENERATE`` 4 bytes; ``READ``
  8 bytes; ``RUN`` 1 to :data:`MAX_RUN` tokens (an even, non-zero length); ``WRITE`` its
  8-byte header and exactly ``count`` words of :func:`word_bytes` bytes each.
* ``BAD_MEMORY``: a memory id that is not a :class:`hw.memory_map.Mem`, or a ``WRITE`` to a
  read-only memory (``ACC``).
* ``OUT_OF_RANGE``: ``count`` < 1; ``addr + count`` beyond the memory's depth; a lane
  memory's ``lane`` >= lanes or a global memory's ``lane`` != 0; ``READ`` of more than
  :data:`MAX_READ` words; a ``CORE`` ``WRITE`` of other than exactly one word; any ``WRITE``
  word the core's write port would refuse (:func:`hw.memory_map.write_problem`: a value
  wider than the port's ``data_bits``, or a ``CORE`` register value above its limit);
  ``GENERATE`` of 0 tokens. A ``WRITE`` is all or nothing.
* Response bodies: ``OK`` responses as :class:`Cmd` says; every error status has an empty
  body, except that ``RUN``/``GENERATE`` answer ``OK`` and ``BAD_TOKEN`` with
  :data:`DONE_FORMAT`. A NACK has an empty body.
* ``RUN``/``GENERATE`` do not reset the core first; the TOKEN frames carry ``seq`` of the
  request and status ``OK``; ``index`` counts from 0. A response is final unless it is a
  ``TOKEN`` frame with status ``OK`` (a request with ``op`` = ``TOKEN`` is answered
  ``(TOKEN, seq, BAD_OPCODE)``, which is final). A token outside the vocabulary stops
  the request before that timestep runs (``GENERATE``: only its first token can be).
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

import enum
import struct

__all__ = [
    "PROTOCOL_VERSION", "MAGIC", "END", "ESC", "ESC_END", "ESC_ESC", "MAX_PAYLOAD",
    "MAX_RUN", "MAX_READ", "NACK_OP", "Cmd", "LinkStatus", "IDENTIFY_FORMAT", "Identity",
    "WRITE_HEADER", "READ_HEADER", "TOKEN_FORMAT", "TokenResult", "STATUS_FORMAT",
    "LinkCounters", "GENERATE_FORMAT", "DONE_FORMAT", "TAG_FORMAT", "WRITE_BODY_LIMIT",
    "crc16", "slip_encode", "frame", "FrameDecoder", "ProtocolError", "word_bytes",
    "max_write_words", "request", "response", "parse_request", "parse_response",
    "pack_words", "unpack_words", "identity_of", "check_request", "clears_tag",
]

PROTOCOL_VERSION = 1
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
    TOKEN = 0x10     # response only: one timestep of a RUN or GENERATE (TokenResult)


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
    BAD_TOKEN = 9      # a token outside the vocabulary (RUN/GENERATE stop before it)


# --- bodies ---------------------------------------------------------------------------------

IDENTIFY_FORMAT = "<4sHHBBIIIHHIIIIHI"
"""Body of the IDENTIFY response: see :class:`Identity` (fields in that order)."""

IDENTITY_FIELDS = ("magic", "version", "lanes", "stages", "data_bits", "neurons_per_lane",
                   "syn_depth", "ptr_depth", "max_pops", "max_projs", "max_vocab",
                   "spike_depth", "clock_hz", "baud", "max_payload", "tag")

WRITE_HEADER = "<BBIH"
"""WRITE body before its words: memory id, lane, first address, word count."""
READ_HEADER = "<BBIH"
"""READ body: memory id, lane, first address, word count."""
GENERATE_FORMAT = "<HH"
"""GENERATE body: first input token, tokens to generate (at least 1)."""
TAG_FORMAT = "<I"
"""TAG body: the image tag (0 means "no image"; any WRITE to the network's memories or the
network registers sets the tag back to 0)."""
TOKEN_FORMAT = "<HHII"
"""TOKEN body: index in the request, sampled token, cycles, spikes of the timestep."""
DONE_FORMAT = "<H"
"""Final RUN/GENERATE response body: timesteps run (fewer than asked after a BAD_TOKEN)."""
STATUS_FORMAT = "<BIIIIII"
"""STATUS body: core status word (hw.memory_map.Status bits), frames answered OK, frames
rejected (NACK or error status), bytes dropped, timesteps run, cycles run (low 32 bits),
image tag."""

WRITE_BODY_LIMIT = MAX_PAYLOAD - 2 - struct.calcsize(WRITE_HEADER)
"""Bytes of words one WRITE can carry."""


class Identity(tuple):
    """What IDENTIFY returns: the build's configuration, clock, baud rate and image tag."""

    def __new__(cls, values):
        return super().__new__(cls, values)

    def __getattr__(self, name):
        try:
            return self[IDENTITY_FIELDS.index(name)]
        except ValueError:
            raise AttributeError(name) from None

    def as_dict(self):
        d = dict(zip(IDENTITY_FIELDS, self))
        d["magic"] = d["magic"].decode("ascii", "replace")
        return d

    def core_config(self):
        """The :class:`hw.memory_map.CoreConfig` the board was built with."""
        from .memory_map import CoreConfig
        return CoreConfig(lanes=self.lanes, neurons_per_lane=self.neurons_per_lane,
                          syn_depth=self.syn_depth, ptr_depth=self.ptr_depth,
                          max_pops=self.max_pops, max_projs=self.max_projs,
                          max_vocab=self.max_vocab, spike_depth=self.spike_depth,
                          stages=self.stages)


def identity_of(config, clock_hz, baud, tag=0):
    """The IDENTIFY body a SoC built for ``config`` answers with."""
    return struct.pack(IDENTIFY_FORMAT, MAGIC, PROTOCOL_VERSION, config.lanes, config.stages,
                       config.data_bits, config.neurons_per_lane, config.syn_depth,
                       config.ptr_depth, config.max_pops, config.max_projs, config.max_vocab,
                       config.spike_depth, int(clock_hz), int(baud), MAX_PAYLOAD, tag)


class TokenResult(tuple):
    """One TOKEN frame: ``index, token, cycles, spikes``."""
    __slots__ = ()
    index = property(lambda self: self[0])
    token = property(lambda self: self[1])
    cycles = property(lambda self: self[2])
    spikes = property(lambda self: self[3])


class LinkCounters(tuple):
    """The STATUS body."""
    __slots__ = ()
    core_status = property(lambda self: self[0])
    frames_ok = property(lambda self: self[1])
    frames_rejected = property(lambda self: self[2])
    bytes_dropped = property(lambda self: self[3])
    steps = property(lambda self: self[4])
    cycles = property(lambda self: self[5])
    tag = property(lambda self: self[6])


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


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


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
    not ``TOO_SHORT`` (2 for requests, 3 for responses); ``max_length`` the longest.
    """

    def __init__(self, max_length=MAX_PAYLOAD, min_length=2):
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
    """A request payload."""
    return bytes([int(op) & 0xFF, seq & 0xFF]) + bytes(body)


def response(op, seq, status, body=b""):
    """A response payload."""
    return bytes([int(op) & 0xFF, seq & 0xFF, int(status)]) + bytes(body)


def parse_request(payload):
    """``(op, seq, body)`` of a request payload (``op`` may be any byte)."""
    if len(payload) < 2:
        raise ProtocolError("a request is at least 2 bytes (op, seq)")
    return payload[0], payload[1], bytes(payload[2:])


def parse_response(payload):
    """``(op, seq, status, body)`` of a response payload; ``status`` a :class:`LinkStatus`
    where it is one."""
    if len(payload) < 3:
        raise ProtocolError("a response is at least 3 bytes (op, seq, status)")
    try:
        status = LinkStatus(payload[2])
    except ValueError:
        status = payload[2]
    return payload[0], payload[1], status, bytes(payload[3:])


# --- the reference of request checking ------------------------------------------------------

def clears_tag(mem, addr):
    """Whether an accepted WRITE to memory ``mem`` at ``addr`` sets the image tag to 0."""
    from .memory_map import CoreReg, Mem
    if mem == Mem.CORE:
        return addr not in (CoreReg.TEMPERATURE, CoreReg.SEED)
    return mem in (Mem.PARAM, Mem.PTR, Mem.SYN, Mem.POP, Mem.PROJ)


def check_request(payload, config):
    """The status a SoC built for ``config`` gives the request ``payload`` (its CRC good)
    before acting on it: :attr:`LinkStatus.OK` if it will run, else the error it answers.

    This is the reference of the order and the rules in this module's docstring; the
    gateware (``hw.link``) and the golden board must agree with it. ``BAD_TOKEN`` is not
    decided here: it comes up while ``RUN``/``GENERATE`` run.
    """
    from .memory_map import LANE_MEMS, READ_ONLY_MEMS, Mem, Write, write_problem
    op, _, body = parse_request(payload)
    if op not in set(Cmd) or op == Cmd.TOKEN:
        return LinkStatus.BAD_OPCODE
    op, n = Cmd(op), len(body)
    wb = word_bytes(config)
    hdr = struct.calcsize(WRITE_HEADER)
    if op in (Cmd.IDENTIFY, Cmd.RESET, Cmd.STATUS):
        length_ok = n == 0
    elif op in (Cmd.TAG, Cmd.GENERATE):
        length_ok = n == 4
    elif op == Cmd.READ:
        length_ok = n == struct.calcsize(READ_HEADER)
    elif op == Cmd.RUN:
        length_ok = n % 2 == 0 and 2 <= n <= 2 * MAX_RUN
    else:
        length_ok = n >= hdr and n == hdr + struct.unpack_from(WRITE_HEADER, body)[3] * wb
    if not length_ok:
        return LinkStatus.BAD_LENGTH
    if op == Cmd.GENERATE:
        return LinkStatus.OUT_OF_RANGE if struct.unpack(GENERATE_FORMAT, body)[1] == 0 \
            else LinkStatus.OK
    if op not in (Cmd.READ, Cmd.WRITE):
        return LinkStatus.OK
    mem, lane, addr, count = struct.unpack_from(WRITE_HEADER if op == Cmd.WRITE
                                                else READ_HEADER, body)
    if mem not in set(Mem) or (op == Cmd.WRITE and mem in READ_ONLY_MEMS):
        return LinkStatus.BAD_MEMORY
    mem = Mem(mem)
    lane_ok = lane < config.lanes if mem in LANE_MEMS else lane == 0
    if (not lane_ok or count < 1 or addr + count > config.depth(mem)
            or (op == Cmd.READ and count > MAX_READ)
            or (op == Cmd.WRITE and mem == Mem.CORE and count != 1)):
        return LinkStatus.OUT_OF_RANGE
    if op == Cmd.WRITE:
        for k, word in enumerate(unpack_words(body[hdr:], wb)):
            if write_problem(Write(mem, lane, addr + k, word), config) is not None:
                return LinkStatus.OUT_OF_RANGE
    return LinkStatus.OK
