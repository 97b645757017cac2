"""The spike-routing core (see docs/golden-model.md for what it computes).

:class:`Core` is the whole thing; its blocks are importable for unit tests:
:class:`LaneArray` (the lanes and their trees), :class:`Lane`, :class:`NeuronUnit`,
:class:`Sampler`, :class:`Broadcast`, :class:`Reduce`. :mod:`hw.core.simhost` drives a core's
ports from amaranth.sim testbenches.
The host-side view (memory ids, word layouts, image loading) is :mod:`hw.memory_map`; the
cycle-model constants the core runs to are :func:`core_timing`.
"""

from .timing import core_timing
from .broadcast import Broadcast, Reduce
from .neuron import NeuronUnit
from .sampler import Sampler
from .lane import Lane
from .fabric import LaneArray
from .core import Core

__all__ = ["core_timing", "Broadcast", "Reduce", "NeuronUnit", "Sampler", "Lane", "LaneArray", "Core"]
