"""A board in software: the SoC's link protocol answered by the golden model.

:class:`GoldenBoard` takes the bytes a host sends and returns the frames the SoC would send
back, following :mod:`spikestream.protocol` (framing, NACKs, the checks of
:func:`spikestream.protocol.check_request` in their order, statuses, counters, the tag rules of
:func:`spikestream.protocol.clears_tag`, bytes dropped while busy) and modelling every memory word
by ``(memory, lane, address)``, so that READ returns what the gateware's memories would
hold (each word cut to its memory's width; the accumulators, cleared by every update,
read 0; ``SEED`` reads the generator's state). A STEP decodes the memories back into a
:class:`spikestream.network.Network` (cached until a WRITE changes the network) and runs
:class:`models.golden.GoldenCore` with the core's own timing
(:func:`spikestream.timing.core_timing`), taking each neuron's ``v, a`` from the ``STATE`` words
and writing them back, so host writes to ``STATE`` act as they would on the core.

:class:`sw.transport.GoldenTransport` runs one of these behind the transport interface.

What the golden model cannot represent is refused rather than guessed, and the board keeps
serving as a SoC stays answerable:

* A RUN, GENERATE or STREAM on memories that do not decode into a network the golden model
  can run (a half-loaded image, say; :meth:`GoldenBoard.network` raises
  :class:`GoldenBoardError`) stops before the timestep that cannot run and is answered as a
  token outside the vocabulary is: status ``BAD_TOKEN`` with the ``DONE`` body counting the
  timesteps run (a STREAM: its final frame alone, below).
  (On empty memories the ``VOCAB`` register is 0, so every token is outside it: the SoC
  answers ``BAD_TOKEN`` too.) :attr:`GoldenBoard.fault` says why.
* A request on which the board itself fails unexpectedly (a bug here) is answered with a
  final response all the same: ``BAD_TOKEN`` with the ``DONE`` body for a RUN or GENERATE,
  with the ``STREAM_END`` body (the timesteps run, their sums and the CRC of the bytes sent)
  for a STREAM, ``OUT_OF_RANGE`` with an empty body for any other request;
  :attr:`GoldenBoard.fault` names the exception, and the next request is served.

A STREAM is answered as the SoC answers it: the ``STREAM_START`` frame, then each sampled
token's raw bytes (:func:`spikestream.protocol.stream_token_bytes` of them, little-endian, no
frame) as its timestep ends, then the final frame with the sums of cycles and spikes and the
CRC of the raw bytes. :meth:`GoldenBoard.answer` yields the raw bytes as :class:`Raw`, which
:func:`wire_bytes` sends as they are (every other item is a payload, sent framed); no list of
tokens is kept, only running sums. Only the first token can be outside the vocabulary, and
the network must decode before ``STREAM_START`` goes out: either failure is answered by the
final frame alone (``BAD_TOKEN``, steps 0, CRC ``0xFFFF``). Should a later timestep fail
(a bug), the final frame follows the bytes sent so far, so that a host reading the promised
count of bytes runs into it and reports a broken stream.
"""

import struct

import numpy as np
import torch

from spikestream.timing import core_timing
from spikestream.memory_map import LANE_MEMS, CoreReg, Mem, contents_after
from spikestream.protocol import (CRC_INIT, DONE_FORMAT, END, GENERATE_FORMAT, MAX_PAYLOAD,
                         NACK_OP, READ_HEADER, STATUS_FORMAT, STREAM_BODY, STREAM_END_BODY,
                         STREAM_START_BODY, TAG_FORMAT, TOKEN_FORMAT, WRITE_HEADER, Cmd,
                         FrameDecoder, LinkStatus, check_request, clears_tag, crc16, frame,
                         identity_of, pack_words, response, stream_token_bytes, unpack_words,
                         word_bytes)
from spikestream.formats import NeuronKind, ResetMode
from models.golden import CoreState, GoldenCore
from spikestream.network import (INPUT, Network, NetworkError, Projection, RouteGroup,
                                 input_index, make_population, spike_input)
from spikestream.sampler import RNG_MASK, seed_state

__all__ = ["GoldenBoardError", "GoldenBoard", "NETWORK_REGS", "Raw", "wire_bytes"]

NETWORK_REGS = (CoreReg.POPS, CoreReg.PROJS, CoreReg.READOUT, CoreReg.VOCAB)
"""The ``CORE`` registers that describe the network (the decoded network depends on them)."""


class GoldenBoardError(RuntimeError):
    """The golden board was asked for something the golden model cannot represent."""


class Raw(bytes):
    """Bytes a board sends as they are, outside any frame: a STREAM's token bytes."""

    __slots__ = ()


def wire_bytes(item):
    """The bytes on the wire for one item :meth:`GoldenBoard.answer` yields: a :class:`Raw`
    as it is, a response payload framed (:func:`spikestream.protocol.frame`)."""
    return bytes(item) if isinstance(item, Raw) else frame(item)


def _stream_end(steps=0, cycles=0, spikes=0, crc=CRC_INIT):
    """The final STREAM body."""
    return STREAM_END_BODY.pack(steps=steps, cycles=cycles, spikes=spikes, crc=crc)


def _mask(bits):
    return (1 << bits) - 1


def _fields(layout, words):
    """Unpack an array of words into a dict of numpy int64 arrays, one per field."""
    dtype = np.int64 if layout.bits <= 62 else object
    w = np.asarray(words, dtype=dtype)
    out, shift = {}, 0
    for f in layout:
        x = (w >> shift) & _mask(f.bits)
        if f.signed:
            x = np.where(x >> (f.bits - 1) != 0, x - (1 << f.bits), x)
        out[f.name] = np.asarray(x, dtype=np.int64)
        shift += f.bits
    return out


def _pack(layout, **fields):
    """Pack arrays of field values into an array of words (each field cut to its width, as
    a memory keeps it): the inverse of :func:`_fields`."""
    out, shift = 0, 0
    for f in layout:
        out = out | ((np.asarray(fields[f.name], np.int64) & _mask(f.bits)) << shift)
        shift += f.bits
    return out


class GoldenBoard:
    """The SoC, at the protocol level, with the golden model as its core.

    Parameters
    ----------
    config : spikestream.memory_map.CoreConfig
        The core the board was "built" with (IDENTIFY reports it).
    clock_hz, baud : int
        Reported by IDENTIFY.
    init : iterable of spikestream.memory_map.Write
        Initial memory contents (as ``SoC(init=...)``), e.g. ``image_writes(image, config)``.
    tag : int
        Initial image tag (as ``SoC(tag=...)``).

    Attributes
    ----------
    fault : str or None
        Why the last request that could not run (see the module docstring) was refused,
        in one line; ``None`` until one is.
    faults : int
        Requests refused so.
    """

    def __init__(self, config, *, clock_hz, baud, init=(), tag=0):
        self.config = config
        self.clock_hz, self.baud = int(clock_hz), int(baud)
        self.timing = core_timing(config.stages)
        self.word_bytes = word_bytes(config)
        L = config.lanes
        self._words = {}        # per memory, per lane: the words as Python ints
        for mem in Mem:
            if mem in (Mem.STATE, Mem.ACC, Mem.CORE):
                continue
            lanes = L if mem in LANE_MEMS else 1
            self._words[mem] = [[0] * config.depth(mem) for _ in range(lanes)]
        # v and a words of every lane: numpy, because every STEP reads and writes them.
        self._state = np.zeros((L, config.neurons_per_lane), dtype=np.int64)
        self._layouts = {mem: config.layout(mem) for mem in Mem}
        self._regs = {reg: 0 for reg in CoreReg if reg != CoreReg.SEED}
        self.rng = seed_state(0)
        self.tag = 0
        self.core_status = 0
        self.frames_ok = self.frames_rejected = self.bytes_dropped = 0
        self.steps = self.cycles = 0
        self.fault = None
        self.faults = 0
        self._decoder = FrameDecoder(MAX_PAYLOAD, 2)
        self._net = None            # (GoldenCore, index arrays) of the decoded network
        self._net_valid = False
        self._hist = None           # the sources' kept spikes (CoreState.history); None: reset
        # Per source: STEPs since its SRC word was written (or power-up), which says the
        # entry and region it is at (spikestream.memory_map, "History").
        self._moves = {src: 0 for src in range(config.sources)}
        # The spike table (entry -> [bounds[0..lanes], qbase]) and the spike inputs' id
        # memory (address -> id), as the core keeps them (spikestream.memory_map).
        self._table = {}
        self._in_mem = {}
        start = contents_after(init, config)       # what SoC(init=...) starts with
        for (mem, lane), words in start.lane.items():
            for addr, word in words.items():
                if mem == Mem.STATE:
                    self._state[lane, addr] = word
                else:
                    self._words[mem][lane][addr] = word
        for mem, words in start.table.items():
            for addr, word in words.items():
                self._words[mem][0][addr] = word
        for reg, word in start.regs.items():
            if reg == CoreReg.SEED:
                self.rng = seed_state(word)
            else:
                self._regs[reg] = word
        self.tag = int(tag)

    # --- the byte stream ----------------------------------------------------------------------

    def receive(self, data):
        """Bytes that arrive while the link is idle: returns the first frame they complete as
        ``(status, payload)`` (``None`` if none), after which the link is busy, so the rest
        of ``data`` is dropped and counted, and the decoder starts afresh."""
        start = 0
        while True:
            end = data.find(END, start)
            if end < 0:
                self._decoder.feed(data[start:])
                return None
            frames = self._decoder.feed(data[start:end + 1])
            if frames:
                self.drop(len(data) - end - 1)
                self._decoder = FrameDecoder(MAX_PAYLOAD, 2)
                return frames[0]
            start = end + 1

    def drop(self, count):
        """Count bytes that arrived while the link was busy (the SoC drops them)."""
        self.bytes_dropped += int(count)

    def answer(self, status, payload):
        """Act on one received frame; yields the response payloads in order (a RUN or
        GENERATE yields its TOKEN frames one by one, as its timesteps finish; a STREAM its
        ``STREAM_START`` payload, then each token's bytes as a :class:`Raw`, then its final
        payload). :func:`wire_bytes` turns each item into the bytes sent."""
        if status != LinkStatus.OK:
            self.frames_rejected += 1
            yield response(NACK_OP, 0, status)
            return
        op, seq, body = payload[0], payload[1], bytes(payload[2:])
        sent = 0
        try:
            st, out = check_request(payload, self.config), b""
            if st == LinkStatus.OK:
                handler = {Cmd.IDENTIFY: self._identify, Cmd.WRITE: self._write,
                           Cmd.READ: self._read, Cmd.RESET: self._reset, Cmd.RUN: self._run,
                           Cmd.GENERATE: self._generate, Cmd.STATUS: self._status,
                           Cmd.TAG: self._tag, Cmd.STREAM: self._stream}[op]
                steps = handler(seq, body)
                while True:
                    # By hand rather than ``yield from``: the TOKEN frames sent before a
                    # failure are counted for its DONE body.
                    try:
                        token_frame = next(steps)
                    except StopIteration as stop:
                        st, out = stop.value
                        break
                    sent += 1
                    yield token_frame
        except Exception as e:  # noqa: BLE001 - answered, as the module docstring says
            # (A STREAM catches what fails once it has started: here only what came first.)
            self._refuse(f"{type(e).__name__}: {e}")
            if op in (Cmd.RUN, Cmd.GENERATE):
                st, out = LinkStatus.BAD_TOKEN, struct.pack(DONE_FORMAT, sent)
            elif op == Cmd.STREAM:
                st, out = LinkStatus.BAD_TOKEN, _stream_end()
            else:
                st, out = LinkStatus.OUT_OF_RANGE, b""
        if st == LinkStatus.OK:
            self.frames_ok += 1
        else:
            self.frames_rejected += 1
        yield response(op, seq, st, out)

    def _refuse(self, why):
        lines = str(why).strip().splitlines()
        self.fault = lines[0] if lines else "unknown fault"
        self.faults += 1

    def respond(self, data):
        """Feed ``data`` (arriving while the link is idle) and return every byte the board
        sends back, framed."""
        got = self.receive(data)
        if got is None:
            return b""
        return b"".join(wire_bytes(p) for p in self.answer(*got))

    # --- requests, checked already (generators: they may yield TOKEN payloads, then return
    # the final (status, body)) ------------------------------------------------------------------

    def _identify(self, seq, body):
        yield from ()
        return LinkStatus.OK, identity_of(self.config, self.clock_hz, self.baud, self.tag)

    def _write(self, seq, body):
        yield from ()
        mem, lane, addr, count = struct.unpack_from(WRITE_HEADER, body)
        words = unpack_words(body[struct.calcsize(WRITE_HEADER):], self.word_bytes)
        self._refused = False
        self._store(Mem(mem), lane, addr, words)
        if self._refused:
            # The core refused a spike input's id or count (its write_error): the SoC answers
            # OUT_OF_RANGE and clears the flag (hw.link, W_SETTLE); the other words are in.
            return LinkStatus.OUT_OF_RANGE, b""
        if any(clears_tag(mem, a) for a in range(addr, addr + count)):
            self.tag = 0
        return LinkStatus.OK, b""

    def _read(self, seq, body):
        yield from ()
        mem, lane, addr, count = struct.unpack(READ_HEADER, body)
        words = [self._load(Mem(mem), lane, a) for a in range(addr, addr + count)]
        return LinkStatus.OK, pack_words(words, self.word_bytes)

    def _reset(self, seq, body):
        yield from ()
        self._state[:] = 0
        self._hist = None
        self._table = {}
        return LinkStatus.OK, b""

    def _run(self, seq, body):
        tokens = struct.unpack(f"<{len(body) // 2}H", body)
        for i, t in enumerate(tokens):
            if self._regs[CoreReg.TOKENS] and t >= self._regs[CoreReg.VOCAB]:
                return LinkStatus.BAD_TOKEN, struct.pack(DONE_FORMAT, i)
            try:
                token, cycles, spikes = self._step(t)
            except GoldenBoardError as e:
                self._refuse(e)
                return LinkStatus.BAD_TOKEN, struct.pack(DONE_FORMAT, i)
            yield response(Cmd.TOKEN, seq, LinkStatus.OK,
                           struct.pack(TOKEN_FORMAT, i, token, cycles, spikes))
        return LinkStatus.OK, struct.pack(DONE_FORMAT, len(tokens))

    def _generate(self, seq, body):
        token, count = struct.unpack(GENERATE_FORMAT, body)
        if self._regs[CoreReg.TOKENS] and token >= self._regs[CoreReg.VOCAB]:
            return LinkStatus.BAD_TOKEN, struct.pack(DONE_FORMAT, 0)
        for i in range(count):
            try:
                token, cycles, spikes = self._step(token)
            except GoldenBoardError as e:
                self._refuse(e)
                return LinkStatus.BAD_TOKEN, struct.pack(DONE_FORMAT, i)
            yield response(Cmd.TOKEN, seq, LinkStatus.OK,
                           struct.pack(TOKEN_FORMAT, i, token, cycles, spikes))
        return LinkStatus.OK, struct.pack(DONE_FORMAT, count)

    def _stream(self, seq, body):
        first, count = STREAM_BODY.unpack_from(body)
        if self._regs[CoreReg.TOKENS] and first >= self._regs[CoreReg.VOCAB]:
            return LinkStatus.BAD_TOKEN, _stream_end()
        try:
            self._core()            # a network that runs, before the stream is promised
        except GoldenBoardError as e:
            self._refuse(e)
            return LinkStatus.BAD_TOKEN, _stream_end()
        nbytes = stream_token_bytes(self.config)
        yield response(Cmd.STREAM_START, seq, LinkStatus.OK,
                       STREAM_START_BODY.pack(count=count, token_bytes=nbytes))
        token, crc, cycles, spikes = first, CRC_INIT, 0, 0
        for i in range(count):
            try:
                token, c, s = self._step(token)
            except Exception as e:  # noqa: BLE001 - answered, as the module docstring says
                self._refuse(e if isinstance(e, GoldenBoardError) else
                             f"{type(e).__name__}: {e}")
                return LinkStatus.BAD_TOKEN, _stream_end(i, cycles, spikes, crc)
            raw = Raw(token.to_bytes(nbytes, "little"))
            crc = crc16(raw, crc)
            cycles += c
            spikes += s
            yield raw
        return LinkStatus.OK, _stream_end(count, cycles, spikes, crc)

    def _status(self, seq, body):
        yield from ()
        return LinkStatus.OK, struct.pack(
            STATUS_FORMAT, self.core_status, self.frames_ok, self.frames_rejected,
            self.bytes_dropped, self.steps, self.cycles & 0xFFFFFFFF, self.tag)

    def _tag(self, seq, body):
        yield from ()
        (self.tag,) = struct.unpack(TAG_FORMAT, body)
        return LinkStatus.OK, b""

    # --- memories -----------------------------------------------------------------------------

    def _store(self, mem, lane, addr, words):
        """Words as the memories keep them: cut to the memory's width."""
        if mem == Mem.CORE:
            for a, w in zip(range(addr, addr + len(words)), words):
                if a == CoreReg.SEED:
                    self.rng = seed_state(w & RNG_MASK)
                else:
                    self._regs[CoreReg(a)] = w
                    self._net_valid = self._net_valid and a not in NETWORK_REGS
            return
        bits = _mask(self._layouts[mem].bits)
        if mem in (Mem.INPUT, Mem.INCOUNT):
            for a, w in zip(range(addr, addr + len(words)), words):
                self._input_word(mem, a, w & bits)
            return
        if mem == Mem.STATE:
            self._state[lane, addr:addr + len(words)] = [w & bits for w in words]
            return
        self._words[mem][lane][addr:addr + len(words)] = [w & bits for w in words]
        if mem == Mem.SRC:
            for a in range(addr, addr + len(words)):
                self._moves[a] = 0
        if mem not in (Mem.INPUT, Mem.INCOUNT):
            self._net_valid = False

    def _load(self, mem, lane, addr):
        if mem == Mem.CORE:
            return self.rng if addr == CoreReg.SEED else self._regs[CoreReg(addr)]
        if mem == Mem.STATE:
            return int(self._state[lane, addr])
        if mem == Mem.ACC:
            # Every accumulator is cleared by RESET and by the update that consumes it, so
            # between requests all of them read 0.
            return 0
        cfg = self.config
        if mem == Mem.SPIKES:
            p, i = addr >> cfg.spike_bits, addr & _mask(cfg.spike_bits)
            entry = self._table.get(self._entry(p)[0], ())
            return int(entry[i]) if i < len(entry) else 0
        if mem == Mem.INCOUNT:
            entry = self._table.get(self._entry(cfg.max_pops + addr, ahead=1)[0], ())
            return int(entry[cfg.lanes]) if entry else 0
        if mem == Mem.INPUT:
            k = addr >> cfg.input_bits
            base = self._entry(cfg.max_pops + k, ahead=1)[1]
            return self._in_mem.get(base + (addr & _mask(cfg.input_bits)), 0)
        return self._words[mem][lane][addr]

    def _source(self, s):
        """The ``SRC`` word of source ``s`` as a dict of ints."""
        return self._layouts[Mem.SRC].unpack(self._words[Mem.SRC][0][s])

    def _entry(self, s, ahead=0):
        """``(spike-table entry, region base)`` that source ``s`` is at (``ahead`` STEPs
        later): each STEP moves it on by one, from ``last`` back to ``first``."""
        w = self._source(s)
        h = w["last"] - w["first"] + 1
        k = (self._moves.get(s, 0) + ahead) % h if h > 0 else 0
        return w["first"] + k, w["base"] + k * w["stride"]

    def _input_word(self, mem, addr, word):
        """Whether the core takes a spike input's id or count (else it sets the write
        error flag and writes nothing); takes it if so."""
        cfg = self.config
        k = addr >> cfg.input_bits if mem == Mem.INPUT else addr
        w = self._source(cfg.max_pops + k) if k < cfg.max_inputs else None
        ok = w is not None and k < self._regs[CoreReg.INPUTS] and w["keep"]
        if ok and mem == Mem.INPUT:
            ok = (addr & _mask(cfg.input_bits)) < w["stride"] and word < w["size"]
        elif ok:
            ok = word <= w["stride"]
        if not ok:
            self._refused = True
            return
        entry, base = self._entry(cfg.max_pops + k, ahead=1)
        if mem == Mem.INPUT:
            self._in_mem[base + (addr & _mask(cfg.input_bits))] = word
        else:
            self._table[entry] = [0] * cfg.lanes + [word, base]

    # --- the core -----------------------------------------------------------------------------

    def network(self):
        """``(net, where, groups)``: the :class:`Network` the memories hold (vocabulary
        ``0 .. VOCAB-1``), decoded from the words, each neuron's ``(lane, address)`` per
        population, and the :class:`RouteGroup` s of its ``PROJ`` words (the phases the core
        runs); raises :class:`GoldenBoardError` if they hold none the golden model can
        run."""
        cfg, L = self.config, self.config.lanes
        n_pops, n_projs = self._regs[CoreReg.POPS], self._regs[CoreReg.PROJS]
        readout, vocab = self._regs[CoreReg.READOUT], self._regs[CoreReg.VOCAB]
        sampled, tokens = self._regs[CoreReg.SAMPLE], self._regs[CoreReg.TOKENS]
        n_inputs = self._regs[CoreReg.INPUTS]
        src_w = _fields(cfg.layout(Mem.SRC), self._words[Mem.SRC][0])
        inputs = [(f"input{k}", int(src_w["size"][cfg.max_pops + k])) for k in range(n_inputs)]
        if n_pops < 1:
            raise GoldenBoardError("the core's POPS register is 0: no network is loaded")
        pops_w = _fields(cfg.layout(Mem.POP), self._words[Mem.POP][0][:n_pops])
        params = [_fields(cfg.layout(Mem.PARAM), lane_words)
                  for lane_words in self._words[Mem.PARAM]]
        pops, where = [], []
        used = np.zeros(cfg.neurons_per_lane, dtype=bool)
        for i in range(n_pops):
            kind, base = int(pops_w["kind"][i]), int(pops_w["base"][i])
            reset, level_bits = int(pops_w["reset"][i]), int(pops_w["level_bits"][i])
            rows, size = int(pops_w["rows"][i]), int(pops_w["size"][i])
            if size < 1 or rows != -(-size // L) or base + rows > cfg.neurons_per_lane \
                    or used[base:base + rows].any():
                raise GoldenBoardError(f"population {i}: size {size}, rows {rows} at base "
                                       f"{base} is not a layout the golden model can run")
            used[base:base + rows] = True
            n = np.arange(size)
            lane_of, addr_of = n % L, base + n // L
            kw = {k: np.array([params[l][k][a] for l, a in zip(lane_of, addr_of)],
                              dtype=np.int64) for k in ("alpha", "theta", "rho", "jump", "bias")}
            try:
                pops.append(make_population(f"pop{i}", NeuronKind(kind), size, **kw,
                                            reset=ResetMode(reset), level_bits=level_bits))
            except ValueError:
                raise GoldenBoardError(f"population {i}: kind {kind} / reset {reset} is not "
                                       "one the golden model knows") from None
            where.append((lane_of, addr_of))
        proj_w = _fields(cfg.layout(Mem.PROJ), self._words[Mem.PROJ][0][:n_projs])
        # A row ends where the next starts (the core reads both words): its length is
        # their difference, modulo 2**rows_bits as the core's register holds it.
        starts = [_fields(cfg.layout(Mem.PTR), w)["start"] for w in self._words[Mem.PTR]]
        row_mask = (1 << cfg.rows_bits) - 1
        syns = [_fields(cfg.layout(Mem.SYN), w) for w in self._words[Mem.SYN]]
        # A PROJ word is a route group (one phase): its rows hold synapses into any
        # population from its own target on (their sums are complete before each update).
        # Each target population it reaches becomes one projection of the decoded network.
        pop_of = np.full(cfg.neurons_per_lane, -1, np.int64)
        pop_size = np.array([p.size for p in pops], np.int64)
        for i in range(n_pops):
            pop_of[int(pops_w["base"][i]):int(pops_w["base"][i]) + int(pops_w["rows"][i])] = i
        members = []                                   # (target, group, weights)
        groups = []                                    # (src, delay, dst)
        for j in range(n_projs):
            src, dst = int(proj_w["src"][j]), int(proj_w["dst"][j])
            delay = int(proj_w["delay"][j])
            if proj_w["token"][j]:
                src = INPUT
            elif src >= cfg.max_pops:
                src = spike_input(src - cfg.max_pops)
            k = input_index(src)
            if dst >= n_pops or (src >= n_pops) or (k is not None and k >= n_inputs):
                raise GoldenBoardError(f"projection {j}: source {src} or target {dst} is "
                                       "not a loaded population or input")
            if delay == 0 and src >= dst:
                raise GoldenBoardError(f"projection {j}: delay 0 from source {src} routed "
                                       f"before population {dst}, which does not follow it")
            n_src = vocab if src == INPUT else inputs[k][1] if k is not None else pops[src].size
            ptr_base = int(proj_w["ptr_base"][j])
            if ptr_base + n_src + 1 > cfg.ptr_depth:
                raise GoldenBoardError(f"projection {j}: row pointers beyond the table")
            weights = {dst: np.zeros((n_src, pops[dst].size), dtype=np.int64)}
            for lane in range(L):
                start = starts[lane][ptr_base:ptr_base + n_src]
                length = (starts[lane][ptr_base + 1:ptr_base + n_src + 1] - start) & row_mask
                if np.any(start + length > cfg.syn_depth):
                    raise GoldenBoardError(f"projection {j}, lane {lane}: a row reaches past "
                                           "the synapse memory")
                row = np.repeat(np.arange(n_src), length)
                word = np.repeat(start, length) + np.arange(len(row)) - np.repeat(
                    np.cumsum(length) - length, length)
                addr = syns[lane]["addr"][word]
                tpop = pop_of[np.minimum(addr, cfg.neurons_per_lane - 1)]
                tpop[addr >= cfg.neurons_per_lane] = -1
                target = (addr - pops_w["base"][np.maximum(tpop, 0)].astype(np.int64)) * L + lane
                bad = (tpop < dst) | (target >= pop_size[tpop])
                if np.any(bad):
                    raise GoldenBoardError(f"projection {j}, lane {lane}: a synapse targets "
                                           "no neuron of its population or a later one")
                for q in np.unique(tpop):
                    w = weights.setdefault(int(q), np.zeros((n_src, pops[q].size), np.int64))
                    at = tpop == q
                    np.add.at(w, (row[at], target[at]), syns[lane]["weight"][word[at]])
            groups.append((src, delay, dst))
            members += [(q, len(groups) - 1, w) for q, w in weights.items()]
        members.sort(key=lambda m: m[0])        # the network lists projections by target
        projs = [Projection(src=groups[g][0], dst=q, delay=groups[g][1], weights=w)
                 for q, g, w in members]
        route = [RouteGroup(src, delay, dst, tuple(i for i, m in enumerate(members)
                                                   if m[1] == g))
                 for g, (src, delay, dst) in enumerate(groups)]
        try:
            net = Network(vocab=list(range(vocab)) if (sampled or tokens) else [],
                          populations=pops, projections=projs,
                          readout=readout if sampled else None, inputs=inputs)
            net.check()
        except NetworkError as e:
            raise GoldenBoardError(f"the memories hold no network the golden model can run: "
                                   f"{e}") from None
        return net, where, route

    def _core(self):
        if not self._net_valid:
            try:
                net, where, route = self.network()
                core = GoldenCore(net, self.config.lanes, self.timing, groups=route)
            except GoldenBoardError:
                raise
            except Exception as e:  # noqa: BLE001 - any word may be in the memories
                raise GoldenBoardError(f"the memories hold no network the golden model can "
                                       f"run: {type(e).__name__}: {e}") from None
            st = core.get_state()
            if self._hist is None or {k: [tuple(x.shape) for x in h]
                                      for k, h in self._hist.items()} != \
                    {k: [tuple(x.shape) for x in h] for k, h in st.history.items()}:
                # Spikes of another network (or none): the new one starts from none.
                self._hist = st.history
            self._net = core, where
            self._net_valid = True
        return self._net

    def _spike_inputs(self, net):
        """The spike vectors of this STEP: each input's entry and region the STEP moved it
        to, as the host filled them (INPUT, INCOUNT) before it."""
        out = []
        for k, spec in enumerate(net.inputs):
            x = np.zeros(spec.size, np.int64)
            s = self.config.max_pops + k
            if self._source(s)["keep"]:
                entry, base = self._entry(s)
                count = self._table.get(entry, [0] * (self.config.lanes + 2))[self.config.lanes]
                ids = [self._in_mem.get(base + i, 0) for i in range(count)]
                x[[i for i in ids if i < spec.size]] = 1
            out.append(torch.from_numpy(x)[None])
        return out

    def _step(self, token):
        """One timestep with input ``token``: returns ``(sampled token, cycles, spikes)``."""
        core, where = self._core()
        net = core.net
        if self._hist is None:                  # after a RESET
            core.reset()
            self._hist = core.get_state().history
        layout = self._layouts[Mem.STATE]
        fields = [_fields(layout, self._state[lane_of, addr_of]) for lane_of, addr_of in where]
        as_tensor = lambda x: torch.as_tensor(x, dtype=torch.int64)[None]
        core.set_state(CoreState(v=[as_tensor(f["v"]) for f in fields],
                                 a=[as_tensor(f["a"]) for f in fields],
                                 s=[as_tensor(f["s"]) for f in fields],
                                 history=self._hist, rng=[self.rng]))
        core.set_temperature_word(self._regs[CoreReg.TEMPERATURE])
        for src in self._moves:                 # every source moves on by one entry
            self._moves[src] += 1
        r = core.step([token] if net.has_token_input else None, self._spike_inputs(net))
        st = core.get_state()
        self.rng = st.rng[0]
        self._hist = st.history
        for i, (lane_of, addr_of) in enumerate(where):
            self._state[lane_of, addr_of] = _pack(layout, v=st.v[i][0].numpy(),
                                                  a=st.a[i][0].numpy(), s=st.s[i][0].numpy())
        self._queue_spikes(net, r.values)
        cycles = int(r.cycles[0])
        spikes = sum(int(s[0].sum()) for s in r.spikes)
        self.steps += 1
        self.cycles += cycles
        return int(r.token[0]), cycles, spikes

    def _queue_spikes(self, net, values):
        """What a STEP leaves in the lanes' QUEUE words and the spike table: every kept
        population's spikes, lane by lane in address order, in the entry and region it
        moved to; then every spike input's next entry is emptied for the host to fill
        (spikestream.memory_map, "History")."""
        cfg, L = self.config, self.config.lanes
        qlay = self._layouts[Mem.QUEUE]
        for p, pop in enumerate(net.populations):
            if not self._source(p)["keep"]:
                continue
            entry, qbase = self._entry(p)
            q = values[p][0].numpy()
            n = np.flatnonzero(q)
            counts = np.bincount(n % L, minlength=L)
            for lane in range(L):
                for c, k in enumerate(n[n % L == lane]):
                    if qbase + c < cfg.queue_depth:
                        self._words[Mem.QUEUE][lane][qbase + c] = qlay.pack(row=int(k) // L,
                                                                            q=int(q[k]))
            self._table[entry] = [0, *np.cumsum(counts).tolist(), qbase]
        for k in range(min(len(net.inputs), cfg.max_inputs)):
            if self._source(cfg.max_pops + k)["keep"]:
                self._table[self._entry(cfg.max_pops + k, ahead=1)[0]] = [0] * (L + 2)
