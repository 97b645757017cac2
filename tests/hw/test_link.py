"""hw.link in amaranth.sim: each block against spikestream/protocol.py's Python reference, then the
whole link driving a small real core, its answers checked by :class:`sim.link_host.LinkModel`
(which is built on :func:`spikestream.protocol.check_request` and :class:`spikestream.protocol.FrameDecoder`).
"""

import random
import struct

import numpy as np
import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.sim import Simulator

from spikestream import protocol as P
from hw.core import Core
from hw.streams import StreamRegister
from hw.link import (BUFFER_BYTES, CRC16, QUEUE_BYTES, FrameEncoder, FrameReceiver, Link,
                     RequestChecker, ResponseEmitter, SlipDecoder, SlipEncoder)
from spikestream.memory_map import CoreConfig, CoreReg, Mem, Write, image_writes, settings_writes
from spikestream.formats import NeuronKind
from models.golden import GoldenCore
from spikestream.image import Image
from spikestream.network import lane_layout
from sim.link_host import RAW, LinkModel, golden_stream, parse_responses, write_requests

from .test_core_golden import random_network

S = P.LinkStatus
CONFIG = CoreConfig(lanes=2, neurons_per_lane=16, syn_depth=136, ptr_depth=32, max_pops=4,
                    max_projs=8, max_vocab=8, spike_depth=16)
CLOCK_HZ, BAUD = 100_000_000, 3_000_000
SPECIAL = (P.END, P.ESC, P.ESC_END, P.ESC_ESC)


def simulate(dut, testbench, *processes):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    sim.run()


async def idle(ctx, cycles):
    for _ in range(cycles):
        await ctx.tick()


def some_byte(rng):
    # SLIP's special bytes often, so that every escape path is exercised.
    return rng.choice(SPECIAL) if rng.random() < 0.25 else rng.randrange(256)


def some_bytes(rng, n):
    return bytes(some_byte(rng) for _ in range(n))


def line_traffic(rng, n):
    """Random line traffic: a list of byte values and ``None`` (a UART error pulse)."""
    items = []
    for _ in range(n):
        kind = rng.random()
        payload = some_bytes(rng, rng.randrange(0, 24))
        if kind < 0.35:
            items += P.frame(payload)
        elif kind < 0.5:
            items += [some_byte(rng) for _ in range(rng.randrange(1, 10))]
        elif kind < 0.6:
            items.append(None)
        elif kind < 0.75:                         # a bad escape inside a frame
            wire = list(P.frame(payload))
            at = rng.randrange(1, len(wire) - 1)
            wire[at:at] = [P.ESC, rng.choice([P.ESC, 0x00, 0x41, P.ESC_END - 1])]
            items += wire
        elif kind < 0.85:                         # a UART error inside a frame
            wire = list(P.frame(payload))
            wire.insert(rng.randrange(1, len(wire)), None)
            items += wire
        else:                                     # a frame cut short, then a fresh one
            wire = list(P.frame(payload))
            items += wire[:rng.randrange(1, len(wire))]
    return items + [P.END]


def reference_frames(items, **kwargs):
    decoder = P.FrameDecoder(**kwargs)
    out = []
    for item in items:
        if item is None:
            decoder.mark_bad()
        else:
            out += decoder.feed(bytes([item]))
    return out


# --- CRC -------------------------------------------------------------------------------------

def test_crc16_matches_reference():
    dut = CRC16()
    rng = random.Random(1)
    chunks = [b"123456789", b"", bytes(range(256))] + \
             [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))) for _ in range(8)]

    async def testbench(ctx):
        for chunk in chunks:
            ctx.set(dut.clear, 1)
            ctx.set(dut.en, rng.random() < 0.5)        # clear wins over en
            ctx.set(dut.data, rng.randrange(256))
            await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.en, 0)
            assert ctx.get(dut.crc) == P.crc16(b"") == 0xFFFF
            for n, byte in enumerate(chunk):
                ctx.set(dut.en, 1)
                ctx.set(dut.data, byte)
                await ctx.tick()
                ctx.set(dut.en, 0)
                ctx.set(dut.data, rng.randrange(256))    # ignored without en
                if rng.random() < 0.5:
                    await ctx.tick()
                assert ctx.get(dut.crc) == P.crc16(chunk[:n + 1]), (chunk.hex(), n)
        assert P.crc16(b"123456789") == 0x29B1

    simulate(dut, testbench)


# --- SLIP decoder ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2])
def test_slip_decoder_matches_reference(seed):
    """Frames out of random traffic (bad escapes, UART errors, cut frames, stray ENDs) are
    those of spikestream.protocol.FrameDecoder: the same bytes, and "bad" exactly where it says
    BAD_FRAME; nothing is emitted for an END that closes an empty, clean frame."""
    rng = random.Random(seed)
    dut = SlipDecoder()
    items = line_traffic(rng, 120)
    events = []

    async def testbench(ctx):
        for item in items:
            if item is None:
                ctx.set(dut.bad, 1)
                await ctx.tick()
                ctx.set(dut.bad, 0)
            else:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, item)
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
            await idle(ctx, rng.randrange(0, 3))
        await ctx.tick().repeat(8)

    async def sink(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                   dut.o.payload):
            if valid and ready:
                events.append((payload.data, payload.end, payload.bad))
            ctx.set(dut.o.ready, rng.random() < 0.6)

    simulate(dut, testbench, sink)

    got, cur = [], bytearray()
    for byte, end, bad in events:
        if end:
            got.append((bool(bad), None if bad else bytes(cur)))
            cur = bytearray()
        else:
            cur.append(byte)
    assert not cur
    # min_length=-2 turns off TOO_SHORT, so every clean frame comes back with its bytes.
    want = []
    for status, payload in reference_frames(items, max_length=1 << 20, min_length=-2):
        if status == S.BAD_FRAME:
            want.append((True, None))
        elif status == S.OK:
            want.append((False, payload + P.crc16(payload).to_bytes(2, "little")))
        else:
            assert status == S.BAD_CRC
            want.append((False, payload))
    assert len(want) > 60 and any(bad for bad, _ in want)
    assert got == want


# --- frame receiver --------------------------------------------------------------------------

class RxChain(Elaboratable):
    """Decoder into receiver, as in the link."""

    def __init__(self):
        self.dec = SlipDecoder()
        self.rcv = FrameReceiver()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dec = self.dec
        m.submodules.rcv = self.rcv
        wiring.connect(m, self.dec.o, self.rcv.i)
        return m


def test_frame_receiver_matches_reference():
    """Status (BAD_FRAME, TOO_LONG, TOO_SHORT, BAD_CRC, OK) and stored payload of every
    frame, including the length limits: payloads of 0, 1, 2, MAX_PAYLOAD and MAX_PAYLOAD+1
    bytes."""
    assert BUFFER_BYTES == P.MAX_PAYLOAD + 2
    rng = random.Random(3)
    dut = RxChain()
    items = line_traffic(rng, 60)
    for n in (P.MAX_PAYLOAD, P.MAX_PAYLOAD + 1, 0, 1, 2, P.MAX_PAYLOAD + 40):
        items += P.frame(some_bytes(rng, n))
    items += list(P.frame(b"")) + [None, P.END]     # an error alone between frames
    items += [P.END, 0x55, P.ESC, P.END]           # ESC left open at the END
    items += [P.END] * 3 + list(P.frame(b"\x01\x02"))
    got = []

    async def read_buffer(ctx, length):
        out = bytearray()
        for a in range(length):
            ctx.set(dut.rcv.rd_addr, a)
            await ctx.tick().repeat(2)
            out.append(ctx.get(dut.rcv.rd_data))
        return bytes(out)

    async def testbench(ctx):
        for item in items:
            if item is None:
                ctx.set(dut.dec.bad, 1)
                await ctx.tick()
                ctx.set(dut.dec.bad, 0)
                continue
            ctx.set(dut.dec.i.valid, 1)
            ctx.set(dut.dec.i.payload, item)
            await ctx.tick().until(dut.dec.i.ready)
            ctx.set(dut.dec.i.valid, 0)
            await ctx.tick().repeat(2)
            if ctx.get(dut.rcv.frame.valid):
                info = ctx.get(dut.rcv.frame.payload)
                status, length = S(info.status), info.length
                got.append((status, await read_buffer(ctx, length) if status == S.OK else None))
                ctx.set(dut.rcv.frame.ready, 1)
                await ctx.tick()
                ctx.set(dut.rcv.frame.ready, 0)

    simulate(dut, testbench)
    want = [(status, payload if status == S.OK else None)
            for status, payload in reference_frames(items)]
    assert {status for status, _ in want} == {S.OK, S.BAD_CRC, S.BAD_FRAME, S.TOO_LONG,
                                              S.TOO_SHORT}
    assert got == want


# --- encoders --------------------------------------------------------------------------------

def test_slip_encoder_matches_reference():
    """Escaped bytes and ENDs as spikestream.protocol.slip_encode() makes them; raw bytes (SLIP's
    special ones among them) go out as they are."""
    rng = random.Random(4)
    dut = SlipEncoder()
    chunks = [some_bytes(rng, rng.randrange(0, 20)) for _ in range(30)]
    raws = [some_bytes(rng, rng.randrange(0, 4)) for _ in chunks]
    out = bytearray()

    async def testbench(ctx):
        for chunk, raw in zip(chunks, raws):
            for token in [(0, 1, 0)] + [(b, 0, 0) for b in chunk] + [(b, 0, 1) for b in raw]:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": token[0], "end": token[1], "raw": token[2]})
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
                await idle(ctx, rng.randrange(0, 2))
        await ctx.tick().until(~dut.busy)

    async def sink(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                   dut.o.payload):
            if valid and ready:
                out.append(payload)
            ctx.set(dut.o.ready, rng.random() < 0.5)

    simulate(dut, testbench, sink)
    assert any(set(raw) & {P.END, P.ESC} for raw in raws)
    assert bytes(out) == b"".join(bytes([P.END]) + P.slip_encode(c) + r
                                  for c, r in zip(chunks, raws))


def responses_and_raw(rng, n, longest):
    """``n`` response payloads of 1 to ``longest`` bytes, each followed by 0 to 3 raw bytes
    (SLIP's special bytes often; a STREAM's raw tokens); the last ones a lone END and ESC."""
    payloads = [some_bytes(rng, rng.randrange(1, longest)) for _ in range(n)] + \
               [b"\xc0", b"\xdb"]
    raws = [some_bytes(rng, rng.choice([0, 0, 1, 2, 3])) for _ in payloads]
    raws[-1] = bytes([P.END, P.ESC, P.END])
    return payloads, raws


@pytest.mark.parametrize("ready_p", [1.0, 0.3])
def test_frame_encoder_matches_reference(ready_p):
    """Frames equal spikestream.protocol.frame() byte for byte, and raw bytes offered between
    frames go out as they are, after the frame before them, with gaps on the input and
    back pressure on the output."""
    rng = random.Random(5)
    dut = FrameEncoder()
    payloads, raws = responses_and_raw(rng, 25, 40)
    out = bytearray()

    async def testbench(ctx):
        for payload, raw in zip(payloads, raws):
            for n, byte in enumerate(payload):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": byte, "last": n == len(payload) - 1})
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
                await idle(ctx, rng.randrange(0, 3))
            for byte in raw:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": byte, "last": rng.random() < 0.5, "raw": 1})
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
                await idle(ctx, rng.randrange(0, 2))
        await ctx.tick()
        await ctx.tick().until(~dut.busy)

    async def sink(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                   dut.o.payload):
            if valid and ready:
                out.append(payload)
            ctx.set(dut.o.ready, rng.random() < ready_p)

    simulate(dut, testbench, sink)
    assert bytes(out) == b"".join(P.frame(p) + r for p, r in zip(payloads, raws))


@pytest.mark.parametrize("ready_p, queue_bytes", [(1.0, QUEUE_BYTES), (0.3, QUEUE_BYTES),
                                                  (0.3, 2)])
def test_response_emitter_matches_reference(ready_p, queue_bytes):
    """Responses offered in chunks of every size up to the largest come out framed as
    spikestream.protocol.frame() makes them, raw chunks between them as they are; busy until
    the last byte is handed on (out of the line queue too)."""
    rng = random.Random(8)
    chunk_bytes = 28
    dut = ResponseEmitter(chunk_bytes, queue_bytes)
    payloads, raws = responses_and_raw(rng, 25, 3 * chunk_bytes)
    payloads += [bytes(chunk_bytes), b"\xc0" * (chunk_bytes + 1)]
    raws += [b"", bytes([P.ESC]) * chunk_bytes]
    out = bytearray()

    async def offer(ctx, part, last, raw):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"data": int.from_bytes(part, "little"), "length": len(part),
                                "last": last, "raw": raw})
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await idle(ctx, rng.randrange(0, 3))

    async def testbench(ctx):
        for payload, raw in zip(payloads, raws):
            at = 0
            while at < len(payload):
                n = min(rng.choice([1, chunk_bytes, chunk_bytes, rng.randrange(1, chunk_bytes)]),
                        len(payload) - at)
                at += n
                await offer(ctx, payload[at - n:at], at == len(payload), 0)
            at = 0
            while at < len(raw):
                n = min(rng.choice([1, 2, chunk_bytes]), len(raw) - at)
                at += n
                await offer(ctx, raw[at - n:at], 0, 1)
            assert ctx.get(dut.busy)
            await ctx.tick().until(~dut.busy)
        assert bytes(out) == b"".join(P.frame(p) + r for p, r in zip(payloads, raws))

    async def sink(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                   dut.o.payload):
            if valid and ready:
                out.append(payload)
            ctx.set(dut.o.ready, rng.random() < ready_p)

    simulate(dut, testbench, sink)
    assert bytes(out) == b"".join(P.frame(p) + r for p, r in zip(payloads, raws))


def random_request(rng, config):
    """A request payload whose checks lie near their boundaries (any WRITE words zero, so
    that only the checks short of the words' values decide)."""
    wb = P.word_bytes(config)
    op = rng.choice(list(P.Cmd) + [P.Cmd.READ, P.Cmd.WRITE] * 4 + [P.Cmd.STREAM] +
                    [0, 0x0A, 0x7F, P.NACK_OP])
    mem = rng.choice(list(Mem)) if rng.random() < 0.9 else rng.choice([len(Mem), 0xFF])
    depth = config.depth(mem) if mem in set(Mem) else 16
    lanes = config.lanes if mem in (Mem.PARAM, Mem.STATE, Mem.ACC, Mem.PTR, Mem.SYN) else 1
    lane = rng.randrange(lanes) if rng.random() < 0.8 else rng.choice([lanes, 0xFF])
    count = rng.choice([0, 1, 2, min(depth, P.MAX_READ), min(depth, P.MAX_READ) + 1, depth,
                        depth + 1, rng.randrange(1, depth + 1), rng.randrange(65536)])
    addr = rng.choice([0, max(0, depth - count), max(0, depth - count + 1),
                       rng.randrange(depth + 1), 1 << 24, (1 << 32) - 1])
    block = P.BLOCK_BODY.pack(mem=mem, lane=lane, addr=addr, count=count)
    want = {P.Cmd.WRITE: P.BLOCK_BODY.size + count * wb, P.Cmd.READ: P.BLOCK_BODY.size,
            P.Cmd.RUN: 2 * rng.choice([1, P.MAX_RUN, P.MAX_RUN + 1, rng.randrange(1, 99)]),
            P.Cmd.GENERATE: 4, P.Cmd.STREAM: 6, P.Cmd.TAG: 4}.get(op, 0)
    if rng.random() < 0.7:
        length = want
    else:
        length = max(0, rng.choice([want - 1, want + 1, want + wb, want - wb, 0, 2, 8,
                                    rng.randrange(P.MAX_PAYLOAD - 1)]))
    length = min(length, P.MAX_PAYLOAD - P.REQUEST_HEAD.size)
    body = (block + bytes(length))[:length]
    if op == P.Cmd.GENERATE and rng.random() < 0.5:
        body = (P.GENERATE_BODY.pack(first=1, count=rng.choice([0, 1])) + body[4:])[:length]
    if op == P.Cmd.STREAM and rng.random() < 0.7:
        # A count whose low 16 bits alone are 0 is not 0.
        count = rng.choice([0, 0, 1, 1 << 16, 1 << 31, (1 << 32) - 1, rng.getrandbits(32)])
        body = (P.STREAM_BODY.pack(first=rng.randrange(1 << 16), count=count) +
                body[6:])[:length]
    return P.request(op, rng.randrange(256), body)


def test_request_checker_matches_reference():
    """Random requests near every boundary, some back to back and some with the verdict
    held waiting: the checker's status is spikestream.protocol.check_request's, and its opcode flags
    say which request it is."""
    rng = random.Random(9)
    dut = RequestChecker(CONFIG)
    cases = [payload for item, _ in status_cases(CONFIG)
             for status, payload in reference_frames(item) if status == S.OK]
    cases += [random_request(rng, CONFIG) for _ in range(1500)]
    got = []

    async def testbench(ctx):
        for payload in cases:
            head = (payload + bytes(10))[:10]
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload.header.as_value(), int.from_bytes(head, "little"))
            ctx.set(dut.i.payload.body_len, len(payload) - P.REQUEST_HEAD.size)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.i.payload.header.as_value(), rng.getrandbits(80))   # taken: stale now
            await ctx.tick().until(dut.o.valid)
            for _ in range(rng.choice([0, 0, 3])):
                await ctx.tick()
                assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
            verdict = ctx.get(dut.o.payload)
            flags = {c for c in P.Cmd if verdict.op[c.name.lower()]}
            got.append((S(verdict.status), bool(verdict.ok), flags))
            ctx.set(dut.o.ready, 1)
            await ctx.tick()
            ctx.set(dut.o.ready, 0)
            assert not ctx.get(dut.o.valid)

    def without_words(payload):
        # The WRITE words' values are the engine's and the core's to judge.
        head = P.REQUEST_HEAD.size + P.BLOCK_BODY.size
        return payload[:head] + bytes(len(payload[head:])) if payload[0] == P.Cmd.WRITE \
            else payload

    simulate(dut, testbench)
    want = [(P.check_request(without_words(p), CONFIG),
             P.check_request(without_words(p), CONFIG) == S.OK,
             {c for c in P.Cmd if c == p[0]}) for p in cases]
    assert {status for status, _, _ in want} == {S.OK, S.BAD_OPCODE, S.BAD_LENGTH,
                                                 S.BAD_MEMORY, S.OUT_OF_RANGE}
    stream = [w for p, w in zip(cases, want) if p[0] == P.Cmd.STREAM]
    assert {status for status, _, _ in stream} == {S.OK, S.BAD_LENGTH, S.OUT_OF_RANGE}
    assert any(p[0] == P.Cmd.STREAM and len(p) == 8 and p[4:6] == b"\0\0" and p[6:8] != b"\0\0"
               for p in cases), "a STREAM count that only 16 bits would read as 0"
    assert got == want


# --- the link with a core --------------------------------------------------------------------

class LinkBench(Elaboratable):
    """A link wired to a core, as in the SoC, without the UART."""

    def __init__(self, config=CONFIG, init=None, tag=0):
        self.config = config
        self.link = Link(config, clock_hz=CLOCK_HZ, baud=BAUD, tag=tag)
        self.core = Core(config, init=init)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        m.submodules.core = core = self.core
        m.d.comb += link.core_status.eq(core.status)
        wiring.connect(m, link.write, core.write)
        wiring.connect(m, link.read, core.read)
        wiring.connect(m, core.read_data, link.read_data)
        wiring.connect(m, link.cmd, core.cmd)
        wiring.connect(m, core.result, link.result)
        return m


def drive_link(bench, items, *, ready_p=1.0, seed=0, hold_tx=(), pace=0, steps=None):
    """Send each item of ``items`` (a list of byte values and ``None`` for a UART error
    pulse) a byte at a time, waiting for the link to be idle after each byte.

    Returns one ``(responses, writes)`` per item: the responses it sent
    (:func:`sim.link_host.parse_responses`: a STREAM's raw bytes as one ``RAW`` response)
    and the core writes (:class:`Write`) made while it was handled. For item numbers in
    ``hold_tx`` the transmit side is stalled while the item is sent (so that bytes arrive
    while the link is busy). With ``pace`` the transmit side takes a byte as a UART of
    ``pace`` cycles per byte does (then ``ready_p`` is not used). ``steps``, a list, gets
    ``(cycle, "cmd")`` for every handshake of the core's command port and
    ``(cycle, "result")`` for every result the core offers (its first cycle of ``valid``:
    the core is idle from then until the next command).
    """
    link, core = bench.link, bench.core
    rng = random.Random(seed)
    tx, writes = bytearray(), []
    stall = [False]
    out = []

    async def testbench(ctx):
        for n, item in enumerate(items):
            t0, w0 = len(tx), len(writes)
            stall[0] = n in hold_tx
            for byte in item:
                if byte is None:
                    ctx.set(link.rx_error, 1)
                    await ctx.tick()
                    ctx.set(link.rx_error, 0)
                    continue
                ctx.set(link.rx.valid, 1)
                ctx.set(link.rx.payload, byte)
                await ctx.tick().until(link.rx.ready)
                ctx.set(link.rx.valid, 0)
                await ctx.tick().repeat(2)
                while ctx.get(link.busy) and not stall[0]:
                    await ctx.tick()
            stall[0] = False
            await ctx.tick().repeat(2)
            while ctx.get(link.busy):
                await ctx.tick()
            out.append((parse_responses(bytes(tx[t0:])), writes[w0:]))

    async def monitor(ctx):
        w = core.write
        cycle, line_free, offered = 0, 0, False
        async for _, _, tv, tr, tp, wv, wr, wp, cv, cr, rv, rr in ctx.tick().sample(
                link.tx.valid, link.tx.ready, link.tx.payload, w.valid, w.ready, w.payload,
                link.cmd.valid, link.cmd.ready, link.result.valid, link.result.ready):
            cycle += 1
            if tv and tr:
                tx.append(tp)
                line_free = cycle + pace
            if wv and wr:
                writes.append(Write(Mem(wp.mem), wp.lane, wp.addr, wp.data))
            if steps is not None and cv and cr:
                steps.append((cycle, "cmd"))
            if steps is not None and rv and not offered:
                steps.append((cycle, "result"))
            offered = rv and not rr
            if pace:
                ctx.set(link.tx.ready, not stall[0] and cycle + 1 >= line_free)
            else:
                ctx.set(link.tx.ready, not stall[0] and rng.random() < ready_p)

    simulate(bench, testbench, monitor)
    return out


def check_with_model(model, items, results):
    """Every item's answer and writes as the model says (items: whole frames)."""
    problems = []
    for n, (item, (responses, writes)) in enumerate(zip(items, results)):
        frames = reference_frames(item)
        assert len(frames) <= 1, "one frame per item"
        if not frames:
            assert responses == [] and writes == [], f"item {n}: answered an ignored frame"
            continue
        (status, payload), = frames
        for problem in model.check(status, payload, responses, writes):
            problems.append(f"item {n}: {problem}")
    assert not problems, "\n".join(problems)


def req(op, seq, body=b""):
    return list(P.frame(P.request(op, seq, body)))


def rw(op, mem, lane, addr, count, words=None, seq=0):
    body = struct.pack(P.WRITE_HEADER, mem, lane, addr, count)
    if words is not None:
        body += P.pack_words(words, P.word_bytes(CONFIG))
    return req(op, seq, body)


def read_all(config, seq=200):
    """READ requests covering every word of every memory."""
    out = []
    for mem in Mem:
        for lane in range(config.lanes if mem in (Mem.PARAM, Mem.STATE, Mem.ACC, Mem.PTR,
                                                  Mem.SYN) else 1):
            for addr in range(0, config.depth(mem), P.MAX_READ):
                count = min(P.MAX_READ, config.depth(mem) - addr)
                out.append(rw(P.Cmd.READ, mem, lane, addr, count, seq=seq))
    return out


def status_cases(config):
    """(item, the status its final response must carry): every LinkStatus but OK comes up,
    each check at its boundary."""
    W = P.Cmd.WRITE
    R = P.Cmd.READ
    wb = P.word_bytes(config)
    good = P.frame(P.request(P.Cmd.IDENTIFY, 1))
    flipped = bytearray(good)
    flipped[-2] ^= 0x01                               # a CRC byte
    too_big = 1 << config.data_bits
    return [
        (req(P.Cmd.IDENTIFY, 1), S.OK),
        (list(flipped), S.BAD_CRC),
        (list(good[:3]) + [P.ESC, 0x41] + list(good[3:]), S.BAD_FRAME),
        (list(good[:3]) + [None] + list(good[3:]), S.BAD_FRAME),
        (list(P.frame(bytes(P.MAX_PAYLOAD + 1))), S.TOO_LONG),
        (list(P.frame(b"\x01")), S.TOO_SHORT),
        *[(req(op, 2), S.BAD_OPCODE) for op in (0x00, 0x0A, P.Cmd.TOKEN, P.Cmd.STREAM_START,
                                                 0x80, P.NACK_OP)],
        (req(P.Cmd.STREAM_START, 2, P.STREAM_BODY.pack(first=0, count=1)), S.BAD_OPCODE),
        (req(P.Cmd.IDENTIFY, 3, b"\0"), S.BAD_LENGTH),
        (req(P.Cmd.STATUS, 3, b"\0\0"), S.BAD_LENGTH),
        (req(P.Cmd.RESET, 3, b"\0"), S.BAD_LENGTH),
        (req(P.Cmd.TAG, 3, b"\0\0\0"), S.BAD_LENGTH),
        (req(P.Cmd.GENERATE, 3, b"\0" * 5), S.BAD_LENGTH),
        (req(P.Cmd.STREAM, 3), S.BAD_LENGTH),
        (req(P.Cmd.STREAM, 3, b"\1" * 4), S.BAD_LENGTH),             # a GENERATE body
        (req(P.Cmd.STREAM, 3, b"\1" * 5), S.BAD_LENGTH),
        (req(P.Cmd.STREAM, 3, b"\1" * 7), S.BAD_LENGTH),
        (req(R, 3, b"\0" * 7), S.BAD_LENGTH),
        (req(R, 3, b"\0" * 9), S.BAD_LENGTH),
        (req(P.Cmd.RUN, 3), S.BAD_LENGTH),
        (req(P.Cmd.RUN, 3, b"\0" * 3), S.BAD_LENGTH),
        (req(P.Cmd.RUN, 3, b"\0" * (2 * P.MAX_RUN + 2)), S.BAD_LENGTH),
        (req(W, 3, b"\0" * 7), S.BAD_LENGTH),
        (rw(W, Mem.PARAM, 0, 0, 2, [1]), S.BAD_LENGTH),
        (rw(W, Mem.PARAM, 0, 0, 1, [1, 2]), S.BAD_LENGTH),
        (req(W, 3, struct.pack(P.WRITE_HEADER, Mem.PARAM, 0, 0, 1) + bytes(wb - 1)),
         S.BAD_LENGTH),
        (req(W, 4, struct.pack(P.WRITE_HEADER, Mem.PARAM, 0, 0, 0xFFFF)), S.BAD_LENGTH),
        (rw(R, 13, 0, 0, 1), S.BAD_MEMORY),
        (rw(R, 0xFF, 0, 0, 1), S.BAD_MEMORY),
        (rw(W, Mem.ACC, 0, 0, 1, [0]), S.BAD_MEMORY),
        (rw(W, 15, 0, 0, 1, [0]), S.BAD_MEMORY),
        (rw(R, Mem.PARAM, config.lanes, 0, 1), S.OUT_OF_RANGE),
        (rw(W, Mem.SYN, config.lanes, 0, 1, [0]), S.OUT_OF_RANGE),
        (rw(R, Mem.POP, 1, 0, 1), S.OUT_OF_RANGE),
        (rw(W, Mem.CORE, 1, CoreReg.SEED, 1, [0]), S.OUT_OF_RANGE),
        (rw(R, Mem.PTR, 0, config.ptr_depth - 2, 3), S.OUT_OF_RANGE),
        (rw(W, Mem.PTR, 1, config.ptr_depth - 1, 2, [1, 2]), S.OUT_OF_RANGE),
        (rw(R, Mem.PARAM, 0, 1 << 24, 1), S.OUT_OF_RANGE),
        (rw(W, Mem.STATE, 0, (1 << 32) - 1, 1, [5]), S.OUT_OF_RANGE),
        (rw(R, Mem.SYN, 0, 0, 0), S.OUT_OF_RANGE),
        (rw(W, Mem.SYN, 0, 0, 0, []), S.OUT_OF_RANGE),
        (rw(R, Mem.SYN, 0, 0, P.MAX_READ + 1), S.OUT_OF_RANGE),
        (rw(W, Mem.CORE, 0, CoreReg.TEMPERATURE, 2, [1, 2]), S.OUT_OF_RANGE),
        (rw(W, Mem.CORE, 0, len(CoreReg), 1, [1]), S.OUT_OF_RANGE),
        (rw(W, Mem.PARAM, 1, 3, 3, [1, too_big | 7, 2]), S.OUT_OF_RANGE),
        (rw(W, Mem.CORE, 0, CoreReg.SEED, 1, [too_big]), S.OUT_OF_RANGE),
        (rw(W, Mem.CORE, 0, CoreReg.VOCAB, 1, [config.max_vocab + 1]), S.OUT_OF_RANGE),
        (rw(W, Mem.CORE, 0, CoreReg.READOUT, 1, [config.max_pops]), S.OUT_OF_RANGE),
        (req(P.Cmd.GENERATE, 5, struct.pack(P.GENERATE_FORMAT, 0, 0)), S.OUT_OF_RANGE),
        (req(P.Cmd.STREAM, 5, P.STREAM_BODY.pack(first=0, count=0)), S.OUT_OF_RANGE),
        (req(P.Cmd.RUN, 6, struct.pack("<H", 0)), S.BAD_TOKEN),            # vocabulary 0
        (req(P.Cmd.GENERATE, 6, struct.pack(P.GENERATE_FORMAT, 0, 3)), S.BAD_TOKEN),
        (req(P.Cmd.STREAM, 6, P.STREAM_BODY.pack(first=0, count=3)), S.BAD_TOKEN),
        # Accepted, at the boundaries.
        (rw(R, Mem.SYN, config.lanes - 1, config.syn_depth - P.MAX_READ, P.MAX_READ),
         S.OK),
        (rw(W, Mem.CORE, 0, CoreReg.VOCAB, 1, [config.max_vocab]), S.OK),
        (rw(W, Mem.PTR, 1, config.ptr_depth - 2, 2, [(1 << config.data_bits) - 1, 3]), S.OK),
        (rw(W, Mem.STATE, 0, 0, 1, [0x1234_5678]), S.OK),
        (rw(W, Mem.CORE, 0, CoreReg.SEED, 1, [(1 << config.data_bits) - 1]), S.OK),
        (req(P.Cmd.TAG, 7, struct.pack(P.TAG_FORMAT, 0xA5A5_0001)), S.OK),
        (req(P.Cmd.IDENTIFY, 8), S.OK),
        (rw(W, Mem.CORE, 0, CoreReg.TEMPERATURE, 1, [77]), S.OK),
        (req(P.Cmd.IDENTIFY, 9), S.OK),
        (req(P.Cmd.STATUS, 10), S.OK),
    ]


def test_every_status():
    """Each check of spikestream/protocol.py, at its boundaries and in its order, answered with the
    status the protocol defines; rejected requests write nothing (the one exception: a CORE
    value the core itself refuses, which it then does not store), and afterwards every word
    of every memory reads back as the accepted writes alone made it."""
    cases = status_cases(CONFIG)
    items = [item for item, _ in cases] + read_all(CONFIG) + [req(P.Cmd.STATUS, 11)]
    results = drive_link(LinkBench(), items)
    for n, ((item, want), (responses, _)) in enumerate(zip(cases, results)):
        assert responses and responses[-1][2] == want, f"case {n}: {responses}, not {want.name}"
    assert {want for _, want in cases} == set(S)
    check_with_model(LinkModel(CONFIG, clock_hz=CLOCK_HZ, baud=BAUD), items, results)
    # Flags the link provoked (a refused CORE value, a bad token) are cleared again.
    (_, _, _, body), = results[-1][0]
    assert P.LinkCounters(struct.unpack(P.STATUS_FORMAT, body)).core_status == 0


def test_random_writes_read_back_with_back_pressure():
    """Random blocks to every writable memory, random refused ones among them, read back
    whole; the transmit side takes a byte only now and then."""
    rng = random.Random(6)
    wb = P.word_bytes(CONFIG)
    items = []
    for n in range(30):
        mem = rng.choice([Mem.PARAM, Mem.STATE, Mem.PTR, Mem.SYN, Mem.POP, Mem.PROJ,
                          Mem.CORE])
        lanes = CONFIG.lanes if mem in (Mem.PARAM, Mem.STATE, Mem.PTR, Mem.SYN) else 1
        depth = CONFIG.depth(mem)
        count = 1 if mem == Mem.CORE else rng.randrange(1, min(depth, 12) + 1)
        addr = rng.randrange(0, depth - count + 1 + (rng.random() < 0.2))
        words = [rng.getrandbits(CONFIG.data_bits + (rng.random() < 0.05))
                 if mem != Mem.CORE else rng.randrange(0, 300) for _ in range(count)]
        lane = rng.randrange(0, lanes + (rng.random() < 0.1))
        items.append(rw(P.Cmd.WRITE, mem, lane, addr, count, words, seq=n))
    items += read_all(CONFIG)
    assert len(items[0]) > 2 * wb
    results = drive_link(LinkBench(), items, ready_p=0.3, seed=7)
    oks = sum(r[0][-1][2] == S.OK for r in results[:30])
    assert 10 <= oks < 30
    check_with_model(LinkModel(CONFIG, clock_hz=CLOCK_HZ, baud=BAUD), items, results)


def test_bytes_while_busy_are_dropped_and_counted():
    """Bytes that arrive while a request is answered are dropped (a whole frame among them
    goes unanswered), counted in STATUS, and the next frame works."""
    stray = list(P.frame(P.request(P.Cmd.IDENTIFY, 5)))       # lost: the link is busy
    items = [req(P.Cmd.IDENTIFY, 1) + stray, req(P.Cmd.STATUS, 2)]
    results = drive_link(LinkBench(tag=3), items, hold_tx={0})
    (identify,), _ = results[0]
    assert identify == (P.Cmd.IDENTIFY, 1, S.OK, P.identity_of(CONFIG, CLOCK_HZ, BAUD, 3))
    (status,), _ = results[1]
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, status[3]))
    assert (counters.frames_ok, counters.frames_rejected, counters.bytes_dropped,
            counters.tag) == (1, 0, len(stray), 3)


def test_identify_tag_and_tag_rules():
    """IDENTIFY reports the power-up tag, TAG sets it, a STATE or TEMPERATURE write keeps
    it, a PARAM write (or a POPS write) clears it, a refused write does not."""
    tag = 0xC0DB_1234                              # SLIP's special bytes in the body too
    W = P.Cmd.WRITE
    items = [
        req(P.Cmd.IDENTIFY, 1),
        rw(W, Mem.STATE, 1, 2, 1, [9]), rw(W, Mem.CORE, 0, CoreReg.TEMPERATURE, 1, [5]),
        rw(W, Mem.CORE, 0, CoreReg.SEED, 1, [5]), req(P.Cmd.IDENTIFY, 2),
        rw(W, Mem.CORE, 0, CoreReg.POPS, 1, [99]), req(P.Cmd.IDENTIFY, 3),
        rw(W, Mem.PARAM, 1, 2, 1, [9]), req(P.Cmd.IDENTIFY, 4),
        req(P.Cmd.TAG, 5, struct.pack("<I", 77)), rw(W, Mem.CORE, 0, CoreReg.POPS, 1, [1]),
        req(P.Cmd.IDENTIFY, 6),
    ]
    results = drive_link(LinkBench(tag=tag), items)
    tags = [P.IDENTIFY_BODY.unpack_from(r[0][0][3]).tag for r in results
            if r[0][0][0] == P.Cmd.IDENTIFY]
    assert tags == [tag, tag, tag, 0, 0]
    check_with_model(LinkModel(CONFIG, clock_hz=CLOCK_HZ, baud=BAUD, tag=tag), items, results)


# --- running a network -----------------------------------------------------------------------

def small_image(seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng, [NeuronKind.ALIF, NeuronKind.LIF], vocab=6, sizes=(2, 7))
    image = Image(net=net, lanes=2)
    config = CoreConfig.for_image(image)
    return net, image, config


def test_run_and_generate_match_golden():
    """A random network loaded with WRITE frames, then RUN and GENERATE: every TOKEN frame
    (token, cycles, spikes) and the state read back equal the golden model's; STATUS adds
    up the steps and cycles."""
    net, image, config = small_image(21)
    temperature, seed = 200, 99
    writes = image_writes(image, config) + settings_writes(temperature, seed)
    rng = np.random.default_rng(22)
    run_tokens = rng.integers(0, net.vocab_size, 5).tolist()
    first, count = int(rng.integers(0, net.vocab_size)), 4
    lay = lane_layout(net, 2)
    pop = len(net.populations) - 2                 # a hidden population
    size = net.populations[pop].size
    state_reads = [rw(P.Cmd.READ, Mem.STATE, lane, lay.pop_base[pop], -(-(size - lane) // 2))
                   for lane in range(2)]
    items = ([list(P.frame(p)) for p in write_requests(writes, config)] +
             [req(P.Cmd.RESET, 1),
              req(P.Cmd.RUN, 2, struct.pack(f"<{len(run_tokens)}H", *run_tokens)),
              *state_reads,
              req(P.Cmd.GENERATE, 3, struct.pack(P.GENERATE_FORMAT, first, count)),
              req(P.Cmd.STATUS, 4)])
    bench = LinkBench(config)
    results = drive_link(bench, items)

    golden = GoldenCore(net, 2, timing=bench.core.timing)
    golden.set_temperature_word(temperature)
    golden.seed(seed)
    n_load = len(items) - 4 - len(state_reads)
    assert all(r[0] == [(P.Cmd.WRITE, n, S.OK, b"")] for n, r in enumerate(results[:n_load]))
    steps, cycles = 0, 0

    def check_tokens(responses, inputs_or_first, generate):
        nonlocal steps, cycles
        token = inputs_or_first if generate else None
        *frames, final = responses
        assert final[2] == S.OK and final[3] == struct.pack("<H", len(frames))
        for i, (_, _, _, body) in enumerate(frames):
            ref = golden.step([token if generate else inputs_or_first[i]])
            want = (i, int(ref.token[0]), int(ref.cycles[0]),
                    sum(int(s.sum()) for s in ref.spikes))
            assert struct.unpack(P.TOKEN_FORMAT, body) == want, f"step {i}"
            token = want[1]
            steps, cycles = steps + 1, cycles + want[2]
        return frames

    assert len(check_tokens(results[n_load + 1][0], run_tokens, False)) == len(run_tokens)
    wb = P.word_bytes(config)
    v = golden.v[pop][0].tolist()
    a = golden.a[pop][0].tolist()
    layout = config.layout(Mem.STATE)
    for lane, (responses, _) in enumerate(results[n_load + 2:n_load + 2 + len(state_reads)]):
        words = P.unpack_words(responses[0][3], wb)
        got = [layout.unpack(w) for w in words]
        assert [g["v"] for g in got] == v[lane::2] and [g["a"] for g in got] == a[lane::2]
    assert len(check_tokens(results[-2][0], first, True)) == count
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, results[-1][0][0][3]))
    assert (counters.steps, counters.cycles, counters.frames_rejected) == (steps, cycles, 0)


def stream_answer(seq, tokens, cycles, spikes, token_bytes):
    """What a STREAM answers whose steps gave ``tokens``, ``cycles`` and ``spikes`` (lists),
    as :func:`sim.link_host.parse_responses` returns it."""
    raw = P.pack_stream(tokens, token_bytes)
    return [(P.Cmd.STREAM_START, seq, S.OK,
             P.STREAM_START_BODY.pack(count=len(tokens), token_bytes=token_bytes)),
            (RAW, seq, S.OK, raw),
            (P.Cmd.STREAM, seq, S.OK, P.STREAM_END_BODY.pack(
                steps=len(tokens), cycles=sum(cycles), spikes=sum(spikes),
                crc=P.crc16(raw)))]


@pytest.mark.parametrize("max_vocab", [None, 300])
def test_stream_matches_golden(max_vocab):
    """STREAM: one STREAM_START frame, the sampled tokens as raw bytes (1 per token, or 2
    for a build whose vocabulary can exceed 256) equal to the golden model's generation
    from the first token, then the final frame with the steps, the sums of their cycles
    and spikes and the CRC of the raw bytes. A first token outside the vocabulary gets the
    final frame alone (BAD_TOKEN, steps 0, the CRC of nothing) and the core's flag is
    cleared; GENERATE then goes on from where STREAM left the network, and a STREAM of
    one token after it; STATUS counts it all."""
    net, image, config = small_image(21)
    if max_vocab is not None:
        config = config.replace(max_vocab=max_vocab)
    stb = P.stream_token_bytes(config)
    assert stb == (1 if max_vocab is None else 2)
    temperature, seed = 200, 99
    writes = image_writes(image, config) + settings_writes(temperature, seed)
    bench = LinkBench(config)
    golden = GoldenCore(net, 2, timing=bench.core.timing)
    golden.set_temperature_word(temperature)
    golden.seed(seed)
    first, count = 2, 12
    tokens, cycles, spikes = golden_stream(golden, first, count)
    assert len(set(tokens)) > 1
    more, _, _ = golden_stream(golden, tokens[-1], 3)
    one = golden_stream(golden, more[-1], 1)
    items = ([list(P.frame(p)) for p in write_requests(writes, config)] +
             [req(P.Cmd.RESET, 1),
              req(P.Cmd.STREAM, 2, P.STREAM_BODY.pack(first=first, count=count)),
              req(P.Cmd.STATUS, 3),
              req(P.Cmd.STREAM, 4, P.STREAM_BODY.pack(first=net.vocab_size, count=5)),
              req(P.Cmd.STATUS, 5),
              req(P.Cmd.GENERATE, 6, struct.pack(P.GENERATE_FORMAT, tokens[-1], 3)),
              req(P.Cmd.STREAM, 7, P.STREAM_BODY.pack(first=more[-1], count=1))])
    results = drive_link(bench, items)
    check_with_model(LinkModel(config, clock_hz=CLOCK_HZ, baud=BAUD), items, results)
    n_load = len(items) - 7
    assert all(r[0] == [(P.Cmd.WRITE, n, S.OK, b"")] for n, r in enumerate(results[:n_load]))
    responses = results[n_load + 1][0]
    assert responses == stream_answer(2, tokens, cycles, spikes, stb)
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, results[n_load + 2][0][0][3]))
    assert counters == (0, n_load + 2, 0, 0, count, sum(cycles), 0)
    assert results[n_load + 3][0] == [(P.Cmd.STREAM, 4, S.BAD_TOKEN, P.STREAM_END_BODY.pack(
        steps=0, cycles=0, spikes=0, crc=P.crc16(b"")))]
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, results[n_load + 4][0][0][3]))
    assert counters == (0, n_load + 3, 1, 0, count, sum(cycles), 0)

    # GENERATE from the last token goes on as the golden model does.
    *frames, final = results[n_load + 5][0]
    assert final == (P.Cmd.GENERATE, 6, S.OK, struct.pack("<H", 3))
    assert [struct.unpack(P.TOKEN_FORMAT, f[3])[1] for f in frames] == more
    assert results[n_load + 6][0] == stream_answer(7, *one, stb)


def test_stream_keeps_the_core_busy():
    """With a line faster than the core (a byte in half a timestep), a STREAM never holds
    the core up: each STEP is issued within four cycles of the previous result, also while
    STREAM_START goes out (the line queue takes it)."""
    net, image, config = small_image(21)
    bench = LinkBench(config, init=image_writes(image, config))
    golden = GoldenCore(net, 2, timing=bench.core.timing)
    count = 40
    tokens, cycles, spikes = golden_stream(golden, 1, count)
    pace = min(cycles) // 2
    steps = []
    results = drive_link(bench, [req(P.Cmd.STREAM, 7, P.STREAM_BODY.pack(first=1,
                                                                          count=count))],
                         pace=pace, steps=steps)
    assert results[0][0] == stream_answer(7, tokens, cycles, spikes, 1)
    kinds = [k for _, k in steps]
    assert kinds == ["cmd", "result"] * count
    gaps = [steps[i + 1][0] - steps[i][0] for i in range(1, len(steps) - 1, 2)]
    # Two cycles of the engine's, and the result's and the command's port registers.
    assert max(gaps) <= 2 + 2 * StreamRegister.LATENCY, f"the core waited on the link: {gaps}"


def test_preloaded_image_runs_without_loading():
    """With ``init`` the core powers up holding the image: IDENTIFY shows its tag and RUN
    gives the golden tokens at once."""
    net, image, config = small_image(23)
    writes = image_writes(image, config)
    bench = LinkBench(config, init=writes, tag=0x5EED)
    tokens = [1, 0, 3]
    results = drive_link(bench, [req(P.Cmd.IDENTIFY, 1),
                                 req(P.Cmd.RUN, 2, struct.pack("<3H", *tokens))])
    assert results[0][0][0][3] == P.identity_of(config, CLOCK_HZ, BAUD, 0x5EED)
    golden = GoldenCore(net, 2, timing=bench.core.timing)
    *frames, final = results[1][0]
    assert final == (P.Cmd.RUN, 2, S.OK, struct.pack("<H", 3))
    for i, (frame, tok) in enumerate(zip(frames, tokens)):
        ref = golden.step([tok])
        assert struct.unpack(P.TOKEN_FORMAT, frame[3])[:3] == \
            (i, int(ref.token[0]), int(ref.cycles[0]))
