"""Fuzz the link: random and mutated frames against the simulated link and core.

    python -m bench.fuzz_link [--config small|default] [--busy] [--frames 10000] [--fuzz-seed 1]
                              [--batch 100] [--json] [--write]

It drives the link below the UART (the byte stream the UART receiver would hand it, and
the receiver's error pulse; bytes out are taken as the transmitter would), with the real
:class:`hw.link.Link` and :class:`hw.core.Core` in Verilator (cocotb). ``--config small``
(the default) is a 2-lane core with a random image preloaded; ``--config default`` the
16-lane core the ULX3S is built with (:func:`sw.board.board_config`, its clock and baud
rate) with the shipped image preloaded under its tag. Below the UART each byte costs two
clock cycles rather than twenty.

Stimulus, per frame: a valid request (IDENTIFY, STATUS, TAG, READ, WRITE, RESET, RUN,
GENERATE, STREAM; a first token now and then outside the vocabulary); such a request with a
field mutated and its CRC recomputed (op, seq, memory, lane, address, count, a word, bytes
added or removed; GENERATE and STREAM kept to at most 5 tokens); bit flips on the wire; a frame cut
short; random bytes (ENDs among them); a UART error pulse inside a frame; now and then a
long frame (a whole lane of words, or a payload around the 2046-byte limit). Frames are
offered while the link is idle. With ``--busy``, most requests also get line traffic while
they execute (random bytes, whole frames, UART error pulses, pauses; and READs of up to
:data:`spikestream.protocol.MAX_READ` words among the requests, for long answers), offered until
the link is idle again, so that some of it lands after the final response.

Checks, per frame decoded (by :class:`spikestream.protocol.FrameDecoder` fed the same bytes and
error pulses, less those the link dropped): the answer is what
:class:`sim.link_host.LinkModel` says (status by :func:`spikestream.protocol.check_request`, exact
bodies for IDENTIFY/STATUS/READ of known words, exact core writes for an accepted WRITE,
TOKEN frames for RUN/GENERATE, for STREAM its ``STREAM_START`` frame, exactly
``count * token_bytes`` raw bytes of tokens in the vocabulary and a final frame whose steps
and CRC match them; the responses are read as a host reads them,
:class:`sim.link_host.ResponseReader`); no core write lies outside its memory; a rejected frame
causes no core write (except the one CORE value the core itself refuses, which is counted
apart); after every batch a good IDENTIFY is answered. While busy (docs/protocol.md, "Busy:
bytes dropped"): the link stays busy from shortly after a frame's END until its final
response's last byte has gone to the transmitter, and goes idle within
:data:`IDLE_WITHIN` cycles after it; every byte and error pulse in between is dropped (the
reference decoder does not see them: it goes on as after an END); STATUS counts exactly the
bytes dropped (checked in every STATUS answer, and by a STATUS after every batch). Which
side of the idle edge the few bytes around it fall on is the link's busy output at the
cycle the byte is taken; bytes taken while the link is idle go to the reference decoder.
A STATUS request gets traffic only once its answer has started, since the counters it
reports are sampled somewhere between its END and its answer.
"""

import argparse
import collections
import dataclasses
import json
import os
import platform
import random
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import cocotb
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from spikestream import protocol as P
from hw.core import Core
from hw.core.layouts import write_request_layout
from hw.link import Link
from spikestream.memory_map import LANE_MEMS, CoreConfig, CoreReg, Mem, Write, image_writes
from spikestream.image import load_image
from sim.link_host import RAW, LinkModel, ResponseReader, is_final, random_image, refused_core_write
from sim.runner import CocotbFailure, available_simulators, build_and_run, load_config
from spikestream.board import SHIPPED_IMAGE
from sw.board import board_clock_hz, board_config
from sw.client import image_tag
from spikestream.board import DEFAULT_BAUD

from ._report import update_section

CONFIG = CoreConfig(lanes=2, neurons_per_lane=16, syn_depth=136, ptr_depth=64, max_pops=4,
                    max_projs=8, max_vocab=8, spike_depth=16)
CLOCK_HZ, BAUD = 100_000_000, 3_000_000
TAG = 0x0F0F_C0DB
INIT_SEED = 5
TITLE = "Link fuzz"
CONFIGS = ("small", "default")

IDLE_WITHIN = 4
"""Cycles after the final response's last byte has gone to the transmitter within which the
link must be idle again (it is one or two; a UART byte takes at least forty)."""

SETTLE_LIMIT = 5_000_000
"""Cycles a request may take before the fuzzer gives up on the link (a hang)."""

JUNK_SHARE = 0.75
"""With ``--busy``: the share of requests that get line traffic while they execute."""

JUNK_SEED = 7919
"""Added to ``--fuzz-seed`` for the random sources of the traffic offered while busy (and of
which requests get it), apart from the frames' own."""

# Verilator options as for the core's cocotb tests (tests/sim/test_core_cocotb.py): only
# the harness's ports are public, the model's code at -O1, the runtime's objects cached.
_BUILD_ARGS = ["--no-public-flat-rw", "--public-depth", "1"]
_MAKE_FLAGS = "OPT_FAST=-O1 OPT_GLOBAL=-O0"
_REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Target:
    """What is fuzzed: the core's configuration, the link's clock and baud rate (IDENTIFY
    reports them), the image preloaded (a file, or ``None`` for :func:`random_image` of
    ``init_seed``) and the power-up tag."""
    name: str
    config: CoreConfig
    clock_hz: int
    baud: int
    image: "str | None"
    init_seed: int
    tag: int

    def load(self):
        """The preloaded image."""
        if self.image is None:
            return random_image(self.init_seed, self.config)[1]
        return load_image(self.image)


def target(name):
    """The :class:`Target` called ``name`` (one of :data:`CONFIGS`)."""
    if name == "small":
        return Target("small", CONFIG, CLOCK_HZ, BAUD, None, INIT_SEED, TAG)
    if name == "default":
        return Target("default", board_config(), board_clock_hz(), DEFAULT_BAUD,
                      str(SHIPPED_IMAGE), 0, image_tag(SHIPPED_IMAGE.read_bytes()))
    raise ValueError(f"unknown configuration {name!r} (one of {', '.join(CONFIGS)})")


class LinkHarness(wiring.Component):
    """The SoC without its UART: the link's byte streams and error input are the ports, and
    the link's write requests to the core are mirrored out for the monitor.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes as the UART receiver hands them over.
    rx_error : In(1)
        The receiver's error pulse.
    tx : Out(stream.Signature(8))
        Bytes to send.
    busy : Out(1)
        The link is working on a request.
    mon_valid, mon_ready : Out(1)
        The core's write port handshake.
    mon_payload : Out(write_request_layout(config).size)
        The write request (:func:`hw.core.layouts.write_request_layout`).
    """

    def __init__(self, config, init=None, *, clock_hz=CLOCK_HZ, baud=BAUD, tag=0):
        self._config, self._init, self._tag = config, init, tag
        self._clock_hz, self._baud = clock_hz, baud
        super().__init__({
            "rx": In(stream.Signature(8)),
            "rx_error": In(1),
            "tx": Out(stream.Signature(8)),
            "busy": Out(1),
            "mon_valid": Out(1),
            "mon_ready": Out(1),
            "mon_payload": Out(write_request_layout(config).size),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = Link(self._config, clock_hz=self._clock_hz, baud=self._baud,
                                        tag=self._tag)
        m.submodules.core = core = Core(self._config, init=self._init)
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        m.d.comb += [link.rx_error.eq(self.rx_error), self.busy.eq(link.busy),
                     link.core_status.eq(core.status)]
        wiring.connect(m, link.write, core.write)
        m.d.comb += [self.mon_valid.eq(link.write.valid), self.mon_ready.eq(core.write.ready),
                     self.mon_payload.eq(link.write.payload)]
        wiring.connect(m, link.read, core.read)
        wiring.connect(m, core.read_data, link.read_data)
        wiring.connect(m, link.cmd, core.cmd)
        wiring.connect(m, core.result, link.result)
        return m


# --- stimulus (pure Python) ------------------------------------------------------------------

class Stimulus:
    """Random requests and their mutations for a core built for ``config``; with
    ``long_reads``, a third of the READs ask for up to :data:`spikestream.protocol.MAX_READ` words."""

    KINDS = ("valid", "field", "flip", "cut", "noise", "uart_error", "long")
    WEIGHTS = (20, 40, 14, 10, 8, 7, 1)

    def __init__(self, config, vocab, seed, *, long_reads=False):
        self.config = config
        self.vocab = vocab
        self.rng = random.Random(seed)
        self.wb = P.word_bytes(config)
        self.seq = 0
        self.long_reads = long_reads

    def _mem_lane_addr(self, count_max):
        r, cfg = self.rng, self.config
        mem = r.choice(list(Mem))
        lane = r.randrange(cfg.lanes) if mem in LANE_MEMS else 0
        depth = cfg.depth(mem)
        count = r.randrange(1, min(depth, count_max) + 1)
        return mem, lane, r.randrange(0, depth - count + 1), count

    def _word(self, mem):
        r, cfg = self.rng, self.config
        if mem == Mem.CORE:
            return r.choice([r.randrange(0, 10), r.randrange(1 << 16), r.getrandbits(32)])
        return r.getrandbits(cfg.layout(mem).bits if r.random() < 0.8 else cfg.data_bits)

    def valid(self):
        """A request payload that passes every check (WRITE values may still be refused)."""
        r = self.rng
        self.seq = (self.seq + 1) & 0xFF
        op = r.choice([P.Cmd.IDENTIFY, P.Cmd.STATUS, P.Cmd.TAG, P.Cmd.READ, P.Cmd.READ,
                       P.Cmd.WRITE, P.Cmd.WRITE, P.Cmd.WRITE, P.Cmd.RESET, P.Cmd.RUN,
                       P.Cmd.GENERATE, P.Cmd.STREAM])
        if op == P.Cmd.TAG:
            body = struct.pack(P.TAG_FORMAT, r.getrandbits(32))
        elif op == P.Cmd.READ:
            long = self.long_reads and r.random() < 1 / 3
            mem, lane, addr, count = self._mem_lane_addr(P.MAX_READ if long else 12)
            body = struct.pack(P.READ_HEADER, mem, lane, addr, count)
        elif op == P.Cmd.WRITE:
            mem, lane, addr, count = self._mem_lane_addr(1 if r.random() < 0.5 else 20)
            if mem == Mem.ACC:
                mem, lane = Mem.STATE, lane
            if mem == Mem.CORE:
                count, addr = 1, r.randrange(len(CoreReg))
            body = struct.pack(P.WRITE_HEADER, mem, lane, addr, count) + \
                P.pack_words([self._word(mem) for _ in range(count)], self.wb)
        elif op == P.Cmd.RUN:
            n = r.randrange(1, 5)
            body = struct.pack(f"<{n}H", *(r.randrange(self.vocab + 2) for _ in range(n)))
        elif op == P.Cmd.GENERATE:
            body = struct.pack(P.GENERATE_FORMAT, r.randrange(self.vocab + 1), r.randrange(1, 5))
        elif op == P.Cmd.STREAM:
            body = P.STREAM_BODY.pack(first=r.randrange(self.vocab + 1), count=r.randrange(1, 6))
        else:
            body = b""
        return P.request(op, self.seq, body)
    def field(self, payload):
        """``payload`` with one field changed; the CRC stays right."""
        r = self.rng
        p = bytearray(payload)
        what = r.randrange(9)
        if what == 0:
            p[0] = r.choice([0, 0x0A, P.Cmd.TOKEN, P.Cmd.STREAM_START, 0x7F, P.NACK_OP,
                             r.randrange(256), r.randrange(1, 10)])
        elif what == 1 and len(p) > 2:                    # memory id
            p[2] = r.choice([r.randrange(16), 255, Mem.ACC, Mem.CORE])
        elif what == 2 and len(p) > 3:                    # lane
            p[3] = r.choice([self.config.lanes, self.config.lanes - 1, 1, 255, 0])
        elif what == 3 and len(p) >= 8:                   # address
            addr = r.choice([self.config.depth(Mem(p[2] & 7)) - 1, 1 << 24, (1 << 32) - 1,
                             r.getrandbits(32), r.randrange(200)])
            p[4:8] = addr.to_bytes(4, "little")
        elif what == 4 and len(p) >= 10:                  # count
            p[8:10] = r.choice([0, 1, 2, P.MAX_READ, P.MAX_READ + 1, 0xFFFF,
                                r.randrange(40)]).to_bytes(2, "little")
        elif what == 5 and p[0] == P.Cmd.GENERATE and len(p) == 6:
            p[4:6] = r.choice([0, 1, 2, 5]).to_bytes(2, "little")
        elif what == 5 and p[0] == P.Cmd.STREAM and len(p) == 8:
            p[4:8] = r.choice([0, 1, 2, 5, 1 << 16, (1 << 32) - 1]).to_bytes(4, "little")
        elif what == 6 and len(p) > 2:                    # a byte of the body
            k = r.randrange(2, len(p))
            p[k] ^= 1 << r.randrange(8)
        elif what == 7:                                   # bytes added
            p += bytes(r.randrange(256) for _ in range(r.choice([1, 2, self.wb, 7])))
        else:                                             # bytes removed
            del p[max(0, len(p) - r.randrange(1, 4)):]
        if len(p) == 6 and p[0] == P.Cmd.GENERATE and int.from_bytes(p[4:6], "little") > 5:
            p[4:6] = (5).to_bytes(2, "little")            # keep runs short
        if len(p) == 8 and p[0] == P.Cmd.STREAM and int.from_bytes(p[4:8], "little") > 5:
            p[4:8] = (5).to_bytes(4, "little")
        return bytes(p)

    def next(self):
        """One unit of line traffic: ``(kind, items)``; items are byte values and ``None``
        for a UART error pulse."""
        r = self.rng
        kind = r.choices(self.KINDS, self.WEIGHTS)[0]
        payload = self.valid()
        if kind == "valid":
            return kind, list(P.frame(payload))
        if kind == "field":
            return kind, list(P.frame(self.field(payload)))
        wire = list(P.frame(payload))
        if kind == "flip":
            for _ in range(r.randrange(1, 4)):
                k = r.randrange(1, len(wire) - 1)
                wire[k] ^= 1 << r.randrange(8)
            return kind, wire
        if kind == "cut":
            return kind, wire[:r.randrange(1, len(wire) - 1)] + [P.END]
        if kind == "long":
            if r.random() < 0.5:                          # a lane of SYN words, or all
                depth = min(self.config.depth(Mem.SYN), P.max_write_words(self.config))
                payload = P.request(P.Cmd.WRITE, self.seq, struct.pack(
                    P.WRITE_HEADER, Mem.SYN, r.randrange(self.config.lanes), 0, depth) +
                    P.pack_words([self._word(Mem.SYN) for _ in range(depth)], self.wb))
            else:                                         # around the length limit
                n = r.randrange(P.MAX_PAYLOAD - 4, P.MAX_PAYLOAD + 40)
                payload = (payload + bytes(r.randrange(256) for _ in range(n)))[:n]
            return kind, list(P.frame(payload))
        if kind == "noise":
            return kind, [r.choice([P.END, P.ESC, P.ESC_END, r.randrange(256)])
                          for _ in range(r.randrange(1, 40))] + [P.END]
        wire.insert(r.randrange(1, len(wire)), None)
        return kind, wire


Pause = collections.namedtuple("Pause", "cycles")
Pause.__doc__ = """Line traffic: ``cycles`` clock cycles with nothing offered."""


class Junk:
    """Line traffic for a busy link, a unit at a time: a list of byte values, ``None`` for a
    UART error pulse and :class:`Pause`. Frames come from a :class:`Stimulus` of its own."""

    KINDS = ("pause", "noise", "frame", "pulse", "end")
    WEIGHTS = (40, 20, 25, 10, 5)

    def __init__(self, config, vocab, seed):
        self.rng = random.Random(seed)
        self.stim = Stimulus(config, vocab, seed + 1)

    def unit(self):
        """One unit of traffic: ``(kind, items)``."""
        r = self.rng
        kind = r.choices(self.KINDS, self.WEIGHTS)[0]
        if kind == "pause":
            return kind, [Pause(r.choice([r.randrange(1, 8), r.randrange(8, 100),
                                          r.randrange(100, 1000)]))]
        if kind == "noise":                               # may end inside an escape
            return kind, [r.choice([P.END, P.ESC, P.ESC_END, P.ESC_ESC, r.randrange(256)])
                          for _ in range(r.randrange(1, 40))]
        if kind == "frame":
            return kind, self.stim.next()[1]
        if kind == "pulse":
            return kind, [None]
        return kind, [P.END]


# --- the cocotb side -------------------------------------------------------------------------

class Driver:
    """Every clock edge of the run passes through :meth:`tick`: inputs are driven just after
    an edge and outputs sampled once settled, so each sample decides exactly one upcoming
    edge's handshakes (tx bytes and core writes are recorded there, none missed or doubled).

    :attr:`busy` is the link's busy output at the last tick (so, for a byte taken at that
    tick, whether it was dropped); :attr:`final_tick` the tick at which the last byte of a
    final response (:func:`sim.link_host.is_final`: any but a ``TOKEN`` or ``STREAM_START``
    frame with status ``OK`` and a STREAM's token bytes) went to the transmitter
    and :attr:`idle_tick` the last tick at which the link turned idle, both ``None`` until
    they happen after :meth:`start_request`.
    """

    def __init__(self, dut, config):
        self.dut = dut
        self.tx = bytearray()
        self.writes = []
        self.cycles = 0
        self.busy = False
        self.final_tick = self.idle_tick = None
        self._inputs = {}
        self._fields = {name: (f.offset, f.width) for name, f in write_request_layout(config)}
        self._tx_reader = ResponseReader()

    def _set(self, name, value):
        if self._inputs.get(name) != value:
            getattr(self.dut, name).value = value
            self._inputs[name] = value

    def _field(self, v, name):
        offset, width = self._fields[name]
        return (v >> offset) & ((1 << width) - 1)

    def start_request(self):
        """A frame has just been closed: forget the last request's final response."""
        self.final_tick = self.idle_tick = None

    async def tick(self, valid=0, payload=None, error=0):
        """One clock: drive ``rx``/``rx_error`` for the next edge; return whether ``rx``'s
        byte is taken at that edge."""
        dut = self.dut
        await RisingEdge(dut.clk)
        self._set("rx__valid", valid)
        if payload is not None:
            self._set("rx__payload", payload)
        self._set("rx_error", error)
        await ReadOnly()
        self.cycles += 1
        busy = bool(int(dut.busy.value))
        if self.busy and not busy:
            self.idle_tick = self.cycles
        self.busy = busy
        if int(dut.tx__valid.value):                     # tx.ready is always 1
            byte = int(dut.tx__payload.value)
            self.tx.append(byte)
            for status, r in self._tx_reader.feed(bytes([byte])):
                if status != P.LinkStatus.OK or is_final(r):
                    self.final_tick = self.cycles
        if int(dut.mon_valid.value) and int(dut.mon_ready.value):
            v = int(dut.mon_payload.value)
            mem = self._field(v, "mem")
            self.writes.append(Write(Mem(mem) if mem in set(Mem) else mem,
                                     self._field(v, "lane"), self._field(v, "addr"),
                                     self._field(v, "data")))
        return bool(valid and int(dut.rx__ready.value))

    async def send(self, item):
        """One byte, held until taken; returns whether it was dropped (the link was busy)."""
        while not await self.tick(1, item):
            pass
        return self.busy

    async def pulse(self):
        """A one-cycle UART error pulse; returns whether it was dropped."""
        await self.tick(error=1)
        return self.busy

    async def idle(self, cycles):
        """``cycles`` clocks with nothing offered."""
        for _ in range(cycles):
            await self.tick()

    async def settle(self, limit):
        """After an END: the link turns busy within two cycles; wait until it is idle."""
        for _ in range(3):
            await self.tick()
        n = 0
        while self.busy:
            await self.tick()
            n += 1
            if n > limit:
                raise TimeoutError(f"the link stayed busy for {limit} cycles")


def in_bounds(w, config):
    """A core write inside its memory (CORE values are the core's to judge)."""
    if w.mem not in set(Mem) or w.mem == Mem.ACC:
        return False
    lane_ok = w.lane < config.lanes if w.mem in LANE_MEMS else w.lane == 0
    return lane_ok and w.addr < config.depth(w.mem) and w.data < 1 << config.data_bits


TAIL = "busy tail"
"""The kind of traffic offered while busy that the link took after turning idle."""


class Fuzzer:
    """The scoreboard: feeds traffic through a :class:`Driver`, decodes what the link takes
    with a reference :class:`spikestream.protocol.FrameDecoder` and checks every answer against a
    :class:`sim.link_host.LinkModel`; ``junk`` (a :class:`Junk`, or ``None``) is offered
    while requests execute."""

    def __init__(self, drv, config, model, junk, seed):
        self.drv, self.config, self.model, self.junk = drv, config, model, junk
        self.rng = random.Random(seed)
        self.decoder = P.FrameDecoder()
        self.stats = {"frames_sent": 0, "frames_decoded": 0, "by_kind": {}, "by_status": {},
                      "core_writes": 0, "out_of_bounds_writes": 0, "writes_by_rejected": 0,
                      "refused_core_values": 0, "mismatches": 0, "alive_checks": 0,
                      "token_frames": 0, "streams": 0, "stream_bytes": 0, "idle_lag_max": 0,
                      "problems": []}
        if junk is not None:
            self.stats["busy"] = {"requests": 0, "units": {}, "bytes_dropped": 0,
                                  "pulses_dropped": 0, "ran_on": 0, "tail_bytes": 0,
                                  "tail_pulses": 0,
                                  "tail_frames": 0, "status_checks": 0,
                                  "bytes_dropped_reported": 0}

    def note(self, problem):
        self.stats["mismatches"] += 1
        if len(self.stats["problems"]) < 20:
            self.stats["problems"].append(problem)

    async def feed(self, items, kind, *, junk=True):
        """Offer ``items`` to the idle link; after every END, serve and check what the link
        decoded (:meth:`serve`, :meth:`check`). Returns the responses."""
        drv, answers = self.drv, []
        queue = collections.deque((item, kind, None) for item in items)
        while queue:
            item, kind, dropped = queue.popleft()
            if isinstance(item, Pause):
                await drv.idle(item.cycles)
                continue
            if dropped is None:
                dropped = await (drv.pulse() if item is None else drv.send(item))
            if dropped:
                what = "a UART error" if item is None else f"byte {item:#04x}"
                self.note(f"{kind}: the link dropped {what} with no request open")
                self.model.dropped += item is not None
                continue
            if kind == TAIL:
                self.stats["busy"]["tail_pulses" if item is None else "tail_bytes"] += 1
            if item is None:
                self.decoder.mark_bad()
                continue
            frames = self.decoder.feed(bytes([item]))
            if item != P.END:
                continue
            t0, w0 = len(drv.tx), len(drv.writes)
            drv.start_request()
            # Frames closed by traffic that came late get none: no chains of them.
            leftover, dropped = await self.serve(frames, t0, junk and kind != TAIL)
            if frames and kind == TAIL:
                self.stats["busy"]["tail_frames"] += 1
            answers += self.check(frames, t0, w0, kind)
            self.model.dropped += dropped            # after the check: a STATUS's own drops
            queue.extendleft(reversed(leftover))     # count in the next one
        return answers

    async def serve(self, frames, t0, junk):
        """After an END: wait until the link is idle again, offering :attr:`junk` meanwhile
        (if ``junk``, and for a share :data:`JUNK_SHARE` of the frames). Returns the traffic
        left when the link turned idle, as ``(item, kind, dropped)`` for :meth:`feed`, and
        the number of bytes the link dropped."""
        drv = self.drv
        if not (frames and junk and self.junk is not None and self.rng.random() < JUNK_SHARE):
            await drv.settle(SETTLE_LIMIT)
            if frames:
                self._check_idle()
            return [], 0
        busy = self.stats["busy"]
        start = drv.cycles
        for _ in range(3):
            await drv.tick()
            if drv.busy:
                break
        (status, payload), = frames
        if status == P.LinkStatus.OK and payload[0] == P.Cmd.STATUS and \
                P.check_request(payload, self.config) == P.LinkStatus.OK:
            while drv.busy and len(drv.tx) == t0:     # the counters are sampled by now
                await drv.tick()
                if drv.cycles - start > SETTLE_LIMIT:
                    raise TimeoutError(f"the link stayed busy for {SETTLE_LIMIT} cycles")
        busy["requests"] += 1
        dropped = 0
        while True:
            kind, unit = self.junk.unit()
            busy["units"][kind] = busy["units"].get(kind, 0) + 1
            for i, item in enumerate(unit):
                if drv.cycles - start > SETTLE_LIMIT:
                    raise TimeoutError(f"the link stayed busy for {SETTLE_LIMIT} cycles")
                if not drv.busy:
                    self._check_idle()
                    return [(x, TAIL, None) for x in unit[i:]], dropped
                if isinstance(item, Pause):
                    for _ in range(item.cycles):
                        await drv.tick()
                        if not drv.busy:
                            break
                    continue
                if await (drv.pulse() if item is None else drv.send(item)):
                    busy["pulses_dropped" if item is None else "bytes_dropped"] += 1
                    dropped += item is not None
                    continue
                busy["ran_on"] += 1
                self._check_idle()
                return [(item, TAIL, False)] + [(x, TAIL, None) for x in unit[i + 1:]], dropped

    def _check_idle(self):
        """The link has turned idle after a frame: its final response must have gone to the
        transmitter before, and at most :data:`IDLE_WITHIN` cycles before."""
        drv = self.drv
        if drv.idle_tick is None:
            self.note("the link never turned busy after a frame")
        elif drv.final_tick is None:
            self.note("the link turned idle before it sent a final response")
        else:
            lag = drv.idle_tick - drv.final_tick
            self.stats["idle_lag_max"] = max(self.stats["idle_lag_max"], lag)
            if not 0 < lag <= IDLE_WITHIN:
                self.note(f"the link turned idle {lag} cycles after its final response's "
                          f"last byte")

    def check(self, frames, t0, w0, kind):
        """Check what the link answered and wrote since ``t0``/``w0`` for the ``frames``
        the reference decoder found at an END (none or one); returns the responses."""
        drv, cfg, stats = self.drv, self.config, self.stats
        got = []
        reader = ResponseReader()
        for status, r in reader.feed(bytes(drv.tx[t0:])):
            if status != P.LinkStatus.OK:
                self.note(f"{kind}: damaged response {r.hex()}")
            else:
                got.append(r)
        if reader.pending:                            # a STREAM cut short: the model sees it
            got.append((RAW, None, P.LinkStatus.OK, bytes(reader.pending)))
        new = drv.writes[w0:]
        stats["core_writes"] += len(new)
        for w in new:
            if not in_bounds(w, cfg):
                stats["out_of_bounds_writes"] += 1
                self.note(f"{kind}: out-of-bounds write {w}")
        if not frames:
            if got or new:
                self.note(f"{kind}: an ignored END was answered {got} / wrote {new}")
            return got
        (fstatus, payload), = frames
        stats["frames_decoded"] += 1
        final = got[-1][2] if got else None
        # Rejected by the reference (whatever the link answered): it may not write.
        accepted = fstatus == P.LinkStatus.OK and \
            P.check_request(payload, cfg) == P.LinkStatus.OK
        name = P.LinkStatus(final).name if final in set(P.LinkStatus) else str(final)
        if fstatus != P.LinkStatus.OK:
            name = "NACK " + name
        stats["by_status"][name] = stats["by_status"].get(name, 0) + 1
        stats["token_frames"] += sum(r[0] == P.Cmd.TOKEN and r[2] == 0 for r in got)
        stats["streams"] += sum(r[0] == P.Cmd.STREAM_START and r[2] == 0 for r in got)
        stats["stream_bytes"] += sum(len(r[3]) for r in got if r[0] == RAW)
        if not accepted and new:
            allowed = refused_core_write(payload, cfg) if fstatus == P.LinkStatus.OK else None
            if allowed is not None and new == [allowed]:
                stats["refused_core_values"] += 1
            else:
                stats["writes_by_rejected"] += len(new)
        for problem in self.model.check(fstatus, payload, got, new):
            self.note(f"{kind} {payload[:12].hex()}: {problem}")
        return got


@cocotb.test()
async def fuzz(dut):
    """See the module docstring."""
    settings = load_config()
    cfg = CoreConfig(**settings["core"])
    tgt = Target(**{**settings["target"], "config": cfg})
    image = tgt.load()
    model = LinkModel(cfg, clock_hz=tgt.clock_hz, baud=tgt.baud, init=image_writes(image, cfg),
                      tag=tgt.tag)
    model.dropped += settings.get("drop_bias", 0)      # a self-test: STATUS must catch it
    vocab = image.net.vocab_size
    seed = settings["seed"]
    stim = Stimulus(cfg, vocab, seed, long_reads=settings["busy"])
    junk = Junk(cfg, vocab, seed + JUNK_SEED) if settings["busy"] else None

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.rx__valid.value = 0
    dut.rx_error.value = 0
    dut.tx__ready.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    drv = Driver(dut, cfg)
    fz = Fuzzer(drv, cfg, model, junk, seed + 2 * JUNK_SEED)
    stats = fz.stats

    t_start = time.time()
    progress = Path(settings["progress"])
    identify = list(P.frame(P.request(P.Cmd.IDENTIFY, 0xA1)))
    status = list(P.frame(P.request(P.Cmd.STATUS, 0xA2)))
    for n in range(settings["frames"]):
        kind, items = stim.next()
        stats["by_kind"][kind] = stats["by_kind"].get(kind, 0) + 1
        await fz.feed(items, kind)
        stats["frames_sent"] += 1
        if (n + 1) % settings["batch"] == 0 or n + 1 == settings["frames"]:
            # Alive: a lone END closes whatever is open, then a good IDENTIFY.
            await fz.feed([P.END], "flush", junk=False)
            got = await fz.feed(identify, "alive", junk=False)
            if got == [(P.Cmd.IDENTIFY, 0xA1, 0, P.identity_of(cfg, tgt.clock_hz, tgt.baud,
                                                                model.tag))]:
                stats["alive_checks"] += 1
            else:
                fz.note(f"after frame {n + 1}: IDENTIFY got {got}")
            if junk is not None:
                # Every byte dropped so far counted (the model checks the whole answer).
                got = await fz.feed(status, "count", junk=False)
                if len(got) == 1 and got[0][:3] == (P.Cmd.STATUS, 0xA2, 0) and \
                        len(got[0][3]) == struct.calcsize(P.STATUS_FORMAT):
                    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, got[0][3]))
                    stats["busy"]["bytes_dropped_reported"] = counters.bytes_dropped
                    stats["busy"]["status_checks"] += counters.bytes_dropped == model.dropped
            with progress.open("a") as f:
                f.write(json.dumps({"sent": n + 1, "mismatches": stats["mismatches"],
                                    "wall_s": round(time.time() - t_start, 1)}) + "\n")
    stats["cycles"] = drv.cycles
    stats["sim_wall_s"] = round(time.time() - t_start, 1)
    Path(settings["out"]).write_text(json.dumps(stats, indent=1))
    assert stats["mismatches"] == 0, stats["problems"][:5]


# --- the command line ------------------------------------------------------------------------

def run(tgt, frames, seed, batch, *, busy=False, drop_bias=0, run_name=None):
    """Fuzz ``tgt`` (a :class:`Target`) with ``frames`` units of traffic; returns the
    statistics (a dict, see :func:`report`). Raises ``RuntimeError`` if the simulation
    ended without a result."""
    image = tgt.load()
    harness = LinkHarness(tgt.config, init=image_writes(image, tgt.config),
                          clock_hz=tgt.clock_hz, baud=tgt.baud, tag=tgt.tag)
    sim = (available_simulators() or [None])[0]
    build_root = Path(os.environ.get("SPIKESTREAM_SIM_BUILD") or _REPO / "sim_build")
    env = {"MAKEFLAGS": f"{os.environ.get('MAKEFLAGS', '')} {_MAKE_FLAGS}".strip(),
           "OBJCACHE": f"{sys.executable} {_REPO / 'sim' / 'core_objcache.py'}",
           "CORE_OBJCACHE_DIR": str(build_root.resolve() / ".objcache")}
    with tempfile.TemporaryDirectory() as tmp:
        out, progress = Path(tmp) / "result.json", Path(tmp) / "progress.jsonl"
        progress.touch()
        fields = dataclasses.asdict(tgt)
        settings = {"core": fields.pop("config"), "target": fields, "seed": seed,
                    "frames": frames, "batch": batch, "busy": busy, "drop_bias": drop_bias,
                    "out": str(out), "progress": str(progress)}
        error = []

        def work():
            try:
                build_and_run(harness, "link_harness", "bench.fuzz_link", sim=sim,
                              config=settings, run_name=run_name or f"fuzz-{seed}",
                              extra_build_args=_BUILD_ARGS if sim == "verilator" else ())
            except (CocotbFailure, RuntimeError) as e:
                error.append(e)

        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        t0 = time.time()
        try:
            thread = threading.Thread(target=work)
            thread.start()
            seen = 0
            while thread.is_alive():
                thread.join(5)
                lines = progress.read_text().splitlines()
                for line in lines[seen:]:
                    p = json.loads(line)
                    print(f"  {p['sent']:6d} frames sent, {p['mismatches']} mismatches "
                          f"({p['wall_s']:.0f} s)", file=sys.stderr)
                seen = len(lines)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if not out.exists():
            raise RuntimeError(f"fuzz run failed: {error[0] if error else 'no result'}")
        stats = json.loads(out.read_text())
        stats["wall_s"] = round(time.time() - t0, 1)
        stats["seed"] = seed
        stats["config"] = {"name": tgt.name, **dataclasses.asdict(tgt.config)}
        stats["image"] = Path(tgt.image).name if tgt.image else f"random (seed {tgt.init_seed})"
        stats["drive"] = f"byte stream below the UART (UARTRx output), {sim}"
        stats["machine"] = f"{os.cpu_count()} CPU cores ({platform.machine()}, shared)"
        return stats


def failed(stats):
    """Whether the run found a problem."""
    busy = stats.get("busy")
    return bool(stats["mismatches"] or stats["out_of_bounds_writes"] or
                stats["writes_by_rejected"] or stats["alive_checks"] == 0 or
                (busy and busy["bytes_dropped_reported"] != busy["bytes_dropped"]))


def title(name, busy):
    """The BENCHMARKS.md section of a run."""
    if name == "small" and not busy:
        return TITLE
    return f"{TITLE}: " + ", ".join(
        (["16-lane default core"] if name == "default" else ["2-lane core"]) +
        (["bytes while busy"] if busy else []))


def report(stats):
    """The Markdown summary of a run's ``stats``."""
    cfg, busy = stats["config"], stats.get("busy")
    core = (f"{cfg['lanes']} lanes × {cfg['neurons_per_lane']} neurons, {cfg['syn_depth']} "
            f"synapse words per lane ({cfg['name']} configuration), {stats['image']} image "
            f"preloaded")
    lines = [
        f"{stats['frames_sent']} frames sent (seed {stats['seed']}) to the link and core "
        f"({core}), driving the link {stats['drive']}; {stats['frames_decoded']} frames "
        f"decoded by the link, {stats['token_frames']} TOKEN frames streamed, "
        f"{stats.get('streams', 0)} STREAMs ({stats.get('stream_bytes', 0)} token bytes), "
        f"{stats['cycles']} clock cycles, {stats['wall_s']:.0f} s wall, "
        f"{stats['sim_wall_s']:.0f} s of it simulating "
        f"({stats['frames_sent'] / max(stats['sim_wall_s'], 0.1):.0f} frames/s; the rest is "
        f"elaboration and the Verilator build, if not cached), on {stats['machine']}.",
        "",
        "| check | result |", "|---|---|",
        f"| answers that differ from the reference (spikestream.protocol + sim.link_host) | "
        f"{stats['mismatches']} |",
        f"| core writes outside their memory | {stats['out_of_bounds_writes']} |",
        f"| core writes caused by rejected frames | {stats['writes_by_rejected']} |",
        f"| CORE values refused by the core (one write each, nothing stored) | "
        f"{stats['refused_core_values']} |",
        f"| core writes by accepted WRITEs | "
        f"{stats['core_writes'] - stats['refused_core_values']} |",
        f"| batches after which a good IDENTIFY was answered | {stats['alive_checks']} |",
        f"| most cycles from a final response's last byte to the link idle | "
        f"{stats['idle_lag_max']} |",
    ]
    if busy:
        lines += [
            f"| requests with traffic while busy | {busy['requests']} |",
            f"| bytes dropped while busy / bytes_dropped in the last STATUS | "
            f"{busy['bytes_dropped']} / {busy['bytes_dropped_reported']} |",
            f"| UART error pulses dropped while busy | {busy['pulses_dropped']} |",
            f"| requests whose traffic ran on across the idle edge | {busy['ran_on']} |",
            f"| bytes (error pulses) of it taken after the link turned idle, frames they "
            f"closed | {busy['tail_bytes']} ({busy['tail_pulses']}), {busy['tail_frames']} |",
            f"| batch STATUS answers whose bytes_dropped equals the bytes dropped | "
            f"{busy['status_checks']} |",
        ]
    lines += [
        "",
        "Stimulus: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["by_kind"].items())) + ".",
    ]
    if busy:
        lines += ["", "Traffic while busy (units): " + ", ".join(
            f"{k} {v}" for k, v in sorted(busy["units"].items())) + "."]
    lines += [
        "",
        "Answers: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["by_status"].items(),
                                                          key=lambda kv: -kv[1])) + ".",
    ]
    return "\n".join(lines)


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz_link",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=CONFIGS, default="small",
                    help="small: 2 lanes, a random image; default: the board's 16-lane "
                         "build with the shipped image")
    ap.add_argument("--busy", action="store_true",
                    help="offer traffic while requests execute, too")
    ap.add_argument("--frames", type=_count, default=10_000)
    ap.add_argument("--fuzz-seed", type=int, default=1, help="seed of the random frames")
    ap.add_argument("--batch", type=_count, default=100)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args(argv)
    try:
        stats = run(target(args.config), args.frames, args.fuzz_seed, args.batch, busy=args.busy,
                    run_name=f"fuzz-{args.config}{'-busy' if args.busy else ''}-{args.fuzz_seed}")
    except (RuntimeError, OSError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    md = report(stats)
    print(json.dumps(stats, indent=1) if args.json else md)
    if args.write:
        cmd = "python -m bench.fuzz_link " + " ".join(argv if argv is not None else sys.argv[1:])
        update_section(title(args.config, args.busy), cmd, md)
    return 1 if failed(stats) else 0


if __name__ == "__main__":
    sys.exit(main())
