"""Pipeline depths of the core, and the :class:`~spikestream.formats.CoreTiming` they add up to.

Pure Python: the gateware builds its pipelines to these numbers and the host hands
:func:`core_timing` to :class:`models.golden.GoldenCore`, so the cycle model and the core
agree by construction (and the whole-core tests check that they do).

Every phase starts with ``DISPATCH_CYCLES`` cycles in which the scheduler reads its tables
and decides; its body then runs on the lanes, which the scheduler reaches through
``stages`` register levels of broadcast tree and hears back from through ``stages`` levels
of gather (OR) and done (AND) trees.
"""


__all__ = ["CoreTiming", "PLANNED_TIMING", "DEFAULT_TIMING", "COMMAND_LATENCY", "READ_LATENCY",
           "BANKED_READ_LATENCY", "HOST_READ_LATENCY", "NEURON_LATENCY", "SAMPLER_LATENCY",
           "WALK_LATENCY", "DISPATCH_CYCLES", "SKID_DEPTH", "LANE_SYNAPSES", "core_timing",
           "reset_settle"]


class CoreTiming:
    """Pipeline constants of the core, the parameters of the cycle model.

    The cycle model (models/cycles.py) is written in terms of these; the gateware is built
    to the same numbers, and cocotb checks that they agree cycle for cycle.

    Parameters
    ----------
    broadcast_latency : int
        Cycles from a spike leaving the event queue to it being available in every lane's
        spike FIFO (the depth of the pipelined broadcast tree).
    route_drain : int
        Cycles after a lane's last synapse read until its accumulator write lands.
    update_latency : int
        Depth of the neuron-update pipeline.
    phase_overhead : int
        Cycles the scheduler spends starting any phase (route, update, sample).
    sample_latency : int
        Depth of the sampler pipeline after the last readout value is read.
    """

    def __init__(self, *, broadcast_latency=2, route_drain=3, update_latency=4,
                 phase_overhead=1, sample_latency=3):
        self.broadcast_latency = broadcast_latency
        self.route_drain = route_drain
        self.update_latency = update_latency
        self.phase_overhead = phase_overhead
        self.sample_latency = sample_latency

    def as_dict(self):
        return dict(vars(self))

    def __eq__(self, other):
        return isinstance(other, CoreTiming) and vars(self) == vars(other)

    def __repr__(self):
        return "CoreTiming({})".format(", ".join(f"{k}={v}" for k, v in vars(self).items()))


PLANNED_TIMING = CoreTiming()
"""The constants the cycle model was first written against (hand-checked tests use them)."""


READ_LATENCY = 2
"""Block RAM read: address in cycle ``c``, data in a register during ``c + 2``: the block
RAM's own output register on the ECP5 (hw.core.bram), which keeps its slow clock-to-output
off every logic path; a LUT RAM's read is followed by two fabric registers."""

BANKED_READ_LATENCY = READ_LATENCY + 1
"""Read of a memory deeper than one block RAM (the synapses), built as banks of one block
each: every bank's output is registered next to it (gated by its registered bank select),
and one more register ORs the banks, so no block RAM output drives a multiplexer in the
same cycle. Only the synapse walker sees it, between its reads and the accumulator; no
phase of the cycle model waits for it."""

HOST_READ_LATENCY = 1 + BANKED_READ_LATENCY + 2
"""A lane bus READ op to the word on that lane's gather output: the op is decoded into a
register, and two more register stages after the read choose the memory."""

NEURON_LATENCY = 10
"""Neuron pipeline (hw.core.neuron): operands, multiply, round (and the synaptic current),
input current, integrate, one stage per bit of the graded spike (``MAX_LEVEL_BITS``
compare-and-subtract steps), reset."""

SAMPLER_LATENCY = 6
"""Sampler: noise table read (2), operands, temperature multiply, score, compare
(hw.core.sampler)."""

WALK_LATENCY = 4
"""Spike at a lane to its first synapse read: row pointer read (2, both ends of the row at
once), the row's length (its end minus its start, into a register) and the segment queue."""

COMMAND_LATENCY = 1
"""Cycles between a command's handshake and its first phase (the command is registered);
not part of the cycle model."""

WRITE_LATENCY = 3
"""A write handshaken in cycle t shows its verdict (``status.write_error``) from cycle
t + 1 + WRITE_LATENCY: it is registered as it comes, checked, then done (hw.core.Core); not
part of the cycle model."""

LANE_SYNAPSES = 2
"""Synapses a lane adds a cycle at most (a pair: one word of each half of its synapse
memory, one target of each bank of its accumulator; spikestream.network.pair_row). The
ideal routing time is synaptic events / (lanes x LANE_SYNAPSES)."""

DISPATCH_CYCLES = 2
"""Scheduler cycles per phase: read the tables, then look up the spike count and decide."""

SKID_DEPTH = 16
"""Segment queue between a lane's row-pointer reads and its synapse walker. It must cover
the refill latency (spike-buffer read, pointer read, the row's length, queue write: 7
cycles) with margin so
that a lane never starves while spikes wait."""


def core_timing(stages):
    """The cycle-model constants of a core whose trees have ``stages`` register levels."""
    T = G = P = stages
    first_read = T + 1     # a lane sees a phase's start at T and issues its first read at T + 1
    return CoreTiming(
        # queue read, gather tree, broadcast tree, then pointer read and segment queue
        broadcast_latency=first_read + READ_LATENCY + G + T + WALK_LATENCY,
        # the slowest lane's done flag climbs the done tree; the scheduler moves on
        route_drain=1 + G,
        # reads, neuron pipeline, spike-count register, prefix sum of the lanes' counts
        # (an input register, then P levels)
        update_latency=first_read + READ_LATENCY + NEURON_LATENCY + 1 + 1 + P,
        phase_overhead=DISPATCH_CYCLES,
        sample_latency=first_read + READ_LATENCY + G + SAMPLER_LATENCY,
    )


DEFAULT_TIMING = core_timing(2)
"""The default core's pipeline: trees of 2 register levels, up to 16 lanes. Cores with
deeper trees (more than 16 lanes) run to ``core_timing(stages)``: pass that as ``timing``."""


def reset_settle(stages):
    """Cycles after a reset before the core takes a command, write or read, and for which
    the lanes' reset is held past the core's (at least). The lanes' reset comes down a
    registered tree like the lane bus (``stages`` cycles late), and the trees are reset-less:
    for ``stages`` cycles after the reset the lanes still run and what they send takes
    ``stages`` more to leave the gather tree, and a spike the core passes on from there
    reaches the lanes ``stages`` later still. Holding the lanes' reset this long after the
    core's ends swallows all of that; a bus word the core sends once settled reaches the
    lanes just as they leave reset."""
    return 2 * stages + 2
