"""One processing lane: its neurons' memories, the synapse walker and the neuron pipeline."""

from types import SimpleNamespace

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from spikestream.formats import ACC_BITS
from spikestream.memory_map import Mem, addr_bits, bits_for
from .layouts import (LaneOp, gather_layout, lane_port_layout, segment_layout, trace_layout,
                      word_layout)
from spikestream.capacity import lutram_memories, ptr_bank_words
from .bram import BlockRAM, PipelinedRAM
from .neuron import NeuronUnit
from .walker import Accumulator, SegmentQueue, Walker, synapse_layout
from spikestream.timing import BANKED_READ_LATENCY, HOST_READ_LATENCY, READ_LATENCY, SKID_DEPTH

ROW_WORDS = 32
"""Rows of the accumulator and the spike queue (in LUT RAM) per copy of their read address
(hw.core.bram): each copy drives eight LUT RAM cells per 16-bit slice."""

__all__ = ["Lane"]


def _delay(m, value, cycles, name, reset_less=False):
    """``value`` delayed by ``cycles`` registers."""
    for k in range(cycles):
        r = Signal.like(value, name=f"{name}_d{k + 1}", reset_less=reset_less)
        m.d.sync += r.eq(value)
        value = r
    return value


class Lane(wiring.Component):
    """Lane ``index`` of a core built for ``config``.

    A lane owns, for its neurons (neuron ``n`` of a population is in lane ``n % lanes`` at
    local address ``base + n // lanes``), the parameters, the state ``(v, a, s)`` and the
    input accumulator; its row pointers and synapse words; its spike queue (a region per
    population and kept timestep, spikestream.memory_map) and the spike buffer of the
    projection being routed. It obeys the lane bus (one ``LaneOp`` pulse per phase or host
    access, phase fields held):

    * ``ROUTE``: stream its queued spikes of ranks ``window[0] .. window[1]-1``
      from ``qbase`` (as row-pointer addresses: id (``row * lanes + index``) plus
      ``ptr_base``, with their values
      ``q``) into the gather tree at the matching cycles (so all lanes together emit them
      one per cycle, lane-major), and walk every spike that then arrives on ``bus.spike``:
      read its row pointer and spend ``max(1, slots)`` cycles (two synapses a slot where
      the row pairs them: spikestream.network.pair_row) adding the segment's weights
      times ``q`` into the accumulator, two banks by target parity
      (:class:`~hw.core.walker.SegmentQueue`, :class:`~hw.core.walker.Walker`, an
      :class:`~hw.core.walker.Accumulator` per bank: a read-modify-write with forwarding).
      ``done`` rises when all ``count`` spikes have been walked.
    * ``UPDATE``: stream ``count`` rows from ``addr`` through the neuron pipeline
      (:class:`~hw.core.neuron.NeuronUnit`, in the population's ``mode``); write the state
      back, clear the accumulator, and (if ``push``) queue each spiking neuron's row
      (``n // lanes``) and value from ``qbase``; ``spikes`` counts them.
    * ``SAMPLE``: stream the readout membranes of this lane's tokens ``index, index +
      lanes, ...`` below ``count`` to the gather tree, one per ``lanes`` cycles in turn.
    * ``CLEAR``: zero every ``v``, ``a`` and accumulator; ``WRITE``/``READ``: host access.

    Attributes
    ----------
    bus : In(lane_port_layout(config))
        From the broadcast and scatter trees (registered there).
    gather : Out(stream.Signature(gather_layout(config).data, always_ready=True))
        Zero unless this lane is sending a spike id, a membrane or a host read word; the
        core ORs all lanes' together.
    done : Out(1)
        Route phase: every spike of the phase has been walked.
    spikes : Out(rows_bits)
        Spikes pushed by the last update (a register).
    trace : Out(trace_layout(config))
        Only with ``trace=True``: the neuron pipeline's write-back this cycle (observation
        only: wires from registers).

    Parameters
    ----------
    config : CoreConfig
    index : int
    init : spikestream.memory_map.Contents, optional
        Initial words of the lane's ``PARAM``, ``STATE``, ``PTR`` and ``SYN`` memories.
    trace : bool
    lutram : collection of str, optional
        Names of the lane memories (:func:`spikestream.capacity.lane_memories`) the build puts in
        LUT RAM; the others are block RAMs. Default: every candidate
        (:func:`spikestream.capacity.lutram_memories` without a budget).
    """

    def __init__(self, config, index, init=None, trace=False, lutram=None):
        self._config = config
        self._index = index
        self._init = init
        self._trace = bool(trace)
        self._lutram = frozenset(lutram_memories(config) if lutram is None else lutram)
        members = {
            "bus": In(lane_port_layout(config)),
            "gather": Out(stream.Signature(gather_layout(config).size - 1, always_ready=True)),
            "done": Out(1),
            "spikes": Out(config.rows_bits),
        }
        if self._trace:
            members["trace"] = Out(trace_layout(config))
        super().__init__(members)

    @property
    def index(self):
        return self._index

    def _synapse_banks(self, m, layout, init, attrs):
        """The synapse memory as two halves, the even words and the odd ones, each as
        :class:`BlockRAM` banks (``config.syn_bank(k)``; named ``syn_b0``, ``syn_b1``, ...):
        returns its read port (``addr``: word ``a``; both halves read their row ``a // 2``,
        the words ``a & ~1`` and ``a | 1``), its write port (``en``, ``addr``, ``data``) and
        the two words as ``layout``, ``BANKED_READ_LATENCY`` cycles after the address. Each
        bank's registered output is gated by its registered select and a half's are ORed
        into one more register."""
        cfg = self._config
        low = addr_bits(cfg.syn_bank_words)
        port = SimpleNamespace(addr=Signal(addr_bits(cfg.syn_depth), name="syn_addr"))
        wr = SimpleNamespace(en=Signal(name="syn_we"),
                             addr=Signal(addr_bits(cfg.syn_depth), name="syn_waddr"),
                             data=Signal(layout.size, name="syn_wdata"))
        row, wrow = port.addr[1:], wr.addr[1:]
        merged = [0, 0]
        for k in range(cfg.syn_banks):
            half, first, depth = cfg.syn_bank(k)
            words = init[2 * first + half:2 * (first + depth):2]
            bank = BlockRAM(layout.size, depth, words, attrs, name=f"syn_b{k}",
                            lutram="syn" in self._lutram)
            m.submodules[f"syn_b{k}"] = bank
            hit = Signal(name=f"syn_b{k}_hit")
            m.d.comb += [
                bank.raddr.eq(row[:low]),
                bank.we.eq(wr.en & (wr.addr[0] == half) & (wrow[low:] == k // 2)),
                bank.waddr.eq(wrow[:low]),
                bank.wdata.eq(wr.data),
            ]
            m.d.sync += hit.eq(row[low:] == k // 2)
            hit = _delay(m, hit, 1, f"syn_b{k}_hit")
            merged[half] = merged[half] | Mux(hit, bank.rdata, 0)
        q = [Signal(layout, name=f"syn_q{h}", reset_less=True) for h in (0, 1)]
        m.d.sync += [q[h].eq(merged[h]) for h in (0, 1)]
        return port, wr, q

    def _row_pointers(self, m, init, attrs):
        """The row pointers as two :class:`BlockRAM` banks, ``ptr_b0`` of the even words and
        ``ptr_b1`` of the odd ones, so that word ``k`` (row ``k``'s start) and word ``k + 1``
        (its end: the next row's start) are read in the same cycle. Returns the read port
        (``addr``: ``k``), the write port (``en``, ``addr``, ``data``: word ``addr``), word
        ``k`` ``READ_LATENCY`` cycles after the address (chosen after the banks' registers:
        a host read's answer), and row ``k`` as :func:`~hw.core.layouts.segment_layout`
        (start, and end minus start modulo ``2**rows_bits``) in a register a cycle later."""
        cfg = self._config
        width = cfg.layout(Mem.PTR).bits
        even = ptr_bank_words(cfg)
        port = SimpleNamespace(addr=Signal(cfg.ptr_bits, name="ptr_addr"))
        wr = SimpleNamespace(en=Signal(name="ptr_we"),
                             addr=Signal(cfg.ptr_bits, name="ptr_waddr"),
                             data=Signal(width, name="ptr_wdata"))
        banks = []
        for k, depth in enumerate((even, max(1, cfg.ptr_depth - even))):
            bank = BlockRAM(width, depth, init[k::2], attrs, name=f"ptr_b{k}",
                            lutram="ptr" in self._lutram)
            m.submodules[f"ptr_b{k}"] = bank
            m.d.comb += [bank.we.eq(wr.en & (wr.addr[0] == k)), bank.waddr.eq(wr.addr[1:]),
                         bank.wdata.eq(wr.data)]
            banks.append(bank)
        # An even k reads both banks at k // 2; an odd one the even bank a word further.
        odd = port.addr[0]
        m.d.comb += [banks[0].raddr.eq(port.addr[1:] + odd), banks[1].raddr.eq(port.addr[1:])]
        odd_q = _delay(m, odd, READ_LATENCY, "ptr_odd", reset_less=True)
        start = Signal(width, name="ptr_start")
        m.d.comb += start.eq(Mux(odd_q, banks[1].rdata, banks[0].rdata))
        PTR = word_layout(cfg, Mem.PTR)
        first, end = PTR(start), PTR(Mux(odd_q, banks[0].rdata, banks[1].rdata))
        seg = Signal(segment_layout(cfg), name="ptr_seg", reset_less=True)
        # slots: (words + start % 2 + tail) / 2 (spikestream.network.pair_row)
        twice = Signal(cfg.rows_bits + 1, name="ptr_twice_slots")
        m.d.comb += twice.eq(end.start - first.start + first.start[0] + first.tail)
        m.d.sync += [seg.start.eq(first.start), seg.slots.eq(twice[1:]), seg.tail.eq(first.tail)]
        return port, wr, start, seg

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        L, NPL = cfg.lanes, cfg.neurons_per_lane
        bus = self.bus
        op = bus.op

        PARAM = word_layout(cfg, Mem.PARAM)
        STATE = word_layout(cfg, Mem.STATE)
        SYN = word_layout(cfg, Mem.SYN)

        # Block RAM reads are written as an asynchronous read port followed by a register,
        # which Yosys folds into the block RAM (a synchronous read), and a second register
        # in the fabric (READ_LATENCY == 2). Written this way the memories' `no_rw_check`
        # applies: no block RAM here is ever read at an address written in the same cycle
        # whose old value matters (the accumulator forwards its two writes in flight), so
        # Yosys need not emulate read-first collisions with comparators in the read path.
        bram = {"no_rw_check": 1}

        # Reset: only control state (valid bits, modes, counters, pointers) takes the reset.
        # Data registers are reset-less: each is either reloaded every cycle from values
        # that the reset clears (flushed while the reset is held) or loaded by the op that
        # starts its phase before it is used. The reset net then reaches a few hundred
        # flip-flops per lane rather than every one.
        def delay(value, cycles, name, reset_less=False):
            return _delay(m, value, cycles, name, reset_less)

        def data_reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # The host-loaded memories hold plain words (their layouts are applied to the read
        # registers): initial contents as ints are what keeps a large image quick to build.
        def initial(mem):
            return [] if self._init is None else self._init.words(mem, self._index)

        # Parameters, state and row pointers are block RAMs with registered outputs
        # (hw.core.bram) unless the build puts them in LUT RAM (``lutram``); the accumulator
        # and the spike queue use their first read register themselves: each is a
        # PipelinedRAM whose address register (a copy per LUT RAM slice and group of
        # ROW_WORDS rows) is loaded with the address of the next cycle's read. (Not in LUT
        # RAM, they are one Memory each, which Yosys maps to block RAM.)
        def block_ram(name, layout, depth, init):
            ram = BlockRAM(Shape.cast(layout).width, depth, init, attrs=bram, name=name,
                           lutram=name in self._lutram)
            m.submodules[name] = ram
            return (SimpleNamespace(addr=ram.raddr),
                    SimpleNamespace(en=ram.we, addr=ram.waddr, data=ram.wdata),
                    layout(ram.rdata) if isinstance(layout, data.Layout) else ram.rdata)

        # The accumulator is two banks, the even local addresses' and the odd ones': a lane
        # adds a pair of synapses (one of each) a cycle.
        accs = []
        for h in (0, 1):
            m.submodules[f"acc_b{h}"] = bank = PipelinedRAM(
                ACC_BITS, -(-NPL // 2), attrs=bram, name=f"acc_b{h}",
                lutram="acc" in self._lutram, row_words=ROW_WORDS)
            accs.append(bank)
        QUEUE = word_layout(cfg, Mem.QUEUE)
        SPIKE = data.StructLayout({"ptr": unsigned(cfg.ptr_bits), "q": unsigned(cfg.q_bits)})
        m.submodules.queue = queue = PipelinedRAM(QUEUE.size, cfg.queue_depth, attrs=bram,
                                                  name="queue", lutram="queue" in self._lutram,
                                                  row_words=ROW_WORDS)
        m.submodules.sbuf = sbuf = BlockRAM(SPIKE.size, cfg.spike_depth, attrs=bram,
                                            name="sbuf", lutram="sbuf" in self._lutram)

        param_r, param_w, param_q = block_ram("param", PARAM, NPL, initial(Mem.PARAM))
        state_r, state_w, state_q = block_ram("state", STATE, NPL, initial(Mem.STATE))
        # each bank's word at its raddr of two cycles before
        acc_raw = [bank.rdata.as_signed() for bank in accs]
        acc_q = data_reg(signed(ACC_BITS), "acc_q")         # the update's or the host's word
        acc_sel = data_reg(1, "acc_sel")
        ptr_r, ptr_w, ptr_q, ptr_seg = self._row_pointers(m, initial(Mem.PTR), bram)
        syn_r, syn_w, syn_q = self._synapse_banks(m, SYN, initial(Mem.SYN), bram)
        # The spike queue's second read register adds the projection's row-pointer base
        # (held for the phase), so a lane sends row-pointer addresses from a register.
        queue_w = SimpleNamespace(en=queue.we, addr=queue.waddr, data=QUEUE(queue.wdata))
        queue_raw = QUEUE(queue.rdata)          # the word at queue.raddr of two cycles before
        # A queued spike is the neuron's row: its id is row * lanes + index, to which the
        # projection's row-pointer base is added (index + base in a register of its own).
        queue_ptr = data_reg(cfg.ptr_bits, "queue_ptr")
        queue_q = data_reg(cfg.q_bits, "queue_q")
        queue_host = data_reg(QUEUE.size, "queue_host")
        snd_base = data_reg(cfg.ptr_bits, "snd_base")
        m.d.sync += [snd_base.eq(bus.ptr_base + self._index),
                     queue_ptr.eq(queue_raw.row * L + snd_base), queue_q.eq(queue_raw.q),
                     queue_host.eq(queue.rdata)]
        assert READ_LATENCY == 2 and BANKED_READ_LATENCY == 3

        # Mode flags: set by their op, cleared by any other op.
        route_on = Signal(name="route_on")
        route_on_next = Signal(name="route_on_next")
        m.d.comb += route_on_next.eq(Mux(op != LaneOp.NOP, op == LaneOp.ROUTE, route_on))
        m.d.sync += route_on.eq(route_on_next)

        # Host access ---------------------------------------------------------------------------
        # A host access is decoded from the bus into registers first: each memory's write
        # enable is then a flip-flop, and so is the select of its host address (the lane
        # is idle meanwhile; host accesses take a cycle more, no phase waits for them).
        mine = Signal(name="mine")
        m.d.comb += mine.eq(bus.lane == self._index)
        host_rd = Signal(name="host_rd")                       # any READ of this lane
        host_rd_next = Signal(name="host_rd_next")
        m.d.comb += host_rd_next.eq((op == LaneOp.READ) & mine)
        host_addr = Signal.like(bus.addr, name="host_addr", reset_less=True)
        host_data = Signal.like(bus.data, name="host_data", reset_less=True)
        host_wr = {mem: Signal(name=f"host_wr_{mem.name.lower()}")
                   for mem in (Mem.PARAM, Mem.STATE, Mem.PTR, Mem.SYN)}
        host_rd_mem = {mem: Signal(name=f"host_rd_{mem.name.lower()}")
                       for mem in (Mem.PARAM, Mem.STATE, Mem.ACC, Mem.PTR, Mem.SYN,
                                   Mem.QUEUE)}
        m.d.sync += [
            host_rd.eq(host_rd_next),
            host_addr.eq(bus.addr), host_data.eq(bus.data),
            *(w.eq((op == LaneOp.WRITE) & mine & (bus.mem == mem))
              for mem, w in host_wr.items()),
            *(r.eq((op == LaneOp.READ) & mine & (bus.mem == mem))
              for mem, r in host_rd_mem.items()),
        ]
        # A host read's word: each memory's output is gated by its own registered select
        # (next to that memory); the gated words of the memories read in READ_LATENCY cycles
        # are ORed into one register while the synapse banks' word is gated a cycle later,
        # and the two are ORed (the memories of a lane are block RAMs spread over the die).
        host_word = data_reg(cfg.data_bits, "host_word")
        host_q = Signal(name="host_q")

        def gate(mem, q, latency):
            name = f"host_{mem.name.lower()}"
            g = data_reg(cfg.data_bits, f"{name}_word")
            m.d.sync += g.eq(Mux(delay(host_rd_mem[mem], latency, name),
                                 Value.cast(q).as_unsigned(), 0))
            return g

        fast = [gate(mem, q, READ_LATENCY)
                for mem, q in ((Mem.PARAM, param_q), (Mem.STATE, state_q), (Mem.ACC, acc_q),
                               (Mem.PTR, ptr_q), (Mem.QUEUE, queue_host))]
        fast_word = data_reg(cfg.data_bits, "host_fast_word")
        m.d.sync += [
            fast_word.eq(fast[0] | fast[1] | fast[2] | fast[3] | fast[4]),
            host_q.eq(delay(host_rd, BANKED_READ_LATENCY + 1, "host_rd")),
            host_word.eq(fast_word | gate(Mem.SYN, Mux(delay(host_addr[0], BANKED_READ_LATENCY,
                                                             "host_syn_odd", True),
                                                       syn_q[1], syn_q[0]),
                                          BANKED_READ_LATENCY)),
        ]
        assert BANKED_READ_LATENCY == READ_LATENCY + 1

        m.d.comb += [
            param_w.en.eq(host_wr[Mem.PARAM]),
            param_w.addr.eq(host_addr),
            param_w.data.eq(host_data),
            ptr_w.en.eq(host_wr[Mem.PTR]),
            ptr_w.addr.eq(host_addr),
            ptr_w.data.eq(host_data),
            syn_w.en.eq(host_wr[Mem.SYN]),
            syn_w.addr.eq(host_addr),
            syn_w.data.eq(host_data),
        ]

        # CLEAR: zero v, a and the accumulator at every address -------------------------------
        clr_run = Signal(name="clr_run")
        clr_addr = Signal(range(NPL), name="clr_addr")
        with m.If(op == LaneOp.CLEAR):
            m.d.sync += [clr_run.eq(1), clr_addr.eq(0)]
        with m.Elif(clr_run):
            m.d.sync += clr_addr.eq(clr_addr + 1)
            with m.If(clr_addr == NPL - 1):
                m.d.sync += clr_run.eq(0)

        # UPDATE: stream rows through the neuron pipeline --------------------------------------
        upd_run = Signal(name="upd_run")
        upd_left = Signal(cfg.rows_bits, name="upd_left")
        upd_addr = data_reg(cfg.local_bits, "upd_addr")
        upd_addr_next = Signal(cfg.local_bits, name="upd_addr_next")
        upd_n = data_reg(bits_for(cfg.max_source + L), "upd_n")
        upd_addr1 = data_reg(cfg.local_bits, "upd_addr1")      # upd_addr + 1, registered
        m.d.comb += upd_addr_next.eq(Mux(op == LaneOp.UPDATE, bus.addr,
                                         Mux(upd_run, upd_addr1, upd_addr)))
        m.d.sync += [upd_addr.eq(upd_addr_next),
                     upd_addr1.eq(Mux(op == LaneOp.UPDATE, bus.addr + 1,
                                      Mux(upd_run, upd_addr1 + 1, upd_addr1)))]
        with m.If(op == LaneOp.UPDATE):
            m.d.sync += [
                upd_run.eq(bus.count != 0),
                upd_left.eq(bus.count),
                upd_n.eq(self._index),
            ]
        with m.Elif(upd_run):
            m.d.sync += [upd_n.eq(upd_n + L),
                         upd_left.eq(upd_left - 1)]
            with m.If(upd_left == 1):
                m.d.sync += upd_run.eq(0)

        # Only whether a row holds a neuron travels with it through the pipeline: its rows
        # leave one a cycle in the order they went in, and the phase (bus.addr) is held until
        # the last has left (spikestream.timing: update_latency), so the write-back's address
        # and row are counters stepped by the pipeline's output (two, though the address is
        # bus.addr + row: no adder stands in front of the memories' write ports).
        m.submodules.neuron = neuron = NeuronUnit(cfg)
        m.d.comb += [
            neuron.i.valid.eq(delay(upd_run, READ_LATENCY, "upd_run")),
            neuron.i.payload.pop.eq(bus.mode),
            neuron.i.payload.params.eq(param_q),
            neuron.i.payload.state.eq(state_q),
            neuron.i.payload.acc.eq(acc_q),
            neuron.i.payload.tag.eq(delay(upd_n < bus.size, READ_LATENCY, "upd_neuron", True)),
        ]
        wb_addr = data_reg(cfg.local_bits, "wb_addr")
        wb_row = data_reg(cfg.local_bits, "wb_row")
        with m.If(op == LaneOp.UPDATE):
            m.d.sync += [wb_addr.eq(bus.addr), wb_row.eq(0)]
        with m.Elif(neuron.o.valid):
            m.d.sync += [wb_addr.eq(wb_addr + 1), wb_row.eq(wb_row + 1)]
        out = neuron.o.payload
        write_back = Signal(name="write_back")
        push = Signal(name="push")
        m.d.comb += [
            write_back.eq(neuron.o.valid & out.tag),
            push.eq(write_back & out.state.s),         # s: q != 0, in a flip-flop
        ]
        if self._trace:
            m.d.comb += [
                self.trace.valid.eq(write_back),
                self.trace.q.eq(out.q),
                self.trace.addr.eq(wb_addr),
                self.trace.v.eq(out.state.v),
                self.trace.a.eq(out.state.a),
                self.trace.s.eq(out.state.s),
            ]
        with m.If(op == LaneOp.UPDATE):
            m.d.sync += self.spikes.eq(0)
        with m.Elif(push):
            m.d.sync += self.spikes.eq(self.spikes + 1)
        # A population that no projection reads (and the host does not) keeps no spikes.
        m.d.comb += [
            queue_w.en.eq(push & bus.push),
            queue_w.addr.eq(bus.qbase + self.spikes),
            queue_w.data.row.eq(wb_row),
            queue_w.data.q.eq(out.q),
        ]

        # SAMPLE: this lane's readout membranes, one every `lanes` cycles --------------------
        smp_run = Signal(name="smp_run")
        smp_phase = Signal(range(L), name="smp_phase")
        smp_next = Signal(bits_for(cfg.max_source + 2 * L), name="smp_next")   # after this one
        smp_more = Signal(name="smp_more")        # this lane's next token is in the vocabulary
        smp_addr = data_reg(cfg.local_bits, "smp_addr")
        smp_read = Signal(name="smp_read")
        m.d.comb += smp_read.eq(smp_run & (smp_phase == 0) & smp_more)
        with m.If(op == LaneOp.SAMPLE):
            m.d.sync += [smp_run.eq(1), smp_phase.eq(self._index),
                         smp_more.eq(self._index < bus.count), smp_next.eq(self._index + L),
                         smp_addr.eq(bus.addr)]
        with m.Elif(smp_run):
            with m.If(smp_phase != 0):
                m.d.sync += smp_phase.eq(smp_phase - 1)
            with m.Elif(smp_read):
                m.d.sync += [smp_phase.eq(L - 1), smp_addr.eq(smp_addr + 1),
                             smp_more.eq(smp_next < bus.count), smp_next.eq(smp_next + L)]
            with m.Else():
                m.d.sync += smp_run.eq(0)
        smp_q = delay(smp_read, READ_LATENCY, "smp_read")

        # ROUTE, send side: this lane's queued spikes, in its window of ranks ------------------
        # (The counters' zero tests and snd_addr + 1 are flip-flops kept beside them, so
        # that the queue's address registers are a multiplexer away from flip-flops.)
        snd_wait = Signal(cfg.size_bits, name="snd_wait")
        snd_waited = Signal(name="snd_waited", init=1)      # snd_wait == 0
        snd_left = Signal(cfg.size_bits, name="snd_left")
        snd_more = Signal(name="snd_more")                  # snd_left != 0
        snd_addr = data_reg(addr_bits(cfg.queue_depth), "snd_addr")
        snd_addr1 = data_reg(addr_bits(cfg.queue_depth), "snd_addr1")    # snd_addr + 1
        snd_read = Signal(name="snd_read")
        m.d.comb += snd_read.eq(route_on & snd_waited & snd_more)
        with m.If(op == LaneOp.ROUTE):
            lo, hi = bus.window[0], bus.window[1]
            m.d.sync += [snd_wait.eq(lo), snd_waited.eq(lo == 0),
                         snd_left.eq(hi - lo), snd_more.eq(hi != lo)]
        with m.Elif(route_on & ~snd_waited):
            m.d.sync += [snd_wait.eq(snd_wait - 1), snd_waited.eq(snd_wait == 1)]
        with m.Elif(snd_read):
            m.d.sync += [snd_left.eq(snd_left - 1), snd_more.eq(snd_left != 1)]
        # The queue's own address registers are loaded with snd_addr's next value.
        snd_addr_next = Signal.like(snd_addr, name="snd_addr_next")
        m.d.comb += [snd_addr_next.eq(Mux(op == LaneOp.ROUTE, bus.qbase,
                                          Mux(snd_read, snd_addr1, snd_addr))),
                     queue.raddr.eq(Mux(host_rd_next, bus.addr, snd_addr_next))]
        # (snd_addr_next + 1 from each of its values, the multiplexer last)
        m.d.sync += [snd_addr.eq(snd_addr_next),
                     snd_addr1.eq(Mux(op == LaneOp.ROUTE, bus.qbase + 1,
                                      Mux(snd_read, snd_addr1 + 1, snd_addr1)))]
        snd_q = delay(snd_read, READ_LATENCY, "snd_read")

        # The gather output: at most one of these is active in any lane at any time.
        assert HOST_READ_LATENCY == 1 + BANKED_READ_LATENCY + 2
        m.d.comb += [
            self.gather.valid.eq(snd_q | smp_q | host_q),
            self.gather.payload.eq(Mux(snd_q, Cat(queue_ptr, queue_q), 0) |
                                   Mux(smp_q, state_q.v.as_unsigned(), 0) | host_word),
        ]

        # ROUTE, receive side: spike buffer, row pointers, segment queue ---------------------
        # A spike that arrives while the segment queue has room goes straight to the row
        # pointer read; otherwise it waits in the spike buffer. The order in which a lane
        # walks its spikes does not matter (the sum is order-free and every spike costs the
        # same cycles), only that the walker never starves while spikes wait.
        in_valid = Signal(name="in_valid")
        m.d.comb += in_valid.eq(bus.spike.valid & route_on)
        reserved = Signal(range(SKID_DEPTH + 1), name="reserved")   # queued + in flight
        sb_count = Signal(bits_for(cfg.spike_depth), name="sb_count")
        wp = Signal(range(cfg.spike_depth), name="wp")
        rp = Signal(range(cfg.spike_depth), name="rp")
        sb_ret = Signal(name="sb_ret")       # a spike-buffer read's data is back this cycle
        direct = Signal(name="direct")
        store = Signal(name="store")
        sb_read = Signal(name="sb_read")
        take = Signal(name="take")
        # (reserved + direct < SKID_DEPTH, without an adder in front of the comparison.)
        room = Signal(name="room")
        room2 = Signal(name="room2")
        m.d.comb += [
            room.eq(reserved < SKID_DEPTH), room2.eq(reserved < SKID_DEPTH - 1),
            direct.eq(in_valid & ~sb_ret & room),
            store.eq(in_valid & ~direct),
            sb_read.eq((sb_count != 0) & Mux(direct, room2, room)),
        ]
        sb_read_d1 = Signal(name="sb_read_d1")
        m.d.sync += [sb_read_d1.eq(sb_read & route_on), sb_ret.eq(sb_read_d1 & route_on)]

        def wrap(x):
            return Mux(x == cfg.spike_depth - 1, 0, x + 1)

        sb_data = SPIKE(sbuf.rdata)
        m.d.comb += [
            sbuf.we.eq(store),
            sbuf.waddr.eq(wp),
            sbuf.wdata.eq(Cat(bus.spike.ptr, bus.spike.q)),
            sbuf.raddr.eq(rp),
        ]
        with m.If(op == LaneOp.ROUTE):
            m.d.sync += [wp.eq(0), rp.eq(0), sb_count.eq(0), reserved.eq(0)]
        with m.Else():
            with m.If(store):
                m.d.sync += wp.eq(wrap(wp))
            with m.If(sb_read):
                m.d.sync += rp.eq(wrap(rp))
            m.d.sync += [
                sb_count.eq(sb_count + store - sb_read),
                reserved.eq(reserved + direct + sb_read - take),
            ]

        ptr_issue = Signal(name="ptr_issue")
        issue_q = Signal(cfg.q_bits, name="issue_q")
        m.d.comb += [
            ptr_issue.eq(sb_ret | direct),
            ptr_r.addr.eq(Mux(host_rd, host_addr, Mux(sb_ret, sb_data.ptr, bus.spike.ptr))),
            issue_q.eq(Mux(sb_ret, sb_data.q, bus.spike.q)),
        ]
        # The spike's value travels with its row-pointer read, to the row's register.
        push_seg = delay(ptr_issue, READ_LATENCY + 1, "ptr_issue")
        seg_q = delay(issue_q, READ_LATENCY + 1, "issue_q", True)

        # The segment queue, the walker (one slot per cycle, max(1, slots) slots per spike)
        # and an accumulator per bank (read-modify-write with forwarding) behind the synapse
        # halves.
        m.submodules.segments = segments = SegmentQueue(cfg)
        m.submodules.walker = walker = Walker(cfg)
        wiring.connect(m, segments.o, walker.i)
        m.d.comb += [
            segments.i.valid.eq(push_seg),
            segments.i.payload.seg.eq(ptr_seg),
            segments.i.payload.q.eq(seg_q),
            segments.clear.eq(op == LaneOp.ROUTE),
            walker.enable.eq(route_on),
            walker.clear.eq(op == LaneOp.ROUTE),
            take.eq(walker.i.valid & walker.i.ready),
            syn_r.addr.eq(Mux(host_rd, host_addr, walker.o.payload.addr)),
            self.done.eq(route_on & (walker.walked == bus.count) & walker.idle),
        ]
        # Which halves a slot reads (a pair: both; one word: its address's) and the value of
        # its spike travel with the read.
        issue, odd = walker.o.valid & route_on, walker.o.payload.addr[0]
        pair = walker.o.payload.pair
        v_r = [delay(issue & (pair | ~odd), BANKED_READ_LATENCY, "syn_issue0"),
               delay(issue & (pair | odd), BANKED_READ_LATENCY, "syn_issue1")]
        q_r = delay(walker.o.payload.q, BANKED_READ_LATENCY, "syn_q_value", True)
        # Each bank takes the word whose target has its parity (a pair holds one of each:
        # spikestream.network.pair_row), into a register; the bank's address register is
        # loaded with the same address (halved) in the same cycle.
        SYNAPSE = synapse_layout(cfg)
        steer_addr = []
        for h in (0, 1):
            from_odd = Signal(name=f"steer{h}_odd")
            chosen = Signal(SYN, name=f"steer{h}_word")
            m.d.comb += [
                from_odd.eq(v_r[1] & (syn_q[1].addr[0] == h)),
                chosen.eq(Mux(from_odd, syn_q[1], syn_q[0])),
            ]
            to_bank = Signal(SYNAPSE, name=f"acc{h}_in", reset_less=True)
            to_bank_v = Signal(name=f"acc{h}_in_valid")
            m.d.sync += [
                to_bank_v.eq(from_odd | (v_r[0] & (syn_q[0].addr[0] == h))),
                to_bank.addr.eq(chosen.addr[1:]),
                to_bank.weight.eq(chosen.weight),
                to_bank.q.eq(q_r),
            ]
            steer_addr.append(chosen.addr[1:])
            m.submodules[f"accumulate{h}"] = accumulate = Accumulator(cfg)
            m.d.comb += [
                accumulate.i.valid.eq(to_bank_v),
                accumulate.i.payload.eq(to_bank),
                accumulate.raw.eq(acc_raw[h]),
            ]
            bank = accs[h]
            with m.If(clr_run):
                m.d.comb += [bank.we.eq(1), bank.waddr.eq(clr_addr[1:]), bank.wdata.eq(0)]
            with m.Elif(neuron.o.valid):
                m.d.comb += [bank.we.eq(wb_addr[0] == h), bank.waddr.eq(wb_addr[1:]),
                             bank.wdata.eq(0)]
            with m.Else():
                m.d.comb += [bank.we.eq(accumulate.o.valid),
                             bank.waddr.eq(accumulate.o.payload.addr),
                             bank.wdata.eq(accumulate.o.payload.value)]
            # The bank's address register is loaded with what its address would be next
            # cycle: the synapse's in the bank's input register, the host's or the update's
            # (each from the values its own register is about to take). A host read is never
            # in ROUTE: its op ends the mode.
            m.d.comb += bank.raddr.eq(Mux(route_on_next, steer_addr[h],
                                          Mux(host_rd_next, bus.addr[1:], upd_addr_next[1:])))
        # The update's and the host's word: the bank of the address read.
        m.d.sync += [acc_sel.eq(Mux(host_rd, host_addr[0], upd_addr[0])),
                     acc_q.eq(Mux(acc_sel, acc_raw[1], acc_raw[0]))]

        # Memory port sharing. Host accesses only happen while the core is idle.
        m.d.comb += [
            param_r.addr.eq(Mux(host_rd, host_addr, upd_addr)),
            state_r.addr.eq(Mux(host_rd, host_addr, Mux(smp_run, smp_addr, upd_addr))),
        ]
        with m.If(host_wr[Mem.STATE]):
            m.d.comb += [state_w.en.eq(1), state_w.addr.eq(host_addr), state_w.data.eq(host_data)]
        with m.Elif(clr_run):
            m.d.comb += [state_w.en.eq(1), state_w.addr.eq(clr_addr), state_w.data.eq(0)]
        with m.Else():
            m.d.comb += [state_w.en.eq(write_back), state_w.addr.eq(wb_addr),
                         state_w.data.eq(out.state)]
        return m
