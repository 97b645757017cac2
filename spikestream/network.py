"""The integer network that the core runs, and its layout across lanes.

A :class:`Network` is the logical description: populations of neurons with integer
parameters, projections with integer weights and a delay, a token input and/or spike inputs,
an optional readout (sampled or classified on the core) and output populations.
:func:`lane_layout` turns it, for a number of lanes, into exactly what each lane's memories
hold: per-source compressed rows of ``(target address, weight)`` pairs. Networks from other
tools can be built from plain arrays with :func:`make_population` and :class:`Projection`,
then checked with :meth:`Network.check` and saved with ``spikestream.image.save_image``.
docs/general-networks.md defines the schedule and the neuron update; in short:

Schedule (one timestep)
-----------------------
1. The token is the only spike of the token input (source :data:`INPUT`); spike input
   ``k`` (source :func:`spike_input` ``(k)``) carries the 0/1 vector the host sends.
2. Populations are updated in list order. Before population ``p`` is updated, every
   projection into ``p`` is routed (projections are listed grouped by target, in population
   order): a projection of delay ``d`` carries its source's spikes (values ``q``, each adding
   ``q * w``) of timestep ``t - d``. Delay 0 needs an input or an earlier population as
   source; any delay of at least 1 may close a loop. The core routes all projections of one
   source and one delay in one phase (a :class:`RouteGroup`: each spike is sent once, its
   row holds the synapses of all of them), before the earliest of their targets is updated;
   the sums are the same in any order.
3. If there is a readout, its membranes are the logits; the sampler picks the next token.
"""

import numbers
from dataclasses import dataclass, field

import numpy as np

from .formats import (ACC_MAX, DECAY_ONE, MAX_DELAY, MAX_LEVEL_BITS, MAX_TAIL,
                      NEURON_KIND_CUBA, NEURON_KIND_RESET, NEURON_KIND_SPIKES, STATE_MAX,
                      STATE_MIN, WEIGHT_MAX, WEIGHT_MIN, NeuronKind, ResetMode)

__all__ = ["INPUT", "MAX_NEURONS_PER_LANE", "MAX_LABEL_CHARS", "TOKEN_WHITESPACE", "NetworkError",
           "spike_input", "input_index", "check_vocab", "InputSpec", "PopulationMode",
           "Population", "Projection", "Network", "make_population", "RouteGroup",
           "route_groups", "projection_groups", "pop_bases", "LaneLayout", "pair_row",
           "lane_layout", "core_layout"]

MAX_NEURONS_PER_LANE = 1 << 16
"""Local neuron addresses are 16 bits in the image (the core may support fewer)."""

INPUT = -1
"""Source index of the token input: a one-hot population of ``len(vocab)`` neurons."""


def spike_input(k):
    """Source index of spike input ``k`` (``-2 - k``)."""
    return -2 - int(k)


def input_index(src):
    """The spike input a source index names (``None`` for a population or the token)."""
    return -2 - src if src <= -2 else None


MAX_LABEL_CHARS = 32
"""Longest class label of a network without a token input (its vocabulary is its readout's
class labels, which may be words)."""


class NetworkError(ValueError):
    """A network (or an image holding one) is inconsistent or cannot run on the core."""


TOKEN_WHITESPACE = "\n\t"
"""The characters other than printable ones (``str.isprintable``, space included) that a
vocabulary may hold."""


def check_vocab(vocab, labels=False):
    """Raise :class:`NetworkError` unless ``vocab`` is a non-empty list of distinct tokens,
    each a single printable character (or one of :data:`TOKEN_WHITESPACE`).

    Control characters, escape sequences and longer strings are refused, so that a
    vocabulary can neither garble a terminal nor stand for more than one character. A
    network rebuilt from a core's memories knows no characters: the token ids
    ``0, 1, ..., n - 1`` (Python ints, in order) are accepted as its vocabulary. With
    ``labels`` (a classifier's class names: no token input reads them) entries may be
    printable strings of up to :data:`MAX_LABEL_CHARS` characters.
    """
    if not isinstance(vocab, (list, tuple)):
        raise NetworkError(f"vocabulary must be a list, not {type(vocab).__name__}")
    if not vocab:
        raise NetworkError("vocabulary is empty")
    if all(type(t) is int for t in vocab) and list(vocab) == list(range(len(vocab))):
        return
    longest = MAX_LABEL_CHARS if labels else 1
    for i, t in enumerate(vocab):
        if not isinstance(t, str) or not 1 <= len(t) <= longest:
            shown = repr(t) if len(repr(t)) <= 40 else repr(t)[:37] + "..."
            want = (f"a string of 1 to {longest} characters" if labels
                    else "a one-character string")
            raise NetworkError(f"vocabulary entry {i} is {shown} ({type(t).__name__}), not "
                               f"{want}")
        if not (t.isprintable() or (len(t) == 1 and t in TOKEN_WHITESPACE)):
            bad = next(c for c in t if not c.isprintable())
            raise NetworkError(f"vocabulary entry {i} {'is' if t == bad else 'holds'} {bad!r} "
                               f"(U+{ord(bad):04X}), not a "
                               "printable character (control characters and escape "
                               "sequences are refused; newline and tab are allowed)")
    if len(set(vocab)) != len(vocab):
        seen = {}
        for i, t in enumerate(vocab):
            if t in seen:
                raise NetworkError(f"vocabulary has repeated tokens: {t!r} is token "
                                   f"{seen[t]} and token {i}")
            seen[t] = i


@dataclass(frozen=True)
class InputSpec:
    """A spike input: ``size`` neurons whose 0/1 spikes the host sends every timestep."""
    name: str
    size: int


class PopulationMode:
    """What a population's ``kind`` and ``level_bits`` imply, for any class that has them
    and per-neuron ``alpha`` (:class:`Population`, and the float populations of
    models.nirio)."""

    @property
    def size(self):
        return len(self.alpha)

    @property
    def spiking(self):
        return NEURON_KIND_SPIKES[self.kind]

    @property
    def cuba(self):
        """``a`` is a synaptic current (CUBA kinds), not an adaptation."""
        return NEURON_KIND_CUBA[self.kind]

    @property
    def max_value(self):
        """The largest spike value (``2**level_bits - 1``; 0 for a non-spiking kind)."""
        return (1 << self.level_bits) - 1 if self.spiking else 0


@dataclass(eq=False)
class Population(PopulationMode):
    """A group of neurons of one kind, updated together.

    Parameters are integer arrays of one entry per neuron (see models/neurons.py and
    docs/general-networks.md for the equations). ``scale`` is the compiler's
    integer-per-float factor of each neuron (used to turn readout membranes back into
    logits); ``perm[i]`` is the index in the source model of core neuron ``i`` (the
    compiler may reorder neurons to balance lanes). ``reset`` is the reset mode (``None``:
    the kind's, :data:`spikestream.formats.NEURON_KIND_RESET`), ``level_bits`` ``K`` makes
    each spike a value ``0 .. 2**K - 1`` (1: binary), and ``output`` marks a population
    whose spikes (or, if it does not spike, membranes) the host reads every timestep.
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
    reset: ResetMode = None
    level_bits: int = 1
    output: bool = False

    PARAMS = ("alpha", "theta", "rho", "jump", "bias")

    def __post_init__(self):
        self.kind = NeuronKind(self.kind)
        self.reset = NEURON_KIND_RESET[self.kind] if self.reset is None else ResetMode(self.reset)


def make_population(name, kind, size, *, alpha=0, theta=1, rho=0, jump=0, bias=0, scale=1.0,
                    perm=None, reset=None, level_bits=1, output=False):
    """Build a :class:`Population` from scalars or arrays (broadcast to ``size``)."""
    def arr(x, dtype=np.int64):
        a = np.broadcast_to(np.asarray(x, dtype=dtype), (size,)).copy()
        return a
    return Population(name=name, kind=NeuronKind(kind), alpha=arr(alpha), theta=arr(theta),
                      rho=arr(rho), jump=arr(jump), bias=arr(bias),
                      scale=arr(scale, np.float64),
                      perm=arr(np.arange(size) if perm is None else perm),
                      reset=reset, level_bits=level_bits, output=output)


class Projection:
    """Synapses from ``src`` (a population index or :data:`INPUT`) to population ``dst``.

    The weights are an integer matrix ``[src size, dst size]``; zeros are not synapses and
    are never stored on the core. A projection holds them in one of two forms:

    * **dense**, as given to the constructor (``Projection(src, dst, delay, weights)``) or
      assigned to :attr:`weights`: the array itself, so editing it in place edits the
      projection;
    * **sparse**, as built by :meth:`from_synapses` (the image loader does): only the
      non-zero synapses, so memory grows with the synapses, not with ``src x dst``.

    :meth:`synapses`, :attr:`shape` and :attr:`nonzero` work on either form without
    building a dense matrix; everything in ``models`` that walks the weights of a network
    (``Network.check``, :func:`lane_layout`, the golden model) uses them. Reading
    :attr:`weights` of a sparse projection builds the dense matrix once and keeps it, as the
    dense form, from then on (for small networks and callers that edit weights).
    """

    def __init__(self, src, dst, delay, weights):
        self.src, self.dst, self.delay = src, dst, delay
        self.weights = weights

    @classmethod
    def from_synapses(cls, src, dst, delay, shape, rows, cols, values):
        """A sparse projection of ``shape`` ``(src size, dst size)`` holding weight
        ``values[i]`` from source ``rows[i]`` to target ``cols[i]``.

        The synapses may come in any order; zero weights are dropped. The arrays are kept
        without a copy where they already have the stored type (rows and columns as
        ``int32`` while the shape allows, values as given): do not edit them afterwards.
        Raises :class:`NetworkError` if a synapse lies outside ``shape``, one ``(row, col)``
        appears twice, or the arrays are not one-dimensional integers of one length.
        """
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 0:
            raise NetworkError(f"projection shape {shape} is not (source size, target size)")
        arrs = [np.asarray(a) for a in (rows, cols, values)]
        if any(a.ndim != 1 or len(a) != len(arrs[0]) for a in arrs):
            raise NetworkError("synapse rows, cols and values must be one-dimensional arrays "
                               "of one length")
        if any(a.dtype.kind not in "iu" and len(a) for a in arrs):
            raise NetworkError("synapse rows, cols and values must be integers, not "
                               f"{', '.join(str(a.dtype) for a in arrs)}")
        rows, cols, values = arrs
        if values.dtype.kind not in "iu":
            values = values.astype(np.int64)            # an empty list, say
        if len(rows) and (rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0
                          or cols.max() >= shape[1]):
            raise NetworkError(f"a synapse lies outside the projection's shape {shape}")
        index = np.int32 if max(shape, default=0) < 1 << 31 else np.int64
        rows, cols = rows.astype(index, copy=False), cols.astype(index, copy=False)
        keep = values != 0
        if not keep.all():
            rows, cols, values = rows[keep], cols[keep], values[keep]
        if index is np.int32:       # one int64 key per synapse: (row, col) in row-major order
            key = rows.astype(np.int64) * shape[1] + cols
            ordered = bool(np.all(key[1:] > key[:-1]))
            del key
        else:
            step_r, step_c = np.diff(rows), np.diff(cols)
            ordered = not np.any((step_r < 0) | ((step_r == 0) & (step_c <= 0)))
        if not ordered:
            order = np.lexsort((cols, rows))
            rows, cols, values = rows[order], cols[order], values[order]
            same = (np.diff(rows) == 0) & (np.diff(cols) == 0)
            if same.any():
                i = int(np.argmax(same))
                raise NetworkError(f"synapse ({rows[i]}, {cols[i]}) appears twice")
        pr = cls.__new__(cls)
        pr.src, pr.dst, pr.delay = src, dst, delay
        pr._dense, pr._sparse, pr._shape = None, (rows, cols, values), shape
        return pr

    @property
    def weights(self):
        """The dense weight matrix ``[src size, dst size]`` (built from the sparse form on
        first use, as ``int64``, then kept: edits to it are edits to the projection)."""
        if self._dense is None:
            rows, cols, values = self._sparse
            w = np.zeros(self._shape, np.int64)
            w[rows, cols] = values
            self._dense, self._sparse = w, None
        return self._dense

    @weights.setter
    def weights(self, w):
        self._dense, self._sparse, self._shape = np.asarray(w), None, None

    @property
    def shape(self):
        """``(src size, dst size)``."""
        return self._dense.shape if self._dense is not None else self._shape

    @property
    def dtype(self):
        """The weights' dtype."""
        return self._dense.dtype if self._dense is not None else self._sparse[2].dtype

    @property
    def is_sparse(self):
        """True while the projection holds its synapses sparsely (see the class)."""
        return self._dense is None

    def synapses(self):
        """``(rows, cols, values)``: the non-zero synapses, row by row and within a row by
        target (ascending). Integer arrays: indices ``int32`` or ``int64``, values of the
        weights' dtype; widen them before arithmetic that could overflow."""
        if self._dense is None:
            return self._sparse
        w = self._dense
        if w.ndim != 2:
            raise NetworkError(f"weights have shape {w.shape}, not (source size, target size)")
        rows, cols = np.nonzero(w)
        return rows, cols, w[rows, cols]

    @property
    def nonzero(self):
        if self._dense is None:
            return len(self._sparse[2])
        return int(np.count_nonzero(self._dense))

    def __repr__(self):
        return (f"Projection(src={self.src}, dst={self.dst}, delay={self.delay}, "
                f"shape={self.shape}, nonzero={self.nonzero}"
                f"{', sparse' if self.is_sparse else ''})")


@dataclass(eq=False)
class Network:
    """A complete integer network: what one image holds.

    ``vocab`` lists the tokens of the token input (source :data:`INPUT`) and, in the same
    order, the classes of the ``readout`` population (``None``: no readout, nothing is
    sampled); a network with neither has an empty vocabulary. ``inputs`` are the spike
    inputs (:class:`InputSpec`, or ``(name, size)`` pairs).
    """
    vocab: list
    populations: list
    projections: list
    readout: int = None
    meta: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)

    def __post_init__(self):
        self.inputs = [i if isinstance(i, InputSpec) else InputSpec(*i) for i in self.inputs]

    @property
    def vocab_size(self):
        return len(self.vocab)

    @property
    def has_token_input(self):
        return any(pr.src == INPUT for pr in self.projections)

    def source_size(self, src):
        if src == INPUT:
            return self.vocab_size
        if src <= -2:
            return self.inputs[input_index(src)].size
        return self.populations[src].size

    def source_name(self, src):
        if src == INPUT:
            return "input"
        if src <= -2:
            return self.inputs[input_index(src)].name
        return self.populations[src].name

    def source_max_value(self, src):
        """The largest spike value a source sends (inputs: 1)."""
        return 1 if src < 0 else self.populations[src].max_value

    def history(self, src):
        """Timesteps of ``src``'s spikes the core keeps: one more than its longest outgoing
        delay (0 if no projection reads it)."""
        return max((pr.delay + 1 for pr in self.projections if pr.src == src), default=0)

    @property
    def max_delay(self):
        return max((pr.delay for pr in self.projections), default=0)

    @property
    def outputs(self):
        """Indices of the output populations."""
        return [i for i, p in enumerate(self.populations) if p.output]

    @property
    def nonzero_synapses(self):
        return sum(p.nonzero for p in self.projections)

    def check(self):
        """Raise :class:`NetworkError` naming the first thing the core cannot run."""
        if not self.populations:
            raise NetworkError("network has no populations")
        if self.readout is not None and not (isinstance(self.readout, numbers.Integral)
                                             and 0 <= self.readout < len(self.populations)):
            raise NetworkError(f"readout index {self.readout} is not a population")
        if self.has_token_input or self.readout is not None or self.vocab:
            check_vocab(self.vocab, labels=not self.has_token_input)
        if self.readout is not None:
            ro = self.populations[self.readout]
            if ro.spiking:
                raise NetworkError(f"readout population {ro.name!r} is {ro.kind.name}, which "
                                   "spikes; a readout is READOUT or CUBA_LI")
            if ro.size != self.vocab_size:
                raise NetworkError(f"readout population has {ro.size} neurons but the "
                                   f"vocabulary has {self.vocab_size} tokens")
        elif self.vocab and not self.has_token_input:
            raise NetworkError("a vocabulary without a token input or a readout")
        names = set()
        for k, spec in enumerate(self.inputs):
            if not isinstance(spec.name, str) or not spec.name.isprintable() \
                    or not 1 <= len(spec.name) <= MAX_LABEL_CHARS:
                raise NetworkError(f"spike input {k}: its name {spec.name!r} is not a printable "
                                   f"string of 1 to {MAX_LABEL_CHARS} characters")
            if spec.name in names:
                raise NetworkError(f"spike input {k}: the name {spec.name!r} is taken")
            names.add(spec.name)
            if not isinstance(spec.size, numbers.Integral) or spec.size < 1:
                raise NetworkError(f"spike input {spec.name!r}: size {spec.size!r} is not a "
                                   "positive integer")
        for i, p in enumerate(self.populations):
            if not isinstance(p.name, str) or not p.name.isprintable():
                raise NetworkError(f"population {i}: its name {p.name!r} is not a printable "
                                   "string")
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
            if not np.array_equal(np.sort(p.perm), np.arange(p.size)):
                raise NetworkError(f"population {p.name!r}: perm is not a permutation")
            self._check_mode(p)
        dsts = [pr.dst for pr in self.projections]
        if dsts != sorted(dsts):
            raise NetworkError("projections must be listed grouped by target population, in "
                               "population order (the core routes them in list order)")
        fan_in = [np.zeros(p.size, dtype=np.int64) for p in self.populations]
        for j, pr in enumerate(self.projections):
            where = f"projection {j} ({pr.src} -> {pr.dst})"
            if not isinstance(pr.src, numbers.Integral) or not (
                    0 <= pr.src < len(self.populations)
                    or (pr.src == INPUT)
                    or (pr.src <= -2 and input_index(pr.src) < len(self.inputs))):
                raise NetworkError(f"{where}: no such source (a population, the token input "
                                   f"{INPUT} or a spike input -2..{-1 - len(self.inputs)})")
            if not isinstance(pr.dst, numbers.Integral) \
                    or not 0 <= pr.dst < len(self.populations):
                raise NetworkError(f"{where}: no such target population")
            if not isinstance(pr.delay, numbers.Integral) or not 0 <= pr.delay <= MAX_DELAY:
                raise NetworkError(f"{where}: delay must be an integer 0..{MAX_DELAY}, not "
                                   f"{pr.delay!r}")
            if pr.delay == 0 and pr.src >= pr.dst:
                raise NetworkError(f"{where}: a delay-0 projection must come from an input "
                                   "or an earlier population (use a delay of 1 or more for "
                                   "recurrence)")
            shape = (self.source_size(pr.src), self.populations[pr.dst].size)
            if tuple(pr.shape) != shape:
                raise NetworkError(f"{where}: weights have shape {tuple(pr.shape)}, "
                                   f"expected {shape}")
            if pr.dtype.kind not in "iu":
                raise NetworkError(f"{where}: weights must be integers, not {pr.dtype}")
            # A dense matrix is range-checked in its own dtype, before synapses() converts it.
            w = pr.weights if not pr.is_sparse else pr.synapses()[2]
            if w.size and (w.min() < WEIGHT_MIN or w.max() > WEIGHT_MAX):
                raise NetworkError(f"{where}: weights outside {WEIGHT_MIN}..{WEIGHT_MAX}")
            rows, cols, values = pr.synapses()
            q = self.source_max_value(pr.src)
            fan_in[pr.dst] += q * np.bincount(cols, weights=np.abs(values.astype(np.int64)),
                                              minlength=shape[1]).astype(np.int64)
        for p, f in zip(self.populations, fan_in):
            worst = int((f + np.abs(p.bias)).max())
            if worst > ACC_MAX:
                raise NetworkError(f"population {p.name!r}: a neuron's summed |weights| times "
                                   f"spike values ({worst}) could overflow the accumulator "
                                   f"(max {ACC_MAX})")
        return self

    @staticmethod
    def _check_mode(p):
        """The reset mode, spike levels and output flag of population ``p``."""
        if not isinstance(p.output, (bool, np.bool_)):
            raise NetworkError(f"population {p.name!r}: output must be true or false")
        if not isinstance(p.level_bits, numbers.Integral) \
                or not 1 <= p.level_bits <= MAX_LEVEL_BITS:
            raise NetworkError(f"population {p.name!r}: level_bits must be 1..{MAX_LEVEL_BITS}, "
                               f"not {p.level_bits!r}")
        if not p.spiking:
            if p.reset != ResetMode.NONE:
                raise NetworkError(f"population {p.name!r}: a {p.kind.name} population never "
                                   f"spikes, so its reset must be NONE, not {p.reset.name}")
            if p.level_bits != 1:
                raise NetworkError(f"population {p.name!r}: a {p.kind.name} population never "
                                   "spikes, so it has no spike levels")
            return
        if p.reset == ResetMode.NONE:
            raise NetworkError(f"population {p.name!r}: a {p.kind.name} population spikes; its "
                               "reset must be ZERO, SUBTRACT or SUBTRACT_NEXT")
        if p.level_bits > 1:
            if p.kind == NeuronKind.ALIF:
                raise NetworkError(f"population {p.name!r}: multi-level spikes need a fixed "
                                   "threshold (LIF, IF or CUBA_LIF), not ALIF")
            if p.reset == ResetMode.SUBTRACT_NEXT:
                raise NetworkError(f"population {p.name!r}: SUBTRACT_NEXT is for binary spikes "
                                   "(level_bits 1)")
            if p.theta.min() < 1 or p.jump.min() < 0:
                raise NetworkError(f"population {p.name!r}: multi-level spikes need every "
                                   "threshold theta >= 1 and jump >= 0 (so theta + a >= 1)")

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


@dataclass(frozen=True)
class RouteGroup:
    """Projections the core routes in one phase: one source, one delay.

    Each spike of ``src`` is broadcast once; its row (one row pointer per source neuron)
    holds the synapses of every member, member by member. The phase runs before population
    ``dst`` is updated: the earliest target of the members, so that every target's sum is
    complete before its update. ``members`` are projection indices in list order.
    """
    src: int
    delay: int
    dst: int
    members: tuple


def route_groups(net):
    """The phases of ``net`` as the core runs them: one :class:`RouteGroup` for each source
    and delay, in the order of their targets (then of their first projection)."""
    by_key = {}
    for j, pr in enumerate(net.projections):
        by_key.setdefault((pr.src, pr.delay), []).append(j)
    groups = [RouteGroup(src, delay, min(net.projections[j].dst for j in m), tuple(m))
              for (src, delay), m in by_key.items()]
    return sorted(groups, key=lambda g: (g.dst, g.members[0]))


def projection_groups(net):
    """One :class:`RouteGroup` per projection (a phase each): the layout an image stores."""
    return [RouteGroup(pr.src, pr.delay, pr.dst, (j,)) for j, pr in enumerate(net.projections)]


@dataclass(eq=False)
class LaneLayout:
    """What each lane's memories hold for a network, and the numbers the cycle model needs.

    Neuron ``n`` of population ``p`` lives in lane ``n % lanes`` at local address
    ``pop_base[p] + n // lanes``. Route group ``g``'s row pointers for source ``k`` are at
    ``ptr_base[g] + k`` in every lane; entry ``(start, length)`` selects the lane's
    synapse words ``syn_addr[start:start+length]``, ``syn_weight[...]``. Unpaired (the
    layout an image stores) a row holds its synapses member by member, each member's
    targets ascending, and ``ptr_tail`` is 0. Paired (the core's: :func:`core_layout`) a
    row is laid out for a lane that walks two words a cycle (:func:`pair_row`): ``ptr_tail``
    is the number of its last words walked one a cycle, and a row may hold zero-weight
    words (pads) beyond its synapses.
    """
    lanes: int
    groups: list         # RouteGroup
    pop_base: list
    neurons_per_lane: int
    ptr_base: list       # per group, and the total
    ptr_start: list      # per lane: int64 [ptr entries]
    ptr_len: list        # per lane: int64 [ptr entries]: words (synapses and pads)
    ptr_tail: list       # per lane: int64 [ptr entries]
    syn_addr: list       # per lane: int64 [words in lane]
    syn_weight: list     # per lane: int64 [words in lane]
    seg_len: list        # per group: int64 [src size, lanes]: synapses (events)
    seg_cycles: list     # per group: int64 [src size, lanes]: cycles a lane walks the row

    @property
    def ptr_entries(self):
        return self.ptr_base[-1] if self.ptr_base else 0

    def row_starts(self, lane):
        """Lane ``lane``'s ``PTR`` starts: each row's start, then the last row's end (its
        rows lie back to back: row ``k`` ends where row ``k + 1`` starts)."""
        return np.append(self.ptr_start[lane], len(self.syn_addr[lane]))

    def row_tails(self, lane):
        """Lane ``lane``'s ``PTR`` tails, as :meth:`row_starts` (the last word's is 0)."""
        return np.append(self.ptr_tail[lane], 0)

    def synapses_per_lane(self):
        return [len(a) for a in self.syn_addr]


def pop_bases(net, lanes):
    """Each population's first local address in a lane (:class:`LaneLayout`'s ``pop_base``),
    and the neurons a lane holds: cheap, for hosts that need only where neurons live."""
    bases, base = [], 0
    for p in net.populations:
        bases.append(base)
        base += -(-p.size // lanes)
    return bases, base


def pair_row(even, odd, odd_start):
    """How a lane that walks two synapse words a cycle lays out rows of ``even`` and ``odd``
    synapses (to targets of even and odd local address; arrays or ints) starting at an odd
    address or not (``odd_start``).

    A lane reads words ``2k`` and ``2k + 1`` together, and its accumulator is two banks by
    target parity, so a *pair* is an even target at an even address and an odd one after it.
    A row is: one synapse if it starts at an odd address (a *lead*: of the more numerous
    parity), then pairs, then its *tail* of the synapses left (all of one parity), walked
    one a cycle. A tail longer than :data:`~spikestream.formats.MAX_TAIL` (what a row pointer
    holds) is shortened by pads: zero-weight synapses of the other parity that make pairs.

    Returns ``(lead, pairs, tail, pads, cycles)``: ``cycles = max(1, lead + pairs + tail)``,
    which is ``max(1, even, odd)`` except for a row with as many of each that starts at an
    odd address (one more); an empty row costs its pointer read.
    """
    even, odd = np.asarray(even), np.asarray(odd)
    n = even + odd
    r = np.abs(even - odd)
    lead = (np.asarray(odd_start) & (n > 0)).astype(np.int64)
    # r >= 1: the lead is one of the majority; r == 0: an even one, and an odd one is left.
    tail = np.where(r == 0, lead, r - lead)
    pads = np.maximum(0, tail - MAX_TAIL)
    tail = tail - pads
    pairs = (n + pads - lead - tail) // 2
    return lead, pairs, tail, pads, np.maximum(1, lead + pairs + tail)


def _parity_counts(rows, lane, addr, lanes, n_src):
    """Synapses to even and to odd local addresses of each row: ``[2, n_src * lanes]``."""
    key = (rows * lanes + lane) * 2 + (addr & 1)
    return np.bincount(key, minlength=2 * n_src * lanes).reshape(n_src * lanes, 2).T


def _odd_starts(counts, seg_len):
    """Whether each group's rows start at an odd address (``[src size, lanes]`` a group) in
    a paired layout, given each group's :func:`_parity_counts`: a lane's rows lie back to
    back, each its synapses and its pads long, and a row's pads depend on where it starts,
    so the few rows that may need pads (a tail that could exceed MAX_TAIL) are placed one
    after another."""
    if not counts:
        return []
    counts = [c.reshape(2, *n.shape) for c, n in zip(counts, seg_len)]
    even = np.concatenate([c[0] for c in counts])
    odd = np.concatenate([c[1] for c in counts])
    n = even + odd
    starts = np.cumsum(n, axis=0) - n
    pads = np.zeros_like(n)
    for ln in range(n.shape[1]):
        shift = 0
        for k in np.flatnonzero(np.abs(even[:, ln] - odd[:, ln]) > MAX_TAIL):
            pads[k, ln] = pair_row(even[k, ln], odd[k, ln], (starts[k, ln] + shift) & 1)[3]
            shift += pads[k, ln]
    lens = n + pads
    odd_start = (np.cumsum(lens, axis=0) - lens) & 1
    return np.split(odd_start, np.cumsum([len(s) for s in seg_len])[:-1])


def _paired_layout(rows, lane, addr, values, lanes, counts, start_odd, pad_ok):
    """One group's synapses in paired order (see :func:`pair_row`) with its pads, given its
    :func:`_parity_counts` and whether each of its rows starts at an odd address
    (``start_odd`` ``[n_src, lanes]``). Returns ``(lane, addr, values, words, tail,
    cycles)``, the last three ``[n_src, lanes]``."""
    n_src = start_odd.shape[0]
    even, odd = counts
    lead, pairs, tail, pads, cycles = pair_row(even, odd, start_odd.reshape(-1))
    major = (odd > even).astype(np.int64)
    if pads.any():
        pad_par = 1 - major
        if not pad_ok and (pad_par[pads > 0] == 1).any():
            raise NetworkError("a row's tail is too long to walk and a lane has no odd "
                               "address to pad it with")
        padded = np.repeat(np.arange(n_src * lanes), pads)
        rows = np.concatenate([rows, padded // lanes])
        lane = np.concatenate([lane, padded % lanes])
        # a pad adds 0 to the first address of its parity
        addr = np.concatenate([addr, pad_par[padded]])
        values = np.concatenate([values, np.zeros(len(padded), values.dtype)])
    seg = rows * lanes + lane
    par = addr & 1
    # each synapse's rank among its row's synapses of its parity (pads last)
    order = np.lexsort((np.arange(len(seg)), par, seg))
    key = (seg * 2 + par)[order]
    first = np.r_[0, np.flatnonzero(np.diff(key)) + 1] if len(key) else np.zeros(0, np.int64)
    rank = np.empty(len(seg), np.int64)
    rank[order] = np.arange(len(key)) - np.repeat(first, np.diff(np.r_[first, len(key)]))
    ld, pr, mj = lead[seg], pairs[seg], major[seg]
    # the majority: lead, pairs, then the tail; the minority: pairs, then the tail
    skip = np.where(par == mj, ld, 0)
    k = rank - skip
    pos = np.where((par == mj) & (rank < ld), 0,
                   np.where(k < pr, ld + 2 * k + par, ld + 2 * pr + (k - pr)))
    order = np.lexsort((pos, seg))
    words = (even + odd + pads).reshape(n_src, lanes)
    return (lane[order], addr[order], values[order], words, tail.reshape(n_src, lanes),
            cycles.reshape(n_src, lanes))


def lane_layout(net, lanes, groups=None, paired=False):
    """Lay ``net`` out over ``lanes`` lanes (see :class:`LaneLayout`), its projections in
    ``groups`` (:class:`RouteGroup` s covering each projection once; default: a group per
    projection, the layout an image stores; :func:`core_layout` is the core's), its rows
    ``paired`` for the core's lanes or not (see :class:`LaneLayout`).

    Works on each projection's sparse synapses: time and memory grow with the synapses and
    the row pointers, never with ``source size x target size``.
    """
    net.check_lanes(lanes)
    if groups is None:
        groups = projection_groups(net)
    covered = sorted(j for g in groups for j in g.members)
    if covered != list(range(len(net.projections))) or any(
            (net.projections[j].src, net.projections[j].delay) != (g.src, g.delay)
            for g in groups for j in g.members):
        raise NetworkError("route groups must cover every projection once, each member of "
                           "the group's source and delay")
    pop_base, base = pop_bases(net, lanes)
    ptr_base, n_ptr = [], 0
    for g in groups:
        ptr_base.append(n_ptr)
        n_ptr += net.source_size(g.src)
    ptr_base.append(n_ptr)
    seg_len, parts_of = [], []
    for g in groups:
        parts = [net.projections[j].synapses() for j in g.members]
        rows = np.concatenate([r for r, _, _ in parts]).astype(np.int64)
        cols = np.concatenate([c for _, c, _ in parts]).astype(np.int64)
        values = np.concatenate([v for _, _, v in parts])
        g_addr = np.concatenate([c // lanes + pop_base[net.projections[j].dst]
                                 for j, (_, c, _) in zip(g.members, parts)]).astype(np.int64)
        del parts
        if len(g.members) > 1:
            # Each member is row-major; a stable sort by row puts the group's rows in order,
            # member by member within a row.
            order = np.argsort(rows, kind="stable")
            rows, cols, values, g_addr = rows[order], cols[order], values[order], g_addr[order]
            del order
        n_src = net.source_size(g.src)
        lane = cols % lanes
        del cols
        seg_len.append(np.bincount(rows * lanes + lane,
                                   minlength=n_src * lanes).reshape(n_src, lanes))
        parts_of.append((rows, lane, g_addr, values))
    lane_dtype = np.uint16 if lanes <= 1 << 16 else np.int64     # uint16 sorts in linear time
    lane_of, addr, weight = [], [], []
    if not paired:
        words, tails = seg_len, [np.zeros_like(s) for s in seg_len]
        seg_cycles = [np.maximum(1, s) for s in seg_len]
        for rows, lane, g_addr, values in parts_of:
            lane_of.append(lane.astype(lane_dtype))
            addr.append(g_addr)                            # < MAX_NEURONS_PER_LANE
            weight.append(values)
        del parts_of
    else:
        words, tails, seg_cycles = [], [], []
        counts = [_parity_counts(r, ln, a, lanes, len(n))
                  for (r, ln, a, _), n in zip(parts_of, seg_len)]
        for g, start_odd in enumerate(_odd_starts(counts, seg_len)):
            rows, lane, g_addr, values = parts_of[g]
            parts_of[g] = None
            lane, g_addr, values, w, t, c = _paired_layout(
                rows, lane, g_addr, values, lanes, counts[g], start_odd, base > 1)
            words.append(w)
            tails.append(t)
            seg_cycles.append(c)
            lane_of.append(lane.astype(lane_dtype))
            addr.append(g_addr)
            weight.append(values)
        del parts_of
    # Row pointers: each lane stores its words group by group, row by row, with no gaps,
    # so a row starts where the lane's previous rows end.
    cat2 = lambda xs: np.concatenate(xs) if xs else np.zeros((0, lanes), np.int64)
    lens = cat2(words)
    starts = np.cumsum(lens, axis=0) - lens
    ptr_len = list(np.ascontiguousarray(lens.T))
    ptr_start = list(np.ascontiguousarray(starts.T))
    ptr_tail = list(np.ascontiguousarray(cat2(tails).T))
    del lens, starts
    # Synapse words: every group's words are in row-major order already, so a stable
    # sort by lane gives each lane its words in storage order.
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)
    lane_of = cat(lane_of)
    order = np.argsort(lane_of, kind="stable")
    split = np.cumsum(np.bincount(lane_of, minlength=lanes))[:-1]
    del lane_of
    addr, weight = cat(addr)[order], cat(weight)[order]
    del order
    syn_addr = [a.astype(np.int64) for a in np.split(addr, split)]
    del addr
    syn_weight = [w.astype(np.int64) for w in np.split(weight, split)]
    return LaneLayout(lanes=lanes, groups=list(groups), pop_base=pop_base,
                      neurons_per_lane=base, ptr_base=ptr_base,
                      ptr_start=ptr_start, ptr_len=ptr_len, ptr_tail=ptr_tail,
                      syn_addr=syn_addr, syn_weight=syn_weight, seg_len=seg_len,
                      seg_cycles=seg_cycles)


def core_layout(net, lanes):
    """The layout the core runs: :func:`lane_layout` with :func:`route_groups`, paired."""
    return lane_layout(net, lanes, route_groups(net), paired=True)
