"""The spike-routing core: lanes, trees, tables, scheduler, sampler and host ports."""

import operator
from functools import reduce
from types import SimpleNamespace

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikestream.formats import STATE_BITS, TEMPERATURE_BITS
from spikestream.memory_map import (COUNTER_BITS, LANE_MEMS, READ_ONLY_MEMS, CoreReg, Mem, Op,
                                    addr_bits, bits_for, contents_after)
from .bram import BlockRAM, PipelinedRAM
from .fabric import LaneArray
from .layouts import (Command, LaneOp, Result, StatusWord, lane_bus_layout,
                      read_request_layout, read_response_layout, trace_signature,
                      word_layout, write_request_layout)
from .sampler import Sampler
from spikestream.timing import (COMMAND_LATENCY, DISPATCH_CYCLES, READ_LATENCY, core_timing,
                                reset_settle)
from .lane import _delay

__all__ = ["Core"]


def _prefix_sums(m, values, width, stages):
    """Inclusive prefix sums of ``values`` after ``1 + stages`` register levels: one to bring
    the values together from all over the die, then a Kogge-Stone adder spread over
    ``stages``."""
    n = len(values)
    levels = max(0, (n - 1).bit_length())
    per_stage = -(-levels // stages) if levels else 0
    x = [Signal(width, name=f"prefix_in{i}") for i in range(n)]
    m.d.sync += [r.eq(v) for r, v in zip(x, values)]
    d = 1
    for s in range(stages):
        for _ in range(per_stage):
            if d < n:
                x = [x[i] + x[i - d] if i >= d else x[i] for i in range(n)]
                d *= 2
        regs = [Signal(width, name=f"prefix{s}_{i}") for i in range(n)]
        m.d.sync += [r.eq(v) for r, v in zip(regs, x)]
        x = regs
    return x


class Core(wiring.Component):
    """The spike-routing core for one :class:`~spikestream.memory_map.CoreConfig`.

    It runs the network loaded into its memories (see spikestream/memory_map.py) timestep by
    timestep exactly as :class:`models.golden.GoldenCore` with ``timing=core.timing`` does:
    every spike value, every ``v``/``a``/``s``, the sampled token, the outputs the host reads
    and the cycles per timestep.

    Ports are served only while no command runs (their ``ready`` is low otherwise); a
    command has priority over a write, a write over a read.

    Attributes
    ----------
    write : In(stream.Signature(write_request_layout(config)))
        Write ``data`` to word ``addr`` of memory ``mem`` in lane ``lane`` (0 for global
        memories). A bad memory id, a read-only memory, a lane or address out of range, or
        a ``CORE`` value out of range writes nothing and sets ``status.write_error``.
    read : In(stream.Signature(read_request_layout(config)))
        Read a word; answered on ``read_data``.
    read_data : Out(stream.Signature(read_response_layout(config)))
        The word, or ``error`` (and ``status.read_error``) for a refused read.
    cmd : In(stream.Signature(Command))
        ``Op.RESET``, ``Op.STEP`` with an input token (ignored unless the network reads the
        token input, ``CoreReg.TOKENS``), or ``Op.CLEAR``.
    result : Out(stream.Signature(Result))
        One per command. For STEP: the sampled token (0 without a readout), the timestep's
        cycles (the cycle model's count: ``result.valid`` rises ``COMMAND_LATENCY + 1 +
        cycles`` cycles after the command's handshake), the number of neurons of all
        populations that spiked, and ``error`` if the token was outside the vocabulary
        (nothing ran).
    status : Out(StatusWord)
        ``busy`` and the sticky error flags (cleared by ``Op.CLEAR``).
    trace : Out(trace_signature(config))
        Only with ``trace=True``: the neuron pipeline's write-backs, for testbenches.
        ``trace.lanes[l]`` shows, in the cycle lane ``l`` writes a neuron's new state back,
        ``valid``, the local ``addr``, the new ``v``, ``a`` and ``s`` and its spike value
        ``q``; ``trace.valid`` is the OR of the lanes' ``valid``. Pure observation (wires
        from existing registers): it changes nothing in the core's behaviour or timing.

    Parameters
    ----------
    config : CoreConfig
    init : iterable of :class:`~spikestream.memory_map.Write`, optional
        Initial contents: the core powers up as if these writes had gone through its write
        port, e.g. ``image_writes(image, config) + settings_writes(...)``, so that a
        simulation or a bitstream starts with an image loaded and ready to STEP (power-up
        is the state after a RESET unless ``init`` writes ``STATE`` words). ``rst`` returns
        the ``CORE`` registers and the sampler to these values; memories keep what they
        hold. A write the port would refuse raises ``ValueError``.
    trace : bool
        Add the ``trace`` port (off in board builds).
    lutram : collection of str, optional
        Names of the lane memories that the build puts in LUT RAM (the build's choice,
        :func:`spikestream.capacity.lutram_memories`); the others are built as block RAMs with
        registered outputs. Default: every candidate. Behaviour does not depend on it.
    """

    def __init__(self, config, init=None, trace=False, lutram=None):
        self._config = config
        self._lutram = lutram
        try:
            self._contents = contents_after(init or (), config)
        except ValueError:
            # The refused image is the error to report, not the never-elaborated core.
            # Amaranth warns (UnusedElaboratable) from __del__ about an Elaboratable never
            # elaborated and offers no public way to say "never meant to be": this private
            # flag is the only way to keep that warning from following the real error.
            self._MustUse__silence = True
            raise
        self._trace = bool(trace)
        members = {
            "write": In(stream.Signature(write_request_layout(config))),
            "read": In(stream.Signature(read_request_layout(config))),
            "read_data": Out(stream.Signature(read_response_layout(config))),
            "cmd": In(stream.Signature(Command)),
            "result": Out(stream.Signature(Result)),
            "status": Out(StatusWord),
        }
        if self._trace:
            members["trace"] = Out(trace_signature(config))
        super().__init__(members)

    @property
    def config(self):
        return self._config

    @property
    def contents(self):
        """The :class:`~spikestream.memory_map.Contents` the core starts with (from ``init``)."""
        return self._contents

    @property
    def timing(self):
        """The :class:`~spikestream.formats.CoreTiming` this core runs to."""
        return core_timing(self._config.stages)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        L, NPL, T = cfg.lanes, cfg.neurons_per_lane, cfg.stages
        S, P0, R = cfg.sources, cfg.max_pops, cfg.ring_depth
        timing = self.timing

        # Lanes and the trees that reach them ------------------------------------------------
        BUS = lane_bus_layout(cfg)
        init = self._contents
        m.submodules.lanes = lanes = LaneArray(cfg, init=init, trace=self._trace,
                                               lutram=self._lutram)
        if self._trace:
            wiring.connect(m, wiring.flipped(self.trace), lanes.trace)
        root = lanes.gather
        all_done = lanes.done

        cbus = Signal(BUS, name="cbus")      # the scheduler's side of the lane bus
        spike = Signal(BUS.members["spike"], name="spike")
        bus_in = Signal(BUS, name="bus_in")
        m.d.comb += [bus_in.eq(cbus), bus_in.spike.eq(spike), lanes.bus.eq(bus_in)]
        m.d.sync += cbus.op.eq(LaneOp.NOP)   # ops are one-cycle pulses

        # Tables --------------------------------------------------------------------------------
        POP = word_layout(cfg, Mem.POP)
        PROJ = word_layout(cfg, Mem.PROJ)
        SRC = word_layout(cfg, Mem.SRC)
        SPK = data.StructLayout({
            "bounds": data.ArrayLayout(unsigned(cfg.size_bits), L + 1),
            "qbase": unsigned(cfg.qbase_bits),
        })
        def table_init(layout, mem):
            return [layout.from_bits(word) for word in init.words(mem)]

        m.submodules.pop_table = pop_t = Memory(shape=POP, depth=cfg.max_pops,
                                                init=table_init(POP, Mem.POP))
        m.submodules.proj_table = proj_t = Memory(shape=PROJ, depth=cfg.max_projs,
                                                  init=table_init(PROJ, Mem.PROJ))
        # The spike table: per source and kept timestep, the lanes' windows of ranks (prefix
        # sums of their counts; for a spike input only the count, bounds[L]) and the base of
        # its region (spikestream.memory_map, History).
        # (LUT RAM slices, each read at its own copy of a registered address: see below.)
        # Its write's enable and address are decided a cycle ahead (write_ahead).
        m.submodules.spike_table = spk_t = PipelinedRAM(SPK.size, cfg.max_regions,
                                                        name="spike_table",
                                                        output_register=False,
                                                        write_ahead=True)
        # The spike inputs' ids, a region per input and kept timestep (a block RAM).
        m.submodules.input_ids = in_mem = BlockRAM(cfg.layout(Mem.INPUT).bits,
                                                   cfg.input_depth, attrs={"no_rw_check": 1},
                                                   name="input_ids", lutram=False)
        # Separate read ports (LUT RAM copies) for the scheduler and for host reads keep the
        # scheduler's table lookups free of address multiplexers.
        pop_rd, pop_wr = pop_t.read_port(domain="comb"), pop_t.write_port()
        proj_rd, proj_wr = proj_t.read_port(domain="comb"), proj_t.write_port()
        pop_host, proj_host = pop_t.read_port(domain="comb"), proj_t.read_port(domain="comb")
        spk_ahead = SimpleNamespace(en=spk_t.we, addr=spk_t.waddr)    # the next cycle's write
        spk_data = SPK(spk_t.wdata)                                     # this cycle's

        regs = init.regs
        n_pops = Signal(bits_for(cfg.max_pops), name="n_pops", init=regs[CoreReg.POPS])
        n_projs = Signal(bits_for(cfg.max_projs), name="n_projs", init=regs[CoreReg.PROJS])
        readout = Signal(cfg.pop_bits, name="readout", init=regs[CoreReg.READOUT])
        vocab = Signal(bits_for(cfg.max_vocab), name="vocab", init=regs[CoreReg.VOCAB])
        temperature = Signal(TEMPERATURE_BITS, name="temperature",
                             init=regs[CoreReg.TEMPERATURE])
        sampling = Signal(name="sampling", init=regs[CoreReg.SAMPLE])
        tokens_on = Signal(name="tokens_on", init=regs[CoreReg.TOKENS])
        n_inputs = Signal(bits_for(cfg.max_inputs), name="n_inputs", init=regs[CoreReg.INPUTS])

        m.submodules.sampler = sampler = Sampler(cfg.token_bits, seed=regs[CoreReg.SEED])
        sample_start = Signal(name="sample_start")     # a register: it fans out widely
        m.d.sync += sample_start.eq(0)
        m.d.comb += [sampler.temperature.eq(temperature), sampler.start.eq(sample_start)]

        # Sources: where each keeps its last timesteps (flip-flops: every STEP moves them
        # all on at once) -----------------------------------------------------------------------
        src_words = init.words(Mem.SRC)
        src_init = [SRC.from_bits(src_words[s] if s < len(src_words) else 0) for s in range(S)]
        src = [Signal(SRC, name=f"src{s}", init=src_init[s]) for s in range(S)]
        cur_t = [Signal(cfg.region_bits, name=f"cur_t{s}", init=src_init[s].first)
                 for s in range(S)]
        cur_q = [Signal(cfg.qbase_bits, name=f"cur_q{s}", init=src_init[s].base)
                 for s in range(S)]
        # Where each source moves on to at the next STEP: registers, recomputed every cycle
        # from the source's word and position (which change only at a STEP or a SRC write,
        # and the ports wait two cycles after either, see `w_hold`), so that no comparison
        # or adder stands between them and the writes and reads that use them.
        def moved(word, t, q):
            wrap = t == word.last
            return (Mux(wrap, word.first, t + 1)[:cfg.region_bits],
                    Mux(wrap, word.base, q + word.stride)[:cfg.qbase_bits])
        nxt_t, nxt_q = [], []
        for s in range(S):
            w0 = src_init[s]
            t0 = w0.first if w0.first == w0.last else (w0.first + 1) % (1 << cfg.region_bits)
            q0 = w0.base if w0.first == w0.last else (w0.base + w0.stride) % (1 << cfg.qbase_bits)
            nxt_t.append(Signal(cfg.region_bits, name=f"nxt_t{s}", init=t0))
            nxt_q.append(Signal(cfg.qbase_bits, name=f"nxt_q{s}", init=q0))
            t, q = moved(src[s], cur_t[s], cur_q[s])
            m.d.sync += [nxt_t[s].eq(t), nxt_q[s].eq(q)]
        # Each projection's read entry, moved on with its source (a token projection's is
        # unused: it reads the token ring at its delay).
        proj_words = init.words(Mem.PROJ)
        proj_init = [PROJ.from_bits(proj_words[j] if j < len(proj_words) else 0)
                     for j in range(cfg.max_projs)]
        rd = [Signal(cfg.slot_bits, name=f"rd{j}", init=proj_init[j].slot)
              for j in range(cfg.max_projs)]
        rd_first = [Signal(cfg.slot_bits, name=f"rd_first{j}", init=proj_init[j].first)
                    for j in range(cfg.max_projs)]
        rd_last = [Signal(cfg.slot_bits, name=f"rd_last{j}", init=proj_init[j].last)
                   for j in range(cfg.max_projs)]
        cq = Signal(Command, name="cq")
        cq_token_ok = Signal(name="cq_token_ok")       # checked as the command is taken

        def moved_slot(k):
            """Projection ``k``'s read entry one timestep on."""
            return Mux(rd[k] == rd_last[k], rd_first[k], rd[k] + 1)[:cfg.slot_bits]

        # The token input's last R tokens: ring[d] is the token of d timesteps ago (a shift
        # register, so a projection of delay d reads ring[d] without a subtraction in front
        # of the look-up); tok_n counts the timesteps since the RESET (up to R), so a token
        # of d timesteps ago exists if d < tok_n (a delay of R or more routes nothing).
        ring = Array(Signal(cfg.token_bits, name=f"ring{k}") for k in range(R))
        tok_n = Signal(range(R + 1), name="tok_n")
        # A STEP that runs moves every source, projection and the token ring on by one
        # timestep in its COMMAND cycle (a flip-flop set as the command is taken: this
        # enable reaches hundreds of flip-flops); its first lookups, in D1, read them moved.
        stepping = Signal(name="stepping")
        m.d.sync += stepping.eq(0)
        with m.If(stepping):
            m.d.sync += [ring[0].eq(cq.token), *(ring[k].eq(ring[k - 1]) for k in range(1, R)),
                         tok_n.eq(Mux(tok_n == R, R, tok_n + 1))]
            m.d.sync += [c.eq(n) for c, n in zip(cur_t, nxt_t)]
            m.d.sync += [c.eq(n) for c, n in zip(cur_q, nxt_q)]
            m.d.sync += [r.eq(moved_slot(k)) for k, r in enumerate(rd)]

        # Scheduler state -----------------------------------------------------------------------
        p = Signal(range(cfg.max_pops + 1), name="p")
        j = Signal(range(cfg.max_projs + 1), name="j")
        # p and j as they will be next cycle (the states below set these).
        p_next = Signal.like(p, name="p_next")
        j_next = Signal.like(j, name="j_next")
        ahead_first = Signal(name="ahead_first")    # j_next is 0 (COMMAND)
        # j_next is j + 1: D2 of a route, a flip-flop set in D1 (which always goes to D2)
        # with the route's own decision.
        ahead_next = Signal(name="ahead_next")
        m.d.sync += ahead_next.eq(0)
        # p moves to 0 (p_zero) or on by one (p_inc) or stays: the states set the flags.
        p_zero = Signal(name="p_zero")
        p_inc = Signal(name="p_inc")
        m.d.comb += [p_next.eq(Mux(p_zero, 0, Mux(p_inc, p + 1, p))),
                     j_next.eq(Mux(ahead_first, 0, Mux(ahead_next, j + 1, j)))]
        m.d.sync += [p.eq(p_next), j.eq(j_next)]
        # Dispatch's comparisons and the population table's address, registered from those:
        # p_live = p < n_pops, j_live = j < n_projs, and the population to look up (p, or
        # the readout's once all are updated). The tables and counts change only in IDLE.
        p_live = Signal(name="p_live")
        j_live = Signal(name="j_live")
        p_last = Signal(name="p_last")      # p is the last population
        pop_addr = Signal.like(pop_rd.addr, name="pop_addr", reset_less=True)
        # (For each of p_next's and j_next's three values from registers, the flags' choice
        # last.)
        def by_p_next(f):
            return Mux(p_zero, f(C(0, len(p))), Mux(p_inc, f(p + 1), f(p)))

        def by_j_next(f):
            return Mux(ahead_first, f(C(0, len(j))), Mux(ahead_next, f(j + 1), f(j)))
        m.d.sync += [p_live.eq(by_p_next(lambda q: q < n_pops)),
                     j_live.eq(by_j_next(lambda q: q < n_projs)),
                     p_last.eq(by_p_next(lambda q: q + 1 == n_pops)),
                     pop_addr.eq(by_p_next(lambda q: Mux(q < n_pops, q, readout)))]
        cycles = Signal(COUNTER_BITS, name="cycles")
        spikes = Signal(COUNTER_BITS, name="spikes")
        ph_pop = Signal(POP, name="ph_pop")
        ph_proj = Signal(PROJ, name="ph_proj")
        ph_route = Signal(name="ph_route")
        ph_update = Signal(name="ph_update")
        ph_last = Signal(name="ph_last")
        # Cycles left in a CLEAR, UPDATE or SAMPLE body, minus one: it ends in the cycle the
        # count goes negative, which its sign flip-flop tells without a comparison.
        countdown = Signal(signed(bits_for(max(NPL, cfg.max_vocab, cfg.max_regions) + 4 * T +
                                           timing.update_latency + 16) + 1),
                           name="countdown")
        finished = countdown[-1]
        # The spike table's write enable (and address) a cycle ahead of the states that
        # write it, from flip-flops: CLEAR's (countdown > 0 and within the table: the entry
        # countdown - 1), UPDATE's (countdown 0, which its first cycle never is: the count
        # starts at update_latency - 2 or more), RETIRE's (one-hot: the input it empties).
        clear_en = Signal(name="clear_we")
        clear_addr = Signal.like(spk_t.waddr, name="clear_waddr")
        update_we = Signal(name="update_we")
        retire_at = Signal(cfg.max_inputs, name="retire_at")
        assert timing.update_latency - 2 >= 1
        # CLEAR zeroes the spike table at the addresses below max_regions that the countdown
        # passes (the table's write enable and address are decided a cycle ahead).
        clear_from = max(NPL + T + 1, cfg.max_regions) - 1        # CLEAR's first countdown
        body = Signal(range(timing.broadcast_latency + 1), name="body")
        inj_on = Signal(name="inj_on")
        inj_ptr = Signal(cfg.ptr_bits, name="inj_ptr")
        res = Signal(Result, name="res")
        rdata = Signal(read_response_layout(cfg), name="rdata")
        err = self.status

        # Spikes onto the bus: gathered from the lanes (id + the projection's row base, and
        # the value), or an input's injected where the lanes' first spike would have been:
        # the token, or a spike input's ids read from the input memory, one per cycle.
        # (The lanes add the row-pointer base to their ids themselves; root is all zero
        # when nothing is gathered, so OR merges the injected spikes, of value 1.)
        inject_at = T + 1 + READ_LATENCY + T
        assert inject_at >= 4
        inj_now = Signal(name="inj_now")
        m.d.sync += inj_now.eq(0)
        in_left = Signal(cfg.size_bits, name="in_left")        # input ids still to read
        in_addr = Signal(addr_bits(cfg.input_depth), name="in_addr")
        in_going = Signal(name="in_going")                     # the reads may start
        in_read = Signal(name="in_read")
        in_ptr = Signal(cfg.ptr_bits, name="in_ptr")           # zero unless in_valid
        in_valid = Signal(name="in_valid")
        m.d.comb += in_read.eq(in_going & (in_left != 0))
        in_data = Signal(cfg.ptr_bits, name="in_data")
        m.d.comb += in_data.eq(in_mem.rdata)
        in_arrived = _delay(m, in_read, READ_LATENCY, "in_read")
        m.d.sync += [in_valid.eq(in_arrived),
                     in_ptr.eq(Mux(in_arrived, in_data + cbus.ptr_base, 0))]
        m.d.comb += [
            spike.valid.eq(root.valid | inj_now | in_valid),
            spike.ptr.eq(root.payload[:cfg.ptr_bits] | Mux(inj_now, inj_ptr, 0) | in_ptr),
            spike.q.eq(root.payload[cfg.ptr_bits:cfg.ptr_bits + cfg.q_bits] |
                       (inj_now | in_valid)),
        ]

        # Prefix sums of the lanes' spike counts, finished when an update's last count is.
        incl = _prefix_sums(m, [lanes.counts[k] for k in range(L)], cfg.size_bits, T)

        # Host port checks ----------------------------------------------------------------------
        def in_range(req, writing):
            ok = Signal(name="write_in_range" if writing else "read_in_range")
            lane_ok = req.lane < L
            with m.Switch(req.mem):
                for mem in Mem:
                    with m.Case(mem):
                        if writing and mem in READ_ONLY_MEMS:
                            continue
                        lane_cond = lane_ok if mem in LANE_MEMS else (req.lane == 0)
                        m.d.comb += ok.eq(lane_cond & (req.addr < cfg.depth(mem)))
            return ok

        # A taken write is registered as it is (wi), then checked in two register stages,
        # so that neither the checks nor the writes they enable start far away in the link's
        # logic or run through many levels: first (wa) its address and value against their
        # limits and its spike input's source word looked up; a cycle later (wq) the
        # verdicts combined and the spike input's checks against that source word. (The wi
        # and wa registers load every cycle: they are only looked at while wi_valid or
        # wa_valid says they hold a taken write.)
        core_limit = {reg: cfg.register_limit(reg) for reg in CoreReg
                      if cfg.register_limit(reg) is not None}
        # (Only the valid flags take the reset: the rest means nothing while they are low.)
        tp = Signal(write_request_layout(cfg), name="wi", reset_less=True)
        wi_valid = Signal(name="wi_valid")
        m.d.sync += [tp.eq(self.write.payload),
                     wi_valid.eq(self.write.valid & self.write.ready)]
        # Each limited CORE register's address and limit are compared as the write is
        # registered, side by side; the verdict is then one reduction of those flags.
        taken = self.write.payload
        wi_names = Signal(len(core_limit), name="wi_names", reset_less=True)
        wi_within = Signal(len(core_limit), name="wi_within", reset_less=True)
        m.d.sync += [
            wi_names.eq(Cat((taken.mem == Mem.CORE) & (taken.addr == reg) for reg in core_limit)),
            wi_within.eq(Cat(taken.data <= limit for limit in core_limit.values())),
        ]
        value_ok = Signal(name="value_ok")
        m.d.comb += value_ok.eq(~(wi_names & ~wi_within).any())
        wa = Signal(write_request_layout(cfg), name="wa", reset_less=True)
        wa_valid = Signal(name="wa_valid")
        wa_ok = Signal(name="wa_ok", reset_less=True)              # the address is in range ...
        wa_value_ok = Signal(name="wa_value_ok", reset_less=True)  # ... a CORE value in its limit
        tp_k = Signal(addr_bits(cfg.max_inputs), name="tp_input")
        wa_k = Signal(addr_bits(cfg.max_inputs), name="wa_input", reset_less=True)
        wa_src = Signal(SRC, name="wa_input_src", reset_less=True)
        m.d.comb += tp_k.eq(Mux(tp.mem == Mem.INPUT, tp.addr[cfg.input_bits:], tp.addr))
        # One-hot: the SRC or PROJ word the write names (qualified by its verdicts next).
        wa_src_at = Signal(S, name="wa_src_at", reset_less=True)
        wa_proj_at = Signal(cfg.max_projs, name="wa_proj_at", reset_less=True)
        m.d.sync += [wa_valid.eq(wi_valid), wa.eq(tp),
                     wa_ok.eq(in_range(tp, True)), wa_value_ok.eq(value_ok), wa_k.eq(tp_k),
                     wa_src_at.eq(Cat((tp.mem == Mem.SRC) & (tp.addr == s) for s in range(S))),
                     wa_proj_at.eq(Cat((tp.mem == Mem.PROJ) & (tp.addr == k)
                                       for k in range(cfg.max_projs)))]
        with m.Switch(tp_k):
            for k in range(cfg.max_inputs):
                with m.Case(k):
                    m.d.sync += wa_src.eq(src[P0 + k])
        w = Signal(write_request_layout(cfg), name="wq")
        w_valid = Signal(name="wq_valid")
        w_ok = Signal(name="wq_ok")
        w_lane = Signal(name="wq_lane")
        r = Signal(read_request_layout(cfg), name="rq")
        r_ok = Signal(name="rq_ok")
        r_lane = Signal(name="rq_lane")
        # The write's target, decoded as it is accepted: the registered write then acts on
        # single flip-flops. (These registers load every cycle: they are only looked at
        # while w_valid says they hold an accepted write.)
        w_is = {mem: Signal(name=f"wq_{mem.name.lower()}")
                for mem in (Mem.POP, Mem.PROJ, Mem.SRC, Mem.INPUT, Mem.INCOUNT)}
        w_reg = Signal(len(CoreReg), name="wq_reg")      # one-hot: the CORE register
        # One-hot: the SRC or PROJ word an accepted write changes (its enable, one flip-flop).
        w_src = Signal(S, name="wq_src")
        w_proj_at = Signal(cfg.max_projs, name="wq_proj_at")
        wa_go = wa_valid & wa_ok & wa_value_ok
        m.d.sync += [
            w_valid.eq(wa_valid),
            w.eq(wa), w_ok.eq(wa_ok & wa_value_ok),
            w_lane.eq(Cat(wa.mem == mem for mem in LANE_MEMS).any()),
            *(flag.eq(wa.mem == mem) for mem, flag in w_is.items()),
            w_reg.eq(Cat((wa.mem == Mem.CORE) & (wa.addr == reg) for reg in CoreReg)),
            w_src.eq(wa_src_at & wa_go.replicate(S)),
            w_proj_at.eq(wa_proj_at & wa_go.replicate(cfg.max_projs)),
        ]
        # A spike input's words are checked against its source word too, and land in the
        # region and entry that the next STEP moves it to. The source word, next entry and
        # next base, and the checks against them, are registered (like the verdicts above:
        # sources and counts change only by writes, which settle before the next is taken).
        w_k = Signal(addr_bits(cfg.max_inputs), name="wq_input")
        w_i = Signal(cfg.input_bits, name="wq_position")
        m.d.comb += w_i.eq(w.addr[:cfg.input_bits])
        w_in_t = Signal(cfg.region_bits, name="wq_input_entry")
        w_in_q = Signal(cfg.qbase_bits, name="wq_input_base")
        m.d.sync += w_k.eq(wa_k)
        with m.Switch(wa_k):
            for k in range(cfg.max_inputs):
                with m.Case(k):
                    m.d.sync += [w_in_t.eq(nxt_t[P0 + k]), w_in_q.eq(nxt_q[P0 + k])]
        in_word = Signal(cfg.layout(Mem.INPUT).bits, name="wq_id")
        in_count = Signal(cfg.layout(Mem.INCOUNT).bits, name="wq_count")
        m.d.comb += [in_word.eq(w.data), in_count.eq(w.data)]
        input_ok = (wa_k < n_inputs) & wa_src.keep
        dyn_ok = Signal(name="wq_dynamic_ok")
        # (The whole data word is checked: an id or count beyond its field is refused.)
        m.d.sync += dyn_ok.eq(Mux(wa.mem == Mem.INPUT,
                                  input_ok & (wa.addr[:cfg.input_bits] < wa_src.stride) &
                                  (wa.data < wa_src.size),
                                  input_ok & (wa.data <= wa_src.stride)))
        # An accepted spike-input count (in_go & w_is[INCOUNT] below), one flip-flop: it
        # enables the spike table's write.
        count_go = Signal(name="wq_count_go")
        m.d.sync += count_go.eq(wa_valid & wa_ok & wa_value_ok & (wa.mem == Mem.INCOUNT) &
                                input_ok & (wa.data <= wa_src.stride))

        # The CORE registers a read can name, and which one it names, decoded as it is
        # accepted (one-hot): the register read is then an AND-OR of flip-flops.
        readable = ((CoreReg.POPS, n_pops), (CoreReg.PROJS, n_projs),
                    (CoreReg.READOUT, readout), (CoreReg.VOCAB, vocab),
                    (CoreReg.TEMPERATURE, temperature), (CoreReg.SEED, sampler.state),
                    (CoreReg.SAMPLE, sampling), (CoreReg.TOKENS, tokens_on),
                    (CoreReg.INPUTS, n_inputs))
        r_reg = Signal(len(readable), name="rq_reg")
        r_k = Signal(addr_bits(cfg.max_inputs), name="rq_input")     # the input it names
        # One-hot: which of the registered table words (table_q below) answers a read that
        # is neither a lane's nor out of range; the last, CORE, when none of the others.
        table_mems = ((Mem.POP,), (Mem.PROJ,), (Mem.SRC,), (Mem.SPIKES, Mem.INCOUNT),
                      (Mem.INPUT,))
        r_table = Signal(len(table_mems) + 1, name="rq_table")
        asked = self.read.payload
        with m.If(self.read.valid & self.read.ready):
            m.d.sync += [r.eq(asked), r_ok.eq(in_range(asked, False)),
                         r_lane.eq(Cat(asked.mem == mem for mem in LANE_MEMS).any()),
                         r_reg.eq(Cat(asked.addr == reg for reg, _ in readable)),
                         r_table.eq(Cat(*(Cat(asked.mem == mem for mem in mems).any()
                                          for mems in table_mems),
                                        ~Cat(asked.mem == mem for mems in table_mems
                                             for mem in mems).any())),
                         r_k.eq(Mux(asked.mem == Mem.INPUT, asked.addr[cfg.input_bits:],
                                    asked.addr))]

        # Defaults of the table ports.
        m.d.comb += [
            pop_wr.addr.eq(w.addr), pop_wr.data.eq(w.data),
            proj_wr.addr.eq(w.addr), proj_wr.data.eq(w.data),
            pop_rd.addr.eq(pop_addr), proj_rd.addr.eq(j_next),
            pop_host.addr.eq(r.addr), proj_host.addr.eq(r.addr),
            sampler.seed.payload.eq(w.data),
        ]

        core_word = Signal(cfg.data_bits, name="core_word")
        # The words a table read may answer, in r_table's order: POP, PROJ, SRC, a spike
        # table field (SPIKES, INCOUNT), INPUT, CORE.
        table_q = [Signal(cfg.data_bits, name=f"table_q{k}") for k in range(6)]
        m.d.comb += core_word.eq(reduce(operator.or_, (Mux(r_reg[k], sig, 0)
                                                       for k, (_, sig) in enumerate(readable))))

        # What the next projection would route, read (in D1) from the spike table at the
        # projection's read entry. The table's address is registered (a copy per 16-bit
        # slice of the wide table), loaded with the entry of the next cycle's projection
        # (j_next), so no table lookup stands in front of the read (the table is written at
        # most up to the cycle before D1, and the read sees that). Host reads of the table
        # (SPIKES, INCOUNT) use the same port while the core is idle.
        # The projection table is read a cycle ahead too (at j_next) into a register, so that
        # D1 decides from flip-flops (the table is written only in IDLE, cycles before D1).
        # Its words are route groups (spikestream.network.route_groups): all projections of
        # one source and one delay, whose rows hold synapses into any population from `dst`
        # on; `dst` only orders the phases (a lane adds into whatever address a synapse has).
        next_proj = Signal(PROJ, name="next_proj")
        from_input = Signal(name="from_input")       # a spike input's projection
        m.d.sync += [next_proj.eq(proj_rd.data),
                     from_input.eq(~proj_rd.data.token & (proj_rd.data.src >= P0))]
        route_entry = Signal(SPK, name="route_entry")
        route_spikes = Signal(cfg.size_bits, name="route_spikes")
        # rd[j_next] without a lookup behind j_next's decision: j_next is 0 (COMMAND: rd[0],
        # or where a STEP moves it), j + 1 (D2, a route: rd[j + 1] registered from j, which
        # has held since the cycle before) or j (rd[j], the address register's own value).
        rd_ahead = Signal(cfg.slot_bits, name="rd_ahead")
        rd_cur = Signal(cfg.slot_bits, name="rd_cur")
        rd_j1 = Signal(cfg.slot_bits, name="rd_j1")
        rd0_moved = Signal(cfg.slot_bits, name="rd0_moved")
        m.d.sync += [rd_cur.eq(rd_ahead),
                     rd0_moved.eq(moved_slot(0))]
        with m.Switch(j):        # (rd[j + 1], without an adder in front of the look-up)
            for k in range(cfg.max_projs - 1):
                with m.Case(k):
                    m.d.sync += rd_j1.eq(rd[k + 1])
        m.d.comb += rd_ahead.eq(Mux(ahead_first, Mux(stepping, rd0_moved, rd[0]),
                                    Mux(ahead_next, rd_j1, rd_cur)))
        host_entry = Signal(cfg.region_bits, name="host_entry")
        host_table = Signal(name="host_table")       # the host reads the spike table now
        m.d.comb += spk_t.raddr.eq(Mux(host_table, host_entry, rd_ahead))
        m.d.comb += route_entry.eq(spk_t.rdata)
        # The token of this projection's delay, and whether that timestep was after a RESET.
        route_token = Signal(cfg.token_bits, name="route_token")
        m.d.comb += route_token.eq(ring[next_proj.delay])
        with m.If(next_proj.token):
            m.d.comb += route_spikes.eq(next_proj.delay < tok_n)
        with m.Else():
            m.d.comb += route_spikes.eq(route_entry.bounds[L])
        rt_spikes = Signal(cfg.size_bits, name="rt_spikes")
        rt_bounds = Signal(SPK.members["bounds"], name="rt_bounds")
        rt_qbase = Signal(SPK.members["qbase"], name="rt_qbase")
        rt_token = Signal(cfg.token_bits, name="rt_token")
        rt_input = Signal(name="rt_input")
        upd_qbase = Signal(SPK.members["qbase"], name="upd_qbase")
        upd_entry = Signal(cfg.region_bits, name="upd_entry")
        upd_keep = Signal(name="upd_keep")
        # upd_* hold population p's source (where its spikes go, whether it keeps them):
        # source 0's as a command starts (where a STEP moves it), and when an update finishes
        # and p moves on, the next source's from `nx_*`, which are looked up from p every
        # cycle (p stands still for many cycles before that), so no multiplexer over the
        # sources stands between p and the registers the phases read.
        nx_q = Signal(cfg.qbase_bits, name="upd_nx_q")
        nx_t = Signal(cfg.region_bits, name="upd_nx_t")
        nx_keep = Signal(name="upd_nx_keep")
        with m.Switch(p):
            for k in range(cfg.max_pops - 1):
                with m.Case(k):
                    m.d.sync += [nx_q.eq(cur_q[k + 1]), nx_t.eq(cur_t[k + 1]),
                                 nx_keep.eq(src[k + 1].keep)]
            with m.Default():
                m.d.sync += [nx_q.eq(0), nx_t.eq(0), nx_keep.eq(0)]

        # A word read from a lane is caught whenever the gather tree shows one (its enable is
        # the tree's own register, not a decision of the scheduler).
        lane_word = Signal(cfg.data_bits, name="lane_word")
        from_lane = Signal(name="from_lane")
        with m.If(root.valid):
            m.d.sync += lane_word.eq(root.payload)
        # The result's counts are the counters themselves: every state that ends in RESULT
        # counts its own cycle, RESULT counts nothing, and COMMAND zeroes both (a result
        # that ran no timestep counts none). No enable decided by the states stands in
        # front of the result's 64 count bits.
        m.d.comb += [
            self.result.payload.eq(res),
            self.result.payload.cycles.eq(cycles),
            self.result.payload.spikes.eq(spikes),
            self.read_data.payload.error.eq(rdata.error),
            self.read_data.payload.data.eq(Mux(from_lane, lane_word, rdata.data)),
        ]

        # The registered write, three cycles after its handshake (always in IDLE).
        with m.If(w_valid):
            # The lane bus's address and data fields are free while the core is idle.
            m.d.sync += [cbus.lane.eq(w.lane), cbus.mem.eq(w.mem), cbus.addr.eq(w.addr),
                         cbus.data.eq(w.data)]
        # Only a spike input's words wait on the source word's checks (dyn_ok), which keeps
        # them off every other write's enables.
        w_go = Signal(name="wq_go")
        in_go = Signal(name="wq_input_go")
        m.d.comb += [w_go.eq(w_valid & w_ok), in_go.eq(w_go & dyn_ok)]
        with m.If(w_valid & ~w_ok | w_go & (w_is[Mem.INPUT] | w_is[Mem.INCOUNT]) & ~dyn_ok):
            m.d.sync += err.write_error.eq(1)
        with m.If(w_go & w_lane):
            m.d.sync += cbus.op.eq(LaneOp.WRITE)
        m.d.comb += [pop_wr.en.eq(w_go & w_is[Mem.POP]), proj_wr.en.eq(w_go & w_is[Mem.PROJ]),
                     sampler.seed.valid.eq(w_go & w_reg[CoreReg.SEED])]
        for reg, target in ((CoreReg.POPS, n_pops), (CoreReg.PROJS, n_projs),
                            (CoreReg.READOUT, readout), (CoreReg.VOCAB, vocab),
                            (CoreReg.TEMPERATURE, temperature), (CoreReg.SAMPLE, sampling),
                            (CoreReg.TOKENS, tokens_on), (CoreReg.INPUTS, n_inputs)):
            with m.If(w_go & w_reg[reg]):
                m.d.sync += target.eq(w.data)
        w_src_word = SRC(w.data[:SRC.size])
        for s in range(S):
            with m.If(w_src[s]):
                m.d.sync += [src[s].eq(w_src_word), cur_t[s].eq(w_src_word.first),
                             cur_q[s].eq(w_src_word.base)]
        w_proj_word = PROJ(w.data[:PROJ.size])
        for k in range(cfg.max_projs):
            with m.If(w_proj_at[k]):
                m.d.sync += [rd[k].eq(w_proj_word.slot), rd_first[k].eq(w_proj_word.first),
                             rd_last[k].eq(w_proj_word.last)]
        # A spike input's id goes straight into its next region; its count into the spike
        # table (enable and address now, the word next cycle).
        m.d.comb += [in_mem.we.eq(in_go & w_is[Mem.INPUT]),
                     in_mem.waddr.eq(w_in_q + w_i), in_mem.wdata.eq(in_word)]
        count_pending = Signal(name="count_pending")
        count_word = Signal(SPK, name="count_word")
        m.d.sync += [count_pending.eq(count_go),
                     count_word.eq(0), count_word.bounds[L].eq(in_count),
                     count_word.qbase.eq(w_in_q)]
        # (The count's enable and address are given after the scheduler's, below.)
        with m.If(count_pending):
            m.d.comb += spk_data.eq(count_word)

        # After a reset the ports wait until the lanes have left theirs (reset_settle).
        settle = Signal(range(reset_settle(T) + 1), init=reset_settle(T), name="settle")
        settled = Signal(name="settled")
        # A write changes what later requests look up (source words and their next entries,
        # registered from them a cycle later): the ports wait until that has settled.
        w_hold = Signal(name="wq_hold")
        m.d.sync += w_hold.eq(w_valid)
        with m.If(settle != 0):
            m.d.sync += settle.eq(settle - 1)
        m.d.sync += settled.eq(settle <= 1)

        # Host reads of the global memories: the word of each, caught a cycle or two after
        # READ (the spike table's read is a cycle, the input memory's two).
        r_s = Signal(addr_bits(S), name="rq_src")
        r_p = Signal(cfg.pop_bits, name="rq_pop")
        r_f = Signal(cfg.spike_bits, name="rq_field")
        m.d.comb += [r_s.eq(r.addr),
                     r_p.eq(r.addr[cfg.spike_bits:]), r_f.eq(r.addr[:cfg.spike_bits])]
        r_src_word = Signal(SRC, name="rq_src_word")
        r_in_t = Signal(cfg.region_bits, name="rq_input_entry")
        r_in_q = Signal(cfg.qbase_bits, name="rq_input_base")
        r_pop_t = Signal(cfg.region_bits, name="rq_pop_entry")
        # (registered: READ_LOOK waits for them; the source word in two steps, a register
        # per four sources, then the group's in READ)
        r_src_group = [Signal(SRC, name=f"rq_src_group{g}") for g in range((S + 3) // 4)]
        for g, reg in enumerate(r_src_group):
            m.d.sync += reg.eq(Array(src[4 * g:4 * g + 4])[r_s[:2]])
        m.d.comb += r_src_word.eq(Array(r_src_group)[r_s[2:]])
        with m.Switch(r_k):
            for k in range(cfg.max_inputs):
                with m.Case(k):
                    m.d.sync += [r_in_t.eq(nxt_t[P0 + k]), r_in_q.eq(nxt_q[P0 + k])]
        with m.Switch(r_p):
            for k in range(cfg.max_pops):
                with m.Case(k):
                    m.d.sync += r_pop_t.eq(cur_t[k])
        # A host read of the spike table or the input memory is a chain of registers: READ
        # takes the entry, address and field (one-hot) from the request, READ_TABLE0
        # gives the addresses to the memories, READ_TABLE1 registers the table's word and
        # READ_TABLE2 picks the field from it with the one-hot select. (The request's
        # look-ups, the table's address multiplexer and its field multiplexer were one path
        # across the die.)
        host_input = Signal(name="host_input_read")      # the host reads the input memory
        host_entry_q = Signal(cfg.region_bits, name="host_entry_q")
        host_in_addr = Signal.like(in_mem.raddr, name="host_input_addr")
        host_field = Signal(L + 2, name="host_field")    # one-hot: bounds[0..L], qbase
        m.d.comb += in_mem.raddr.eq(Mux(host_input, host_in_addr, in_addr))
        spk_word = Signal(SPK, name="host_spike_entry")
        spk_field = Signal(cfg.layout(Mem.SPIKES).bits, name="host_spike_field")
        m.d.sync += spk_word.eq(spk_t.rdata)
        fields = [*(spk_word.bounds[k] for k in range(L + 1)), spk_word.qbase]
        m.d.comb += spk_field.eq(reduce(operator.or_, (Mux(host_field[k], f, 0)
                                                       for k, f in enumerate(fields))))

        with m.FSM(name="scheduler") as fsm:
            with m.State("IDLE"):
                # A taken write is registered while wi_valid, checked while wa_valid and done
                # while w_valid, and its effects settle while w_hold: commands, reads and the
                # next write wait.
                busy = wi_valid | wa_valid | w_valid | w_hold
                m.d.comb += [
                    self.cmd.ready.eq(settled & ~busy),
                    self.write.ready.eq(settled & ~self.cmd.valid & ~busy),
                    self.read.ready.eq(settled & ~self.cmd.valid & ~self.write.valid & ~busy),
                ]
                # Only on a handshake: a command offered while a write is still registered
                # must wait (taking it on valid alone ran it twice, once unacknowledged).
                with m.If(self.cmd.valid & self.cmd.ready):
                    # No network (POPS 0) runs nothing: refused as a bad token is.
                    token_ok = (n_pops != 0) & (~tokens_on | (self.cmd.payload.token < vocab))
                    m.d.sync += [cq.eq(self.cmd.payload), cq_token_ok.eq(token_ok),
                                 stepping.eq((self.cmd.payload.op == Op.STEP) & token_ok)]
                    m.next = "COMMAND"
                with m.Elif(self.read.valid & self.read.ready):
                    m.next = "READ_LOOK"

            # The request is registered; its look-ups into the sources are registered next.
            with m.State("READ_LOOK"):
                m.next = "READ"

            # The command registered in IDLE (COMMAND_LATENCY cycle).
            with m.State("COMMAND"):
                m.d.sync += [res.eq(0), res.op.eq(cq.op), cycles.eq(0), spikes.eq(0)]
                # A step starts at population 0, projection 0. They are reset for every
                # command (only a step uses them), which keeps the decoded command off the
                # projection table's look-ahead read address. A STEP that runs moves the
                # sources, projections and token ring on now (`stepping`).
                m.d.comb += [p_zero.eq(1), ahead_first.eq(1)]
                m.d.sync += [upd_qbase.eq(nxt_q[0]), upd_entry.eq(nxt_t[0]),
                             upd_keep.eq(src[0].keep)]
                with m.Switch(cq.op):
                    with m.Case(Op.RESET):
                        m.d.sync += [
                            cbus.op.eq(LaneOp.CLEAR),
                            tok_n.eq(0),
                            countdown.eq(clear_from),
                            clear_en.eq(int(0 < clear_from <= cfg.max_regions)),
                            clear_addr.eq(clear_from - 1),
                        ]
                        # CLEAR's first cycle zeroes address clear_from if there is one.
                        m.d.comb += [spk_ahead.en.eq(clear_from < cfg.max_regions),
                                     spk_ahead.addr.eq(clear_from)]
                        m.next = "CLEAR"
                    with m.Case(Op.STEP):
                        with m.If(cq_token_ok):
                            m.next = "D1"
                        with m.Else():
                            m.d.sync += [res.error.eq(1), err.cmd_error.eq(1)]
                            m.next = "RESULT"
                    with m.Case(Op.CLEAR):
                        m.d.sync += [err.write_error.eq(0), err.read_error.eq(0),
                                     err.cmd_error.eq(0)]
                        m.next = "RESULT"
                    with m.Default():
                        m.d.sync += [res.error.eq(1), err.cmd_error.eq(1)]
                        m.next = "RESULT"

            with m.State("READ"):
                m.d.sync += rdata.eq(0)
                with m.If(~r_ok):
                    m.d.sync += [rdata.error.eq(1), err.read_error.eq(1)]
                    m.next = "READ_DATA"
                with m.Elif(r_lane):
                    m.d.sync += [cbus.op.eq(LaneOp.READ), cbus.lane.eq(r.lane),
                                 cbus.mem.eq(r.mem), cbus.addr.eq(r.addr)]
                    m.next = "READ_WAIT"
                with m.Else():
                    spikes_read = r.mem == Mem.SPIKES
                    m.d.sync += [table_q[0].eq(pop_host.data), table_q[1].eq(proj_host.data),
                                 table_q[5].eq(core_word), table_q[2].eq(r_src_word),
                                 host_entry_q.eq(Mux(spikes_read, r_pop_t, r_in_t)),
                                 host_in_addr.eq(r_in_q + r.addr[:cfg.input_bits]),
                                 host_field.eq(Mux(spikes_read,
                                                   Cat(r_f == k for k in range(L + 2)),
                                                   1 << L))]     # INCOUNT: bounds[L]
                    m.next = "READ_TABLE0"

            with m.State("READ_TABLE0"):
                m.d.comb += [host_table.eq(1), host_input.eq(1), host_entry.eq(host_entry_q)]
                m.next = "READ_TABLE1"

            with m.State("READ_TABLE1"):
                m.next = "READ_TABLE2"

            with m.State("READ_TABLE2"):
                m.d.sync += table_q[3].eq(spk_field)
                m.d.sync += table_q[4].eq(in_mem.rdata)
                m.next = "READ_TABLE"

            with m.State("READ_TABLE"):
                # (An AND-OR of flip-flops: the read's one-hot choice and the words.)
                m.d.sync += rdata.data.eq(reduce(operator.or_, (Mux(r_table[k], q, 0)
                                                                for k, q in enumerate(table_q))))
                m.next = "READ_DATA"

            with m.State("READ_WAIT"):
                with m.If(root.valid):
                    m.d.sync += from_lane.eq(1)
                    m.next = "READ_DATA"

            with m.State("READ_DATA"):
                m.d.comb += self.read_data.valid.eq(1)
                with m.If(self.read_data.ready):
                    m.d.sync += from_lane.eq(0)
                    m.next = "IDLE"

            with m.State("CLEAR"):
                # Meanwhile the lanes zero their state; here the spike table is zeroed.
                # Next cycle's countdown is countdown - 1: zero that address if it is one
                # (and if the next cycle is still CLEAR's). The data is 0 by default.
                m.d.sync += [countdown.eq(countdown - 1),
                             clear_en.eq((countdown > 1) & (countdown <= cfg.max_regions + 1)),
                             clear_addr.eq(countdown - 2)]
                m.d.comb += [spk_ahead.en.eq(clear_en), spk_ahead.addr.eq(clear_addr)]
                with m.If(finished):
                    m.next = "RESULT"

            with m.State("RESULT"):
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    with m.If((cq.op == Op.STEP) & cq_token_ok):
                        m.d.sync += [countdown.eq(cfg.max_inputs - 1), retire_at.eq(1)]
                        m.next = "RETIRE"
                    with m.Else():
                        m.next = "IDLE"

            # After a STEP: empty every spike input's next entry, which the host fills (or
            # not) before the next STEP. Not part of the timestep's cycles.
            with m.State("RETIRE"):
                for k in range(cfg.max_inputs):
                    with m.If(retire_at[k]):
                        m.d.comb += [spk_ahead.en.eq((k < n_inputs) & src[P0 + k].keep),
                                     spk_ahead.addr.eq(nxt_t[P0 + k])]
                m.d.sync += [countdown.eq(countdown - 1), retire_at.eq(retire_at << 1)]
                with m.If(countdown == 0):
                    m.next = "IDLE"

            # Dispatch, first cycle: which phase is next?
            with m.State("D1"):
                m.d.sync += cycles.eq(cycles + 1)
                route = j_live & p_live & (next_proj.dst == p)
                m.d.sync += [
                    ph_pop.eq(pop_rd.data), ph_proj.eq(next_proj),
                    ph_route.eq(route), ahead_next.eq(route),
                    ph_update.eq(p_live), ph_last.eq(p_last),
                    rt_spikes.eq(route_spikes),
                    rt_bounds.eq(Mux(next_proj.token | from_input, 0, route_entry.bounds)),
                    rt_qbase.eq(route_entry.qbase),
                    rt_token.eq(route_token), rt_input.eq(from_input),
                ]
                m.next = "D2"

            # Dispatch, second cycle: start it (or skip a route with nothing to send).
            with m.State("D2"):
                m.d.sync += [cycles.eq(cycles + 1), body.eq(0), update_we.eq(0)]
                # Every phase field is loaded whatever comes next (they are free until the op
                # pulse), which keeps the decision off their enables.
                m.d.sync += [
                    cbus.ptr_base.eq(ph_proj.ptr_base),
                    cbus.bounds.eq(rt_bounds),
                    cbus.addr.eq(ph_pop.base),
                    cbus.size.eq(ph_pop.size),
                    cbus.mode.kind.eq(ph_pop.kind),
                    cbus.mode.reset.eq(ph_pop.reset),
                    cbus.mode.level_bits.eq(ph_pop.level_bits),
                    cbus.push.eq(upd_keep),
                    cbus.count.eq(Mux(ph_route, rt_spikes, Mux(ph_update, ph_pop.rows, vocab))),
                    cbus.qbase.eq(Mux(ph_route, rt_qbase, upd_qbase)),
                    countdown.eq(Mux(ph_update, ph_pop.rows + timing.update_latency - 2,
                                     vocab + timing.sample_latency - 2)),
                    inj_on.eq(ph_proj.token),
                    inj_ptr.eq(ph_proj.ptr_base + rt_token),
                    in_left.eq(Mux(rt_input, rt_spikes, 0)),
                    in_addr.eq(rt_qbase),
                    in_going.eq(0),
                ]
                with m.If(ph_route):       # (ahead_next: j moves on)
                    with m.If(rt_spikes == 0):
                        m.next = "D1"
                    with m.Else():
                        m.d.sync += cbus.op.eq(LaneOp.ROUTE)
                        m.next = "ROUTE"
                with m.Elif(ph_update):
                    m.d.sync += cbus.op.eq(LaneOp.UPDATE)
                    m.next = "UPDATE"
                with m.Elif(sampling):
                    m.d.sync += cbus.op.eq(LaneOp.SAMPLE)
                    m.d.sync += sample_start.eq(1)
                    m.next = "SAMPLE"
                with m.Else():
                    # No population (nothing loaded) and no readout: nothing to run.
                    m.next = "RESULT"

            with m.State("ROUTE"):
                m.d.sync += [cycles.eq(cycles + 1),
                             inj_now.eq(inj_on & (body == inject_at - 1))]
                with m.If(body == inject_at - 1 - READ_LATENCY - 1):
                    m.d.sync += in_going.eq(1)
                with m.If(in_read):
                    m.d.sync += [in_left.eq(in_left - 1), in_addr.eq(in_addr + 1)]
                with m.If(body != timing.broadcast_latency):
                    m.d.sync += body.eq(body + 1)
                # Before broadcast_latency no lane can be done, and the done tree may still
                # show the previous phase.
                with m.Elif(all_done):
                    m.d.sync += inj_on.eq(0)
                    m.next = "D1"

            with m.State("UPDATE"):
                m.d.sync += [cycles.eq(cycles + 1), countdown.eq(countdown - 1)]
                # The body ends the cycle after countdown 0 (it starts at 0 or more), writing
                # the population's spike counts (if it keeps them): enable and address
                # decided here.
                m.d.sync += update_we.eq((countdown == 1) & upd_keep)
                with m.If(update_we):
                    m.d.comb += [spk_ahead.en.eq(1), spk_ahead.addr.eq(upd_entry)]
                with m.If(finished):
                    bounds = Signal(SPK.members["bounds"], name="bounds")
                    m.d.comb += bounds.eq(Cat(C(0, cfg.size_bits), *incl))
                    m.d.comb += [
                        spk_data.bounds.eq(bounds),
                        spk_data.qbase.eq(upd_qbase),
                    ]
                    m.d.sync += [spikes.eq(spikes + incl[-1]),
                                 upd_qbase.eq(nx_q), upd_entry.eq(nx_t), upd_keep.eq(nx_keep)]
                    m.d.comb += p_inc.eq(1)
                    with m.If(ph_last & ~sampling):
                        # No readout: the timestep ends with its last update.
                        m.next = "RESULT"
                    with m.Else():
                        m.next = "D1"

            with m.State("SAMPLE"):
                m.d.sync += [cycles.eq(cycles + 1), countdown.eq(countdown - 1)]
                m.d.comb += [
                    sampler.i.valid.eq(root.valid),
                    sampler.i.payload.eq(root.payload[:STATE_BITS]),
                ]
                with m.If(finished):
                    m.d.sync += res.token.eq(sampler.token)
                    m.next = "RESULT"

        m.d.comb += err.busy.eq(~fsm.ongoing("IDLE"))
        # A spike input's count goes into the spike table (enable and address a cycle
        # ahead). Written after the scheduler's states, so that its enable, a flip-flop,
        # is the last multiplexer in front of the table's write port, not the first: a
        # write is only ever registered in IDLE (commands wait for it), where no state
        # writes the table.
        with m.If(count_go):
            m.d.comb += [spk_ahead.en.eq(1), spk_ahead.addr.eq(w_in_t)]
        assert DISPATCH_CYCLES == 2 and COMMAND_LATENCY == 1
        assert timing.update_latency >= 2        # an UPDATE body never ends in its first cycle
        return m
