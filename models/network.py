"""The integer network that the core runs, and its layout across lanes.

A :class:`Network` is the logical description: populations of neurons with integer
parameters, projections with integer weights, a delay of 0 or 1 timestep each, and the
vocabulary. :func:`lane_layout` turns it, for a number of lanes, into exactly what each
lane's memories hold: per-source compressed rows of ``(target address, weight)`` pairs.
Networks from other tools can be built from plain arrays with :func:`make_population`
and :class:`Projection`, then checked with :meth:`Network.check` and saved with
``models.image.save_image``.

Schedule (one timestep = one token)
-----------------------------------
1. The token is the only spike of the token input (source :data:`INPUT`).
2. Populations are updated in list order. Before population ``p`` is updated, every
   projection into ``p`` is routed, in list order (projections are listed grouped by
   target, in population order): a delay-0 projection carries its source's
   spikes of this timestep (so its source must be the input or an earlier population), a
   delay-1 projection its source's spikes of the previous timestep (any source, ``p``
   itself included: that is how recurrence and token shift are expressed).
3. The readout population's membranes are the logits; the sampler picks the next token.
"""

import numbers
from dataclasses import dataclass, field

import numpy as np

from .formats import (ACC_MAX, DECAY_ONE, STATE_MAX, STATE_MIN, WEIGHT_MAX, WEIGHT_MIN,
                      NeuronKind)

__all__ = ["INPUT", "MAX_NEURONS_PER_LANE", "NetworkError", "Population", "Projection", "Network", "make_population",
           "LaneLayout", "lane_layout"]

MAX_NEURONS_PER_LANE = 1 << 16
"""Local neuron addresses are 16 bits in the image (the core may support fewer)."""

INPUT = -1
"""Source index of the token input: a one-hot population of ``len(vocab)`` neurons."""


class NetworkError(ValueError):
    """A network (or an image holding one) is inconsistent or cannot run on the core."""


@dataclass(eq=False)
class Population:
    """A group of neurons of one kind, updated together.

    Parameters are integer arrays of one entry per neuron (see models/neurons.py for the
    equations). ``scale`` is the compiler's integer-per-float factor of each neuron (used to
    turn readout membranes back into logits); ``perm[i]`` is the index in the source model
    of core neuron ``i`` (the compiler may reorder neurons to balance lanes).
    """
    name: str
    kind: NeuronKind
    alpha: np.ndarray
    theta: np.ndarray
    rho: np.ndarray
    jump: np.ndarray
    bias: np.ndarray
    scale: np.ndarray
    perm: np.ndarray

    PARAMS = ("alpha", "theta", "rho", "jump", "bias")

    @property
    def size(self):
        return len(self.alpha)


def make_population(name, kind, size, *, alpha=0, theta=1, rho=0, jump=0, bias=0, scale=1.0,
                    perm=None):
    """Build a :class:`Population` from scalars or arrays (broadcast to ``size``)."""
    def arr(x, dtype=np.int64):
        a = np.broadcast_to(np.asarray(x, dtype=dtype), (size,)).copy()
        return a
    return Population(name=name, kind=NeuronKind(kind), alpha=arr(alpha), theta=arr(theta),
                      rho=arr(rho), jump=arr(jump), bias=arr(bias),
                      scale=arr(scale, np.float64),
                      perm=arr(np.arange(size) if perm is None else perm))


@dataclass(eq=False)
class Projection:
    """Synapses from ``src`` (a population index or :data:`INPUT`) to population ``dst``.

    ``weights`` is a dense integer array ``[src size, dst size]``; zeros are not synapses
    and are never stored on the core.
    """
    src: int
    dst: int
    delay: int
    weights: np.ndarray

    @property
    def nonzero(self):
        return int(np.count_nonzero(self.weights))


@dataclass(eq=False)
class Network:
    """A complete integer network: what one image holds."""
    vocab: list
    populations: list
    projections: list
    readout: int
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def source_size(self, src):
        return self.vocab_size if src == INPUT else self.populations[src].size

    def source_name(self, src):
        return "input" if src == INPUT else self.populations[src].name

    @property
    def nonzero_synapses(self):
        return sum(p.nonzero for p in self.projections)

    def check(self):
        """Raise :class:`NetworkError` naming the first thing the core cannot run."""
        if not self.vocab or len(set(self.vocab)) != len(self.vocab):
            raise NetworkError("vocabulary is empty or has repeated tokens")
        if not self.populations:
            raise NetworkError("network has no populations")
        if not 0 <= self.readout < len(self.populations):
            raise NetworkError(f"readout index {self.readout} is not a population")
        ro = self.populations[self.readout]
        if ro.kind != NeuronKind.READOUT:
            raise NetworkError(f"readout population {ro.name!r} is {ro.kind.name}, not READOUT")
        if ro.size != self.vocab_size:
            raise NetworkError(f"readout population has {ro.size} neurons but the vocabulary "
                               f"has {self.vocab_size} tokens")
        for p in self.populations:
            if p.size < 1:
                raise NetworkError(f"population {p.name!r} is empty")
            for name in Population.PARAMS + ("scale", "perm"):
                if getattr(p, name).shape != (p.size,):
                    raise NetworkError(f"population {p.name!r}: {name} has shape "
                                       f"{getattr(p, name).shape}, expected ({p.size},)")
            for name in Population.PARAMS + ("perm",):
                if getattr(p, name).dtype.kind not in "iu":
                    raise NetworkError(f"population {p.name!r}: {name} must be integers, not "
                                       f"{getattr(p, name).dtype}")
            for name in ("alpha", "rho"):
                x = getattr(p, name)
                if x.min() < 0 or x.max() > DECAY_ONE:
                    raise NetworkError(f"population {p.name!r}: {name} outside 0..{DECAY_ONE}")
            for name in ("theta", "jump", "bias"):
                x = getattr(p, name)
                if x.min() < STATE_MIN or x.max() > STATE_MAX:
                    raise NetworkError(f"population {p.name!r}: {name} outside "
                                       f"{STATE_MIN}..{STATE_MAX}")
            if sorted(p.perm.tolist()) != list(range(p.size)):
                raise NetworkError(f"population {p.name!r}: perm is not a permutation")
        dsts = [pr.dst for pr in self.projections]
        if dsts != sorted(dsts):
            raise NetworkError("projections must be listed grouped by target population, in "
                               "population order (the core routes them in list order)")
        fan_in = [np.zeros(p.size, dtype=np.int64) for p in self.populations]
        for j, pr in enumerate(self.projections):
            where = f"projection {j} ({pr.src} -> {pr.dst})"
            if not (pr.src == INPUT or 0 <= pr.src < len(self.populations)):
                raise NetworkError(f"{where}: no such source population")
            if not 0 <= pr.dst < len(self.populations):
                raise NetworkError(f"{where}: no such target population")
            if pr.delay not in (0, 1):
                raise NetworkError(f"{where}: delay must be 0 or 1, not {pr.delay}")
            if pr.delay == 0 and pr.src != INPUT and pr.src >= pr.dst:
                raise NetworkError(f"{where}: a delay-0 projection must come from the input "
                                   "or an earlier population (use delay 1 for recurrence)")
            shape = (self.source_size(pr.src), self.populations[pr.dst].size)
            if pr.weights.shape != shape:
                raise NetworkError(f"{where}: weights have shape {pr.weights.shape}, "
                                   f"expected {shape}")
            if pr.weights.dtype.kind not in "iu":
                raise NetworkError(f"{where}: weights must be integers, not {pr.weights.dtype}")
            if pr.weights.size and (pr.weights.min() < WEIGHT_MIN or pr.weights.max() > WEIGHT_MAX):
                raise NetworkError(f"{where}: weights outside {WEIGHT_MIN}..{WEIGHT_MAX}")
            fan_in[pr.dst] += np.abs(pr.weights.astype(np.int64)).sum(0)
        for p, f in zip(self.populations, fan_in):
            worst = int((f + np.abs(p.bias)).max())
            if worst > ACC_MAX:
                raise NetworkError(f"population {p.name!r}: a neuron's summed |weights| "
                                   f"({worst}) could overflow the accumulator (max {ACC_MAX})")
        return self

    def check_lanes(self, lanes):
        """Raise :class:`NetworkError` if the network cannot be laid out over ``lanes``."""
        if not isinstance(lanes, numbers.Integral):
            raise NetworkError(f"lanes must be an integer, not {lanes!r}")
        if lanes < 1:
            raise NetworkError(f"lanes must be at least 1, not {lanes}")
        per_lane = sum(-(-p.size // lanes) for p in self.populations)
        if per_lane > MAX_NEURONS_PER_LANE:
            raise NetworkError(f"{per_lane} neurons per lane with {lanes} lanes; a lane "
                               f"addresses at most {MAX_NEURONS_PER_LANE}")
        return self


@dataclass(eq=False)
class LaneLayout:
    """What each lane's memories hold for a network, and the numbers the cycle model needs.

    Neuron ``n`` of population ``p`` lives in lane ``n % lanes`` at local address
    ``pop_base[p] + n // lanes``. Projection ``j``'s row pointers for source ``k`` are at
    ``ptr_base[j] + k`` in every lane; entry ``(start, length)`` selects the lane's
    synapse words ``syn_addr[start:start+length]``, ``syn_weight[...]`` (targets ascending).
    """
    lanes: int
    pop_base: list
    neurons_per_lane: int
    ptr_base: list
    ptr_start: list      # per lane: int64 [ptr entries]
    ptr_len: list        # per lane: int64 [ptr entries]
    syn_addr: list       # per lane: int64 [synapses in lane]
    syn_weight: list     # per lane: int64 [synapses in lane]
    seg_len: list        # per projection: int64 [src size, lanes]

    @property
    def ptr_entries(self):
        return self.ptr_base[-1] if self.ptr_base else 0

    def synapses_per_lane(self):
        return [len(a) for a in self.syn_addr]


def lane_layout(net, lanes):
    """Lay ``net`` out over ``lanes`` lanes (see :class:`LaneLayout`)."""
    net.check_lanes(lanes)
    pop_base, base = [], 0
    for p in net.populations:
        pop_base.append(base)
        base += -(-p.size // lanes)
    ptr_base, n_ptr = [], 0
    for pr in net.projections:
        ptr_base.append(n_ptr)
        n_ptr += net.source_size(pr.src)
    ptr_base.append(n_ptr)
    ptr_start = [np.zeros(n_ptr, np.int64) for _ in range(lanes)]
    ptr_len = [np.zeros(n_ptr, np.int64) for _ in range(lanes)]
    addrs = [[] for _ in range(lanes)]
    weights = [[] for _ in range(lanes)]
    fill = [0] * lanes
    seg_len = []
    for j, pr in enumerate(net.projections):
        n_dst = pr.weights.shape[1]
        lens = np.zeros((pr.weights.shape[0], lanes), np.int64)
        for lane in range(lanes):
            cols = np.arange(lane, n_dst, lanes)
            block = pr.weights[:, cols]
            nz_rows, nz_cols = np.nonzero(block)      # row-major: sources, then targets
            counts = np.bincount(nz_rows, minlength=block.shape[0])
            lens[:, lane] = counts
            starts = fill[lane] + np.concatenate([[0], np.cumsum(counts)[:-1]])
            ptr_start[lane][ptr_base[j]:ptr_base[j + 1]] = starts
            ptr_len[lane][ptr_base[j]:ptr_base[j + 1]] = counts
            addrs[lane].append(pop_base[pr.dst] + nz_cols)
            weights[lane].append(block[nz_rows, nz_cols].astype(np.int64))
            fill[lane] += len(nz_rows)
        seg_len.append(lens)
    cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)
    return LaneLayout(lanes=lanes, pop_base=pop_base, neurons_per_lane=base, ptr_base=ptr_base,
                      ptr_start=ptr_start, ptr_len=ptr_len,
                      syn_addr=[cat(a) for a in addrs], syn_weight=[cat(w) for w in weights],
                      seg_len=seg_len)
