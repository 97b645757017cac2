"""cocotb testbench for :class:`hw.soc.SoC`, driven at its serial pins.

Requests go in on ``rx`` from ``cocotbext.uart.UartSource`` and answers come back on ``tx``
into ``UartSink``: an independent model of the line. Frames are built and read with
spikestream/protocol.py's own functions (a STREAM's raw tokens, which are no frame, by
:class:`sim.link_host.ResponseReader`, as a host reads them); what every answer must be comes from
:class:`sim.link_host.LinkModel` and, for running networks, :class:`models.golden.GoldenCore`.

A monitor watches the core's write port inside the SoC (``dut.core.write__valid``,
``write__ready``, ``write__payload``): every handshake is recorded, so that tests can prove
that a rejected frame caused no write and that no write ever left its memory.

The tests share one simulation and run in file order. The SoC is built with a random image
preloaded (``init_seed``) and ``tag``; the tests that check answers against the model come
first, while the memories still hold just that image; the last one loads another image.

Settings arrive from :func:`sim.runner.build_and_run` as ``config``: ``core`` (the
CoreConfig's fields), ``clock_hz``, ``baud``, ``init_seed``, ``load_seed``, ``tag``.
"""

import logging
import random
import struct
import warnings

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.uart import UartSink, UartSource

from spikestream import protocol as P
from hw.core.layouts import write_request_layout
from spikestream.timing import core_timing
from spikestream.memory_map import (LANE_MEMS, CoreConfig, CoreReg, Mem, Write, image_writes,
                           settings_writes)
from hw.uart import FRAME_BITS
from models.golden import GoldenCore
from spikestream.network import lane_layout
from sim.link_host import (RAW, LinkModel, ResponseReader, golden_stream, is_final, random_image,
                           write_requests)
from sim.runner import load_config

S = P.LinkStatus


def _baud(bit_ns):
    # cocotbext-uart times bits as int(1e9 / baud) ns: aim a quarter ns high so that the
    # truncation lands exactly on bit_ns.
    return 1e9 / (bit_ns + 0.25)


def is_token_frame(response):
    """A TOKEN frame of a RUN/GENERATE (the answer to a request with op TOKEN, which is
    BAD_OPCODE, is a final response)."""
    return response[0] == P.Cmd.TOKEN and response[2] == S.OK


def in_bounds(w, config):
    """Whether a write handshake stays inside its memory (a CORE value the core refuses is
    in bounds: the link lets the core judge values)."""
    if w.mem not in set(Mem) or w.mem in (Mem.ACC,):
        return False
    lane_ok = w.lane < config.lanes if w.mem in LANE_MEMS else w.lane == 0
    return lane_ok and w.addr < config.depth(w.mem) and w.data < 1 << config.data_bits


class TB:
    """Clock, reset, the UART models, the core write monitor and a request helper."""

    def __init__(self, dut):
        self.dut = dut
        cfg = load_config()
        if cfg is None:
            raise RuntimeError("tb_soc needs its config from sim.runner.build_and_run")
        self.settings = cfg
        self.config = CoreConfig(**cfg["core"])
        self.clock_hz, self.baud, self.tag = cfg["clock_hz"], cfg["baud"], cfg["tag"]
        self.clk_ns = 10
        self.divisor = self.clock_hz // self.baud
        self.bit_ns = self.divisor * self.clk_ns
        self.frame_ns = FRAME_BITS * self.bit_ns
        with warnings.catch_warnings():
            # cocotbext-uart 0.1.4 still calls setimmediatevalue, deprecated in cocotb 2.0.
            warnings.filterwarnings("ignore", r"Use `handle\.set\(Immediate", DeprecationWarning)
            self.source = UartSource(dut.rx, baud=_baud(self.bit_ns))
        self.sink = UartSink(dut.tx, baud=_baud(self.bit_ns))
        for model in (self.source, self.sink):
            model.log.setLevel(logging.WARNING)
        self.responses = P.FrameDecoder(max_length=1 << 20, min_length=3)
        self.writes = []
        layout = write_request_layout(self.config)
        self._fields = {name: (field.offset, field.width) for name, field in layout}
        self.init_seed, self.init_image = random_image(cfg["init_seed"], self.config)
        self.init_writes = image_writes(self.init_image, self.config)
        Clock(dut.clk, self.clk_ns, unit="ns").start()
        cocotb.start_soon(self._watch_writes())

    async def reset(self):
        """Pulse ``rst``: link counters, tag and core registers return to power-up values
        (memories keep their words)."""
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    def _field(self, value, name):
        offset, width = self._fields[name]
        return (value >> offset) & ((1 << width) - 1)

    async def _watch_writes(self):
        # Woken only while write.valid is high: a Python wake-up per cycle would cost more
        # than the model. Values settled after a clock edge decide the next edge's handshake.
        core = self.dut.core
        while True:
            if not int(core.write__valid.value):
                await core.write__valid.value_change
                continue
            await ReadOnly()
            while int(core.write__valid.value):
                if int(core.write__ready.value):
                    v = int(core.write__payload.value)
                    mem = self._field(v, "mem")
                    self.writes.append(Write(Mem(mem) if mem in set(Mem) else mem,
                                             self._field(v, "lane"), self._field(v, "addr"),
                                             self._field(v, "data")))
                await RisingEdge(self.dut.clk)
                await ReadOnly()
            await RisingEdge(self.dut.clk)

    # --- the line -----------------------------------------------------------------------------

    async def send(self, wire):
        await self.source.write(bytes(wire))
        await self.source.wait()

    async def receive(self, finals, timeout_frames=400):
        """Responses until ``finals`` final (non-TOKEN) ones have come."""
        out = []
        while sum(not is_token_frame(r) for r in out) < finals:
            data = await with_timeout(self.sink.read(), timeout_frames * self.frame_ns, "ns")
            for status, payload in self.responses.feed(data):
                assert status == S.OK, f"the SoC sent a damaged frame: {payload.hex()}"
                out.append(P.parse_response(payload))
        return out

    async def stream(self, seq, first, count, timeout_frames=400):
        """Send a STREAM; return its responses (:class:`sim.link_host.ResponseReader`'s: the
        raw tokens as one ``RAW`` response) up to the final one, and the clock cycles from
        the request's last bit to the last raw byte's (None without raw bytes)."""
        await self.send(frame_of(P.Cmd.STREAM, seq, P.STREAM_BODY.pack(first=first,
                                                                       count=count)))
        t0 = get_sim_time("ns")
        reader, out, elapsed = ResponseReader(), [], None
        while not out or not is_final(out[-1]):
            data = await with_timeout(self.sink.read(), timeout_frames * self.frame_ns, "ns")
            for status, response in reader.feed(data):
                assert status == S.OK, f"the SoC sent a damaged frame: {response.hex()}"
                out.append(response)
                if response[0] == RAW:
                    elapsed = int(get_sim_time("ns") - t0) // self.clk_ns
        return out, elapsed

    async def expect_quiet(self, frames=4):
        await Timer(frames * self.frame_ns, "ns")
        assert self.sink.empty(), f"unexpected bytes: {self.sink.read_nowait().hex()}"

    async def request(self, op, seq, body=b""):
        """Send a request; return its responses (TOKEN frames, then the final one)."""
        await self.send(P.frame(P.request(op, seq, body)))
        return await self.receive(1)

    async def exchange(self, model, wire, marks=()):
        """Send ``wire`` (one frame, or a stray END after damage); check the answer and the
        writes made meanwhile against ``model``. ``marks``: positions in ``wire`` before
        which a UART error was caused (the reference decoder is told so)."""
        decoder = P.FrameDecoder()
        frames, at = [], 0
        for pos in sorted(marks) + [len(wire)]:
            frames += decoder.feed(wire[at:pos])
            if pos < len(wire):
                decoder.mark_bad()
            at = pos
        w0 = len(self.writes)
        await self.send(wire)
        responses = await self.receive(len(frames)) if frames else []
        await self.expect_quiet(2)
        writes = self.writes[w0:]
        problems = []
        for status, payload in frames:
            problems += model.check(status, payload, responses, writes)
        assert len(frames) <= 1
        assert not problems, "\n".join(problems)
        return responses

    async def break_line(self, frames=3):
        """Hold ``rx`` low for ``frames`` frame times (a break: one UART framing error)."""
        await self.source.wait()
        self.dut.rx.value = 0
        await Timer(frames * self.frame_ns, "ns")
        self.dut.rx.value = 1
        await Timer(2 * self.bit_ns, "ns")

    async def bad_stop_bit(self, byte):
        """One character whose stop bit is 0."""
        await self.source.wait()
        for level in [0, *((byte >> n) & 1 for n in range(8)), 0]:
            self.dut.rx.value = level
            await Timer(self.bit_ns, "ns")
        self.dut.rx.value = 1
        await Timer(2 * self.bit_ns, "ns")

    def model(self):
        """The reference at power-up (after :meth:`reset`, with the memories untouched)."""
        return LinkModel(self.config, clock_hz=self.clock_hz, baud=self.baud,
                         init=self.init_writes, tag=self.tag)

    def check_writes_in_bounds(self):
        bad = [w for w in self.writes if not in_bounds(w, self.config)]
        assert not bad, f"core writes outside their memories: {bad[:5]}"


def frame_of(op, seq, body=b""):
    return P.frame(P.request(op, seq, body))


@cocotb.test()
async def test_identify(dut):
    """IDENTIFY reports the build: configuration, clock, baud, and the preloaded tag."""
    tb = TB(dut)
    await tb.reset()
    (answer,) = await tb.request(P.Cmd.IDENTIFY, 0x5A)
    assert answer == (P.Cmd.IDENTIFY, 0x5A, S.OK,
                      P.identity_of(tb.config, tb.clock_hz, tb.baud, tb.tag))
    identity = P.Identity(struct.unpack(P.IDENTIFY_FORMAT, answer[3]))
    assert identity.core_config() == tb.config


@cocotb.test()
async def test_malformed_frames_change_nothing(dut):
    """Bad CRC, truncated frames, bad escapes, unknown opcodes, bad lengths, bad memories,
    out-of-range blocks, oversized frames, a refused CORE value: each gets the defined
    status (or NACK), causes no core write (the refused value: one write the core refuses),
    and the next good frame works. Then every memory reads back exactly as the image the
    SoC was built with."""
    tb = TB(dut)
    await tb.reset()
    model = tb.model()
    cfg = tb.config
    wb = P.word_bytes(cfg)
    rng = random.Random(11)
    good = frame_of(P.Cmd.IDENTIFY, 1)

    def rw(op, mem, lane, addr, count, words=None, seq=2):
        body = struct.pack(P.WRITE_HEADER, mem, lane, addr, count)
        return frame_of(op, seq, body + (P.pack_words(words, wb) if words is not None else b""))

    bad_crc = bytearray(rw(P.Cmd.WRITE, Mem.PARAM, 0, 0, 1, [5]))
    bad_crc[-3] ^= 0x10
    write = rw(P.Cmd.WRITE, Mem.SYN, 1, 4, 3, [1, 2, 3])
    cases = [
        (bytes(bad_crc), ()),
        (write[:len(write) // 2] + bytes([P.END]), ()),              # truncated
        (write[:-1] + b"\x55\x66" + bytes([P.END]), ()),             # extra bytes
        (write[:6] + bytes([P.ESC, 0x77]) + write[6:], ()),          # bad escape
        (write[:5] + bytes([P.ESC, P.END]), ()),                     # escape then END
        (frame_of(0x42, 3), ()),                                     # unknown opcode
        (frame_of(P.Cmd.TOKEN, 3), ()),
        (frame_of(P.Cmd.WRITE, 4, bytes(7)), ()),                    # short WRITE header
        (rw(P.Cmd.WRITE, Mem.PARAM, 0, 0, 2, [1]), ()),              # count and words differ
        (rw(P.Cmd.WRITE, Mem.ACC, 0, 0, 1, [1]), ()),                # read-only memory
        (rw(P.Cmd.READ, 9, 0, 0, 1), ()),                            # no such memory
        (rw(P.Cmd.WRITE, Mem.SYN, 0, cfg.syn_depth - 2, 3, [1, 2, 3]), ()),
        (rw(P.Cmd.WRITE, Mem.PTR, cfg.lanes, 0, 1, [1]), ()),
        (rw(P.Cmd.WRITE, Mem.POP, 1, 0, 1, [1]), ()),
        (rw(P.Cmd.WRITE, Mem.PARAM, 0, 1 << 24, 1, [1]), ()),
        (rw(P.Cmd.READ, Mem.SYN, 0, 0, P.MAX_READ + 1), ()),
        (rw(P.Cmd.WRITE, Mem.PARAM, 0, 0, 2, [1, 1 << cfg.data_bits]), ()),
        (rw(P.Cmd.WRITE, Mem.CORE, 0, CoreReg.VOCAB, 1, [cfg.max_vocab + 1]), ()),
        (frame_of(P.Cmd.RUN, 5, bytes(3)), ()),
        (frame_of(P.Cmd.GENERATE, 5, bytes(4)), ()),                 # 0 tokens
        (frame_of(P.Cmd.STREAM, 5, P.STREAM_BODY.pack(first=1, count=0)), ()),   # 0 tokens
        (frame_of(P.Cmd.STREAM, 5, b"\x01" * 5), ()),                # STREAM body 5 bytes
        (frame_of(P.Cmd.STREAM, 5, b"\x01" * 7), ()),                # ... and 7
        (frame_of(P.Cmd.STREAM, 5, P.GENERATE_BODY.pack(first=1, count=3)), ()),
        (frame_of(P.Cmd.STREAM_START, 5, P.STREAM_BODY.pack(first=1, count=1)), ()),
        (frame_of(P.Cmd.RUN, 5, bytes(2 * P.MAX_RUN + 2)), ()),
        (P.frame(bytes(rng.randrange(256) for _ in range(P.MAX_PAYLOAD + 3))), ()),
        (P.frame(b"\x01"), ()),                                      # too short
        (write[:9] + write[10:], ()),                                # a byte lost
    ]
    for n, (wire, marks) in enumerate(cases):
        try:
            await tb.exchange(model, wire, marks)
        except Exception as error:
            raise AssertionError(f"case {n} ({wire[:12].hex()}...): {error!r}") from error
        (answer,) = await tb.exchange(model, good)
        assert answer[2] == S.OK, f"case {n}: the next good frame got {answer}"
    await check_memories(tb, model)
    tb.check_writes_in_bounds()


async def check_memories(tb, model, seq=0x70):
    """READ every word of every memory; the model checks each against what it knows."""
    cfg = tb.config
    for mem in Mem:
        for lane in range(cfg.lanes if mem in LANE_MEMS else 1):
            for addr in range(0, cfg.depth(mem), P.MAX_READ):
                count = min(P.MAX_READ, cfg.depth(mem) - addr)
                await tb.exchange(model, frame_of(P.Cmd.READ, seq, struct.pack(
                    P.READ_HEADER, mem, lane, addr, count)))


@cocotb.test()
async def test_uart_errors_and_noise(dut):
    """A break or a bad stop bit inside a frame makes it BAD_FRAME (answered at the next
    END); a break between frames too; bursts of random bytes (some ENDs among them) get
    only NACKs or error statuses, never a core write, and the link answers good frames
    afterwards; STATUS has counted every answer."""
    tb = TB(dut)
    await tb.reset()
    model = tb.model()
    write = frame_of(P.Cmd.WRITE, 3, struct.pack(P.WRITE_HEADER, Mem.PARAM, 1, 0, 1) +
                     P.pack_words([123], P.word_bytes(tb.config)))
    good = frame_of(P.Cmd.IDENTIFY, 9)

    for damage in (tb.break_line, lambda: tb.bad_stop_bit(0x5A)):
        w0 = len(tb.writes)
        await tb.send(write[:8])
        await damage()
        await tb.send(write[8:])                   # its END closes the damaged frame
        (nack,) = await tb.receive(1)
        assert nack == (P.NACK_OP, 0, S.BAD_FRAME, b""), nack
        assert tb.writes[w0:] == []
        model.frames_rejected += 1
        await tb.exchange(model, good)

    await tb.break_line()                          # between frames
    await tb.exchange(model, bytes([P.END]), marks=(0,))
    await tb.exchange(model, good)

    rng = random.Random(12)
    answers = 0
    for burst in range(6):
        w0 = len(tb.writes)
        noise = bytes(rng.choice([P.END, P.ESC, rng.randrange(256)]) for _ in range(60))
        await tb.send(noise + bytes([P.END]))
        # Whatever frames the noise made were answered (bytes arriving while an answer goes
        # out are dropped): wait for the line to go quiet.
        got = bytearray()
        while True:
            await Timer(4 * tb.frame_ns, "ns")
            if tb.sink.empty():
                break
            got += tb.sink.read_nowait()
        responses = []
        for status, payload in tb.responses.feed(got):
            assert status == S.OK
            responses.append(P.parse_response(payload))
        assert responses, "the noise held ENDs: something must have been answered"
        for op, seq, status, body in responses:
            assert status != S.OK and body == b"", (op, seq, status, body)
        assert tb.writes[w0:] == [], f"noise caused core writes {tb.writes[w0:]}"
        answers += len(responses)
        (answer,) = await tb.request(P.Cmd.IDENTIFY, burst)
        assert answer[2] == S.OK
    (status,) = await tb.request(P.Cmd.STATUS, 1)
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, status[3]))
    assert counters.frames_rejected == model.frames_rejected + answers
    assert counters.frames_ok == model.frames_ok + 6
    assert counters.core_status == 0
    tb.check_writes_in_bounds()


@cocotb.test()
async def test_bytes_dropped_while_busy(dut):
    """Bytes sent while a RUN streams its answer are dropped and counted."""
    tb = TB(dut)
    await tb.reset()
    vocab = tb.init_image.net.vocab_size
    await tb.send(frame_of(P.Cmd.RUN, 1, struct.pack("<8H", *[k % vocab for k in range(8)])))
    junk = bytes(range(1, 21))
    await tb.send(junk)
    responses = await tb.receive(1)
    assert len(responses) == 9 and responses[-1][:3] == (P.Cmd.RUN, 1, S.OK)
    (status,) = await tb.request(P.Cmd.STATUS, 2)
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, status[3]))
    assert counters.bytes_dropped == len(junk)
    assert (counters.frames_ok, counters.frames_rejected, counters.steps) == (1, 0, 8)


STREAM_SLACK_PER_STEP = 4
"""Cycles a STREAM may take per timestep beyond the cycles the core counts: 2 of the
link's (the result taken, the next STEP issued) and 2 of the core's own (its command taken
and its result offered), as tests/hw/test_link.py measures them."""
STREAM_SLACK = 300
"""Cycles a STREAM may take beyond its timesteps (218 measured): the request's last byte
received, read and checked, and the last raw byte through the encoder, the line queue
and the UART. A START frame that held the core up would cost about 240 more."""


def golden_for(tb, net, temperature=0, seed=0):
    golden = GoldenCore(net, tb.config.lanes, timing=core_timing(tb.config.stages))
    golden.set_temperature_word(temperature)
    golden.seed(seed)
    return golden


def check_tokens(responses, golden, inputs, generate):
    """TOKEN frames and the final DONE equal the golden model run on ``inputs`` (or, for
    GENERATE, on its first token and then each sampled one)."""
    *frames, final = responses
    assert final[2] == S.OK and final[3] == struct.pack(P.DONE_FORMAT, len(frames)), final
    cycles = 0
    token = inputs[0]
    for i, frame in enumerate(frames):
        ref = golden.step([token if generate else inputs[i]])
        want = (i, int(ref.token[0]), int(ref.cycles[0]), sum(int(s.sum()) for s in ref.spikes))
        got = struct.unpack(P.TOKEN_FORMAT, frame[3])
        assert frame[:3] == (P.Cmd.TOKEN, final[1], S.OK)
        assert got == want, f"step {i}: (index, token, cycles, spikes) {got} != golden {want}"
        token = want[1]
        cycles += want[2]
    return len(frames), cycles


def check_stream(answer, golden, first, count, token_bytes):
    """A STREAM's answer (:meth:`TB.stream`) equals the golden model's generation of
    ``count`` tokens from ``first``: STREAM_START, the raw tokens, and the final frame's
    steps, sums of cycles and spikes, and CRC of the raw bytes. Returns the raw bytes and
    the golden steps' cycles (a list)."""
    assert len(answer) == 3, f"a STREAM_START, raw bytes and a final frame expected: {answer}"
    start, (raw_op, raw_seq, _, raw), final = answer
    seq = final[1]
    assert start == (P.Cmd.STREAM_START, seq, S.OK,
                     P.STREAM_START_BODY.pack(count=count, token_bytes=token_bytes)), start
    assert (raw_op, raw_seq) == (RAW, seq)
    tokens, cycles, spikes = golden_stream(golden, first, count)
    got = P.unpack_stream(raw, token_bytes)
    bad = next((i for i, (g, w) in enumerate(zip(got, tokens)) if g != w), None)
    assert bad is None and len(got) == count, \
        f"raw token {bad}: {got[bad:bad + 4]} != golden {tokens[bad:bad + 4]}"
    assert raw == P.pack_stream(tokens, token_bytes)
    end = P.STREAM_END_BODY.unpack_from(final[3])
    assert final[:3] == (P.Cmd.STREAM, seq, S.OK) and len(final[3]) == P.STREAM_END_BODY.size
    assert end == (count, sum(cycles), sum(spikes), P.crc16(raw)), \
        f"final {end} != golden {(count, sum(cycles), sum(spikes), P.crc16(raw))}"
    return raw, cycles


async def check_state(tb, golden, net):
    """READ every population's v and a; compare with the golden model."""
    lay = lane_layout(net, tb.config.lanes)
    layout = tb.config.layout(Mem.STATE)
    L = tb.config.lanes
    for i, pop in enumerate(net.populations):
        for lane in range(min(L, pop.size)):
            count = -(-(pop.size - lane) // L)
            (answer,) = await tb.request(P.Cmd.READ, 0x40 + i, struct.pack(
                P.READ_HEADER, Mem.STATE, lane, lay.pop_base[i], count))
            assert answer[2] == S.OK
            words = [layout.unpack(w) for w in P.unpack_words(answer[3], P.word_bytes(tb.config))]
            assert [w["v"] for w in words] == golden.v[i][0].tolist()[lane::L], f"{pop.name}.v"
            assert [w["a"] for w in words] == golden.a[i][0].tolist()[lane::L], f"{pop.name}.a"


@cocotb.test()
async def test_preloaded_image_runs(dut):
    """The image the SoC was built with runs at once (no loading): RUN's tokens, cycles and
    spikes, and then every neuron's state, equal the golden model's."""
    tb = TB(dut)
    await tb.reset()
    (reset,) = await tb.request(P.Cmd.RESET, 1)
    assert reset == (P.Cmd.RESET, 1, S.OK, b"")
    net = tb.init_image.net
    golden = golden_for(tb, net)
    tokens = random.Random(13).choices(range(net.vocab_size), k=6)
    responses = await tb.request(P.Cmd.RUN, 2, struct.pack(f"<{len(tokens)}H", *tokens))
    assert check_tokens(responses, golden, tokens, False)[0] == len(tokens)
    await check_state(tb, golden, net)


@cocotb.test()
async def test_load_run_generate(dut):
    """Another random image loaded with WRITE frames (exactly its writes reach the core; the
    tag drops to 0), then RESET, RUN, READ of the state, GENERATE, STREAM and STATUS, all
    equal to the golden model; a first token outside the vocabulary is a STREAM's
    BAD_TOKEN (its final frame alone), a token outside the vocabulary stops a RUN with
    BAD_TOKEN."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.config
    _, image = random_image(tb.settings["load_seed"], cfg, kinds=("LIF", "IF"))
    net = image.net
    temperature, seed = 150, 4321
    writes = image_writes(image, cfg) + settings_writes(temperature, seed)
    w0 = len(tb.writes)
    for n, payload in enumerate(write_requests(writes, cfg, seq=0)):
        await tb.send(P.frame(payload))
        (answer,) = await tb.receive(1)
        assert answer == (P.Cmd.WRITE, n & 0xFF, S.OK, b""), answer
    assert tb.writes[w0:] == writes
    (identify,) = await tb.request(P.Cmd.IDENTIFY, 1)
    assert P.IDENTIFY_BODY.unpack_from(identify[3]).tag == 0
    await tb.request(P.Cmd.TAG, 2, struct.pack(P.TAG_FORMAT, 0xBEEF))

    await tb.request(P.Cmd.RESET, 3)
    golden = golden_for(tb, net, temperature, seed)
    rng = random.Random(14)
    tokens = rng.choices(range(net.vocab_size), k=8)
    steps, cycles = check_tokens(await tb.request(P.Cmd.RUN, 4, struct.pack(
        f"<{len(tokens)}H", *tokens)), golden, tokens, False)
    await check_state(tb, golden, net)
    first = rng.randrange(net.vocab_size)
    n, c = check_tokens(await tb.request(P.Cmd.GENERATE, 5, struct.pack(
        P.GENERATE_FORMAT, first, 10)), golden, [first], True)
    assert n == 10
    steps, cycles = steps + n, cycles + c
    await check_state(tb, golden, net)

    # STREAM goes on from there: the raw tokens and the final sums are the golden model's,
    # and the line never made the core wait (the UART is faster than a timestep here).
    stb = P.stream_token_bytes(cfg)
    first, count = rng.randrange(net.vocab_size), 40
    answer, elapsed = await tb.stream(0xC0, first, count)          # a seq that SLIP escapes
    raw, step_cycles = check_stream(answer, golden, first, count, stb)
    assert len(raw) == count * stb
    assert min(step_cycles) > FRAME_BITS * tb.divisor * stb, "the line must be faster"
    slack = elapsed - sum(step_cycles)
    tb.dut._log.info(f"STREAM of {count}: {len(raw)} raw bytes equal the golden model's; "
                     f"{elapsed} cycles to the last one, {sum(step_cycles)} in the steps")
    assert 0 < slack <= STREAM_SLACK_PER_STEP * count + STREAM_SLACK, \
        f"the STREAM took {slack} cycles more than its steps"
    await tb.expect_quiet(2)
    steps, cycles = steps + count, cycles + sum(step_cycles)
    await check_state(tb, golden, net)
    # A first token outside the vocabulary: the final frame alone, nothing run.
    answer, _ = await tb.stream(0xDB, net.vocab_size, 5)
    assert answer == [(P.Cmd.STREAM, 0xDB, S.BAD_TOKEN, P.STREAM_END_BODY.pack(
        steps=0, cycles=0, spikes=0, crc=P.crc16(b"")))], answer
    await tb.expect_quiet(2)

    bad = [1, 2, net.vocab_size, 0]
    responses = await tb.request(P.Cmd.RUN, 6, struct.pack("<4H", *bad))
    assert [r[0] for r in responses] == [P.Cmd.TOKEN] * 2 + [P.Cmd.RUN]
    assert responses[-1] == (P.Cmd.RUN, 6, S.BAD_TOKEN, struct.pack(P.DONE_FORMAT, 2))
    steps += 2
    cycles += sum(struct.unpack(P.TOKEN_FORMAT, r[3])[2] for r in responses[:2])

    (status,) = await tb.request(P.Cmd.STATUS, 7)
    counters = P.LinkCounters(struct.unpack(P.STATUS_FORMAT, status[3]))
    assert (counters.steps, counters.cycles, counters.tag, counters.core_status) == \
        (steps, cycles, 0xBEEF, 0)
    assert counters.frames_rejected == 2            # the two BAD_TOKENs
    tb.check_writes_in_bounds()
