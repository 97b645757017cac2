"""The spike-routing core: lanes, trees, tables, scheduler, sampler and host ports."""

import operator
from functools import reduce
from types import SimpleNamespace

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikestream.formats import STATE_BITS, TEMPERATURE_BITS
from spikestream.memory_map import (COUNTER_BITS, CoreReg, Mem, Op, addr_bits, bits_for,
                          contents_after)
from .bram import PipelinedRAM
from .fabric import LaneArray
from .layouts import (Command, LaneOp, Result, StatusWord, lane_bus_layout,
                      read_request_layout, read_response_layout, trace_signature,
                      word_layout, write_request_layout)
from .sampler import Sampler
from spikestream.timing import (COMMAND_LATENCY, DISPATCH_CYCLES, NEURON_LATENCY, READ_LATENCY, core_timing,
                     reset_settle)

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
    every spike, every ``v``/``a``, the sampled token, and the cycles per timestep.

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
        ``Op.RESET``, ``Op.STEP`` with an input token, or ``Op.CLEAR``.
    result : Out(stream.Signature(Result))
        One per command. For STEP: the sampled token, the timestep's cycles (the cycle
        model's count: ``result.valid`` rises ``COMMAND_LATENCY + 1 + cycles`` cycles after
        the command's handshake), the spikes of all populations, and ``error`` if the token
        was outside the vocabulary (nothing ran).
    status : Out(StatusWord)
        ``busy`` and the sticky error flags (cleared by ``Op.CLEAR``).
    trace : Out(trace_signature(config))
        Only with ``trace=True``: the neuron pipeline's write-backs, for testbenches.
        ``trace.lanes[l]`` shows, in the cycle lane ``l`` writes a neuron's new state back,
        ``valid``, the local ``addr``, the new ``v`` and ``a`` and whether it ``spike`` d;
        ``trace.valid`` is the OR of the lanes' ``valid``. Pure observation (wires from
        existing registers): it changes nothing in the core's behaviour or timing.

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
        SPK = data.StructLayout({
            "bounds": data.ArrayLayout(unsigned(cfg.size_bits), L + 1),
            "qbase": unsigned(addr_bits(cfg.queue_depth)),
        })
        def table_init(layout, mem):
            return [layout.from_bits(word) for word in init.words(mem)]

        m.submodules.pop_table = pop_t = Memory(shape=POP, depth=cfg.max_pops,
                                                init=table_init(POP, Mem.POP))
        m.submodules.proj_table = proj_t = Memory(shape=PROJ, depth=cfg.max_projs,
                                                  init=table_init(PROJ, Mem.PROJ))
        # Spike counts of each population's last update, by timestep parity: the lanes'
        # windows of ranks (prefix sums of their counts) and the queue base.
        # (LUT RAM slices, each read at its own copy of a registered address: see below.)
        # Its write's enable and address are decided a cycle ahead (write_ahead).
        m.submodules.spike_table = spk_t = PipelinedRAM(SPK.size, 2 * cfg.max_pops,
                                                        name="spike_table",
                                                        output_register=False,
                                                        write_ahead=True)
        # Separate read ports (LUT RAM copies) for the scheduler and for host reads keep the
        # scheduler's table lookups free of address multiplexers.
        pop_rd, pop_wr = pop_t.read_port(domain="comb"), pop_t.write_port()
        proj_rd, proj_wr = proj_t.read_port(domain="comb"), proj_t.write_port()
        pop_host, proj_host = pop_t.read_port(domain="comb"), proj_t.read_port(domain="comb")
        spk_ahead = SimpleNamespace(en=spk_t.we, addr=spk_t.waddr)    # the next cycle's write
        spk_data = SPK(spk_t.wdata)                                     # this cycle's
        # A third projection table port looks up the projection of the next cycle, whose
        # entry in the (wide) spike table is then read at a registered address.
        proj_ahead = proj_t.read_port(domain="comb")

        regs = init.regs
        n_pops = Signal(bits_for(cfg.max_pops), name="n_pops", init=regs[CoreReg.POPS])
        n_projs = Signal(bits_for(cfg.max_projs), name="n_projs", init=regs[CoreReg.PROJS])
        readout = Signal(cfg.pop_bits, name="readout", init=regs[CoreReg.READOUT])
        vocab = Signal(bits_for(cfg.max_vocab), name="vocab", init=regs[CoreReg.VOCAB])
        temperature = Signal(TEMPERATURE_BITS, name="temperature",
                             init=regs[CoreReg.TEMPERATURE])

        m.submodules.sampler = sampler = Sampler(cfg.token_bits, seed=regs[CoreReg.SEED])
        sample_start = Signal(name="sample_start")     # a register: it fans out widely
        m.d.sync += sample_start.eq(0)
        m.d.comb += [sampler.temperature.eq(temperature), sampler.start.eq(sample_start)]

        # Scheduler state -----------------------------------------------------------------------
        p = Signal(range(cfg.max_pops + 1), name="p")
        j = Signal(range(cfg.max_projs + 1), name="j")
        parity = Signal(name="parity")
        # p, j and parity as they will be next cycle (the states below set these).
        p_next = Signal.like(p, name="p_next")
        j_next = Signal.like(j, name="j_next")
        parity_next = Signal(name="parity_next")
        m.d.comb += [p_next.eq(p), j_next.eq(j), parity_next.eq(parity)]
        m.d.sync += [p.eq(p_next), j.eq(j_next), parity.eq(parity_next)]
        # Dispatch's comparisons and the population table's address, registered from those:
        # p_live = p < n_pops, j_live = j < n_projs, and the population to look up (p, or
        # the readout's once all are updated). The tables and counts change only in IDLE.
        p_live = Signal(name="p_live")
        j_live = Signal(name="j_live")
        pop_addr = Signal.like(pop_rd.addr, name="pop_addr", reset_less=True)
        p_next_live = p_next < n_pops
        m.d.sync += [p_live.eq(p_next_live), j_live.eq(j_next < n_projs),
                     pop_addr.eq(Mux(p_next_live, p_next, readout))]
        token = Signal(cfg.token_bits, name="token")
        prev_token = Signal(cfg.token_bits, name="prev_token")
        prev_valid = Signal(name="prev_valid")
        cycles = Signal(COUNTER_BITS, name="cycles")
        spikes = Signal(COUNTER_BITS, name="spikes")
        ph_pop = Signal(POP, name="ph_pop")
        ph_proj = Signal(PROJ, name="ph_proj")
        ph_route = Signal(name="ph_route")
        ph_update = Signal(name="ph_update")
        # Cycles left in a CLEAR, UPDATE or SAMPLE body, minus one: it ends in the cycle the
        # count goes negative, which its sign flip-flop tells without a comparison.
        countdown = Signal(signed(bits_for(max(NPL, cfg.max_vocab) + 4 * T + 16) + 1),
                           name="countdown")
        finished = countdown[-1]
        # CLEAR zeroes the spike table at the addresses below 2 * max_pops that the countdown
        # passes (the table's write enable and address are decided a cycle ahead).
        clear_from = max(NPL + T + 1, 2 * cfg.max_pops) - 1        # CLEAR's first countdown
        body = Signal(range(timing.broadcast_latency + 1), name="body")
        inj_on = Signal(name="inj_on")
        inj_ptr = Signal(cfg.ptr_bits, name="inj_ptr")
        res = Signal(Result, name="res")
        cq = Signal(Command, name="cq")
        cq_token_ok = Signal(name="cq_token_ok")       # checked as the command is taken
        rdata = Signal(read_response_layout(cfg), name="rdata")
        err = self.status

        # Spikes onto the bus: gathered from the lanes (id + the projection's row base), or
        # the input token injected where the lanes' first spike would have been.
        # (The lanes add the row-pointer base to their ids themselves; root is all zero
        # when nothing is gathered, so OR merges the injected token.)
        inject_at = T + 1 + READ_LATENCY + T
        inj_now = Signal(name="inj_now")
        m.d.sync += inj_now.eq(0)
        m.d.comb += [
            spike.valid.eq(root.valid | inj_now),
            spike.ptr.eq(root.payload[:cfg.ptr_bits] | Mux(inj_now, inj_ptr, 0)),
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
                        if writing and mem == Mem.ACC:
                            continue
                        lane_cond = lane_ok if mem in (Mem.PARAM, Mem.STATE, Mem.ACC, Mem.PTR,
                                                       Mem.SYN) else (req.lane == 0)
                        m.d.comb += ok.eq(lane_cond & (req.addr < cfg.depth(mem)))
            return ok

        # Requests are checked as they are accepted and registered with their verdicts, so
        # that the writes they enable start from flip-flops.
        lane_mems = max(Mem.PARAM, Mem.STATE, Mem.ACC, Mem.PTR, Mem.SYN)
        core_limit = {reg: cfg.register_limit(reg) for reg in CoreReg
                      if cfg.register_limit(reg) is not None}
        wp = self.write.payload
        value_ok = Signal(name="value_ok")
        m.d.comb += value_ok.eq(1)
        with m.If(wp.mem == Mem.CORE):
            with m.Switch(wp.addr):
                for reg, limit in core_limit.items():
                    with m.Case(reg):
                        m.d.comb += value_ok.eq(wp.data <= limit)
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
        w_pop = Signal(name="wq_pop")
        w_proj = Signal(name="wq_proj")
        w_reg = Signal(len(CoreReg), name="wq_reg")      # one-hot: the CORE register
        m.d.sync += [
            w_valid.eq(self.write.valid & self.write.ready),
            w.eq(wp), w_ok.eq(in_range(wp, True) & value_ok),
            w_lane.eq(wp.mem <= lane_mems),
            w_pop.eq(wp.mem == Mem.POP), w_proj.eq(wp.mem == Mem.PROJ),
            w_reg.eq(Cat((wp.mem == Mem.CORE) & (wp.addr == reg) for reg in CoreReg)),
        ]
        # The CORE registers a read can name, and which one it names, decoded as it is
        # accepted (one-hot): the register read is then an AND-OR of flip-flops.
        readable = ((CoreReg.POPS, n_pops), (CoreReg.PROJS, n_projs),
                    (CoreReg.READOUT, readout), (CoreReg.VOCAB, vocab),
                    (CoreReg.TEMPERATURE, temperature), (CoreReg.SEED, sampler.state))
        r_reg = Signal(len(readable), name="rq_reg")
        with m.If(self.read.valid & self.read.ready):
            m.d.sync += [r.eq(self.read.payload), r_ok.eq(in_range(self.read.payload, False)),
                         r_lane.eq(self.read.payload.mem <= lane_mems),
                         r_reg.eq(Cat(self.read.payload.addr == reg for reg, _ in readable))]

        # Defaults of the table ports.
        m.d.comb += [
            pop_wr.addr.eq(w.addr), pop_wr.data.eq(w.data),
            proj_wr.addr.eq(w.addr), proj_wr.data.eq(w.data),
            pop_rd.addr.eq(pop_addr), proj_rd.addr.eq(j),
            pop_host.addr.eq(r.addr), proj_host.addr.eq(r.addr),
            sampler.seed.payload.eq(w.data),
        ]

        core_word = Signal(cfg.data_bits, name="core_word")
        table_q = [Signal(cfg.data_bits, name=f"table_q{k}") for k in range(3)]
        m.d.comb += core_word.eq(reduce(operator.or_, (Mux(r_reg[k], sig, 0)
                                                       for k, (_, sig) in enumerate(readable))))

        # What the next projection would route, read (in D1) from the spike table: the
        # source's spike count and the lanes' windows for the bank of this timestep (delay 0)
        # or the previous one (delay 1). The table's address is registered (a copy per
        # 16-bit slice of the wide table), loaded with the entry that the next cycle's
        # projection (j_next) names at the next cycle's parity, so no table lookup or
        # multiplexer stands in front of the read (the table is written at most up to the
        # cycle before D1, and the read sees that).
        next_proj = Signal(PROJ, name="next_proj")
        route_entry = Signal(SPK, name="route_entry")
        route_spikes = Signal(cfg.size_bits, name="route_spikes")
        ahead = proj_ahead.data
        m.d.comb += spk_t.raddr.eq(Cat(parity_next ^ ahead.delay, ahead.src))
        m.d.comb += [
            next_proj.eq(proj_rd.data),
            proj_ahead.addr.eq(j_next),
            route_entry.eq(spk_t.rdata),
        ]
        with m.If(next_proj.input):
            m.d.comb += route_spikes.eq(~next_proj.delay | prev_valid)
        with m.Else():
            m.d.comb += route_spikes.eq(route_entry.bounds[L])
        rt_spikes = Signal(cfg.size_bits, name="rt_spikes")
        rt_bounds = Signal(SPK.members["bounds"], name="rt_bounds")
        rt_qbase = Signal(SPK.members["qbase"], name="rt_qbase")
        upd_qbase = Signal(SPK.members["qbase"], name="upd_qbase")

        # A word read from a lane is caught whenever the gather tree shows one (its enable is
        # the tree's own register, not a decision of the scheduler).
        lane_word = Signal(cfg.data_bits, name="lane_word")
        from_lane = Signal(name="from_lane")
        with m.If(root.valid):
            m.d.sync += lane_word.eq(root.payload)
        m.d.comb += [
            self.result.payload.eq(res),
            self.read_data.payload.error.eq(rdata.error),
            self.read_data.payload.data.eq(Mux(from_lane, lane_word, rdata.data)),
        ]

        # The registered write, the cycle after its handshake (always in IDLE).
        with m.If(w_valid):
            # The lane bus's address and data fields are free while the core is idle.
            m.d.sync += [cbus.lane.eq(w.lane), cbus.mem.eq(w.mem), cbus.addr.eq(w.addr),
                         cbus.data.eq(w.data)]
        w_go = Signal(name="wq_go")
        m.d.comb += w_go.eq(w_valid & w_ok)
        with m.If(w_valid & ~w_ok):
            m.d.sync += err.write_error.eq(1)
        with m.If(w_go & w_lane):
            m.d.sync += cbus.op.eq(LaneOp.WRITE)
        m.d.comb += [pop_wr.en.eq(w_go & w_pop), proj_wr.en.eq(w_go & w_proj),
                     sampler.seed.valid.eq(w_go & w_reg[CoreReg.SEED])]
        for reg, target in ((CoreReg.POPS, n_pops), (CoreReg.PROJS, n_projs),
                            (CoreReg.READOUT, readout), (CoreReg.VOCAB, vocab),
                            (CoreReg.TEMPERATURE, temperature)):
            with m.If(w_go & w_reg[reg]):
                m.d.sync += target.eq(w.data)

        # After a reset the ports wait until the lanes have left theirs (reset_settle).
        settle = Signal(range(reset_settle(T) + 1), init=reset_settle(T), name="settle")
        settled = Signal(name="settled")
        with m.If(settle != 0):
            m.d.sync += settle.eq(settle - 1)
        m.d.sync += settled.eq(settle <= 1)

        with m.FSM(name="scheduler") as fsm:
            with m.State("IDLE"):
                # A registered write is still to be done while w_valid: commands and reads,
                # which use the lane bus too, wait for it.
                m.d.comb += [
                    self.cmd.ready.eq(settled & ~w_valid),
                    self.write.ready.eq(settled & ~self.cmd.valid),
                    self.read.ready.eq(settled & ~self.cmd.valid & ~self.write.valid &
                                       ~w_valid),
                ]
                # Only on a handshake: a command offered while a write is still registered
                # must wait (taking it on valid alone ran it twice, once unacknowledged).
                with m.If(self.cmd.valid & self.cmd.ready):
                    m.d.sync += [cq.eq(self.cmd.payload),
                                 cq_token_ok.eq(self.cmd.payload.token < vocab)]
                    m.next = "COMMAND"
                with m.Elif(self.read.valid & self.read.ready):
                    m.next = "READ"

            # The command registered in IDLE (COMMAND_LATENCY cycle).
            with m.State("COMMAND"):
                m.d.sync += [res.eq(0), res.op.eq(cq.op)]
                # A step starts at population 0, projection 0. They are reset for every
                # command (only a step uses them), which keeps the decoded command off the
                # projection table's look-ahead read address.
                m.d.comb += [p_next.eq(0), j_next.eq(0)]
                with m.Switch(cq.op):
                    with m.Case(Op.RESET):
                        m.d.sync += [
                            cbus.op.eq(LaneOp.CLEAR),
                            prev_valid.eq(0),
                            countdown.eq(clear_from),
                        ]
                        # CLEAR's first cycle zeroes address clear_from if there is one.
                        m.d.comb += [spk_ahead.en.eq(clear_from < 2 * cfg.max_pops),
                                     spk_ahead.addr.eq(clear_from)]
                        m.d.comb += parity_next.eq(0)
                        m.next = "CLEAR"
                    with m.Case(Op.STEP):
                        with m.If(cq_token_ok):
                            m.d.sync += [
                                token.eq(cq.token),
                                cycles.eq(0), spikes.eq(0),
                            ]
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
                    m.d.sync += [table_q[0].eq(pop_host.data), table_q[1].eq(proj_host.data),
                                 table_q[2].eq(core_word)]
                    m.next = "READ_TABLE"

            with m.State("READ_TABLE"):
                with m.Switch(r.mem):
                    with m.Case(Mem.POP):
                        m.d.sync += rdata.data.eq(table_q[0])
                    with m.Case(Mem.PROJ):
                        m.d.sync += rdata.data.eq(table_q[1])
                    with m.Default():
                        m.d.sync += rdata.data.eq(table_q[2])
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
                m.d.sync += countdown.eq(countdown - 1)
                m.d.comb += [spk_ahead.en.eq((countdown > 0) &
                                             (countdown <= 2 * cfg.max_pops)),
                             spk_ahead.addr.eq(countdown - 1)]
                with m.If(finished):
                    m.next = "RESULT"

            with m.State("RESULT"):
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    m.next = "IDLE"

            # Dispatch, first cycle: which phase is next?
            with m.State("D1"):
                m.d.sync += cycles.eq(cycles + 1)
                m.d.sync += [
                    ph_pop.eq(pop_rd.data), ph_proj.eq(next_proj),
                    ph_route.eq(j_live & p_live & (next_proj.dst == p)),
                    ph_update.eq(p_live),
                    rt_spikes.eq(route_spikes),
                    rt_bounds.eq(Mux(next_proj.input, 0, route_entry.bounds)),
                    rt_qbase.eq(route_entry.qbase),
                    upd_qbase.eq(Mux(parity, NPL, 0) + pop_rd.data.base),
                ]
                m.next = "D2"

            # Dispatch, second cycle: start it (or skip a route with nothing to send).
            with m.State("D2"):
                m.d.sync += [cycles.eq(cycles + 1), body.eq(0)]
                # Every phase field is loaded whatever comes next (they are free until the op
                # pulse), which keeps the decision off their enables.
                m.d.sync += [
                    cbus.ptr_base.eq(ph_proj.ptr_base),
                    cbus.bounds.eq(rt_bounds),
                    cbus.addr.eq(ph_pop.base),
                    cbus.size.eq(ph_pop.size),
                    cbus.kind.eq(ph_pop.kind),
                    cbus.count.eq(Mux(ph_route, rt_spikes, Mux(ph_update, ph_pop.rows, vocab))),
                    cbus.qbase.eq(Mux(ph_route, rt_qbase, upd_qbase)),
                    countdown.eq(Mux(ph_update, ph_pop.rows + timing.update_latency - 2,
                                     vocab + timing.sample_latency - 2)),
                    inj_on.eq(ph_proj.input),
                    inj_ptr.eq(ph_proj.ptr_base + Mux(ph_proj.delay, prev_token, token)),
                ]
                with m.If(ph_route):
                    m.d.comb += j_next.eq(j + 1)
                    with m.If(rt_spikes == 0):
                        m.next = "D1"
                    with m.Else():
                        m.d.sync += cbus.op.eq(LaneOp.ROUTE)
                        m.next = "ROUTE"
                with m.Elif(ph_update):
                    m.d.sync += cbus.op.eq(LaneOp.UPDATE)
                    m.next = "UPDATE"
                with m.Else():
                    m.d.sync += cbus.op.eq(LaneOp.SAMPLE)
                    m.d.sync += sample_start.eq(1)
                    m.next = "SAMPLE"

            with m.State("ROUTE"):
                m.d.sync += [cycles.eq(cycles + 1),
                             inj_now.eq(inj_on & (body == inject_at - 1))]
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
                # the population's spike counts: enable and address decided here.
                with m.If(countdown == 0):
                    m.d.comb += [spk_ahead.en.eq(1), spk_ahead.addr.eq(Cat(parity, p))]
                with m.If(finished):
                    bounds = Signal(SPK.members["bounds"], name="bounds")
                    m.d.comb += bounds.eq(Cat(C(0, cfg.size_bits), *incl))
                    m.d.comb += [
                        spk_data.bounds.eq(bounds),
                        spk_data.qbase.eq(upd_qbase),
                    ]
                    m.d.sync += spikes.eq(spikes + incl[-1])
                    m.d.comb += p_next.eq(p + 1)
                    m.next = "D1"

            with m.State("SAMPLE"):
                m.d.sync += [cycles.eq(cycles + 1), countdown.eq(countdown - 1)]
                m.d.comb += [
                    sampler.i.valid.eq(root.valid),
                    sampler.i.payload.eq(root.payload[:STATE_BITS]),
                ]
                with m.If(finished):
                    m.d.sync += [
                        res.token.eq(sampler.token),
                        res.cycles.eq(cycles + 1),
                        res.spikes.eq(spikes),
                        prev_token.eq(token),
                        prev_valid.eq(1),
                    ]
                    m.d.comb += parity_next.eq(~parity)
                    m.next = "RESULT"

        m.d.comb += err.busy.eq(~fsm.ongoing("IDLE"))
        assert DISPATCH_CYCLES == 2 and NEURON_LATENCY == 5 and COMMAND_LATENCY == 1
        assert timing.update_latency >= 2        # an UPDATE body never ends in its first cycle
        return m
