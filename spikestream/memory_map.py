"""The core's memories as the host sees them: ids, word layouts, depths, image loading, and
the per-timestep traffic of spike inputs and outputs.

This module is pure Python (no Amaranth): the host, the tests and the gateware all import
it, so every memory id, word layout and depth has exactly one definition. The gateware
builds its ``lib.data`` layouts from the :class:`WordLayout` objects here.

A core is built for a :class:`CoreConfig`. Everything the host can load goes through the
core's one bounds-checked write port as ``(memory id, lane, address, word)`` writes;
:func:`image_writes` turns a :class:`spikestream.image.Image` into that list, and
:meth:`CoreConfig.check_image` says, in one line per problem, what of an image does not fit
a core and by how much.

Memories
--------
Per lane (``lane`` in ``0 .. lanes-1``):

========  ==================  ==========================================================
``PARAM``  neurons_per_lane   neuron parameters ``alpha, theta, rho, jump, bias``
``STATE``  neurons_per_lane   neuron state ``v, a, s`` (cleared by RESET)
``ACC``    neurons_per_lane   input accumulator (read only; cleared by RESET and UPDATE)
``PTR``    ptr_depth          row starts ``start`` and ``tail``: a lane keeps its rows
                              back to back, so row ``k`` is synapse words ``start[k] ..
                              start[k+1]-1``, and the word after a lane's last row is that
                              row's end; ``tail`` is how many of the row's last words are
                              walked one a cycle (spikestream.network.pair_row)
``SYN``    syn_depth          synapse words ``(target address, weight)``
``QUEUE``  queue_depth        spike queue ``(row, q)`` (read only): the lane's spikes, by
                              population and kept timestep (see History below); neuron
                              ``row * lanes + lane`` of its population spiked with ``q``
========  ==================  ==========================================================

Global (``lane`` must be 0): ``POP`` (one word per population), ``PROJ`` (one word per
route group: the projections of one source and one delay, routed in one phase; in routing
order, see spikestream.network.route_groups), ``CORE`` (the registers of :class:`CoreReg`), ``SRC`` (one
word per source: where its kept timesteps are), ``SPIKES`` (read only: each population's
spikes of the last STEP), ``INPUT`` and ``INCOUNT`` (the spike inputs of the next STEP).

History (delays)
----------------
A projection of delay ``d`` reads its source's spikes of ``d`` timesteps ago, so the core
keeps, of every *source* (population ``p``, or spike input ``k``), the spikes of its last
``h`` timesteps: ``h = Network.history(src)`` (one more than its longest outgoing delay; at
least 1 for a spiking output population, whose spikes the host reads; 0 otherwise: a
population with ``h = 0`` queues nothing). :func:`history_layout` places them:

* the *spike table* (``CoreConfig.max_regions`` entries) has ``h`` consecutive entries per
  source, one per kept timestep: each lane's window of spike ranks (``bounds``, the prefix
  sums of the lanes' counts) and where the spikes are (``qbase``);
* a population's spikes of one timestep are a *region* of ``rows`` words of every lane's
  ``QUEUE`` (lane ``l``'s ``c``-th spike at ``qbase + c``); a spike input's are a region of
  ``stride = min(size, CoreConfig.input_ids)`` words of the global input memory (its ids,
  ascending).

``SRC`` word ``s`` (population ``p`` at ``s = p``, spike input ``k`` at ``s = max_pops + k``)
holds ``keep`` (``h > 0``), the entries ``first .. last``, the first region's ``base``, the
region ``stride`` and (for a spike input) its ``size``. Writing it sets the source's current
entry to ``first``; every accepted STEP first moves every source on by one entry (and region),
wrapping from ``last`` to ``first``; a population's update then writes its entry. A
projection reads the entry ``d`` before its source's current one: writing its ``PROJ`` word
sets its read entry to ``slot`` (where that is when its source's ``SRC`` word is written),
which every STEP moves on with the source's, from ``last`` to ``first`` (the ``PROJ``
word's copies of the source's). :func:`image_writes` writes ``SRC`` and ``PROJ`` words
together; a network's words must be written together. The token input keeps its last
``max_delay + 1`` tokens in a ring, read ``d`` places behind the newest (a token
projection's ``slot``, ``first`` and ``last`` are 0, unused). RESET empties every entry and
forgets the tokens.

Per timestep (the host's procedure)
-----------------------------------
1. Spike inputs (:func:`input_writes`): input ``k``'s ids, ascending, to ``INPUT`` at
   ``k * 2**input_bits + i`` (``input_bits = addr_bits(input_ids)``), then their number to
   ``INCOUNT`` word ``k``. They are for the next STEP: the core writes them into the
   region and entry that the STEP then moves to (an input not written has no spikes; a
   RESET drops what was written). The core refuses (``status.write_error``, nothing
   written) an input ``k`` that is not the network's (``CoreReg.INPUTS``) or keeps no
   timesteps, an id outside its size, a position or count beyond its ``stride``.
2. STEP with the token (ignored, and not checked, unless ``CoreReg.TOKENS``).
3. Outputs (:func:`output_reads`, or :func:`read_outputs` given a read function): for each
   spiking output population ``p``, the ``lanes + 2`` words of ``SPIKES`` from
   ``p * 2**spike_bits`` (``spike_bits = addr_bits(lanes + 2)``): its newest entry's
   ``bounds[0 .. lanes]`` and ``qbase``; then lane ``l``'s
   ``bounds[l+1] - bounds[l]`` spikes from ``QUEUE`` at ``qbase`` (words ``(row, q)``). A
   non-spiking output's membranes are the ``v`` of its ``STATE`` words.

Without a readout (``CoreReg.SAMPLE`` 0) a STEP has no sample phase and its token is 0.
"""

import enum
import functools
from dataclasses import dataclass, fields, replace

import numpy as np

from spikestream.formats import (ACC_BITS, DECAY_BITS, MAX_DELAY, MAX_LEVEL_BITS, MAX_VOCAB,
                                 STATE_BITS, TAIL_BITS, TEMPERATURE_BITS, WEIGHT_BITS, RNG_BITS,
                                 NeuronKind)
from spikestream.network import INPUT, core_layout, input_index, pop_bases, spike_input

__all__ = [
    "bits_for", "addr_bits", "MEM_BITS", "LANE_BITS", "ADDR_BITS", "TOKEN_BITS", "COUNTER_BITS", "OP_BITS",
    "Mem", "LANE_MEMS", "GLOBAL_MEMS", "READ_ONLY_MEMS", "CoreReg", "Op", "Status",
    "Field", "WordLayout", "CoreConfig", "CoreFitError", "Write", "Read",
    "History", "history_layout", "source_index",
    "image_writes", "settings_writes", "write_problem", "Contents", "contents_after",
    "input_writes", "Outputs", "output_reads", "read_outputs",
]


def bits_for(n):
    """Bits of an unsigned value that can hold every integer ``0 .. n``."""
    return max(1, int(n).bit_length())


def addr_bits(depth):
    """Bits of an address into ``depth`` words (``0 .. depth-1``)."""
    return max(1, (int(depth) - 1).bit_length())


class Mem(enum.IntEnum):
    """Memory ids of the write and read ports."""
    PARAM = 0
    STATE = 1
    ACC = 2
    PTR = 3
    SYN = 4
    POP = 5
    PROJ = 6
    CORE = 7
    QUEUE = 8     # lane, read only: the spike queue
    SRC = 9       # per source: its kept timesteps (History)
    SPIKES = 10   # read only: each population's newest spike-table entry
    INPUT = 11    # spike input ids of the next STEP
    INCOUNT = 12  # spike input counts of the next STEP


MEM_BITS = 4
"""Width of a memory id on the ports (ids beyond :class:`Mem` are refused)."""
LANE_BITS = 8
"""Width of a lane index on the ports (lanes beyond the core's are refused)."""
ADDR_BITS = 24
"""Width of an address on the ports (addresses beyond a memory's depth are refused)."""
TOKEN_BITS = 16
"""Width of a token on the command and result ports."""
COUNTER_BITS = 32
"""Width of the result's cycle and spike counters."""
LANE_MEMS = (Mem.PARAM, Mem.STATE, Mem.ACC, Mem.PTR, Mem.SYN, Mem.QUEUE)
GLOBAL_MEMS = (Mem.POP, Mem.PROJ, Mem.CORE, Mem.SRC, Mem.SPIKES, Mem.INPUT, Mem.INCOUNT)
READ_ONLY_MEMS = (Mem.ACC, Mem.QUEUE, Mem.SPIKES)


class CoreReg(enum.IntEnum):
    """Addresses of the ``CORE`` registers (lane 0)."""
    POPS = 0          # number of populations
    PROJS = 1         # number of route groups (PROJ words)
    READOUT = 2       # index of the readout population
    VOCAB = 3         # vocabulary size (input and readout neurons)
    TEMPERATURE = 4   # the sampler's temperature word (spikestream.sampler)
    SEED = 5          # write: seed the sampler (spikestream.sampler.seed_state); read: RNG state
    SAMPLE = 6        # 1: the network has a readout (a STEP samples it); 0: no sample phase
    TOKENS = 7        # 1: the network reads the token input (STEP checks its token)
    INPUTS = 8        # number of spike inputs


class Op(enum.IntEnum):
    """Opcodes of the command port. Every command is answered by exactly one result."""
    RESET = 0   # clear v, a, s, accumulators, the kept spikes and tokens, pending inputs
    STEP = 1    # run one timestep with the given input token and the written spike inputs
    CLEAR = 2   # clear the status word's sticky error flags


OP_BITS = 2


class Status(enum.IntEnum):
    """Bits of the status word. The error flags are sticky until a CLEAR command."""
    BUSY = 0          # a command is running
    WRITE_ERROR = 1   # a write named a bad memory id, lane or address (nothing was written)
    READ_ERROR = 2    # a read named a bad memory id, lane or address
    CMD_ERROR = 3     # a command had a bad opcode, or STEP a token outside the vocabulary


@dataclass(frozen=True)
class Field:
    """One field of a memory word: ``bits`` wide, two's complement if ``signed``."""
    name: str
    bits: int
    signed: bool = False


class WordLayout:
    """A memory word: fields packed from the least significant bit up, in order."""

    def __init__(self, *fields_):
        self.fields = tuple(fields_)

    @property
    def bits(self):
        return sum(f.bits for f in self.fields)

    def __iter__(self):
        return iter(self.fields)

    def __repr__(self):
        return "WordLayout({})".format(", ".join(
            f"{f.name}:{'s' if f.signed else 'u'}{f.bits}" for f in self.fields))

    def pack(self, **values):
        """The word holding ``values`` (every field by name); raises if one does not fit."""
        if set(values) != {f.name for f in self.fields}:
            raise ValueError(f"{self!r}: fields {sorted(values)} given")
        word, shift = 0, 0
        for f in self.fields:
            x = int(values[f.name])
            lo, hi = ((-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1) if f.signed
                      else (0, (1 << f.bits) - 1))
            if not lo <= x <= hi:
                raise ValueError(f"{f.name} = {x} does not fit {f.bits} "
                                 f"{'signed' if f.signed else 'unsigned'} bits")
            word |= (x & ((1 << f.bits) - 1)) << shift
            shift += f.bits
        return word

    def unpack(self, word):
        """The fields of ``word`` as a dict of ints."""
        out, shift = {}, 0
        for f in self.fields:
            x = (word >> shift) & ((1 << f.bits) - 1)
            if f.signed and x >> (f.bits - 1):
                x -= 1 << f.bits
            out[f.name] = x
            shift += f.bits
        return out


class CoreFitError(ValueError):
    """An image does not fit a core; the message names every shortfall."""


@dataclass(frozen=True)
class Write:
    """One write through the core's write port."""
    mem: Mem
    lane: int
    addr: int
    data: int


@dataclass(frozen=True)
class Read:
    """A read of ``count`` consecutive words through the core's read port."""
    mem: Mem
    lane: int
    addr: int
    count: int = 1


@dataclass(frozen=True)
class CoreConfig:
    """Build parameters of a core.

    Parameters
    ----------
    lanes : int
        Processing lanes; neuron ``n`` of a population lives in lane ``n % lanes``.
    neurons_per_lane : int
        Neuron words (parameters, state, accumulator) per lane, all populations together.
    syn_depth, ptr_depth : int
        Synapse words and row-pointer words per lane (one more than the rows: the last
        row's end).
    max_pops, max_projs, max_vocab : int
        Table sizes: populations, route groups (``PROJ`` words: the projections of one
        source and one delay share one), tokens.
    spike_depth : int
        Each lane's spike buffer: the most spikes one projection can deliver, so at least
        the size of every population that is the source of a projection (and the
        ``stride`` of every spike input).
    stages : int
        Register levels of the broadcast, gather and done trees (fan-out/fan-in at most 4
        per level, so ``lanes <= 4 ** stages``). The core's timing depends only on it.
    max_delay : int
        Longest projection delay (timesteps); the token input keeps ``max_delay + 1``
        tokens.
    queue_depth : int
        Each lane's spike queue: every population's kept timesteps times its rows.
    max_regions : int
        Spike-table entries: every source's kept timesteps together.
    max_inputs : int
        Spike inputs.
    input_ids : int
        The most spikes one spike input carries in a timestep (its ``stride`` is the
        smaller of this and its size).
    input_depth : int
        Words of the input memory: every spike input's kept timesteps times its stride.
    max_level_bits : int
        Bits of a spike value ``q`` (``level_bits`` of the populations, at most
        :data:`spikestream.formats.MAX_LEVEL_BITS`) that the queues and the broadcast carry.
    """
    lanes: int = 16
    neurons_per_lane: int = 512
    syn_depth: int = 4096
    ptr_depth: int = 2048
    max_pops: int = 8
    max_projs: int = 16
    max_vocab: int = MAX_VOCAB
    spike_depth: int = 1024
    stages: int = 2
    max_delay: int = 15
    queue_depth: int = 256
    max_regions: int = 32
    max_inputs: int = 4
    input_ids: int = 256
    input_depth: int = 1024
    max_level_bits: int = MAX_LEVEL_BITS

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"CoreConfig.{f.name} must be a positive integer, not {v!r}")
        if self.lanes > 1 << LANE_BITS:
            raise ValueError(f"at most {1 << LANE_BITS} lanes, not {self.lanes}")
        if self.max_vocab > 1 << TOKEN_BITS:
            raise ValueError(f"at most {1 << TOKEN_BITS} tokens, not {self.max_vocab}")
        if self.max_level_bits > MAX_LEVEL_BITS:
            raise ValueError(f"max_level_bits must be 1..{MAX_LEVEL_BITS}, not "
                             f"{self.max_level_bits}")
        if self.max_delay > MAX_DELAY:
            raise ValueError(f"max_delay must be 1..{MAX_DELAY}, not {self.max_delay}")
        if self.address_bits > ADDR_BITS:
            raise ValueError(f"memories deeper than 2**{ADDR_BITS} words cannot be addressed")
        if self.lanes > 4 ** self.stages:
            raise ValueError(f"{self.lanes} lanes need stages >= "
                             f"{_ceil_log(self.lanes, 4)} (4-way trees), not {self.stages}")

    # Derived widths --------------------------------------------------------------------------

    @property
    def lane_bits(self):
        """Width of a lane index."""
        return addr_bits(self.lanes)

    @property
    def local_bits(self):
        """Width of a local neuron address (``0 .. neurons_per_lane-1``)."""
        return addr_bits(self.neurons_per_lane)

    @property
    def rows_bits(self):
        """Width of a row count or per-lane spike count (``0 .. neurons_per_lane``)."""
        return bits_for(self.neurons_per_lane)

    @property
    def max_source(self):
        """Largest population, vocabulary or spike count of one route the core can hold."""
        return max(self.lanes * self.neurons_per_lane, self.max_vocab, self.input_ids)

    @property
    def size_bits(self):
        """Width of a population size or spike count (``0 .. max_source``)."""
        return bits_for(self.max_source)

    @property
    def id_bits(self):
        """Width of a neuron id within its population."""
        return addr_bits(self.max_source)

    @property
    def ptr_bits(self):
        return addr_bits(self.ptr_depth)

    @property
    def syn_bits(self):
        return addr_bits(self.syn_depth)

    @property
    def pop_bits(self):
        return addr_bits(self.max_pops)

    @property
    def proj_bits(self):
        return addr_bits(self.max_projs)

    @property
    def token_bits(self):
        return addr_bits(self.max_vocab)

    @property
    def sources(self):
        """Sources with a ``SRC`` word: the populations, then the spike inputs."""
        return self.max_pops + self.max_inputs

    @property
    def source_bits(self):
        return addr_bits(self.sources)

    @property
    def region_bits(self):
        """Width of a spike-table entry index."""
        return addr_bits(self.max_regions)

    @property
    def ring_depth(self):
        """Tokens the token input keeps (``max_delay + 1``)."""
        return self.max_delay + 1

    @property
    def slot_bits(self):
        """Width of ``PROJ.slot``: a spike-table entry or a place in the token ring."""
        return max(self.region_bits, addr_bits(self.ring_depth))

    @property
    def qbase_bits(self):
        """Width of a region's base: an address of a lane's queue or of the input memory."""
        return max(addr_bits(self.queue_depth), addr_bits(self.input_depth))

    @property
    def stride_bits(self):
        return bits_for(max(self.neurons_per_lane, self.input_ids))

    @property
    def input_bits(self):
        """``INPUT`` addresses: input ``k``'s ``i``-th id is at ``k * 2**input_bits + i``."""
        return addr_bits(self.input_ids)

    @property
    def spike_bits(self):
        """``SPIKES`` addresses: population ``p``'s words from ``p * 2**spike_bits``."""
        return addr_bits(self.lanes + 2)

    @property
    def q_bits(self):
        """Width of a spike value on the queues and the broadcast."""
        return self.max_level_bits

    @property
    def syn_half_words(self):
        """Words of each half of a lane's synapse memory: the even addresses' and the odd
        ones' (a lane reads one word of each a cycle: spikestream.network.pair_row)."""
        return -(-self.syn_depth // 2)

    @property
    def syn_bank_words(self):
        """Words per bank of a half of a lane's synapse memory, which the gateware builds as
        banks of one block RAM's depth (a DP16KD in 1024 x 18 mode; a wider word takes
        several side by side), so that each bank's output is registered before they are
        merged."""
        return min(1024, self.syn_half_words)

    def syn_bank(self, k):
        """Bank ``k`` (``0 .. syn_banks-1``) of a lane's synapse memory as ``(half, first,
        words)``: it holds the words ``2 * (first + i) + half``, ``i < words``."""
        first = (k // 2) * self.syn_bank_words
        return k % 2, first, min(self.syn_bank_words, self.syn_half_words - first)

    @property
    def syn_banks(self):
        return 2 * -(-self.syn_half_words // self.syn_bank_words)

    # Word layouts ----------------------------------------------------------------------------

    def layout(self, mem):
        """The :class:`WordLayout` of memory ``mem``."""
        mem = Mem(mem)
        if mem == Mem.PARAM:
            return WordLayout(Field("alpha", DECAY_BITS), Field("theta", STATE_BITS, True),
                              Field("rho", DECAY_BITS), Field("jump", STATE_BITS, True),
                              Field("bias", STATE_BITS, True))
        if mem == Mem.STATE:
            return WordLayout(Field("v", STATE_BITS, True), Field("a", STATE_BITS, True),
                              Field("s", 1))
        if mem == Mem.ACC:
            return WordLayout(Field("acc", ACC_BITS, True))
        if mem == Mem.PTR:
            return WordLayout(Field("start", bits_for(self.syn_depth)), Field("tail", TAIL_BITS))
        if mem == Mem.SYN:
            return WordLayout(Field("addr", self.local_bits), Field("weight", WEIGHT_BITS, True))
        if mem == Mem.POP:
            return WordLayout(Field("kind", 3), Field("reset", 2),
                              Field("level_bits", bits_for(MAX_LEVEL_BITS)),
                              Field("base", self.local_bits),
                              Field("rows", self.rows_bits), Field("size", self.size_bits))
        if mem == Mem.PROJ:
            return WordLayout(Field("src", self.source_bits), Field("token", 1),
                              Field("dst", self.pop_bits),
                              Field("delay", bits_for(self.max_delay)),
                              Field("slot", self.slot_bits), Field("first", self.slot_bits),
                              Field("last", self.slot_bits), Field("ptr_base", self.ptr_bits))
        if mem == Mem.QUEUE:
            return WordLayout(Field("row", self.local_bits), Field("q", self.q_bits))
        if mem == Mem.SRC:
            return WordLayout(Field("keep", 1), Field("first", self.region_bits),
                              Field("last", self.region_bits), Field("base", self.qbase_bits),
                              Field("stride", self.stride_bits),
                              Field("size", bits_for(self.ptr_depth)))
        if mem == Mem.SPIKES:
            return WordLayout(Field("value", max(self.size_bits, self.qbase_bits)))
        if mem == Mem.INPUT:
            return WordLayout(Field("id", self.ptr_bits))
        if mem == Mem.INCOUNT:
            return WordLayout(Field("count", bits_for(self.input_ids)))
        return WordLayout(Field("value", RNG_BITS))

    def segment_layout(self):
        """A row of a lane as its walker takes it: the first synapse word, the cycles it is
        walked in (``slots``: from two consecutive ``PTR`` words, ``(end - start + start % 2
        + tail) / 2``, modulo ``2**rows_bits``; see spikestream.network.pair_row) and its
        ``tail``."""
        return WordLayout(Field("start", bits_for(self.syn_depth)),
                          Field("slots", self.rows_bits), Field("tail", TAIL_BITS))

    def depth(self, mem):
        """Words in memory ``mem`` (per lane for lane memories)."""
        mem = Mem(mem)
        return {Mem.PARAM: self.neurons_per_lane, Mem.STATE: self.neurons_per_lane,
                Mem.ACC: self.neurons_per_lane, Mem.PTR: self.ptr_depth,
                Mem.SYN: self.syn_depth, Mem.POP: self.max_pops, Mem.PROJ: self.max_projs,
                Mem.CORE: len(CoreReg), Mem.QUEUE: self.queue_depth, Mem.SRC: self.sources,
                Mem.SPIKES: self.max_pops << self.spike_bits,
                Mem.INPUT: self.max_inputs << self.input_bits,
                Mem.INCOUNT: self.max_inputs}[mem]

    def register_limit(self, reg):
        """The largest value the write port accepts for ``CORE`` register ``reg``, or
        ``None`` for ``SEED`` (any word: the sampler takes its low ``RNG_BITS``)."""
        return {CoreReg.POPS: self.max_pops, CoreReg.PROJS: self.max_projs,
                CoreReg.READOUT: self.max_pops - 1, CoreReg.VOCAB: self.max_vocab,
                CoreReg.TEMPERATURE: (1 << TEMPERATURE_BITS) - 1,
                CoreReg.SEED: None, CoreReg.SAMPLE: 1, CoreReg.TOKENS: 1,
                CoreReg.INPUTS: self.max_inputs}[CoreReg(reg)]

    @property
    def data_bits(self):
        """Width of the write and read ports' data: the widest word."""
        return max(self.layout(m).bits for m in Mem)

    @property
    def address_bits(self):
        """Width of an address into the deepest memory."""
        return max(addr_bits(self.depth(m)) for m in Mem)

    # Fitting an image ------------------------------------------------------------------------

    @staticmethod
    def image_needs(image, input_ids=None):
        """What ``image`` needs of a core: a dict keyed like this class's fields (``stages``
        aside). With ``input_ids`` (a core's), spike inputs keep at most that many ids per
        timestep; without, all of them (``input_ids`` is then the largest input)."""
        net = image.net
        lay = core_layout(net, image.lanes)
        hist = history_layout(net, image.lanes, input_ids)
        sources = [net.populations[g.src].size for g in lay.groups if g.src >= 0]
        sources += [hist.stride[g.src] for g in lay.groups if g.src <= -2]
        levels = [p.level_bits for p in net.populations if p.spiking]
        return {
            "lanes": image.lanes,
            "neurons_per_lane": lay.neurons_per_lane,
            "syn_depth": max(lay.synapses_per_lane(), default=0),
            "ptr_depth": lay.ptr_entries + 1,      # and the last row's end
            "max_pops": len(net.populations),
            "max_projs": len(lay.groups),
            "max_vocab": net.vocab_size,
            "spike_depth": max(sources, default=1),
            "max_delay": max(1, net.max_delay),
            "queue_depth": max(1, hist.queue_words),
            "max_regions": max(1, hist.entries),
            "max_inputs": max(1, len(net.inputs)),
            "input_ids": max([1] + [spec.size for spec in net.inputs]),
            "input_depth": max(1, hist.input_words),
            "max_level_bits": max(levels, default=1),
        }

    def check_image(self, image):
        """Raise :class:`CoreFitError` naming everything of ``image`` that does not fit."""
        need = self.image_needs(image, self.input_ids)
        what = {
            "neurons_per_lane": "neurons per lane",
            "syn_depth": "synapse words per lane (the fullest lane)",
            "ptr_depth": "row pointers per lane (one a row, and the last row's end)",
            "max_pops": "populations",
            "max_projs": "route groups (projections of one source and delay)",
            "max_vocab": "vocabulary tokens",
            "spike_depth": "spike buffer entries (the largest source population or input "
                           "stride)",
            "max_delay": "projection delay (timesteps)",
            "queue_depth": "spike queue words per lane (kept timesteps x rows, all "
                           "populations)",
            "max_regions": "spike table entries (kept timesteps, all sources)",
            "max_inputs": "spike inputs",
            "input_depth": "input id words (kept timesteps x stride, all spike inputs)",
            "max_level_bits": "spike value bits (level_bits)",
        }
        problems = []
        if need["lanes"] != self.lanes:
            problems.append(f"the image is laid out for {need['lanes']} lanes, the core has "
                            f"{self.lanes}")
        for key, name in what.items():
            have = getattr(self, key)
            if need[key] > have:
                problems.append(f"{name}: needs {need[key]}, the core has {have} "
                                f"({need[key] - have} too many)")
        if problems:
            raise CoreFitError("image does not fit the core: " + "; ".join(problems))

    def fits(self, image):
        """True if :meth:`check_image` would pass."""
        try:
            self.check_image(image)
        except CoreFitError:
            return False
        return True

    @classmethod
    def for_image(cls, image, **overrides):
        """The smallest core for ``image``: every depth at least its need, rounded up to a
        power of two (or, above 1024, to a multiple of 1024: block RAMs hold 1024 words of
        18 bits); delay and level bits as they are.

        ``overrides`` set fields explicitly (e.g. ``stages``); the result is checked.
        """
        need = cls.image_needs(image)
        exact = ("lanes", "max_delay", "max_level_bits")
        kw = {k: (v if k in exact else _round_depth(v)) for k, v in need.items()}
        kw["stages"] = max(cls.stages, _ceil_log(image.lanes, 4))
        kw.update(overrides)
        config = cls(**kw)
        config.check_image(image)
        return config

    def replace(self, **changes):
        return replace(self, **changes)


def _round_depth(n):
    if n > 1024:
        return -(-n // 1024) * 1024
    return 1 << max(0, int(n) - 1).bit_length()


def _ceil_log(n, base):
    k, x = 0, 1
    while x < n:
        x *= base
        k += 1
    return k


def source_index(src, config):
    """The ``SRC`` word of a projection source: population ``p`` is ``p``, spike input ``k``
    (source ``spike_input(k)``) is ``max_pops + k``; ``None`` for the token input."""
    if src == INPUT:
        return None
    k = input_index(src)
    return src if k is None else config.max_pops + k


@dataclass(frozen=True)
class History:
    """Where a core keeps each source's spikes of its last timesteps (see the module
    docstring), keyed by source (population index or ``spike_input(k)``; sources that
    keep nothing are absent).

    ``slots[src]`` is ``h``, ``first[src]`` its first spike-table entry, ``base[src]`` the
    address of its first region (of the lanes' queues for a population, of the input
    memory for a spike input) and ``stride[src]`` the words of one region (a population's
    rows, a spike input's ids kept per timestep). ``entries``, ``queue_words`` and
    ``input_words`` are the totals.
    """
    slots: dict
    first: dict
    base: dict
    stride: dict
    entries: int
    queue_words: int
    input_words: int


def history_layout(net, lanes, input_ids=None):
    """The :class:`History` of ``net`` on ``lanes`` lanes: populations first (in order), then
    the spike inputs, each source's entries and regions packed from 0. A spike input keeps
    ``min(size, input_ids)`` ids per timestep (all of them without ``input_ids``)."""
    slots, first, base, stride = {}, {}, {}, {}
    entries = queue = inputs = 0
    sources = list(range(len(net.populations))) + [spike_input(k) for k in range(len(net.inputs))]
    for src in sources:
        h = net.history(src)
        if src >= 0:
            pop = net.populations[src]
            if pop.output and pop.spiking:
                h = max(h, 1)
            words = -(-pop.size // lanes)
        else:
            size = net.inputs[input_index(src)].size
            words = size if input_ids is None else min(size, input_ids)
        if h == 0:
            continue
        slots[src], first[src], stride[src] = h, entries, words
        entries += h
        if src >= 0:
            base[src] = queue
            queue += h * words
        else:
            base[src] = inputs
            inputs += h * words
    return History(slots=slots, first=first, base=base, stride=stride, entries=entries,
                   queue_words=queue, input_words=inputs)


def image_writes(image, config):
    """The writes that load ``image`` into a core built for ``config``.

    Returns a list of :class:`Write`: every population's parameters, every lane's row
    pointers and synapse words, the population, projection and source tables and the
    ``CORE`` registers but temperature and seed. Words a network leaves unused are not
    written (a RESET does not clear them, and the core never reads them). Temperature and
    seed are run settings: see :func:`settings_writes`.
    """
    config.check_image(image)
    net, L = image.net, image.lanes
    lay = core_layout(net, L)
    hist = history_layout(net, L, config.input_ids)
    out = []
    pl = config.layout(Mem.PARAM)
    for p, pop in zip(lay.pop_base, net.populations):
        for n in range(pop.size):
            out.append(Write(Mem.PARAM, n % L, p + n // L, pl.pack(
                **{k: int(getattr(pop, k)[n]) for k in ("alpha", "theta", "rho", "jump",
                                                           "bias")})))
    ptr, syn = config.layout(Mem.PTR), config.layout(Mem.SYN)
    for lane in range(L):
        for k, (s, t) in enumerate(zip(lay.row_starts(lane), lay.row_tails(lane))):
            out.append(Write(Mem.PTR, lane, k, ptr.pack(start=int(s), tail=int(t))))
        for k, (a, w) in enumerate(zip(lay.syn_addr[lane], lay.syn_weight[lane])):
            out.append(Write(Mem.SYN, lane, k, syn.pack(addr=int(a), weight=int(w))))
    popl = config.layout(Mem.POP)
    for i, pop in enumerate(net.populations):
        out.append(Write(Mem.POP, 0, i, popl.pack(kind=int(pop.kind), reset=int(pop.reset),
                                                  level_bits=pop.level_bits,
                                                  base=lay.pop_base[i],
                                                  rows=-(-pop.size // L), size=pop.size)))
    srcl = config.layout(Mem.SRC)
    sources = list(range(len(net.populations))) + [spike_input(k) for k in range(len(net.inputs))]
    for src in sources:
        h = hist.slots.get(src, 0)
        size = net.inputs[input_index(src)].size if src < 0 else 0
        out.append(Write(Mem.SRC, 0, source_index(src, config), srcl.pack(
            keep=int(h > 0), first=hist.first.get(src, 0),
            last=hist.first.get(src, 0) + max(h, 1) - 1, base=hist.base.get(src, 0),
            stride=hist.stride.get(src, 0), size=size)))
    projl = config.layout(Mem.PROJ)
    for j, g in enumerate(lay.groups):
        if g.src == INPUT:
            first, h = 0, 1
        else:
            first, h = hist.first[g.src], hist.slots[g.src]
        out.append(Write(Mem.PROJ, 0, j, projl.pack(
            src=source_index(g.src, config) or 0, token=int(g.src == INPUT), dst=g.dst,
            delay=g.delay, slot=first + (-g.delay % h), first=first, last=first + h - 1,
            ptr_base=lay.ptr_base[j])))
    for reg, value in ((CoreReg.POPS, len(net.populations)),
                       (CoreReg.PROJS, len(lay.groups)),
                       (CoreReg.READOUT, net.readout or 0), (CoreReg.VOCAB, net.vocab_size),
                       (CoreReg.SAMPLE, int(net.readout is not None)),
                       (CoreReg.TOKENS, int(net.has_token_input)),
                       (CoreReg.INPUTS, len(net.inputs))):
        out.append(Write(Mem.CORE, 0, reg, value))
    return out


def settings_writes(temperature_word=None, seed=None):
    """Writes that set the sampler's temperature word and/or seed its random source."""
    out = []
    if temperature_word is not None:
        if not 0 <= temperature_word < (1 << TEMPERATURE_BITS):
            raise ValueError(f"temperature word {temperature_word} outside "
                             f"0..{(1 << TEMPERATURE_BITS) - 1}")
        out.append(Write(Mem.CORE, 0, CoreReg.TEMPERATURE, int(temperature_word)))
    if seed is not None:
        out.append(Write(Mem.CORE, 0, CoreReg.SEED, int(seed) & ((1 << RNG_BITS) - 1)))
    return out


def write_problem(write, config):
    """Why the write port of a core built for ``config`` refuses ``write`` (it then sets
    ``status.write_error`` and writes nothing), or ``None`` if it takes it."""
    data_bits, depth, limit = _port_rules(config)
    if not 0 <= write.data < (1 << data_bits):
        return f"data {write.data:#x} does not fit the port's {data_bits} bits"
    if write.mem not in depth:
        return f"no memory {write.mem}"
    mem = Mem(write.mem)
    if mem in READ_ONLY_MEMS:
        return f"{mem.name} is read only"
    if mem in LANE_MEMS and not 0 <= write.lane < config.lanes:
        return f"{mem.name}: no lane {write.lane} (the core has {config.lanes})"
    if mem in GLOBAL_MEMS and write.lane != 0:
        return f"{mem.name} is global: lane must be 0, not {write.lane}"
    if not 0 <= write.addr < depth[mem]:
        return f"{mem.name}: address {write.addr} outside 0..{depth[mem] - 1}"
    if mem == Mem.CORE and limit[write.addr] is not None and write.data > limit[write.addr]:
        return f"{CoreReg(write.addr).name} = {write.data} exceeds {limit[write.addr]}"
    return None


@functools.lru_cache(maxsize=16)
def _port_rules(config):
    # Loading a large image checks 10^5 writes: work the config's numbers out once.
    return (config.data_bits, {mem: config.depth(mem) for mem in Mem},
            {reg: config.register_limit(reg) for reg in CoreReg})


@dataclass
class Contents:
    """What a core's memories and registers hold after some writes through its write port,
    starting from power-up (every word zero, the sampler seeded with 0).

    ``lane[(mem, lane)]`` and ``table[mem]`` map addresses to the words written there (each
    cut to its memory's width, as the memory stores it); ``regs`` maps each ``CoreReg`` to
    its value (for ``SEED``: the word last written, which the sampler's state then is
    ``spikestream.sampler.seed_state`` of). Addresses never written are zero.
    """
    lane: dict
    table: dict
    regs: dict

    def words(self, mem, lane=0):
        """The memory's words from address 0 to its highest written one, as a list."""
        written = self.lane.get((Mem(mem), lane), {}) if Mem(mem) in LANE_MEMS else \
            self.table.get(Mem(mem), {})
        out = [0] * (max(written) + 1 if written else 0)
        for addr, word in written.items():
            out[addr] = word
        return out


def contents_after(writes, config):
    """The :class:`Contents` of a core built for ``config`` after ``writes`` (an iterable of
    :class:`Write`) go through its write port in order, later writes winning.

    This is what ``hw.core.Core(config, init=writes)`` starts with. A write the port would
    refuse (see :func:`write_problem`) raises ``ValueError``: an initial image that loads
    with errors is a mistake, not a state to start from.
    """
    lane, table = {}, {}
    regs = {reg: 0 for reg in CoreReg}
    mask = {mem: (1 << config.layout(mem).bits) - 1 for mem in Mem}
    for n, wr in enumerate(writes):
        problem = write_problem(wr, config)
        if problem is not None:
            raise ValueError(f"write {n} ({wr}) would be refused: {problem}")
        mem = Mem(wr.mem)
        if mem in (Mem.INPUT, Mem.INCOUNT):
            raise ValueError(f"write {n} ({wr}): {mem.name} is written per STEP, not built in")
        word = wr.data & mask[mem]
        if mem in LANE_MEMS:
            lane.setdefault((mem, wr.lane), {})[wr.addr] = word
        elif mem == Mem.CORE:
            regs[CoreReg(wr.addr)] = word
        else:
            table.setdefault(mem, {})[wr.addr] = word
    return Contents(lane=lane, table=table, regs=regs)


def input_writes(image, config, spikes):
    """The writes that give the next STEP its spike inputs (step 1 of the module docstring).

    ``spikes`` holds, per spike input of the network, its 0/1 vector (any sequence or array
    of the input's size; ``None``: no spikes). Every input's count is written, 0 included,
    but for an input that no projection reads (the core keeps nothing of it).
    Raises ``ValueError`` naming the input if a vector has the wrong size or values other
    than 0 and 1, or more spikes than the core keeps per timestep (its stride).
    """
    net = image.net
    spikes = list(spikes)
    if len(spikes) != len(net.inputs):
        raise ValueError(f"the network has {len(net.inputs)} spike inputs, {len(spikes)} "
                         "spike vectors given")
    hist = history_layout(net, image.lanes, config.input_ids)
    out = []
    for k, (spec, x) in enumerate(zip(net.inputs, spikes)):
        x = np.zeros(spec.size, np.int64) if x is None else np.asarray(x)
        if x.shape != (spec.size,) or x.dtype.kind not in "biu" \
                or (x.size and (x.min() < 0 or x.max() > 1)):
            raise ValueError(f"spike input {spec.name!r}: expected a 0/1 vector of "
                             f"{spec.size}, got {x.dtype} of shape {x.shape}")
        ids = np.flatnonzero(x)
        if spike_input(k) not in hist.slots:
            continue
        stride = hist.stride[spike_input(k)]
        if len(ids) > stride:
            raise ValueError(f"spike input {spec.name!r}: {len(ids)} spikes in one timestep, "
                             f"the core keeps at most {stride}")
        out += [Write(Mem.INPUT, 0, (k << config.input_bits) + i, int(n))
                for i, n in enumerate(ids)]
        out.append(Write(Mem.INCOUNT, 0, k, len(ids)))
    return out


@dataclass
class Outputs:
    """What the output populations did in the last STEP, keyed by population index:
    ``spikes[p]`` is ``(ids, values)`` of a spiking one (int64 arrays, ids ascending, values
    ``q > 0``), ``membranes[p]`` the ``v`` of a non-spiking one (int64, core neuron order)."""
    spikes: dict
    membranes: dict

    def as_lists(self):
        """The same with lists of ints: ``({p: (ids, values)}, {p: v})``."""
        return ({p: (list(map(int, i)), list(map(int, q))) for p, (i, q) in self.spikes.items()},
                {p: list(map(int, v)) for p, v in self.membranes.items()})

    def __eq__(self, other):
        return isinstance(other, Outputs) and self.as_lists() == other.as_lists()


def output_reads(image, config):
    """Read the outputs of the last STEP: a generator that yields :class:`Read` s and is
    sent back each one's words (a list of ``count`` ints); it returns the :class:`Outputs`
    (step 3 of the module docstring). Any host drives it (see :func:`read_outputs`).
    """
    net, L = image.net, image.lanes
    base, _ = pop_bases(net, L)
    spikes, membranes = {}, {}
    queue = config.layout(Mem.QUEUE)
    for p in net.outputs:
        pop = net.populations[p]
        if not pop.spiking:
            v = np.zeros(pop.size, np.int64)
            state = config.layout(Mem.STATE)
            for lane in range(min(L, pop.size)):
                rows = len(range(lane, pop.size, L))
                words = yield Read(Mem.STATE, lane, base[p], rows)
                v[lane::L] = [state.unpack(w)["v"] for w in words]
            membranes[p] = v
            continue
        head = yield Read(Mem.SPIKES, 0, p << config.spike_bits, L + 2)
        bounds, qbase = head[:L + 1], head[L + 1]
        ids, values = [], []
        for lane in range(L):
            count = bounds[lane + 1] - bounds[lane]
            if count <= 0:
                continue
            words = yield Read(Mem.QUEUE, lane, qbase, count)
            for w in words:
                f = queue.unpack(w)
                ids.append(f["row"] * L + lane)
                values.append(f["q"])
        order = np.argsort(np.asarray(ids, np.int64), kind="stable")
        spikes[p] = (np.asarray(ids, np.int64)[order], np.asarray(values, np.int64)[order])
    return Outputs(spikes=spikes, membranes=membranes)


def read_outputs(read, image, config):
    """:func:`output_reads` driven by ``read(Read) -> list of words``; returns the
    :class:`Outputs`."""
    proc = output_reads(image, config)
    try:
        request = next(proc)
        while True:
            request = proc.send(list(read(request)))
    except StopIteration as done:
        return done.value


# Kinds are stored in 3 bits of the POP word.
assert max(NeuronKind) < 8
