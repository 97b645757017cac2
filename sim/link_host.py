"""Host-side helpers for testing the SoC's link: a reference model of its answers.

:class:`LinkModel` says, for every frame a host sends, which responses spikestream/protocol.py
requires and which core writes it may cause, as far as that is knowable without running
the network (``RUN``/``GENERATE``/``STREAM`` are checked for their structure; the whole-SoC
cocotb test checks their tokens and cycles against the golden model). It builds on the
protocol's own reference functions (:class:`spikestream.protocol.FrameDecoder`,
:func:`spikestream.protocol.check_request`, :func:`spikestream.memory_map.write_problem`), so
it shares no code with the gateware.

A ``STREAM``'s token bytes are not a frame: :class:`ResponseReader` (and
:func:`parse_responses`, which uses it) reads them as a host does, exactly
``count * token_bytes`` raw bytes after a ``STREAM_START`` frame, and gives them as one
pseudo-response ``(RAW, seq, 0, the bytes)`` between the ``STREAM_START`` frame and the final
one; :func:`is_final` tells a final response from the others.

Pure Python: the amaranth.sim unit tests, the cocotb testbench (:mod:`sim.tb_soc`) and the
fuzzer (:mod:`bench.fuzz_link`) all use it.
"""

import struct

from spikestream import protocol as P
from spikestream.memory_map import CoreReg, Mem, Write, contents_after, write_problem
from spikestream.formats import NeuronKind
from spikestream.image import Image
from spikestream.sampler import seed_state

from .netgen import random_network

__all__ = ["LinkModel", "RAW", "ResponseReader", "golden_stream", "is_final", "refused_core_write",
           "parse_responses", "write_requests", "random_image"]

RAW = "raw"
"""The ``op`` of the pseudo-response that holds a STREAM's token bytes (never a byte value,
so it matches no real ``op``)."""


def is_final(response):
    """Whether ``(op, seq, status, body)`` is a final response: anything but a ``TOKEN`` or
    ``STREAM_START`` frame with status ``OK`` and a STREAM's token bytes (:data:`RAW`)."""
    op, _, status, _ = response
    return not (op in (P.Cmd.TOKEN, P.Cmd.STREAM_START, RAW) and status == P.LinkStatus.OK)


class ResponseReader:
    """The bytes a SoC sends, read as a host reads them, fed in any pieces.

    Frames are decoded (:class:`spikestream.protocol.FrameDecoder`); after a ``STREAM_START``
    frame with status ``OK`` and a body of :data:`spikestream.protocol.STREAM_START_BODY`'s
    size, the next ``count * token_bytes`` bytes are taken raw, whatever they are, and given
    as one ``(RAW, seq, 0, bytes)`` once all have come. :meth:`feed` returns a list of
    ``(decode status, response)``: ``OK`` with ``(op, seq, status, body)``, or a NACK status
    with the damaged frame's bytes. :attr:`pending` is the raw bytes of a STREAM not yet
    complete.
    """

    def __init__(self):
        self._decoder = P.FrameDecoder(max_length=1 << 20, min_length=3)
        self._left = 0
        self._seq = 0
        self.pending = bytearray()

    def feed(self, data):
        out, data, at = [], bytes(data), 0
        while at < len(data):
            if self._left:
                take = data[at:at + self._left]
                self.pending += take
                self._left -= len(take)
                at += len(take)
                if not self._left:
                    out.append((P.LinkStatus.OK, (RAW, self._seq, P.LinkStatus.OK,
                                                  bytes(self.pending))))
                    self.pending.clear()
                continue
            end = data.find(P.END, at)
            upto = len(data) if end < 0 else end + 1
            for status, payload in self._decoder.feed(data[at:upto]):
                if status != P.LinkStatus.OK:
                    out.append((status, payload))
                    continue
                r = P.parse_response(payload)
                out.append((status, r))
                op, seq, rstatus, body = r
                if op == P.Cmd.STREAM_START and rstatus == P.LinkStatus.OK and \
                        len(body) == P.STREAM_START_BODY.size:
                    start = P.STREAM_START_BODY.unpack_from(body)
                    self._left, self._seq = start.count * start.token_bytes, seq
            at = upto
        return out


def parse_responses(wire):
    """The responses in the bytes a SoC sent: a list of ``(op, seq, status, body)``, a
    STREAM's token bytes as one :data:`RAW` response (:class:`ResponseReader`; a STREAM cut
    short ends the list with the raw bytes that came).

    Raises ``AssertionError`` if any frame is damaged: the SoC must never send one.
    """
    out = []
    reader = ResponseReader()
    for status, r in reader.feed(wire):
        assert status == P.LinkStatus.OK, f"the SoC sent a damaged frame ({status.name}): " \
                                          f"{r.hex()}"
        out.append(r)
    if reader.pending:
        out.append((RAW, reader._seq, P.LinkStatus.OK, bytes(reader.pending)))
    return out


def refused_core_write(payload, config):
    """The one core write a rejected ``payload`` may cause: a ``CORE`` write that passes
    every check of the link but whose value the core's port refuses (``write_error``, and
    nothing written). ``None`` for every other request."""
    op, _, body = P.parse_request(payload)
    if op != P.Cmd.WRITE or len(body) < 8:
        return None
    mem, lane, addr, count = struct.unpack_from(P.WRITE_HEADER, body)
    wb = P.word_bytes(config)
    if (mem != Mem.CORE or count != 1 or lane != 0 or addr >= config.depth(Mem.CORE)
            or len(body) != 8 + wb):
        return None
    word = int.from_bytes(body[8:], "little")
    if word >> config.data_bits:
        return None
    write = Write(Mem.CORE, 0, addr, word)
    return write if write_problem(write, config) is not None else None


class LinkModel:
    """The state a host can know of a SoC, and the answers it must give.

    Parameters
    ----------
    config : CoreConfig
    clock_hz, baud : int
        What IDENTIFY must report.
    init : list of Write
        The image the SoC was built with.
    tag : int
        Its power-up tag.

    Call :meth:`check` once per frame the SoC decoded, in order, with what it answered (as
    :func:`parse_responses` gives it) and the core writes it made; it returns a list of
    problems (empty if all is as the protocol says) and updates the model.
    """

    def __init__(self, config, *, clock_hz, baud, init=(), tag=0):
        self.config = config
        self.clock_hz, self.baud = clock_hz, baud
        self.tag = tag
        contents = contents_after(init, config)
        self.words = {}
        for (mem, lane), words in contents.lane.items():
            for addr, word in words.items():
                self.words[(mem, lane, addr)] = word
        for mem, words in contents.table.items():
            for addr, word in words.items():
                self.words[(mem, 0, addr)] = word
        self.regs = dict(contents.regs)
        self.rng = seed_state(self.regs[CoreReg.SEED])
        # Memories whose words running the core changed, and those the model never predicts:
        # the spike history and the spike inputs live in regions that STEPs move
        # (spikestream.memory_map, "History"; sw.golden_board models them word for word).
        self.unknown = {Mem.QUEUE, Mem.SPIKES, Mem.INPUT, Mem.INCOUNT}
        self.frames_ok = self.frames_rejected = self.dropped = 0
        self.steps = self.cycles = 0

    # --- what a READ returns ------------------------------------------------------------------

    def word(self, mem, lane, addr):
        """The word a READ returns, or ``None`` where running the core made it unknowable."""
        mem = Mem(mem)
        if mem in self.unknown:
            return None
        if mem == Mem.CORE:
            reg = CoreReg(addr)
            if reg == CoreReg.SEED:
                return None if "rng" in self.unknown else self.rng
            return self.regs[reg]
        return self.words.get((mem, lane, addr), 0)

    def _write(self, w):
        mem = Mem(w.mem)
        if mem == Mem.CORE:
            self.regs[CoreReg(w.addr)] = w.data
            if w.addr == CoreReg.SEED:
                self.rng = seed_state(w.data)
                self.unknown.discard("rng")
            return
        self.words[(mem, w.lane, w.addr)] = w.data & ((1 << self.config.layout(mem).bits) - 1)

    def _input_ok(self, w):
        """Whether the core takes ``w`` (only spike inputs' ids and counts can be refused
        for their value: spikestream.memory_map, "Per timestep")."""
        cfg = self.config
        if w.mem not in (Mem.INPUT, Mem.INCOUNT):
            return True
        k = w.addr >> cfg.input_bits if w.mem == Mem.INPUT else w.addr
        if k >= cfg.max_inputs or k >= self.regs[CoreReg.INPUTS]:
            return False
        src = cfg.layout(Mem.SRC).unpack(self.words.get((Mem.SRC, 0, cfg.max_pops + k), 0))
        if not src["keep"]:
            return False
        if w.mem == Mem.INPUT:
            return (w.addr & ((1 << cfg.input_bits) - 1)) < src["stride"] and w.data < src["size"]
        return w.data <= src["stride"]

    # --- checking one exchange ----------------------------------------------------------------

    def check(self, frame_status, payload, responses, writes):
        """Check the SoC's ``responses`` (``(op, seq, status, body)`` tuples) and core
        ``writes`` (:class:`~spikestream.memory_map.Write`) for one decoded frame; see the class."""
        cfg = self.config
        problems = []

        def expect(cond, msg):
            if not cond:
                problems.append(msg)

        def final(ok):
            if ok:
                self.frames_ok += 1
            else:
                self.frames_rejected += 1

        if frame_status != P.LinkStatus.OK:
            expect(responses == [(P.NACK_OP, 0, frame_status, b"")],
                   f"NACK {frame_status.name} expected, got {responses}")
            expect(not writes, f"a NACKed frame caused core writes {writes}")
            final(False)
            return problems

        op, seq, body = P.parse_request(payload)
        status = P.check_request(payload, cfg)
        if status != P.LinkStatus.OK:
            expect(responses == [(op, seq, status, b"")],
                   f"{status.name} expected for {payload[:16].hex()}..., got {responses}")
            allowed = refused_core_write(payload, cfg)
            expect(writes == ([allowed] if allowed else []),
                   f"a rejected request ({status.name}) caused core writes {writes}")
            final(False)
            return problems

        cmd = P.Cmd(op)
        head = responses[-1][:3] if responses else None
        if cmd not in (P.Cmd.RUN, P.Cmd.GENERATE, P.Cmd.STREAM):
            expect(len(responses) == 1, f"{cmd.name}: one response expected, got {responses}")
        if cmd != P.Cmd.WRITE:
            expect(not writes, f"{cmd.name} caused core writes {writes}")
        body_out = responses[-1][3] if responses else b""

        if cmd == P.Cmd.IDENTIFY:
            expect(responses == [(op, seq, 0, P.identity_of(cfg, self.clock_hz, self.baud,
                                                            self.tag))],
                   f"IDENTIFY: got {responses}")
        elif cmd == P.Cmd.STATUS:
            want = struct.pack(P.STATUS_FORMAT, 0, self.frames_ok, self.frames_rejected,
                               self.dropped, self.steps, self.cycles & 0xFFFFFFFF, self.tag)
            expect(responses == [(op, seq, 0, want)],
                   f"STATUS: expected {P.LinkCounters(struct.unpack(P.STATUS_FORMAT, want))}, "
                   f"got {responses}")
        elif cmd == P.Cmd.TAG:
            expect(responses == [(op, seq, 0, b"")], f"TAG: got {responses}")
            (self.tag,) = struct.unpack(P.TAG_FORMAT, body)
        elif cmd == P.Cmd.RESET:
            expect(responses == [(op, seq, 0, b"")], f"RESET: got {responses}")
            for key in [key for key in self.words if key[0] in (Mem.STATE, Mem.ACC)]:
                del self.words[key]
            self.unknown -= {Mem.STATE, Mem.ACC}
        elif cmd == P.Cmd.WRITE:
            mem, lane, addr, count = struct.unpack_from(P.WRITE_HEADER, body)
            words = P.unpack_words(body[8:], P.word_bytes(cfg))
            want = [Write(Mem(mem), lane, addr + k, w) for k, w in enumerate(words)]
            # The core refuses a spike input's id or count that does not fit the input's
            # source word (write_error); the link then answers OUT_OF_RANGE (and clears it).
            refused = [w for w in want if not self._input_ok(w)]
            expect(responses == [(op, seq, P.LinkStatus.OUT_OF_RANGE if refused else 0, b"")],
                   f"WRITE: got {responses}")
            expect(writes == want, f"WRITE: core writes {writes}, expected {want}")
            for w in want:
                if w not in refused:
                    self._write(w)
            if refused:
                final(False)
                return problems
            if any(P.clears_tag(w.mem, w.addr) for w in want):
                self.tag = 0
        elif cmd == P.Cmd.READ:
            mem, lane, addr, count = struct.unpack(P.READ_HEADER, body)
            wb = P.word_bytes(cfg)
            expect(head == (op, seq, 0) and len(body_out) == count * wb,
                   f"READ of {count} words: got {responses}")
            if head == (op, seq, 0) and len(body_out) == count * wb:
                got = P.unpack_words(body_out, wb)
                for k, g in enumerate(got):
                    want = self.word(mem, lane, addr + k)
                    if want is not None and g != want:
                        problems.append(f"READ {Mem(mem).name}[{lane}][{addr + k}] = {g:#x}, "
                                        f"expected {want:#x}")
        elif cmd == P.Cmd.STREAM:
            problems += self._check_stream(op, seq, body, responses)
        else:
            problems += self._check_steps(cmd, op, seq, body, responses)
        if cmd not in (P.Cmd.RUN, P.Cmd.GENERATE, P.Cmd.STREAM):
            final(True)
        return problems

    def _check_stream(self, op, seq, body, responses):
        """A STREAM: ``STREAM_START``, the token bytes (:data:`RAW`), the final frame whose
        steps, CRC and cycles agree with them; or, for a first token outside the vocabulary,
        the final frame alone (``BAD_TOKEN``, zeros, CRC ``0xFFFF``). The token bytes may
        come as a :data:`RAW` response or as plain ``bytes``."""
        problems = []
        responses = [(RAW, seq, P.LinkStatus.OK, bytes(r)) if isinstance(r, (bytes, bytearray))
                     else r for r in responses]
        vocab = self.regs[CoreReg.VOCAB]
        first, count = P.STREAM_BODY.unpack_from(body)
        nbytes = P.stream_token_bytes(self.config)
        if first >= vocab:
            want = [(op, seq, P.LinkStatus.BAD_TOKEN,
                     P.STREAM_END_BODY.pack(steps=0, cycles=0, spikes=0, crc=0xFFFF))]
            if responses != want:
                problems.append(f"STREAM from {first} (vocabulary {vocab}): expected {want}, "
                                f"got {responses}")
            self.frames_rejected += 1
            return problems
        start = (P.Cmd.STREAM_START, seq, P.LinkStatus.OK,
                 P.STREAM_START_BODY.pack(count=count, token_bytes=nbytes))
        shape = [r[:3] for r in responses]
        if len(responses) != 3 or responses[0] != start or \
                shape[1:] != [(RAW, seq, P.LinkStatus.OK), (op, seq, P.LinkStatus.OK)] or \
                len(responses[1][3]) != count * nbytes or \
                len(responses[2][3]) != P.STREAM_END_BODY.size:
            problems.append(f"STREAM of {count}: expected {start}, {count * nbytes} token "
                            f"bytes, then the final frame; got "
                            f"{[(r[:3], len(r[3])) for r in responses]}")
            self.frames_rejected += 1           # (what the SoC counts is unknown here)
            return problems
        raw = responses[1][3]
        end = P.STREAM_END_BODY.unpack_from(responses[2][3])
        tokens = P.unpack_stream(raw, nbytes)
        if max(tokens) >= vocab:
            problems.append(f"STREAM: token {max(tokens)} outside the vocabulary of {vocab}")
        if end.steps != count or end.crc != P.crc16(raw) or end.cycles < count:
            problems.append(f"STREAM of {count}: final frame {end}, the token bytes' CRC "
                            f"{P.crc16(raw):#06x}")
        self.steps += count
        self.cycles += end.cycles
        self.unknown |= {Mem.STATE, Mem.ACC, "rng"}
        self.frames_ok += 1
        return problems

    def _check_steps(self, cmd, op, seq, body, responses):
        problems = []
        vocab = self.regs[CoreReg.VOCAB]
        if cmd == P.Cmd.RUN:
            tokens = list(struct.unpack(f"<{len(body) // 2}H", body))
        else:
            first, count = struct.unpack(P.GENERATE_FORMAT, body)
            tokens = [first] + [None] * (count - 1)
        bad = next((i for i, t in enumerate(tokens) if t is not None and t >= vocab), None)
        ran = len(tokens) if bad is None else bad
        status = P.LinkStatus.OK if bad is None else P.LinkStatus.BAD_TOKEN
        want_final = (op, seq, status, struct.pack(P.DONE_FORMAT, ran))
        token_frames = responses[:-1]
        if len(token_frames) != ran or not responses or responses[-1] != want_final:
            problems.append(f"{cmd.name}: expected {ran} TOKEN frames then {want_final}, got "
                            f"{len(token_frames)} then {responses[-1] if responses else None}")
        for i, (rop, rseq, rstatus, rbody) in enumerate(token_frames):
            if (rop, rseq, rstatus) != (P.Cmd.TOKEN, seq, 0) or \
                    len(rbody) != struct.calcsize(P.TOKEN_FORMAT):
                problems.append(f"{cmd.name}: bad TOKEN frame {i}: {token_frames[i]}")
                continue
            index, token, cycles, _ = struct.unpack(P.TOKEN_FORMAT, rbody)
            if index != i or token >= vocab or cycles == 0:
                problems.append(f"{cmd.name}: TOKEN frame {i} = {(index, token, cycles)} "
                                f"(vocabulary {vocab})")
            self.cycles += cycles
        self.steps += ran
        if ran:
            self.unknown |= {Mem.STATE, Mem.ACC, "rng"}
        if status == P.LinkStatus.OK:
            self.frames_ok += 1
        else:
            self.frames_rejected += 1
        return problems


def write_requests(writes, config, seq=0):
    """WRITE request payloads that make ``writes``: runs of consecutive addresses in one
    memory and lane go into one request each (at most :func:`spikestream.protocol.max_write_words`
    words; ``CORE`` registers one at a time, as the protocol requires)."""
    wb = P.word_bytes(config)
    limit = P.max_write_words(config)
    runs = []
    for w in writes:
        last = runs[-1] if runs else None
        if (last and last[0] == w.mem and last[1] == w.lane and w.mem != Mem.CORE
                and last[2] + len(last[3]) == w.addr and len(last[3]) < limit):
            last[3].append(w.data)
        else:
            runs.append((w.mem, w.lane, w.addr, [w.data]))
    return [P.request(P.Cmd.WRITE, seq + n, struct.pack(P.WRITE_HEADER, int(mem), lane, addr,
                                                         len(words)) + P.pack_words(words, wb))
            for n, (mem, lane, addr, words) in enumerate(runs)]


def random_image(seed, config, kinds=("ALIF", "LIF")):
    """A small random network image (``sim.netgen.random_network``) that fits
    ``config``: the first of seeds ``seed, seed + 1000, ...`` whose image fits. Returns
    ``(seed used, image)``; the same arguments always give the same image."""
    import numpy as np


    for s in range(seed, seed + 100_000, 1000):
        rng = np.random.default_rng(s)
        net = random_network(rng, [NeuronKind[k] for k in kinds],
                             vocab=min(6, config.max_vocab), sizes=(2, 8))
        image = Image(net=net, lanes=config.lanes)
        if config.fits(image):
            return s, image
    raise ValueError(f"no random network from seed {seed} fits {config}")


def golden_stream(golden, first, count):
    """What a GENERATE or STREAM of ``count`` tokens from ``first`` runs on ``golden`` (a
    :class:`models.golden.GoldenCore`, stepped on): the sampled tokens, and each step's
    cycles and spikes (three lists)."""
    tokens, cycles, spikes = [], [], []
    token = first
    for _ in range(count):
        ref = golden.step([token])
        token = int(ref.token[0])
        tokens.append(token)
        cycles.append(int(ref.cycles[0]))
        spikes.append(sum(int(s.sum()) for s in ref.spikes))
    return tokens, cycles, spikes
