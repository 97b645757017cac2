"""The link: spikestream/protocol.py in gateware, between the UART's byte streams and the core's ports.

Receive path: :class:`SlipDecoder` (escapes, ``END``, UART errors) -> :class:`FrameReceiver`
(the whole frame into one 2048-byte block RAM, its length and CRC checked) ->
:class:`RequestEngine`, which reads the request back out of that RAM, has the
:class:`RequestChecker` check it completely, and only then drives the core's write, read
and command ports. Transmit path: the engine's response chunks -> :class:`ResponseEmitter`
-> :class:`FrameEncoder` (leading ``END``, CRC appended, :class:`SlipEncoder` escaping,
closing ``END``; a STREAM's raw token bytes pass it unframed and unescaped) -> a small line
queue -> the UART transmitter. Responses are streamed as they are produced, so there is no
response buffer. :class:`Link` wires these together. Headers and bodies are read and built
through views of spikestream/protocol.py's layouts (:func:`struct_layout`).

Every block-to-block ``ready`` depends on registers only, so no combinational path runs
through more than one block; each block moves at most a byte every other cycle, which is
still ten times what a UART at ``divisor >= 4`` can carry.
"""

import functools
import operator

from amaranth import *
from amaranth.lib import crc, data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikestream import protocol as P
from .core.layouts import (Command, Result, StatusWord, read_request_layout,
                           read_response_layout, write_request_layout)
from .streams import StreamRegister
from spikestream.memory_map import (ADDR_BITS, COUNTER_BITS, LANE_MEMS, OP_BITS, READ_ONLY_MEMS,
                                    CoreReg, Mem, Op)
from spikestream.timing import WRITE_LATENCY

__all__ = ["struct_layout", "RequestHeader", "CRC_ALGORITHM", "CRC16", "DecodedByte",
           "SlipDecoder", "FrameInfo", "FrameReceiver", "SlipToken", "SlipEncoder", "PayloadByte",
           "FrameEncoder", "response_chunk_layout", "ResponseEmitter", "Request", "Verdict",
           "RequestChecker", "RequestEngine", "Link", "BUFFER_BYTES", "QUEUE_BYTES"]


BUFFER_BYTES = P.MAX_PAYLOAD + 2
"""The receive buffer: the longest request payload and its CRC (one 2048 x 8 block RAM)."""

QUEUE_BYTES = 32
"""The line queue between the frame encoder and the transmitter: it takes a STREAM_START
frame (at most 22 line bytes, every byte escaped) at once, so that the engine goes on
issuing timesteps, and their raw tokens queue behind it, while the frame goes out."""


def struct_layout(layout):
    """The ``StructLayout`` of a :class:`spikestream.protocol.Layout`: its fields in order from bit 0,
    so that a view of a payload's bytes (the first byte lowest) reads each field by name."""
    return data.StructLayout({f.name: signed(f.bits) if f.signed else unsigned(f.bits)
                              for f in layout.fields})


RequestHeader = data.StructLayout({
    **struct_layout(P.REQUEST_HEAD).members,
    "body": data.UnionLayout({
        "block": struct_layout(P.BLOCK_BODY),         # READ, WRITE
        "generate": struct_layout(P.GENERATE_BODY),
        "stream": struct_layout(P.STREAM_BODY),
        "tag": struct_layout(P.TAG_BODY),
    }),
})
"""The start of a request as the link reads it: ``op``, ``seq`` and the fixed part of the
body as each request that has one sees it (fields past a shorter body are stale)."""

_HEADER_BYTES = RequestHeader.size // 8


def _widen(value, bits, what="value"):
    """``value`` zero-extended to ``bits`` (never truncated)."""
    value = Value.cast(value)
    if len(value) > bits:
        raise ValueError(f"{what}: {len(value)} bits do not fit in {bits}")
    return Cat(value, Const(0, bits - len(value)))


def _pack(layout, **values):
    """The bytes of :class:`spikestream.protocol.Layout` ``layout`` holding ``values`` (one per
    field: an int, ``bytes`` for a raw field, or a Value no wider than the field, which is
    zero-extended), as one Value with the first byte lowest."""
    if set(values) != set(layout.names):
        raise TypeError(f"{layout.name} needs exactly the fields {', '.join(layout.names)}")
    parts = []
    for f in layout.fields:
        value = values[f.name]
        if isinstance(value, bytes):
            value = int.from_bytes(value, "little")
        if isinstance(value, int):
            value = Const(value, signed(f.bits) if f.signed else unsigned(f.bits))
        parts.append(_widen(value, f.bits, f"{layout.name}.{f.name}"))
    return Cat(*parts)


CRC_ALGORITHM = crc.Algorithm(crc_width=16, polynomial=P.CRC_POLY, initial_crc=P.CRC_INIT,
                              reflect_input=False, reflect_output=False, xor_output=0)
"""CRC-16/CCITT-FALSE (``amaranth.lib.crc.catalog.CRC16_CCITT_FALSE``) from the protocol's
constants."""


class CRC16(wiring.Component):
    """CRC-16/CCITT-FALSE of a byte sequence, one byte per cycle.

    ``amaranth.lib.crc``'s processor, restarted through a synchronous reset instead of its
    ``start`` input: ``start`` puts a multiplexer in front of the XOR network (alone on the
    ECP5: 70 LUT4 and 263 MHz against 33 LUT4 and 357 MHz), the reset goes to the
    flip-flops' own reset input.

    Attributes
    ----------
    clear : In(1)
        Restart at the initial value (``0xFFFF``) on the next cycle (wins over ``en``).
    en : In(1)
        Fold ``data`` into the CRC this cycle.
    data : In(8)
        The byte.
    crc : Out(16)
        The CRC of the bytes folded in since the last ``clear`` (a register).
    """
    clear: In(1)
    en: In(1)
    data: In(8)
    crc: Out(16)

    def elaborate(self, platform):
        m = Module()
        processor = CRC_ALGORITHM(8).create()
        m.submodules.processor = ResetInserter(self.clear)(processor)
        m.d.comb += [processor.valid.eq(self.en), processor.data.eq(self.data),
                     self.crc.eq(processor.crc)]
        return m


DecodedByte = data.StructLayout({"data": 8, "end": 1, "bad": 1})
"""What the SLIP decoder emits: a payload byte (``end`` = 0), or the end of a frame
(``end`` = 1, ``bad`` if it held a bad escape or a UART error)."""


class SlipDecoder(wiring.Component):
    """SLIP decoder, a byte at a time, as :class:`spikestream.protocol.FrameDecoder`.

    An ``END`` that closes a frame with no byte and no error is swallowed, so that senders
    may start every frame with ``END``. ``ESC`` followed by anything but ``ESC_END`` or
    ``ESC_ESC`` drops that byte and marks the frame bad; so does an escape left open at the
    ``END``, and a pulse on ``bad``.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes from the line; ``i.ready`` is high while ``o`` is empty.
    bad : In(1)
        A pulse: the frame being received is damaged (a UART framing or overrun error).
    o : Out(stream.Signature(DecodedByte))
        Payload bytes and frame ends (a register).
    """
    i: In(stream.Signature(8))
    bad: In(1)
    o: Out(stream.Signature(DecodedByte))

    def elaborate(self, platform):
        m = Module()
        esc = Signal(name="esc")
        bad = Signal(name="frame_bad")
        some = Signal(name="frame_some")    # a payload byte since the last END
        b = self.i.payload

        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.bad):
            m.d.sync += bad.eq(1)

        def put(byte):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(byte),
                         self.o.payload.end.eq(0), self.o.payload.bad.eq(0), some.eq(1)]

        with m.If(self.i.valid & self.i.ready):
            with m.If(b == P.END):
                with m.If(some | bad | self.bad):
                    m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(0),
                                 self.o.payload.end.eq(1),
                                 self.o.payload.bad.eq(bad | esc | self.bad)]
                m.d.sync += [esc.eq(0), bad.eq(0), some.eq(0)]
            with m.Elif(esc):
                m.d.sync += esc.eq(0)
                with m.If(b == P.ESC_END):
                    put(P.END)
                with m.Elif(b == P.ESC_ESC):
                    put(P.ESC)
                with m.Else():
                    m.d.sync += bad.eq(1)
            with m.Elif(b == P.ESC):
                m.d.sync += esc.eq(1)
            with m.Else():
                put(b)
        return m


FrameInfo = data.StructLayout({"status": 4, "length": range(BUFFER_BYTES + 1)})
"""A received frame: ``LinkStatus.OK`` or its NACK status, and the payload's length
(without the CRC; meaningful for ``OK``)."""


class FrameReceiver(wiring.Component):
    """Stores a decoded frame in block RAM and checks its length and CRC.

    Bytes beyond :data:`BUFFER_BYTES` are not stored and make the frame ``TOO_LONG``. The
    CRC register runs two bytes behind the input, so that at the ``END`` it holds the CRC
    of the payload and the last two bytes (the CRC sent, low byte first) are still in
    registers to compare. The status follows :class:`spikestream.protocol.FrameDecoder`: ``BAD_FRAME``
    before ``TOO_LONG`` before ``TOO_SHORT`` before ``BAD_CRC``.

    The buffer keeps the frame until the next one arrives; ``rd_addr``/``rd_data`` read it.

    Attributes
    ----------
    i : In(stream.Signature(DecodedByte))
        From the decoder; ready while no frame waits on ``frame``.
    frame : Out(stream.Signature(FrameInfo))
        One per frame end.
    rd_addr : In(11)
        Buffer read address.
    rd_data : Out(8)
        The byte at the ``rd_addr`` of two cycles earlier (block RAM output, registered).
    """
    i: In(stream.Signature(DecodedByte))
    frame: Out(stream.Signature(FrameInfo))
    rd_addr: In(11)
    rd_data: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = buf = Memory(shape=8, depth=BUFFER_BYTES, init=[])
        wr = buf.write_port()
        rd = buf.read_port()
        m.d.comb += rd.addr.eq(self.rd_addr)
        m.d.sync += self.rd_data.eq(rd.data)

        count = Signal(range(BUFFER_BYTES + 1), name="count")
        long = Signal(name="long")
        hold = [Signal(8, name=f"hold{k}") for k in range(2)]   # last byte, the one before
        m.submodules.crc = crc = CRC16()
        m.d.comb += [crc.data.eq(hold[1])]

        m.d.comb += self.i.ready.eq(~self.frame.valid)
        with m.If(self.frame.ready):
            m.d.sync += self.frame.valid.eq(0)

        status = Signal(4, name="status")
        with m.If(self.i.payload.bad):
            m.d.comb += status.eq(P.LinkStatus.BAD_FRAME)
        with m.Elif(long):
            m.d.comb += status.eq(P.LinkStatus.TOO_LONG)
        with m.Elif(count < P.REQUEST_HEAD.size + 2):     # the header and the CRC
            m.d.comb += status.eq(P.LinkStatus.TOO_SHORT)
        with m.Elif(crc.crc != Cat(hold[1], hold[0])):
            m.d.comb += status.eq(P.LinkStatus.BAD_CRC)
        with m.Else():
            m.d.comb += status.eq(P.LinkStatus.OK)

        with m.If(self.i.valid & self.i.ready):
            with m.If(self.i.payload.end):
                m.d.sync += [self.frame.valid.eq(1), self.frame.payload.status.eq(status),
                             self.frame.payload.length.eq(count - 2),
                             count.eq(0), long.eq(0)]
                m.d.comb += crc.clear.eq(1)
            with m.Elif(count == BUFFER_BYTES):
                m.d.sync += long.eq(1)
            with m.Else():
                m.d.comb += [wr.en.eq(1), wr.addr.eq(count), wr.data.eq(self.i.payload.data),
                             crc.en.eq(count >= 2)]
                m.d.sync += [count.eq(count + 1), hold[0].eq(self.i.payload.data),
                             hold[1].eq(hold[0])]
        return m


SlipToken = data.StructLayout({"data": 8, "end": 1, "raw": 1})
"""What the SLIP encoder sends: ``data`` escaped, (``end``) a bare ``END``, or (``raw``)
``data`` as it is (a STREAM's raw token bytes)."""


class SlipEncoder(wiring.Component):
    """SLIP encoder: each ``data`` byte becomes one or two line bytes, each ``end`` an ``END``,
    each ``raw`` byte itself.

    Attributes
    ----------
    i : In(stream.Signature(SlipToken))
        Ready while nothing is waiting to go out.
    o : Out(stream.Signature(8))
        Line bytes (a register).
    busy : Out(1)
        Something is waiting to go out.
    """
    i: In(stream.Signature(SlipToken))
    o: Out(stream.Signature(8))
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        pend = Signal(name="pend")
        pend_data = Signal(8, name="pend_data")
        m.d.comb += [self.i.ready.eq(~self.o.valid & ~pend), self.busy.eq(self.o.valid | pend)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(pend & (~self.o.valid | self.o.ready)):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(pend_data), pend.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += self.o.valid.eq(1)
            d = self.i.payload.data
            with m.If(self.i.payload.end):
                m.d.sync += self.o.payload.eq(P.END)
            with m.Elif(self.i.payload.raw):
                m.d.sync += self.o.payload.eq(d)
            with m.Elif(d == P.END):
                m.d.sync += [self.o.payload.eq(P.ESC), pend.eq(1), pend_data.eq(P.ESC_END)]
            with m.Elif(d == P.ESC):
                m.d.sync += [self.o.payload.eq(P.ESC), pend.eq(1), pend_data.eq(P.ESC_ESC)]
            with m.Else():
                m.d.sync += self.o.payload.eq(d)
        return m


PayloadByte = data.StructLayout({"data": 8, "last": 1, "raw": 1})
"""A response payload byte; ``last`` marks the frame's final byte. A ``raw`` byte is no
frame's: it goes to the line as it is, between frames (a STREAM's raw tokens)."""


class FrameEncoder(wiring.Component):
    """Frames a payload as :func:`spikestream.protocol.frame` does: ``END``, escaped payload and
    CRC (low byte first), ``END``; the CRC is computed on the fly. A ``raw`` byte offered
    between frames is sent as it is, after the frame before it has closed.

    Attributes
    ----------
    i : In(stream.Signature(PayloadByte))
        Payload bytes, ``last`` on each frame's final one, or raw bytes between frames
        (``last`` ignored); ready while its one-byte input register is empty.
    o : Out(stream.Signature(8))
        Line bytes.
    busy : Out(1)
        A frame is not yet wholly handed to ``o``.
    """
    i: In(stream.Signature(PayloadByte))
    o: Out(stream.Signature(8))
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.slip = slip = SlipEncoder()
        wiring.connect(m, slip.o, wiring.flipped(self.o))
        m.submodules.crc = crc = CRC16()

        full = Signal(name="full")
        cur = Signal(PayloadByte, name="cur")
        m.d.comb += [self.i.ready.eq(~full), crc.data.eq(cur.data)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [cur.eq(self.i.payload), full.eq(1)]

        with m.FSM(name="framer") as fsm:
            with m.State("IDLE"):
                # A frame's first byte waits for its opening END; a raw byte goes as it is.
                m.d.comb += [slip.i.valid.eq(full), slip.i.payload.data.eq(cur.data),
                             slip.i.payload.end.eq(~cur.raw), slip.i.payload.raw.eq(cur.raw)]
                with m.If(full & slip.i.ready):
                    with m.If(cur.raw):
                        m.d.sync += full.eq(0)
                    with m.Else():
                        m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [slip.i.valid.eq(full), slip.i.payload.data.eq(cur.data)]
                with m.If(full & slip.i.ready):
                    m.d.comb += crc.en.eq(1)
                    m.d.sync += full.eq(0)
                    with m.If(cur.last):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [slip.i.valid.eq(1), slip.i.payload.data.eq(crc.crc[:8])]
                with m.If(slip.i.ready):
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [slip.i.valid.eq(1), slip.i.payload.data.eq(crc.crc[8:])]
                with m.If(slip.i.ready):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [slip.i.valid.eq(1), slip.i.payload.end.eq(1)]
                with m.If(slip.i.ready):
                    m.d.comb += crc.clear.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | full | slip.busy)
        return m


def response_chunk_layout(chunk_bytes):
    """Up to ``chunk_bytes`` bytes of a response payload (the first byte lowest in ``data``;
    ``length`` of them count), ``last`` if they end the frame; or, ``raw``, bytes that go to
    the line between frames as they are (a STREAM's raw tokens; ``last`` is 0)."""
    return data.StructLayout({"data": 8 * chunk_bytes, "length": range(chunk_bytes + 1),
                              "last": 1, "raw": 1})


class ResponseEmitter(wiring.Component):
    """Sends responses: payload chunks in, framed line bytes out (:class:`FrameEncoder`).

    A chunk is taken into a staging register in one cycle; the next cycle it moves to the
    output buffer, which is then handed to the encoder a byte per handshake. The buffer
    stays put until the next chunk (its enable is the staging flip-flop alone; shifting it
    would put the encoder's handshake on the enable of every bit) and a byte index picks
    the byte to hand over. So the encoder's input comes from registers through one byte
    multiplexer, and the wide choice of what to send sits in front of the staging
    register, in the sender. Raw chunks pass the encoder unframed.

    The encoder's line bytes wait in a queue of ``queue_bytes`` (a FIFO with registered
    outputs) for ``o``: a burst of line bytes (a frame) is taken at once and the next
    chunk with it, while the line carries them at its own pace.

    Parameters
    ----------
    chunk_bytes : int
        The largest chunk.
    queue_bytes : int
        Line bytes the queue holds (at least 2).

    Attributes
    ----------
    i : In(stream.Signature(response_chunk_layout(chunk_bytes)))
        Chunks; ready once the previous one has been wholly handed to the encoder (a
        function of registers only).
    o : Out(stream.Signature(8))
        Line bytes.
    busy : Out(1)
        A response is not yet wholly handed to ``o``.
    """

    def __init__(self, chunk_bytes, queue_bytes=QUEUE_BYTES):
        if queue_bytes < 2:
            raise ValueError(f"the line queue needs at least 2 bytes, not {queue_bytes}")
        self._chunk_bytes = chunk_bytes
        self._queue_bytes = queue_bytes
        super().__init__({
            "i": In(stream.Signature(response_chunk_layout(chunk_bytes))),
            "o": Out(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._chunk_bytes
        m.submodules.encoder = enc = FrameEncoder()
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=8, depth=self._queue_bytes)
        m.d.comb += [queue.w_en.eq(enc.o.valid), queue.w_data.eq(enc.o.payload),
                     enc.o.ready.eq(queue.w_rdy),
                     self.o.valid.eq(queue.r_rdy), self.o.payload.eq(queue.r_data),
                     queue.r_en.eq(self.o.ready)]

        stage = Signal(8 * n, name="stage")
        stage_len = Signal(range(n + 1), name="stage_len")
        stage_last = Signal(name="stage_last")
        stage_raw = Signal(name="stage_raw")
        stage_go = Signal(name="stage_go")     # stage holds a chunk (for one cycle)
        buf = Signal(8 * n, name="buf")
        pos = Signal(range(n), name="pos")
        left = Signal(range(n + 1), name="left")
        last = Signal(name="last")             # buf's last byte ends the frame
        raw = Signal(name="raw")               # buf's bytes go to the line unframed
        full = Signal(name="full")             # buf holds bytes not yet handed over

        m.d.comb += [self.i.ready.eq(~full & ~stage_go),
                     self.busy.eq(full | stage_go | enc.busy | (queue.r_level != 0))]
        m.d.sync += stage_go.eq(self.i.valid & self.i.ready)
        # Loaded whenever a chunk could be taken, valid or not (stage_go says whether one
        # was): its enable is then a function of this block's flip-flops, not of the
        # sender's state.
        with m.If(self.i.ready):
            m.d.sync += [stage.eq(self.i.payload.data), stage_len.eq(self.i.payload.length),
                         stage_last.eq(self.i.payload.last), stage_raw.eq(self.i.payload.raw)]

        m.d.comb += [enc.i.valid.eq(full), enc.i.payload.data.eq(buf.word_select(pos, 8)),
                     enc.i.payload.last.eq(last & (left == 1)), enc.i.payload.raw.eq(raw)]
        with m.If(stage_go):
            m.d.sync += [buf.eq(stage), pos.eq(0), left.eq(stage_len), last.eq(stage_last),
                         raw.eq(stage_raw), full.eq(1)]
        with m.Elif(full & enc.i.ready):
            m.d.sync += [pos.eq(pos + 1), left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += full.eq(0)
        return m


def _times_const(x, k):
    # x * k as shifted copies of x, so that no multiplier (DSP block) is inferred.
    terms = [x << s for s in range(k.bit_length()) if k >> s & 1]
    return functools.reduce(operator.add, terms) if terms else C(0)


Request = data.StructLayout({"header": RequestHeader,
                             "body_len": range(BUFFER_BYTES + 1)})
"""A request to check: its header and the length of its body (the payload after ``op`` and
``seq``)."""

Verdict = data.StructLayout({
    "status": unsigned(P.RESPONSE_HEAD.field("status").bits),
    "ok": 1,
    "op": data.StructLayout({c.name.lower(): 1 for c in P.Cmd}),
})
"""A request checked: the status of :func:`spikestream.protocol.check_request` (``ok`` if it is
``OK``) and the opcode decoded, one flag per :class:`spikestream.protocol.Cmd`."""


class RequestChecker(wiring.Component):
    """Checks a request as :func:`spikestream.protocol.check_request` does, short of the WRITE
    words' values (which need the body: the engine scans them and the core judges the
    CORE registers).

    The checks run over three registered stages, so that no wide compare or add sits
    behind another: the first decodes the opcode and memory and works out per-opcode
    lengths, the memory's depth, ``addr + count`` and the WRITE body's length (shift-adds,
    no multiplier); the second makes the two wide compares; the third weighs the statuses
    in their order. The verdict comes out of registers three cycles after the request is
    taken.

    Parameters
    ----------
    config : CoreConfig

    Attributes
    ----------
    i : In(stream.Signature(Request))
        Requests; ready while no check is under way or waiting on ``o``.
    o : Out(stream.Signature(Verdict))
        One verdict per request (registers).
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(Request)),
            "o": Out(stream.Signature(Verdict)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        wb = P.word_bytes(cfg)
        S = P.LinkStatus
        hdr, body_len = self.i.payload.header, self.i.payload.body_len
        op, block, generate = hdr.op, hdr.body.block, hdr.body.generate
        stream_body = hdr.body.stream
        mem, lane, addr, count = block.mem, block.lane, block.addr, block.count
        block_bytes = P.BLOCK_BODY.size
        # RUN's body is whole tokens: its length's low bits are zero, the rest count them.
        token_bytes = P.RUN_BODY.size
        token_shift = token_bytes.bit_length() - 1
        assert token_bytes == 1 << token_shift

        take = Signal(name="take")
        stage = Signal(2, name="stage")          # stages 1 and 2 hold a request
        m.d.comb += [self.i.ready.eq(~stage.any() & ~self.o.valid),
                     take.eq(self.i.valid & self.i.ready)]
        m.d.sync += stage.eq(Cat(take, stage[0]))

        # Stage 1.
        op_ok = Signal(name="op_ok")
        len_ok = Signal(name="len_ok")
        op_is = self.o.payload.op                # registered here, for stage 3 and the engine
        body_len1 = Signal.like(body_len, name="body_len1")
        write_len = Signal(range(block_bytes + ((1 << len(count)) - 1) * wb + 1),
                           name="write_len")
        body_ge_block = Signal(name="body_ge_block")
        mem_ok = Signal(name="mem_ok")
        lane_ok = Signal(name="lane_ok")
        depth = Signal(ADDR_BITS + 1, name="depth")
        end = Signal(ADDR_BITS + 1, name="end")
        addr_hi_zero = Signal(name="addr_hi_zero")
        count_ok = Signal(name="count_ok")
        is_write = op == P.Cmd.WRITE
        is_read = op == P.Cmd.READ
        with m.If(take):
            m.d.sync += [op_ok.eq(0), len_ok.eq(0)]
            with m.Switch(op):
                for c in (P.Cmd.IDENTIFY, P.Cmd.RESET, P.Cmd.STATUS):
                    with m.Case(c):
                        m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == 0)]
                with m.Case(P.Cmd.TAG):
                    m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == P.TAG_BODY.size)]
                with m.Case(P.Cmd.GENERATE):
                    m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == P.GENERATE_BODY.size)]
                with m.Case(P.Cmd.STREAM):
                    m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == P.STREAM_BODY.size)]
                with m.Case(P.Cmd.READ):
                    m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == block_bytes)]
                with m.Case(P.Cmd.RUN):
                    m.d.sync += [op_ok.eq(1),
                                 len_ok.eq((body_len[:token_shift] == 0) & (body_len != 0) &
                                           (body_len <= token_bytes * P.MAX_RUN))]
                with m.Case(P.Cmd.WRITE):
                    m.d.sync += [op_ok.eq(1), len_ok.eq(1)]
            m.d.sync += [op_is[c.name.lower()].eq(op == c) for c in P.Cmd]
            m.d.sync += [
                body_len1.eq(body_len),
                write_len.eq(block_bytes + _times_const(count, wb)),
                body_ge_block.eq(body_len >= block_bytes),
                end.eq(addr[:ADDR_BITS] + count),
                addr_hi_zero.eq(addr[ADDR_BITS:] == 0),
                mem_ok.eq(0), lane_ok.eq(0), depth.eq(0),
            ]
            with m.Switch(mem):
                for mm in Mem:
                    with m.Case(mm):
                        m.d.sync += [
                            mem_ok.eq(~is_write if mm in READ_ONLY_MEMS else 1),
                            lane_ok.eq(lane < cfg.lanes if mm in LANE_MEMS else lane == 0),
                            depth.eq(cfg.depth(mm)),
                        ]
            # count: at least 1; READ at most MAX_READ; a CORE WRITE exactly 1;
            # GENERATE's and STREAM's count at least 1.
            with m.If(is_read):
                m.d.sync += count_ok.eq((count != 0) & (count <= P.MAX_READ))
            with m.Elif(is_write & (mem == Mem.CORE)):
                m.d.sync += count_ok.eq(count == 1)
            with m.Elif(is_write):
                m.d.sync += count_ok.eq(count != 0)
            with m.Elif(op == P.Cmd.STREAM):
                m.d.sync += count_ok.eq(stream_body.count != 0)
            with m.Else():
                m.d.sync += count_ok.eq(generate.count != 0)

        # Stage 2.
        end_ok = Signal(name="end_ok")
        write_len_ok = Signal(name="write_len_ok")
        with m.If(stage[0]):
            m.d.sync += [end_ok.eq(depth >= end),
                         write_len_ok.eq(body_ge_block & (body_len1 == write_len))]

        # Stage 3: the first failing check is the status.
        verdict = Signal(8, name="verdict")
        is_w, is_r = op_is.write, op_is.read
        with m.If(~op_ok):
            m.d.comb += verdict.eq(S.BAD_OPCODE)
        with m.Elif(~len_ok | (is_w & ~write_len_ok)):
            m.d.comb += verdict.eq(S.BAD_LENGTH)
        with m.Elif((is_w | is_r) & ~mem_ok):
            m.d.comb += verdict.eq(S.BAD_MEMORY)
        with m.Elif((is_w | is_r) & ~(lane_ok & addr_hi_zero & end_ok & count_ok)):
            m.d.comb += verdict.eq(S.OUT_OF_RANGE)
        with m.Elif((op_is.generate | op_is.stream) & ~count_ok):
            m.d.comb += verdict.eq(S.OUT_OF_RANGE)
        with m.Else():
            m.d.comb += verdict.eq(S.OK)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(stage[1]):
            m.d.sync += [self.o.payload.status.eq(verdict), self.o.payload.ok.eq(verdict == S.OK),
                         self.o.valid.eq(1)]
        return m


class RequestEngine(wiring.Component):
    """Acts on requests: reads each from the receive buffer, has it checked, then drives the
    core's ports and sends the response, and keeps the STATUS counters and the image tag.

    One state machine. The header goes from the buffer to the :class:`RequestChecker`; on
    an ``OK`` verdict the engine acts (WRITE: the words scanned for bits above
    ``data_bits``, then written one by one, the core's ``write_error`` read after the last;
    READ: a word per core read; RUN/GENERATE/STREAM: the next timestep issued before the
    last one's TOKEN frame or raw token goes out), and the response goes to the
    :class:`ResponseEmitter` in chunks built from registers only. The core's ports see
    registers only (their ``valid`` alone depends on the state).

    STREAM is GENERATE with a compact answer: after its first timestep has run (a first
    token outside the vocabulary gets the final frame alone), one STREAM_START frame, then
    each timestep's token as a raw chunk of :func:`spikestream.protocol.stream_token_bytes`
    bytes, then the final frame with the timesteps, the sums of their cycles and spikes
    (64 bits each: the sum of at most 2**32 counts below 2**32 each, never wrapped) and the
    CRC of the raw bytes (a :class:`CRC16` fed a byte per cycle from the token's register).

    Parameters
    ----------
    config : CoreConfig
    identity : bytes
        The IDENTIFY body (:func:`spikestream.protocol.identity_of`); its tag is replaced by the
        tag's register.
    tag : int
        The image tag at power-up and after ``rst``.

    Attributes
    ----------
    frame : In(stream.Signature(FrameInfo))
        Frames received (:class:`FrameReceiver`).
    rd_addr : Out(11)
        Receive buffer read address.
    rd_data : In(8)
        The byte at the ``rd_addr`` of two cycles earlier.
    check : Out(stream.Signature(Request))
        To the :class:`RequestChecker`.
    verdict : In(stream.Signature(Verdict))
        From the :class:`RequestChecker`.
    response : Out(stream.Signature(response_chunk_layout(chunk_bytes)))
        To the :class:`ResponseEmitter`.
    sending : In(1)
        The emitter's ``busy``: a response is not yet wholly sent.
    write, read, cmd : Out(stream.Signature(...))
        To the core's ports of the same names.
    read_data, result : In(stream.Signature(...))
        From the core's ports of the same names.
    core_status : In(StatusWord)
        The core's status word.
    drop : In(1)
        A received byte was dropped this cycle (counted for STATUS).
    busy : Out(1)
        A frame is waiting or being worked on.
    tag : Out(32)
        The image tag.
    answered : Out(1)
        A pulse when a request's final response has gone out; ``rejected`` says how.
    rejected : Out(1)
        With ``answered``: the frame was NACKed or answered with an error status.
    """

    def __init__(self, config, *, identity, tag=0):
        self._config = config
        self._identity = identity
        head = P.RESPONSE_HEAD.size
        # The largest chunk of a response: STATUS, a TOKEN frame, STREAM's frames or raw
        # token, or a READ word.
        self.chunk_bytes = max(head + P.STATUS_BODY.size, head + P.TOKEN_BODY.size,
                               head + P.STREAM_START_BODY.size, head + P.STREAM_END_BODY.size,
                               P.stream_token_bytes(config), P.word_bytes(config))
        super().__init__({
            "frame": In(stream.Signature(FrameInfo)),
            "rd_addr": Out(11),
            "rd_data": In(8),
            "check": Out(stream.Signature(Request)),
            "verdict": In(stream.Signature(Verdict)),
            "response": Out(stream.Signature(response_chunk_layout(self.chunk_bytes))),
            "sending": In(1),
            "write": Out(stream.Signature(write_request_layout(config))),
            "read": Out(stream.Signature(read_request_layout(config))),
            "read_data": In(stream.Signature(read_response_layout(config))),
            "cmd": Out(stream.Signature(Command)),
            "result": In(stream.Signature(Result)),
            "core_status": In(StatusWord),
            "drop": In(1),
            "busy": Out(1),
            "tag": Out(32, init=tag),
            "answered": Out(1),
            "rejected": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        wb = P.word_bytes(cfg)
        S = P.LinkStatus

        # Bytes dropped while busy, for STATUS.
        dropped = Signal(COUNTER_BITS, name="dropped")
        with m.If(self.drop):
            m.d.sync += dropped.eq(dropped + 1)

        # Reading the buffer: a fetch of `fetch_left` bytes from `rptr` on shifts them into
        # the top of `fetched`, two cycles behind their addresses.
        fetch_bytes = max(_HEADER_BYTES, wb)
        rptr = Signal(11, name="rptr")
        fetch_left = Signal(range(BUFFER_BYTES + 1), name="fetch_left")
        fetch_p = Signal(2, name="fetch_pipe")
        fetched = Signal(8 * fetch_bytes, name="fetched")
        fetch_done = Signal(name="fetch_done")
        # fetch_left == 0, kept as a flip-flop beside it (the state machine decides on it)
        fetch_idle = Signal(init=1, name="fetch_idle")
        m.d.comb += [self.rd_addr.eq(rptr),
                     fetch_done.eq(fetch_idle & (fetch_p == 0))]
        m.d.sync += fetch_p.eq(Cat(~fetch_idle, fetch_p[0]))
        with m.If(~fetch_idle):
            m.d.sync += [rptr.eq(rptr + 1), fetch_left.eq(fetch_left - 1),
                         fetch_idle.eq(fetch_left == 1)]
        with m.If(fetch_p[1]):
            m.d.sync += fetched.eq(Cat(fetched[8:], self.rd_data))

        def fetch(start, n):
            if start is not None:
                m.d.sync += rptr.eq(start)
            m.d.sync += [fetch_left.eq(n), fetch_idle.eq(Value.cast(n) == 0)]

        # The request header (fields past a short body are stale, and only looked at once the
        # length is known to cover them).
        hdr = Signal(RequestHeader, name="hdr")
        op, seq = hdr.op, hdr.seq
        block, generate = hdr.body.block, hdr.body.generate
        mem, lane, addr, count = block.mem, block.lane, block.addr, block.count
        block_bytes = P.BLOCK_BODY.size
        body_len = Signal(range(BUFFER_BYTES + 1), name="body_len")
        # The bytes past the header, registered (body_len is set cycles before VERDICT reads
        # it).
        tail_len = Signal(range(BUFFER_BYTES + 1), name="tail_len", reset_less=True)
        m.d.sync += tail_len.eq(body_len - block_bytes)
        # RUN's body is whole tokens: its length's low bits are zero, the rest count them.
        token_bytes = P.RUN_BODY.size
        token_shift = token_bytes.bit_length() - 1
        assert token_bytes == 1 << token_shift

        resp_op = Signal(8, name="resp_op")
        resp_seq = Signal(8, name="resp_seq")
        status = Signal(8, name="resp_status")

        # Counters of STATUS.
        frames_ok = Signal(COUNTER_BITS, name="frames_ok")
        frames_rejected = Signal(COUNTER_BITS, name="frames_rejected")
        steps = Signal(COUNTER_BITS, name="steps")
        cycles = Signal(COUNTER_BITS, name="cycles")
        tag = self.tag

        # The checker judges the request (three cycles) while the engine waits in VERDICT.
        verdict = self.verdict.payload
        op_is = verdict.op
        stepping = Signal(name="stepping")       # RUN, GENERATE or STREAM: timesteps run
        compact = Signal(name="compact")         # STREAM: raw tokens, the final StreamEnd
        clear_tag = Signal(name="clear_tag")     # an accepted WRITE here clears the tag

        # WRITE words: bits above data_bits must be zero (only the top byte can hold them).
        top_used = cfg.data_bits - 8 * (wb - 1)
        scan_needed = top_used < 8
        word_pos = Signal(range(wb), name="word_pos")
        scan_bad = Signal(name="scan_bad")

        waddr = Signal(ADDR_BITS, name="waddr")
        wleft = Signal.like(count, name="wleft")
        settle = Signal(range(WRITE_LATENCY + 1), name="settle")
        rleft = Signal.like(count, name="rleft")
        word_last = Signal(name="word_last")   # the word being sent is the READ's last
        cmd_op = Signal(OP_BITS, name="cmd_op")

        # RUN/GENERATE/STREAM: `left` steps still to complete, `done` completed (RUN and
        # GENERATE report the low 16 bits); the next step is issued before the previous
        # one's TOKEN frame or raw token goes out.
        stream_body = hdr.body.stream
        steps_bits = P.STREAM_BODY.field("count").bits
        token_in = Signal(8 * token_bytes, name="token_in")
        done = Signal(steps_bits, name="done")
        left = Signal(steps_bits, name="left")
        last_step = Signal(name="last_step")   # left == 1 (registered with it)
        have = Signal(name="have_token")       # a completed step's answer is due
        inflight = Signal(name="inflight")     # a STEP has been issued, its result not taken

        def start_steps(count):
            """A RUN, GENERATE or STREAM of ``count`` steps begins."""
            return [done.eq(0), left.eq(count), last_step.eq(count == 1), have.eq(0),
                    inflight.eq(0), cmd_op.eq(Op.STEP)]

        # The last completed step, as its TOKEN frame reports it.
        res = Signal(struct_layout(P.TOKEN_BODY), name="res")

        # STREAM: the sums of the steps' cycles and spikes, added from `res` the cycle after
        # each result (64 bits: STREAM_END_BODY's fields hold any sum of 2**32 steps).
        stb = P.stream_token_bytes(cfg)
        assert 8 * stb <= len(res.token)
        started = Signal(name="started")       # STREAM_START has gone to the emitter
        add_sums = Signal(name="add_sums")     # `res` holds a step not yet in the sums
        sum_cycles = Signal(P.STREAM_END_BODY.field("cycles").bits, name="sum_cycles")
        sum_spikes = Signal(P.STREAM_END_BODY.field("spikes").bits, name="sum_spikes")
        m.d.sync += add_sums.eq(0)
        with m.If(add_sums):
            m.d.sync += [sum_cycles.eq(sum_cycles + res.cycles),
                         sum_spikes.eq(sum_spikes + res.spikes)]
        # ... and the CRC of the raw bytes: each raw token, once handed to the emitter, is
        # folded in a byte per cycle, the first byte first, from `fold`.
        m.submodules.raw_crc = raw_crc = CRC16()
        fold = Signal(8 * stb, name="fold")
        fold_left = Signal(range(stb + 1), name="fold_left")
        m.d.comb += [raw_crc.data.eq(fold[:8]), raw_crc.en.eq(fold_left != 0)]
        with m.If(fold_left != 0):
            m.d.sync += [fold.eq(fold >> 8), fold_left.eq(fold_left - 1)]

        # Responses go out through the emitter in chunks: a load state offers one (made of
        # registers only) for one cycle, its emit state waits until the emitter has handed
        # it on. IDENTIFY takes several chunks.
        chunk_bytes = self.chunk_bytes
        chunk = self.response

        def load(value, last, then, valid=1, raw=0):
            # value: whole bytes, at most chunk_bytes of them
            assert len(value) % 8 == 0 and len(value) <= 8 * chunk_bytes
            m.d.comb += [chunk.valid.eq(valid), chunk.payload.data.eq(value),
                         chunk.payload.length.eq(len(value) // 8), chunk.payload.last.eq(last),
                         chunk.payload.raw.eq(raw)]
            with m.If(chunk.ready & valid):
                then()

        def emit(then):
            with m.If(chunk.ready):
                then()

        def goto(state):
            def then():
                m.next = state
            return then

        # The core's ports see registers only (their valid alone depends on the state): the
        # core checks a write's value with a wide compare in the cycle it is offered.
        m.d.comb += [
            self.write.payload.mem.eq(mem), self.write.payload.lane.eq(lane),
            self.write.payload.addr.eq(waddr), self.write.payload.data.eq(fetched[-8 * wb:]),
            self.read.payload.mem.eq(mem), self.read.payload.lane.eq(lane),
            self.read.payload.addr.eq(waddr),
            self.cmd.payload.op.eq(cmd_op), self.cmd.payload.token.eq(token_in),
        ]

        def response_head(op=resp_op, status=status):
            return _pack(P.RESPONSE_HEAD, op=op, seq=resp_seq, status=status)

        identity = P.IDENTIFY_BODY.unpack_from(self._identity)._asdict() | {"tag": tag}
        identify = Cat(response_head(), _pack(P.IDENTIFY_BODY, **identity))
        identify = [identify[i:i + 8 * chunk_bytes]
                    for i in range(0, len(identify), 8 * chunk_bytes)]
        # the L_IDENT0, L_IDENT1, ... loads (three since protocol version 2)

        with m.FSM(name="engine") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.frame.ready.eq(1)
                info = self.frame.payload
                with m.If(self.frame.valid):
                    m.d.sync += [status.eq(info.status),
                                 body_len.eq(info.length - P.REQUEST_HEAD.size)]
                    with m.If(info.status != S.OK):
                        m.d.sync += [resp_op.eq(P.NACK_OP), resp_seq.eq(0)]
                        m.next = "L_SIMPLE"
                    with m.Else():
                        fetch(0, _HEADER_BYTES)
                        m.next = "LOAD"

            with m.State("LOAD"):
                with m.If(fetch_done):
                    m.d.sync += hdr.eq(fetched[-8 * _HEADER_BYTES:])
                    m.next = "CHECK"

            with m.State("CHECK"):
                m.d.comb += [self.check.valid.eq(1), self.check.payload.header.eq(hdr),
                             self.check.payload.body_len.eq(body_len)]
                m.d.sync += [resp_op.eq(op), resp_seq.eq(seq),
                             stepping.eq((op == P.Cmd.RUN) | (op == P.Cmd.GENERATE) |
                                         (op == P.Cmd.STREAM)),
                             compact.eq(op == P.Cmd.STREAM), clear_tag.eq(0)]
                with m.Switch(mem):
                    for mm in Mem:
                        with m.Case(mm):
                            if mm == Mem.CORE:
                                keep = [r for r in CoreReg if not P.clears_tag(mm, r)]
                                m.d.sync += clear_tag.eq(
                                    functools.reduce(operator.and_, [addr != r for r in keep]))
                            else:
                                m.d.sync += clear_tag.eq(int(P.clears_tag(mm, 0)))
                with m.If(self.check.ready):
                    m.next = "VERDICT"

            with m.State("VERDICT"):
                m.d.comb += self.verdict.ready.eq(1)
                with m.If(self.verdict.valid):
                    m.d.sync += status.eq(verdict.status)
                    with m.If(~verdict.ok):
                        m.next = "L_SIMPLE"
                    with m.Elif(op_is.identify):
                        m.next = "L_IDENT0"
                    with m.Elif(op_is.status):
                        m.next = "L_STATUS"
                    with m.Elif(op_is.tag):
                        m.d.sync += tag.eq(hdr.body.tag.tag)
                        m.next = "L_SIMPLE"
                    with m.Elif(op_is.reset):
                        m.d.sync += cmd_op.eq(Op.RESET)
                        m.next = "CMD"
                    with m.Elif(op_is.read):
                        m.d.sync += [waddr.eq(addr), rleft.eq(count)]
                        m.next = "L_READ_HDR"
                    with m.Elif(op_is.write):
                        m.d.sync += [waddr.eq(addr), wleft.eq(count), word_pos.eq(0),
                                     scan_bad.eq(0)]
                        if scan_needed:
                            fetch(_HEADER_BYTES, tail_len)
                            m.next = "SCAN"
                        else:
                            fetch(_HEADER_BYTES, wb)
                            m.next = "W_FETCH"
                    with m.Elif(op_is.run):
                        m.d.sync += start_steps(body_len[token_shift:])
                        fetch(P.REQUEST_HEAD.size, token_bytes)
                        m.next = "RUN_FETCH"
                    with m.Elif(op_is.generate):
                        m.d.sync += [*start_steps(generate.count),
                                     token_in.eq(generate.first)]
                        m.next = "ISSUE"
                    with m.Elif(op_is.stream):
                        m.d.sync += [*start_steps(stream_body.count),
                                     token_in.eq(stream_body.first), started.eq(0),
                                     sum_cycles.eq(0), sum_spikes.eq(0)]
                        m.d.comb += raw_crc.clear.eq(1)
                        m.next = "ISSUE"

            # --- WRITE ------------------------------------------------------------------
            with m.State("SCAN"):
                with m.If(fetch_p[1]):
                    m.d.sync += word_pos.eq(Mux(word_pos == wb - 1, 0, word_pos + 1))
                    if scan_needed:
                        with m.If((word_pos == wb - 1) & (self.rd_data[top_used:] != 0)):
                            m.d.sync += scan_bad.eq(1)
                with m.If(fetch_done):
                    with m.If(scan_bad):
                        m.d.sync += status.eq(S.OUT_OF_RANGE)
                        m.next = "L_SIMPLE"
                    with m.Else():
                        fetch(_HEADER_BYTES, wb)
                        m.next = "W_FETCH"

            with m.State("W_FETCH"):
                with m.If(fetch_done):
                    m.next = "W_PUSH"

            with m.State("W_PUSH"):
                m.d.comb += self.write.valid.eq(1)
                with m.If(self.write.ready):
                    m.d.sync += [waddr.eq(waddr + 1), wleft.eq(wleft - 1)]
                    with m.If(wleft == 1):
                        m.d.sync += settle.eq(WRITE_LATENCY)
                        m.next = "W_SETTLE"
                    with m.Else():
                        fetch(None, wb)
                        m.next = "W_FETCH"

            with m.State("W_SETTLE"):
                # The core flags a refused write WRITE_LATENCY cycles after its handshake,
                # which is the cycle before the port register is empty again (write.ready).
                with m.If(self.write.ready):
                    m.d.sync += settle.eq(settle - 1)
                with m.If(settle == 0):
                    with m.If(self.core_status.write_error):
                        m.d.sync += [status.eq(S.OUT_OF_RANGE), cmd_op.eq(Op.CLEAR)]
                        m.next = "CMD"
                    with m.Else():
                        with m.If(clear_tag):
                            m.d.sync += tag.eq(0)
                        m.next = "L_SIMPLE"

            # --- READ -------------------------------------------------------------------
            with m.State("L_READ_HDR"):
                load(response_head(status=S.OK), 0, goto("E_READ_HDR"))

            with m.State("E_READ_HDR"):
                emit(goto("R_ISSUE"))

            with m.State("R_ISSUE"):
                m.d.comb += self.read.valid.eq(1)
                with m.If(self.read.ready):
                    m.next = "R_WAIT"

            with m.State("R_WAIT"):
                def take_word():
                    m.d.sync += word_last.eq(rleft == 1)
                    m.next = "E_WORD"
                m.d.comb += self.read_data.ready.eq(chunk.ready)
                load(_widen(self.read_data.payload.data, 8 * wb), rleft == 1, take_word,
                     valid=self.read_data.valid)

            with m.State("E_WORD"):
                def after_word():
                    m.d.sync += [waddr.eq(waddr + 1), rleft.eq(rleft - 1)]
                    with m.If(word_last):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "R_ISSUE"
                emit(after_word)

            # --- RESET, CLEAR -----------------------------------------------------------
            with m.State("CMD"):
                m.d.comb += self.cmd.valid.eq(1)
                with m.If(self.cmd.ready):
                    m.next = "CMD_WAIT"

            with m.State("CMD_WAIT"):
                m.d.comb += self.result.ready.eq(1)
                with m.If(self.result.valid):
                    with m.If(compact):
                        m.next = "L_END"
                    with m.Elif(stepping):
                        m.next = "L_DONE"
                    with m.Else():
                        m.next = "L_SIMPLE"

            # --- RUN, GENERATE, STREAM --------------------------------------------------
            def answer_step():
                # A completed step's answer: its TOKEN frame, or STREAM's raw token (after
                # STREAM_START, once).
                with m.If(~compact):
                    m.next = "L_TOKEN"
                with m.Elif(~started):
                    m.next = "L_START"
                with m.Else():
                    m.next = "L_RAW"

            def after_answer(final):
                def then():
                    m.d.sync += have.eq(0)
                    with m.If(inflight):
                        m.next = "WAIT"
                    with m.Else():
                        m.next = final
                return then

            with m.State("RUN_FETCH"):
                with m.If(fetch_done):
                    m.d.sync += token_in.eq(fetched[-len(token_in):])
                    m.next = "ISSUE"

            with m.State("ISSUE"):
                m.d.comb += self.cmd.valid.eq(1)
                with m.If(self.cmd.ready):
                    m.d.sync += inflight.eq(1)
                    with m.If(have):
                        answer_step()
                    with m.Else():
                        m.next = "WAIT"

            with m.State("WAIT"):
                m.d.comb += self.result.ready.eq(1)
                r = self.result.payload
                with m.If(self.result.valid):
                    m.d.sync += inflight.eq(0)
                    with m.If(r.error):
                        m.d.sync += [status.eq(S.BAD_TOKEN), cmd_op.eq(Op.CLEAR)]
                        m.next = "CMD"
                    with m.Else():
                        m.d.sync += [
                            res.index.eq(done), res.token.eq(r.token),
                            res.cycles.eq(r.cycles), res.spikes.eq(r.spikes),
                            done.eq(done + 1), left.eq(left - 1), last_step.eq(left == 2),
                            have.eq(1),
                            steps.eq(steps + 1), cycles.eq(cycles + r.cycles),
                            token_in.eq(r.token), add_sums.eq(1),
                        ]
                        with m.If(last_step):
                            answer_step()
                        with m.Elif(op == P.Cmd.RUN):
                            fetch(None, token_bytes)
                            m.next = "RUN_FETCH"
                        with m.Else():
                            m.next = "ISSUE"

            with m.State("L_TOKEN"):
                load(Cat(response_head(op=P.Cmd.TOKEN, status=S.OK), res), 1, goto("E_TOKEN"))

            with m.State("E_TOKEN"):
                emit(after_answer("L_DONE"))

            with m.State("L_START"):
                load(Cat(response_head(op=P.Cmd.STREAM_START, status=S.OK),
                         _pack(P.STREAM_START_BODY, count=stream_body.count, token_bytes=stb)),
                     1, goto("E_START"))

            with m.State("E_START"):
                def after_start():
                    m.d.sync += started.eq(1)
                    m.next = "L_RAW"
                emit(after_start)

            with m.State("L_RAW"):
                def fold_token():
                    m.d.sync += [fold.eq(res.token[:8 * stb]), fold_left.eq(stb)]
                    m.next = "E_RAW"
                load(res.token[:8 * stb], 0, fold_token, valid=fold_left == 0, raw=1)

            with m.State("E_RAW"):
                emit(after_answer("L_END"))

            # --- responses --------------------------------------------------------------
            with m.State("L_SIMPLE"):
                load(response_head(), 1, goto("E_SIMPLE"))

            with m.State("E_SIMPLE"):
                emit(goto("FINISH"))

            with m.State("L_DONE"):
                load(Cat(response_head(), _pack(P.DONE_BODY, steps=done[:P.DONE_BODY.size * 8])),
                     1, goto("E_DONE"))

            with m.State("E_DONE"):
                emit(goto("FINISH"))

            with m.State("L_END"):
                # Once the last raw token is in the CRC and the last step in the sums.
                load(Cat(response_head(), _pack(
                    P.STREAM_END_BODY, steps=done, cycles=sum_cycles, spikes=sum_spikes,
                    crc=raw_crc.crc)), 1, goto("E_END"), valid=(fold_left == 0) & ~add_sums)

            with m.State("E_END"):
                emit(goto("FINISH"))

            for k, piece in enumerate(identify):
                last = k == len(identify) - 1
                with m.State(f"L_IDENT{k}"):
                    load(piece, int(last), goto(f"E_IDENT{k}"))

                with m.State(f"E_IDENT{k}"):
                    emit(goto("FINISH" if last else f"L_IDENT{k + 1}"))

            with m.State("L_STATUS"):
                # The counters as they are now (bytes dropped meanwhile count later).
                load(Cat(response_head(), _pack(
                    P.STATUS_BODY, core_status=self.core_status.as_value(), frames_ok=frames_ok,
                    frames_rejected=frames_rejected, bytes_dropped=dropped, steps=steps,
                    cycles=cycles, tag=tag)), 1, goto("E_STATUS"))

            with m.State("E_STATUS"):
                emit(goto("FINISH"))

            with m.State("FINISH"):
                with m.If(~self.sending):
                    m.d.comb += [self.answered.eq(1), self.rejected.eq(status != S.OK)]
                    with m.If(status == S.OK):
                        m.d.sync += frames_ok.eq(frames_ok + 1)
                    with m.Else():
                        m.d.sync += frames_rejected.eq(frames_rejected + 1)
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | self.frame.valid)
        return m


class Link(wiring.Component):
    """The SoC's end of the link (spikestream/protocol.py) for a core built for ``config``.

    A request is acted on only after the whole frame is in the receive buffer, its CRC is
    good and it has passed every check of :func:`spikestream.protocol.check_request`; then the
    request engine drives the core's ports and streams the response. While it works (from
    the frame's closing ``END`` until the emitter has handed the response's last byte to
    ``tx``) bytes from ``rx`` are taken and dropped, and counted.

    Blocks, stream to stream: :class:`SlipDecoder` -> :class:`FrameReceiver` ->
    :class:`RequestEngine` <-> :class:`RequestChecker`; :class:`RequestEngine` ->
    :class:`ResponseEmitter` -> ``tx``; the engine's five core ports each through a
    :class:`~hw.streams.StreamRegister`, so the core meets flip-flops only.

    Parameters
    ----------
    config : CoreConfig
    clock_hz, baud : int
        Reported by IDENTIFY (the link itself does not depend on them).
    tag : int
        The image tag at power-up and after ``rst``.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver (always taken within two cycles).
    rx_error : In(1)
        A pulse per UART framing or overrun error.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    write, read, cmd : Out(stream.Signature(...))
        To the core's ports of the same names.
    read_data, result : In(stream.Signature(...))
        From the core's ports of the same names.
    core_status : In(StatusWord)
        The core's status word.
    busy : Out(1)
        A request is being worked on (incoming bytes are dropped).
    tag : Out(32)
        The image tag.
    answered : Out(1)
        A pulse when a request's final response has gone out; ``rejected`` says how.
    rejected : Out(1)
        With ``answered``: the frame was NACKed or answered with an error status.
    """

    def __init__(self, config, *, clock_hz, baud, tag=0):
        self._config = config
        self._identity = P.identity_of(config, clock_hz, baud, 0)
        if not 0 <= tag < 1 << 32:
            raise ValueError(f"tag {tag} is not a u32")
        self._tag = tag
        super().__init__({
            "rx": In(stream.Signature(8)),
            "rx_error": In(1),
            "tx": Out(stream.Signature(8)),
            "write": Out(stream.Signature(write_request_layout(config))),
            "read": Out(stream.Signature(read_request_layout(config))),
            "read_data": In(stream.Signature(read_response_layout(config))),
            "cmd": Out(stream.Signature(Command)),
            "result": In(stream.Signature(Result)),
            "core_status": In(StatusWord),
            "busy": Out(1),
            "tag": Out(32, init=tag),
            "answered": Out(1),
            "rejected": Out(1),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        m.submodules.slip_rx = dec = SlipDecoder()
        m.submodules.receiver = rcv = FrameReceiver()
        m.submodules.checker = checker = RequestChecker(self._config)
        m.submodules.engine = engine = RequestEngine(self._config, identity=self._identity,
                                                     tag=self._tag)
        m.submodules.emitter = emitter = ResponseEmitter(engine.chunk_bytes)
        wiring.connect(m, dec.o, rcv.i)
        wiring.connect(m, rcv.frame, engine.frame)
        m.d.comb += [rcv.rd_addr.eq(engine.rd_addr), engine.rd_data.eq(rcv.rd_data)]
        wiring.connect(m, engine.check, checker.i)
        wiring.connect(m, checker.o, engine.verdict)
        wiring.connect(m, engine.response, emitter.i)
        m.d.comb += engine.sending.eq(emitter.busy)
        wiring.connect(m, emitter.o, wiring.flipped(self.tx))

        # The core's ports through a register each (StreamRegister.LATENCY): no handshake
        # runs combinationally between the engine's state machine and the core's scheduler.
        for name in ("write", "read", "cmd", "read_data", "result"):
            port, outer = getattr(engine, name), wiring.flipped(getattr(self, name))
            m.submodules[f"{name}_reg"] = reg = StreamRegister(port.payload.shape())
            source, sink = (port, outer) if name in ("write", "read", "cmd") else (outer, port)
            wiring.connect(m, source, reg.i)
            wiring.connect(m, reg.o, sink)
        m.d.comb += [engine.core_status.eq(self.core_status), self.busy.eq(engine.busy),
                     self.tag.eq(engine.tag), self.answered.eq(engine.answered),
                     self.rejected.eq(engine.rejected)]

        # Receive side: while busy every byte is taken and dropped; the decoder only ever
        # sees whole idle periods, so it is at a frame boundary whenever the link is idle.
        busy = self.busy
        m.d.comb += [
            dec.i.valid.eq(self.rx.valid & ~busy),
            dec.i.payload.eq(self.rx.payload),
            self.rx.ready.eq(busy | dec.i.ready),
            dec.bad.eq(self.rx_error & ~busy),
            engine.drop.eq(self.rx.valid & busy),
        ]
        return m
