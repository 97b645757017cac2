"""Host-side helpers for testing the SoC's link: a reference model of its answers.

:class:`LinkModel` says, for every frame a host sends, which responses spikestream/protocol.py
requires and which core writes it may cause, as far as that is knowable without running
the network (``RUN``/``GENERATE`` are checked for their structure; the whole-SoC cocotb test
checks their tokens and cycles against the golden model). It builds on the protocol's own
reference functions (:class:`spikestream.protocol.FrameDecoder`, :func:`spikestream.protocol.check_request`,
:func:`spikestream.memory_map.write_problem`), so it shares no code with the gateware.

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

__all__ = ["LinkModel", "refused_core_write", "parse_responses", "write_requests", "random_image"]


def parse_responses(wire):
    """The responses in the bytes a SoC sent: a list of ``(op, seq, status, body)``.

    Raises ``AssertionError`` if any frame is damaged: the SoC must never send one.
    """
    out = []
    for status, payload in P.FrameDecoder(max_length=1 << 20, min_length=3).feed(wire):
        assert status == P.LinkStatus.OK, f"the SoC sent a damaged frame ({status.name}): " \
                                          f"{payload.hex()}"
        out.append(P.parse_response(payload))
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

    Call :meth:`check` once per frame the SoC decoded, in order, with what it answered and
    the core writes it made; it returns a list of problems (empty if all is as the protocol
    says) and updates the model.
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
        if cmd not in (P.Cmd.RUN, P.Cmd.GENERATE):
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
        else:
            problems += self._check_steps(cmd, op, seq, body, responses)
        if cmd not in (P.Cmd.RUN, P.Cmd.GENERATE):
            final(True)
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
