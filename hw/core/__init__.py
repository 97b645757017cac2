"""The spike-routing core: what docs/golden-model.md defines, in gateware.

:class:`Core` is the whole thing. Its blocks, each importable for unit tests:

* :class:`LaneArray` — ``lanes`` :class:`Lane` s behind three pipelined trees
  (:class:`Broadcast` out, :class:`Reduce` OR and AND back), ``stages`` registers deep.
* :class:`Lane` — one lane's block RAMs (parameters, state, accumulator, row pointers,
  synapses, spike queue, spike buffer) and its engines: the neuron pipeline
  (:class:`NeuronUnit`, ``models.neurons.int_update`` one neuron per cycle, in its
  population's kind, reset mode and spike levels); after the row-pointer read the
  :class:`SegmentQueue`, the :class:`Walker` (a slot per cycle: two synapse words, one of
  each half of the synapse memory, or one), the steering of each word to the bank of its
  target's parity and an :class:`Accumulator` per bank of the
  accumulator (even and odd targets; each synapse's weight times its spike's value,
  forwarding the two writes in flight); and the readout streamer.
* :class:`Sampler` — xorshift32, the Gumbel table and the running first maximum.

How a timestep runs (every phase begins with ``DISPATCH_CYCLES`` of table lookups):

* Every STEP first moves every source (population, spike input) on to its next kept
  timestep (spikestream.memory_map, History): a spike-table entry and a region of the
  queues (or of the input memory), where the host has already written a spike input's ids.
* **update** ``p``: the scheduler broadcasts one UPDATE; every lane streams its rows
  through the neuron pipeline, writes ``v, a, s`` back, clears the accumulator and (if
  ``p`` keeps its spikes) queues its spiking neurons' rows and values in ``p``'s region of
  this timestep. The lanes' spike counts then go through a prefix sum into ``p``'s
  spike-table entry: the window of spike ranks ``[bounds[l], bounds[l+1])`` of every lane.
* **route** a projection of delay ``d``: one ROUTE carries the windows of the entry ``d``
  timesteps before its source's current one. Lane ``l`` reads its queue during its
  window, so the lanes together put the source's spikes on the gather tree one per cycle,
  lane-major, without gaps; the scheduler adds the projection's row-pointer base and
  broadcasts them back. An input's spikes are injected instead where the lanes' first
  would have been: the token of ``d`` timesteps ago (a ring of the last ``max_delay + 1``),
  or a spike input's ids, one per cycle, ascending. Each lane takes every spike straight
  to its row-pointer read when its segment queue has room, otherwise into its spike buffer
  (deep enough for a whole source population), and walks ``max(1, slots)`` slots per
  spike (a row's pairs two synapses a slot: spikestream.network.pair_row). Since a lane
  never starves and every spike costs at least a cycle, lane ``l`` finishes
  ``broadcast_latency + sum(max(1, slots))`` cycles after the phase starts: the cycle
  model's route cost. The phase ends when the AND tree has seen every lane done.
* **sample** (a network with a readout): one SAMPLE; lane ``i % lanes`` sends readout
  membrane ``i`` at cycle ``i`` through the gather tree to the sampler.
* After the result, the spike inputs' next entries are emptied (not part of the step).

``Core(config, init=writes)`` starts with an image already loaded (the memories' and
registers' initial contents are what those writes through the write port would leave);
``Core(config, trace=True)`` adds an observation port showing every lane's neuron
write-backs, which the cocotb testbench (sim/tb_core.py) checks against the golden model.

:func:`core_timing` turns the pipeline depths (``spikestream.timing``) into the
:class:`~spikestream.formats.CoreTiming` the core runs to; ``GoldenCore(net, lanes,
timing=core.timing)`` is then the cycle-exact reference. The host-side view (memory ids,
word layouts, image loading, fitting) is :mod:`spikestream.memory_map`; :mod:`hw.core.simhost`
drives a core's ports from amaranth.sim testbenches.
"""

from spikestream.timing import core_timing
from .broadcast import Broadcast, Reduce
from .neuron import NeuronUnit
from .walker import Accumulator, SegmentQueue, Walker
from .sampler import Sampler
from .lane import Lane
from .fabric import LaneArray
from .core import Core

__all__ = ["core_timing", "Broadcast", "Reduce", "NeuronUnit", "SegmentQueue", "Walker",
           "Accumulator", "Sampler", "Lane", "LaneArray", "Core"]
