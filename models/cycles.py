"""The cycle model: how many clock cycles the core spends on one timestep.

The core runs a timestep as a sequence of phases, each starting when the previous one has
finished (all constants are in :class:`spikestream.formats.CoreTiming`):

* **route** (one per route group: the projections of one source and one delay, see
  spikestream.network.route_groups, routed before the earliest member target's update):
  the source's spikes leave its event queue one per cycle in *lane-major* order (every
  spike of lane 0's neurons in address order, then lane 1's, ...; each lane queues the
  spikes of its own neurons). A spike with rank ``r`` reaches every lane's spike FIFO at
  cycle ``r + broadcast_latency``. Each lane walks the segment of that spike's row that
  targets it (every member's synapses in it) in the segment's *slots*: two synapses a
  cycle where the layout pairs them, one elsewhere (``LaneLayout.seg_cycles``, see
  spikestream.network.pair_row: ``max(1, even, odd)`` cycles for ``even`` and ``odd``
  synapses to even and odd local addresses, one more for a row of as many of each that
  starts at an odd address; an empty segment still costs its pointer read). Lanes run
  independently. The
  phase lasts until the slowest lane is done, plus ``route_drain``, plus
  ``phase_overhead``; a group with no spikes costs ``phase_overhead`` alone.
* **update** (one per population): ``ceil(size / lanes) + update_latency + phase_overhead``.
* **sample** (only for a network with a readout): ``vocab + sample_latency +
  phase_overhead`` (one readout value per cycle).

Inputs (the token, spike inputs) are routed like populations, except that their spikes enter
in ascending id order (rank ``r`` is the ``r``-th smallest id spiking), injected by the
scheduler where the lanes' first spike would have been. A spike's value ``q`` (multi-level
neurons) costs nothing extra: the lane multiplies as it adds.

The ideal routing time is ``synaptic events / (lanes x LANE_SYNAPSES)``: every lane adding
a pair of synapses every cycle (spikestream.timing.LANE_SYNAPSES).
"""

import numpy as np
import torch

__all__ = ["lane_major_order", "RouteCost", "route_cost", "update_cycles", "sample_cycles"]


def lane_major_order(size, lanes):
    """Neuron ids of a population in the order its spikes are broadcast."""
    ids = np.arange(size)
    return np.lexsort((ids // lanes, ids % lanes))


class RouteCost:
    """Per-group constants for :func:`route_cost`, built once per image.

    ``seg_len`` is ``[src size, lanes]``: the synapses of each source's segment in each lane;
    ``seg_cycles`` (the same shape) the cycles a lane walks it (default: one synapse a cycle,
    ``max(1, seg_len)``). A population's spikes leave the lanes' queues in lane-major order
    (``lane_major``); an input's (the token, a spike input's vector) are injected by the
    scheduler in ascending id order (``lane_major=False``).
    """

    def __init__(self, seg_len, lanes, timing, lane_major=True, seg_cycles=None):
        n = seg_len.shape[0]
        order = lane_major_order(n, lanes) if lane_major else np.arange(n)
        self.order = torch.as_tensor(order)
        cycles = np.maximum(seg_len, 1) if seg_cycles is None else seg_cycles
        self.cost = torch.as_tensor(cycles[order])                      # [S, L] lane-major
        self.events = torch.as_tensor(seg_len.sum(1))                   # [S] id order
        self.timing = timing


def route_cost(rc, spikes):
    """Cycles of one route phase and the synaptic events it performs.

    Parameters
    ----------
    rc : RouteCost
    spikes : torch.Tensor
        Bool ``[B, src size]`` in neuron-id order.

    Returns
    -------
    (cycles, events) : int64 tensors ``[B]``
    """
    t = rc.timing
    m = spikes[:, rc.order].long()                                # [B, S] lane-major
    work = m[:, :, None] * rc.cost[None]                          # [B, S, L]
    after = work.flip(1).cumsum(1).flip(1)                        # work of spike k and later
    rank = m.cumsum(1) - 1
    finish = torch.where(m[:, :, None].bool(), rank[:, :, None] + t.broadcast_latency + after,
                         torch.zeros_like(after)).flatten(1).amax(1)
    busy = m.sum(1) > 0
    cycles = torch.where(busy, finish + t.route_drain + t.phase_overhead,
                         torch.full_like(finish, t.phase_overhead))
    events = (spikes.long() * rc.events[None]).sum(1)
    return cycles, events


def update_cycles(size, lanes, timing):
    """Cycles of one population's update phase."""
    return -(-size // lanes) + timing.update_latency + timing.phase_overhead


def sample_cycles(vocab_size, timing):
    """Cycles of the sampler phase."""
    return vocab_size + timing.sample_latency + timing.phase_overhead
