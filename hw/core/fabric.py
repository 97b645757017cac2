"""The lanes and the pipelined trees that connect them to the scheduler."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .broadcast import Broadcast, Reduce, Scatter
from .lane import Lane
from .layouts import gather_layout, lane_bus_layout, trace_signature
from spikestream.timing import reset_settle

__all__ = ["LaneArray"]


class LaneArray(wiring.Component):
    """``config.lanes`` lanes behind a broadcast tree (and a scatter tree for the lanes'
    windows of spike ranks), a gather (OR) tree and a done (AND) tree, each
    ``config.stages`` register levels deep.

    Attributes
    ----------
    bus : In(lane_bus_layout(config))
        Reaches every lane ``stages`` cycles later.
    gather : Out(stream.Signature(config.data_bits, always_ready=True))
        The OR of the lanes' gather outputs, ``stages`` cycles later.
    done : Out(1)
        The AND of the lanes' done flags, ``stages`` cycles later.
    counts : Out(ArrayLayout(rows_bits, lanes))
        Each lane's spike count of the last update (no delay).
    trace : Out(trace_signature(config))
        Only with ``trace=True``: the lanes' neuron write-backs (see :class:`~hw.core.Core`).

    Parameters
    ----------
    config : CoreConfig
    init : spikestream.memory_map.Contents, optional
        Initial contents of the lanes' memories.
    trace : bool
    lutram : collection of str, optional
        The lane memories in LUT RAM (see :class:`~hw.core.lane.Lane`).
    """

    def __init__(self, config, init=None, trace=False, lutram=None):
        self._config = config
        self._init = init
        self._trace = bool(trace)
        self._lutram = lutram
        members = {
            "bus": In(lane_bus_layout(config)),
            "gather": Out(stream.Signature(config.data_bits, always_ready=True)),
            "done": Out(1),
            "counts": Out(data.ArrayLayout(config.rows_bits, config.lanes)),
        }
        if self._trace:
            members["trace"] = Out(trace_signature(config))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        L, T = cfg.lanes, cfg.stages
        # The lane bus tree is reset-less: the scheduler's bus is NOP while it is reset, and
        # each lane's reset comes down a tree of the same depth (a registered copy per lane,
        # in its own clock domain, so that no reset net spans the die), so a lane leaves
        # reset as the bus words issued after the reset reach it.
        # Every lane gets every field but the windows of spike ranks, of which only its own
        # (a Scatter tree beside the broadcast: each register holds what its lanes use).
        BUS = lane_bus_layout(cfg)
        common = [name for name in BUS.members if name != "bounds"]
        m.submodules.broadcast = bcast = Broadcast(
            data.StructLayout({name: BUS.members[name] for name in common}), L, T,
            control=lambda bus: ())
        m.submodules.bounds = windows = Scatter(unsigned(cfg.size_bits), L, T, window=2)
        # A reset, however short, holds the lanes' reset for reset_settle cycles more.
        m.submodules.reset_tree = reset_tree = Broadcast(1, L, T, control=lambda r: ())
        hold = Signal(range(reset_settle(T) + 1), name="lane_reset_hold", reset_less=True)
        with m.If(ResetSignal("sync")):
            m.d.sync += hold.eq(reset_settle(T))
        with m.Elif(hold != 0):
            m.d.sync += hold.eq(hold - 1)
        m.d.comb += reset_tree.i.eq(ResetSignal("sync") | (hold != 0))
        m.submodules.gather = gather = Reduce(gather_layout(cfg).size, L, T, "or")
        m.submodules.all_done = all_done = Reduce(1, L, T, "and")
        m.d.comb += [*(getattr(bcast.i, name).eq(getattr(self.bus, name)) for name in common),
                     windows.i.eq(self.bus.bounds)]
        for k in range(L):
            domain = ClockDomain(f"lane{k}", local=True)
            m.domains += domain
            m.d.comb += [domain.clk.eq(ClockSignal("sync")), domain.rst.eq(reset_tree.o[k])]
            lane = DomainRenamer(domain.name)(
                Lane(cfg, k, init=self._init, trace=self._trace, lutram=self._lutram))
            m.submodules[f"lane{k}"] = lane
            if self._trace:
                m.d.comb += self.trace.lanes[k].eq(lane.trace)
            m.d.comb += [
                *(getattr(lane.bus, name).eq(getattr(bcast.o[k], name)) for name in common),
                lane.bus.window.eq(windows.o[k]),
                gather.i[k].eq(Cat(lane.gather.valid, lane.gather.payload)),
                all_done.i[k].eq(lane.done),
                self.counts[k].eq(lane.spikes),
            ]
        root = Signal(gather_layout(cfg), name="root")
        m.d.comb += [
            root.eq(gather.o),
            self.gather.valid.eq(root.valid),
            self.gather.payload.eq(root.data),
            self.done.eq(all_done.o),
        ]
        if self._trace:
            any_valid = Signal(name="trace_any")
            m.d.comb += [any_valid.eq(Cat(self.trace.lanes[k].valid for k in range(L)).any()),
                         self.trace.valid.eq(any_valid)]
        return m
