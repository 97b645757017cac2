"""The link: hw/protocol.py in gateware, between the UART's byte streams and the core's ports.

Receive path: :class:`SlipDecoder` (escapes, ``END``, UART errors) -> :class:`FrameReceiver`
(the whole frame into one 2048-byte block RAM, its length and CRC checked) -> the
:class:`Link`'s request engine, which reads the request back out of that RAM, checks it
completely, and only then drives the core's write, read and command ports. Transmit path:
the engine's payload bytes -> :class:`FrameEncoder` (leading ``END``, CRC appended,
:class:`SlipEncoder` escaping, closing ``END``) -> the UART transmitter. Responses are
streamed as they are produced, so there is no response buffer.

Every block-to-block ``ready`` depends on registers only, so no combinational path runs
through more than one block; each block moves at most a byte every other cycle, which is
still ten times what a UART at ``divisor >= 4`` can carry.
"""

import functools
import operator
import struct

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import protocol as P
from .core.layouts import (Command, Result, StatusWord, read_request_layout,
                           read_response_layout, write_request_layout)
from .memory_map import ADDR_BITS, COUNTER_BITS, LANE_MEMS, OP_BITS, CoreReg, Mem, Op

__all__ = ["crc16_next", "CRC16", "DecodedByte", "SlipDecoder", "FrameInfo", "FrameReceiver",
           "SlipToken", "SlipEncoder", "PayloadByte", "FrameEncoder", "Link", "BUFFER_BYTES"]


BUFFER_BYTES = P.MAX_PAYLOAD + 2
"""The receive buffer: the longest request payload and its CRC (one 2048 x 8 block RAM)."""

_HEADER_BYTES = 2 + struct.calcsize(P.WRITE_HEADER)   # op, seq, mem, lane, addr, count
assert struct.calcsize(P.READ_HEADER) == struct.calcsize(P.WRITE_HEADER)


def crc16_next(crc, byte):
    """The CRC-16/CCITT-FALSE register after one more byte, as an XOR network.

    The byte-wise update is linear over GF(2), so each output bit is the XOR of the input
    bits that flip it; those sets are found by running :func:`hw.protocol.crc16` on unit
    vectors, which makes the reference the one definition.
    """
    terms = [[] for _ in range(16)]
    for i in range(16):
        out = P.crc16(b"\0", 1 << i)
        for o in range(16):
            if out >> o & 1:
                terms[o].append(crc[i])
    for j in range(8):
        out = P.crc16(bytes([1 << j]), 0)
        for o in range(16):
            if out >> o & 1:
                terms[o].append(byte[j])
    return Cat(*(functools.reduce(operator.xor, t) for t in terms))


class CRC16(wiring.Component):
    """CRC-16/CCITT-FALSE of a byte sequence, one byte per cycle.

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
    crc: Out(16, init=P.CRC_INIT)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.crc.eq(P.CRC_INIT)
        with m.Elif(self.en):
            m.d.sync += self.crc.eq(crc16_next(self.crc, self.data))
        return m


DecodedByte = data.StructLayout({"data": 8, "end": 1, "bad": 1})
"""What the SLIP decoder emits: a payload byte (``end`` = 0), or the end of a frame
(``end`` = 1, ``bad`` if it held a bad escape or a UART error)."""


class SlipDecoder(wiring.Component):
    """SLIP decoder, a byte at a time, as :class:`hw.protocol.FrameDecoder`.

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
    registers to compare. The status follows :class:`hw.protocol.FrameDecoder`: ``BAD_FRAME``
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
        with m.Elif(count < 2 + 2):
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


SlipToken = data.StructLayout({"data": 8, "end": 1})
"""What the SLIP encoder sends: ``data`` escaped, or (``end``) a bare ``END``."""


class SlipEncoder(wiring.Component):
    """SLIP encoder: each ``data`` byte becomes one or two line bytes, each ``end`` an ``END``.

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
            with m.Elif(d == P.END):
                m.d.sync += [self.o.payload.eq(P.ESC), pend.eq(1), pend_data.eq(P.ESC_END)]
            with m.Elif(d == P.ESC):
                m.d.sync += [self.o.payload.eq(P.ESC), pend.eq(1), pend_data.eq(P.ESC_ESC)]
            with m.Else():
                m.d.sync += self.o.payload.eq(d)
        return m


PayloadByte = data.StructLayout({"data": 8, "last": 1})
"""A response payload byte; ``last`` marks the frame's final byte."""


class FrameEncoder(wiring.Component):
    """Frames a payload as :func:`hw.protocol.frame` does: ``END``, escaped payload and
    CRC (low byte first), ``END``; the CRC is computed on the fly.

    Attributes
    ----------
    i : In(stream.Signature(PayloadByte))
        Payload bytes, ``last`` on each frame's final one; ready while its one-byte input
        register is empty.
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
                m.d.comb += [slip.i.valid.eq(full), slip.i.payload.end.eq(1)]
                with m.If(full & slip.i.ready):
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


def _times_const(x, k):
    # x * k as shifted copies of x, so that no multiplier (DSP block) is inferred.
    terms = [x << s for s in range(k.bit_length()) if k >> s & 1]
    return functools.reduce(operator.add, terms) if terms else C(0)


class Link(wiring.Component):
    """The SoC's protocol engine (hw/protocol.py) for a core built for ``config``.

    A request is acted on only after the whole frame is in the receive buffer, its CRC is
    good and it has passed every check of :func:`hw.protocol.check_request`; then the
    request engine (one state machine) drives the core's ports and streams the response.
    While it works (from the frame's closing ``END`` until the encoder has handed the
    response's last byte to ``tx``) bytes from ``rx`` are taken and dropped, and counted.

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
        cfg = self._config
        wb = P.word_bytes(cfg)
        S = P.LinkStatus

        m.submodules.slip_rx = dec = SlipDecoder()
        m.submodules.receiver = rcv = FrameReceiver()
        m.submodules.encoder = enc = FrameEncoder()
        wiring.connect(m, dec.o, rcv.i)
        wiring.connect(m, enc.o, wiring.flipped(self.tx))

        # Receive side: while busy every byte is taken and dropped; the decoder only ever
        # sees whole idle periods, so it is at a frame boundary whenever the link is idle.
        busy = self.busy
        dropped = Signal(COUNTER_BITS, name="dropped")
        m.d.comb += [
            dec.i.valid.eq(self.rx.valid & ~busy),
            dec.i.payload.eq(self.rx.payload),
            self.rx.ready.eq(busy | dec.i.ready),
            dec.bad.eq(self.rx_error & ~busy),
        ]
        with m.If(self.rx.valid & busy):
            m.d.sync += dropped.eq(dropped + 1)

        # Reading the buffer: a fetch of `fetch_left` bytes from `rptr` on shifts them into
        # the top of `fetched`, two cycles behind their addresses.
        fetch_bytes = max(_HEADER_BYTES, wb)
        rptr = Signal(11, name="rptr")
        fetch_left = Signal(range(BUFFER_BYTES + 1), name="fetch_left")
        fetch_p = Signal(2, name="fetch_pipe")
        fetched = Signal(8 * fetch_bytes, name="fetched")
        fetch_done = Signal(name="fetch_done")
        m.d.comb += [rcv.rd_addr.eq(rptr),
                     fetch_done.eq((fetch_left == 0) & (fetch_p == 0))]
        m.d.sync += fetch_p.eq(Cat(fetch_left != 0, fetch_p[0]))
        with m.If(fetch_left != 0):
            m.d.sync += [rptr.eq(rptr + 1), fetch_left.eq(fetch_left - 1)]
        with m.If(fetch_p[1]):
            m.d.sync += fetched.eq(Cat(fetched[8:], rcv.rd_data))

        def fetch(start, n):
            if start is not None:
                m.d.sync += rptr.eq(start)
            m.d.sync += fetch_left.eq(n)

        # The request header, bytes 0..9 of the payload (fields past a short body are stale,
        # and only looked at once the length is known to cover them).
        hdr = Signal(8 * _HEADER_BYTES, name="hdr")
        op, seq = hdr[0:8], hdr[8:16]
        mem, lane, addr, count = hdr[16:24], hdr[24:32], hdr[32:64], hdr[64:80]
        gen_first, gen_count, tag_in = hdr[16:32], hdr[32:48], hdr[16:48]
        body_len = Signal(range(BUFFER_BYTES + 1), name="body_len")
        # The bytes past the header, registered (body_len is set cycles before V4 reads it).
        tail_len = Signal(range(BUFFER_BYTES + 1), name="tail_len", reset_less=True)
        m.d.sync += tail_len.eq(body_len - 8)

        resp_op = Signal(8, name="resp_op")
        resp_seq = Signal(8, name="resp_seq")
        status = Signal(8, name="resp_status")

        # Counters of STATUS.
        frames_ok = Signal(COUNTER_BITS, name="frames_ok")
        frames_rejected = Signal(COUNTER_BITS, name="frames_rejected")
        steps = Signal(COUNTER_BITS, name="steps")
        cycles = Signal(COUNTER_BITS, name="cycles")
        tag = self.tag

        # Checks, registered over three cycles (V1, V2, V3), acted on in V4: no wide compare
        # or add sits behind another.
        op_ok = Signal(name="op_ok")
        len_ok = Signal(name="len_ok")
        write_len = Signal(range(8 + 65535 * wb + 1), name="write_len")
        body_ge_hdr = Signal(name="body_ge_hdr")
        mem_ok = Signal(name="mem_ok")
        lane_ok = Signal(name="lane_ok")
        depth = Signal(ADDR_BITS + 1, name="depth")
        end = Signal(ADDR_BITS + 1, name="end")
        addr_hi_zero = Signal(name="addr_hi_zero")
        count_ok = Signal(name="count_ok")
        end_ok = Signal(name="end_ok")
        write_len_ok = Signal(name="write_len_ok")
        verdict = Signal(8, name="verdict")
        is_write = op == P.Cmd.WRITE
        is_read = op == P.Cmd.READ
        is_stream = Signal(name="is_stream")     # RUN or GENERATE: the final carries DONE
        # The opcode decoded in V1, one flip-flop per command, for V3 and V4.
        op_is = {c: Signal(name=f"op_is_{c.name.lower()}") for c in P.Cmd}
        verdict_ok = Signal(name="verdict_ok")
        clear_tag = Signal(name="clear_tag")

        # WRITE words: bits above data_bits must be zero (only the top byte can hold them).
        top_used = cfg.data_bits - 8 * (wb - 1)
        scan_needed = top_used < 8
        word_pos = Signal(range(wb), name="word_pos")
        scan_bad = Signal(name="scan_bad")

        waddr = Signal(ADDR_BITS, name="waddr")
        wleft = Signal(16, name="wleft")
        settle = Signal(2, name="settle")
        rleft = Signal(16, name="rleft")
        cmd_op = Signal(OP_BITS, name="cmd_op")

        # RUN/GENERATE: `left` steps still to complete, `done` completed; the next step is
        # issued before the previous one's TOKEN frame goes out.
        token_in = Signal(16, name="token_in")
        done = Signal(16, name="done")
        left = Signal(16, name="left")
        have = Signal(name="have_token")       # a completed step's TOKEN frame is due
        inflight = Signal(name="inflight")     # a STEP has been issued, its result not taken
        res_index = Signal(16, name="res_index")
        res_token = Signal(16, name="res_token")
        res_cycles = Signal(COUNTER_BITS, name="res_cycles")
        res_spikes = Signal(COUNTER_BITS, name="res_spikes")

        # Responses go out of `obuf`: a load state fills it (from registers only) in one
        # cycle, an emit state shifts it into the encoder a byte per handshake, so the
        # encoder's input comes straight from a register. IDENTIFY takes two loads.
        identity = list(self._identity[:-4])     # all but the tag
        obuf_bytes = max(3 + 25, 3 + struct.calcsize(P.TOKEN_FORMAT), wb)
        id_split = obuf_bytes - 3
        assert len(identity) - id_split + 4 <= obuf_bytes
        obuf = Signal(8 * obuf_bytes, name="obuf")
        olen = Signal(range(obuf_bytes + 1), name="olen")
        olast = Signal(name="olast")           # obuf's last byte ends the frame

        def le(value, n):
            return [value[8 * i:8 * i + 8] for i in range(n)]

        obusy = Signal(name="obusy")           # obuf holds bytes not yet handed over
        # A load state writes the response bytes into `stage` (the only register with one
        # input per load state); the next cycle they move to obuf, whose input is then just
        # stage or itself shifted.
        stage = Signal(8 * obuf_bytes, name="ostage")
        stage_len = Signal.like(olen, name="ostage_len")
        stage_last = Signal(name="ostage_last")
        stage_go = Signal(name="ostage_go")

        def load(values, last):
            assert len(values) <= obuf_bytes
            m.d.sync += [stage[:8 * len(values)].eq(Cat(*values)), stage_len.eq(len(values)),
                         stage_last.eq(last), stage_go.eq(1)]

        # The emitter hands obuf to the encoder a byte per handshake whatever the engine's
        # state, deciding from its own registers (and the encoder's). obuf stays put until
        # the next load (its enable is the stage_go flip-flop alone; a shift would put the
        # handshake on the enable of every bit) and a byte index picks the byte to hand
        # over. An emit state waits for it to finish.
        opos = Signal(range(obuf_bytes), name="opos")
        m.d.sync += stage_go.eq(0)             # (a load state's stage_go.eq(1) comes later)
        m.d.comb += [enc.i.valid.eq(obusy), enc.i.payload.data.eq(obuf.word_select(opos, 8)),
                     enc.i.payload.last.eq(olast & (olen == 1))]
        with m.If(stage_go):
            m.d.sync += [obuf.eq(stage), opos.eq(0), olen.eq(stage_len), olast.eq(stage_last),
                         obusy.eq(1)]
        with m.Elif(obusy & enc.i.ready):
            m.d.sync += [opos.eq(opos + 1), olen.eq(olen - 1)]
            with m.If(olen == 1):
                m.d.sync += obusy.eq(0)

        def emit(then):
            with m.If(~obusy & ~stage_go):
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

        header = [resp_op, resp_seq, status]

        with m.FSM(name="engine") as fsm:
            with m.State("IDLE"):
                m.d.comb += rcv.frame.ready.eq(1)
                info = rcv.frame.payload
                with m.If(rcv.frame.valid):
                    m.d.sync += [status.eq(info.status), body_len.eq(info.length - 2)]
                    with m.If(info.status != S.OK):
                        m.d.sync += [resp_op.eq(P.NACK_OP), resp_seq.eq(0)]
                        m.next = "L_SIMPLE"
                    with m.Else():
                        fetch(0, _HEADER_BYTES)
                        m.next = "LOAD"

            with m.State("LOAD"):
                with m.If(fetch_done):
                    m.d.sync += hdr.eq(fetched[-8 * _HEADER_BYTES:])
                    m.next = "V1"

            with m.State("V1"):
                m.d.sync += [resp_op.eq(op), resp_seq.eq(seq), op_ok.eq(0), len_ok.eq(0),
                             is_stream.eq(0)]
                with m.Switch(op):
                    for c in (P.Cmd.IDENTIFY, P.Cmd.RESET, P.Cmd.STATUS):
                        with m.Case(c):
                            m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == 0)]
                    for c in (P.Cmd.TAG, P.Cmd.GENERATE):
                        with m.Case(c):
                            m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == 4)]
                    with m.Case(P.Cmd.READ):
                        m.d.sync += [op_ok.eq(1), len_ok.eq(body_len == 8)]
                    with m.Case(P.Cmd.RUN):
                        m.d.sync += [op_ok.eq(1), len_ok.eq(~body_len[0] & (body_len != 0) &
                                                            (body_len <= 2 * P.MAX_RUN))]
                    with m.Case(P.Cmd.WRITE):
                        m.d.sync += [op_ok.eq(1), len_ok.eq(1)]
                m.d.sync += [op_is[c].eq(op == c) for c in P.Cmd]
                m.d.sync += [
                    is_stream.eq((op == P.Cmd.RUN) | (op == P.Cmd.GENERATE)),
                    write_len.eq(8 + _times_const(count, wb)),
                    body_ge_hdr.eq(body_len >= 8),
                    end.eq(addr[:ADDR_BITS] + count),
                    addr_hi_zero.eq(addr[ADDR_BITS:] == 0),
                    mem_ok.eq(0), lane_ok.eq(0), depth.eq(0), clear_tag.eq(0),
                ]
                with m.Switch(mem):
                    for mm in Mem:
                        with m.Case(mm):
                            m.d.sync += [
                                mem_ok.eq(~is_write if mm == Mem.ACC else 1),
                                lane_ok.eq(lane < cfg.lanes if mm in LANE_MEMS else lane == 0),
                                depth.eq(cfg.depth(mm)),
                            ]
                            if mm == Mem.CORE:
                                keep = [r for r in CoreReg if not P.clears_tag(mm, r)]
                                m.d.sync += clear_tag.eq(
                                    functools.reduce(operator.and_, [addr != r for r in keep]))
                            else:
                                m.d.sync += clear_tag.eq(int(P.clears_tag(mm, 0)))
                # count: at least 1; READ at most MAX_READ; a CORE WRITE exactly 1;
                # GENERATE's count at least 1.
                with m.If(is_read):
                    m.d.sync += count_ok.eq((count != 0) & (count <= P.MAX_READ))
                with m.Elif(is_write & (mem == Mem.CORE)):
                    m.d.sync += count_ok.eq(count == 1)
                with m.Elif(is_write):
                    m.d.sync += count_ok.eq(count != 0)
                with m.Else():
                    m.d.sync += count_ok.eq(gen_count != 0)
                m.next = "V2"

            with m.State("V2"):
                m.d.sync += [end_ok.eq(depth >= end),
                             write_len_ok.eq(body_ge_hdr & (body_len == write_len))]
                m.next = "V3"

            with m.State("V3"):
                is_w, is_r = op_is[P.Cmd.WRITE], op_is[P.Cmd.READ]
                with m.If(~op_ok):
                    m.d.comb += verdict.eq(S.BAD_OPCODE)
                with m.Elif(~len_ok | (is_w & ~write_len_ok)):
                    m.d.comb += verdict.eq(S.BAD_LENGTH)
                with m.Elif((is_w | is_r) & ~mem_ok):
                    m.d.comb += verdict.eq(S.BAD_MEMORY)
                with m.Elif((is_w | is_r) &
                            ~(lane_ok & addr_hi_zero & end_ok & count_ok)):
                    m.d.comb += verdict.eq(S.OUT_OF_RANGE)
                with m.Elif(op_is[P.Cmd.GENERATE] & ~count_ok):
                    m.d.comb += verdict.eq(S.OUT_OF_RANGE)
                with m.Else():
                    m.d.comb += verdict.eq(S.OK)
                m.d.sync += [status.eq(verdict), verdict_ok.eq(verdict == S.OK)]
                m.next = "V4"

            # Act on the registered verdict.
            with m.State("V4"):
                with m.If(~verdict_ok):
                    m.next = "L_SIMPLE"
                with m.Elif(op_is[P.Cmd.IDENTIFY]):
                    m.next = "L_IDENT1"
                with m.Elif(op_is[P.Cmd.STATUS]):
                    m.next = "L_STATUS"
                with m.Elif(op_is[P.Cmd.TAG]):
                    m.d.sync += tag.eq(tag_in)
                    m.next = "L_SIMPLE"
                with m.Elif(op_is[P.Cmd.RESET]):
                    m.d.sync += cmd_op.eq(Op.RESET)
                    m.next = "CMD"
                with m.Elif(op_is[P.Cmd.READ]):
                    m.d.sync += [waddr.eq(addr), rleft.eq(count)]
                    m.next = "L_READ_HDR"
                with m.Elif(op_is[P.Cmd.WRITE]):
                    m.d.sync += [waddr.eq(addr), wleft.eq(count), word_pos.eq(0),
                                 scan_bad.eq(0)]
                    if scan_needed:
                        fetch(_HEADER_BYTES, tail_len)
                        m.next = "SCAN"
                    else:
                        fetch(_HEADER_BYTES, wb)
                        m.next = "W_FETCH"
                with m.Elif(op_is[P.Cmd.RUN]):
                    m.d.sync += [done.eq(0), left.eq(body_len[1:]), have.eq(0),
                                 inflight.eq(0), cmd_op.eq(Op.STEP)]
                    fetch(2, 2)
                    m.next = "RUN_FETCH"
                with m.Elif(op_is[P.Cmd.GENERATE]):
                    m.d.sync += [done.eq(0), left.eq(gen_count), have.eq(0),
                                 inflight.eq(0), token_in.eq(gen_first),
                                 cmd_op.eq(Op.STEP)]
                    m.next = "ISSUE"

            # --- WRITE ------------------------------------------------------------------
            with m.State("SCAN"):
                with m.If(fetch_p[1]):
                    m.d.sync += word_pos.eq(Mux(word_pos == wb - 1, 0, word_pos + 1))
                    if scan_needed:
                        with m.If((word_pos == wb - 1) & (rcv.rd_data[top_used:] != 0)):
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
                        m.d.sync += settle.eq(3)
                        m.next = "W_SETTLE"
                    with m.Else():
                        fetch(None, wb)
                        m.next = "W_FETCH"

            with m.State("W_SETTLE"):
                # The core flags a refused write two cycles after its handshake.
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
                load([resp_op, resp_seq, C(S.OK, 8)], 0)
                m.next = "E_READ_HDR"

            with m.State("E_READ_HDR"):
                emit(goto("R_ISSUE"))

            with m.State("R_ISSUE"):
                m.d.comb += self.read.valid.eq(1)
                with m.If(self.read.ready):
                    m.next = "R_WAIT"

            with m.State("R_WAIT"):
                m.d.comb += self.read_data.ready.eq(1)
                with m.If(self.read_data.valid):
                    load(le(self.read_data.payload.data, wb), rleft == 1)
                    m.next = "E_WORD"

            with m.State("E_WORD"):
                def after_word():
                    m.d.sync += [waddr.eq(waddr + 1), rleft.eq(rleft - 1)]
                    with m.If(olast):
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
                    with m.If(is_stream):
                        m.next = "L_DONE"
                    with m.Else():
                        m.next = "L_SIMPLE"

            # --- RUN, GENERATE ----------------------------------------------------------
            with m.State("RUN_FETCH"):
                with m.If(fetch_done):
                    m.d.sync += token_in.eq(fetched[-16:])
                    m.next = "ISSUE"

            with m.State("ISSUE"):
                m.d.comb += self.cmd.valid.eq(1)
                with m.If(self.cmd.ready):
                    m.d.sync += inflight.eq(1)
                    with m.If(have):
                        m.next = "L_TOKEN"
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
                            res_index.eq(done), res_token.eq(r.token),
                            res_cycles.eq(r.cycles), res_spikes.eq(r.spikes),
                            done.eq(done + 1), left.eq(left - 1), have.eq(1),
                            steps.eq(steps + 1), cycles.eq(cycles + r.cycles),
                            token_in.eq(r.token),
                        ]
                        with m.If(left == 1):
                            m.next = "L_TOKEN"
                        with m.Elif(op == P.Cmd.RUN):
                            fetch(None, 2)
                            m.next = "RUN_FETCH"
                        with m.Else():
                            m.next = "ISSUE"

            with m.State("L_TOKEN"):
                load([C(P.Cmd.TOKEN, 8), resp_seq, C(S.OK, 8), *le(res_index, 2),
                      *le(res_token, 2), *le(res_cycles, 4), *le(res_spikes, 4)], 1)
                m.next = "E_TOKEN"

            with m.State("E_TOKEN"):
                def after_token():
                    m.d.sync += have.eq(0)
                    with m.If(inflight):
                        m.next = "WAIT"
                    with m.Else():
                        m.next = "L_DONE"
                emit(after_token)

            # --- responses --------------------------------------------------------------
            with m.State("L_SIMPLE"):
                load(header, 1)
                m.next = "E_SIMPLE"

            with m.State("E_SIMPLE"):
                emit(goto("FINISH"))

            with m.State("L_DONE"):
                load(header + le(done, 2), 1)
                m.next = "E_DONE"

            with m.State("E_DONE"):
                emit(goto("FINISH"))

            with m.State("L_IDENT1"):
                load(header + [C(b, 8) for b in identity[:id_split]], 0)
                m.next = "E_IDENT1"

            with m.State("E_IDENT1"):
                emit(goto("L_IDENT2"))

            with m.State("L_IDENT2"):
                load([C(b, 8) for b in identity[id_split:]] + le(tag, 4), 1)
                m.next = "E_IDENT2"

            with m.State("E_IDENT2"):
                emit(goto("FINISH"))

            with m.State("L_STATUS"):
                # The counters as they are now (bytes dropped meanwhile count later).
                core_status = Signal(8, name="core_status_byte")
                m.d.comb += core_status.eq(self.core_status.as_value())
                load(header + [core_status] + le(frames_ok, 4) + le(frames_rejected, 4) +
                     le(dropped, 4) + le(steps, 4) + le(cycles, 4) + le(tag, 4), 1)
                m.next = "E_STATUS"

            with m.State("E_STATUS"):
                emit(goto("FINISH"))

            with m.State("FINISH"):
                with m.If(~enc.busy):
                    m.d.comb += [self.answered.eq(1), self.rejected.eq(status != S.OK)]
                    with m.If(status == S.OK):
                        m.d.sync += frames_ok.eq(frames_ok + 1)
                    with m.Else():
                        m.d.sync += frames_rejected.eq(frames_rejected + 1)
                    m.next = "IDLE"

        m.d.comb += busy.eq(~fsm.ongoing("IDLE") | rcv.frame.valid)
        return m
