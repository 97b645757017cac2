"""The core's memories as the host sees them: ids, word layouts, depths and image loading.

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
``STATE``  neurons_per_lane   neuron state ``v, a`` (cleared by RESET)
``ACC``    neurons_per_lane   input accumulator (read only; cleared by RESET and UPDATE)
``PTR``    ptr_depth          row pointers ``(start, length)``
``SYN``    syn_depth          synapse words ``(target address, weight)``
========  ==================  ==========================================================

Global (``lane`` must be 0): ``POP`` (one word per population), ``PROJ`` (one word per
projection, in routing order) and ``CORE`` (the registers of :class:`CoreReg`).
"""

import enum
import functools
from dataclasses import dataclass, fields, replace

from spikestream.formats import (ACC_BITS, DECAY_BITS, MAX_VOCAB, STATE_BITS, TEMPERATURE_BITS,
                            WEIGHT_BITS, RNG_BITS, NeuronKind)
from spikestream.network import INPUT, lane_layout

__all__ = [
    "bits_for", "addr_bits", "MEM_BITS", "LANE_BITS", "ADDR_BITS", "TOKEN_BITS", "COUNTER_BITS", "OP_BITS",
    "Mem", "LANE_MEMS", "GLOBAL_MEMS", "READ_ONLY_MEMS", "CoreReg", "Op", "Status",
    "Field", "WordLayout", "CoreConfig", "CoreFitError", "Write",
    "image_writes", "settings_writes", "write_problem", "Contents", "contents_after",
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
LANE_MEMS = (Mem.PARAM, Mem.STATE, Mem.ACC, Mem.PTR, Mem.SYN)
GLOBAL_MEMS = (Mem.POP, Mem.PROJ, Mem.CORE)
READ_ONLY_MEMS = (Mem.ACC,)


class CoreReg(enum.IntEnum):
    """Addresses of the ``CORE`` registers (lane 0)."""
    POPS = 0          # number of populations
    PROJS = 1         # number of projections
    READOUT = 2       # index of the readout population
    VOCAB = 3         # vocabulary size (input and readout neurons)
    TEMPERATURE = 4   # the sampler's temperature word (spikestream.sampler)
    SEED = 5          # write: seed the sampler (spikestream.sampler.seed_state); read: RNG state


class Op(enum.IntEnum):
    """Opcodes of the command port. Every command is answered by exactly one result."""
    RESET = 0   # clear v, a, accumulators and the previous timestep's spikes
    STEP = 1    # run one timestep with the given input token
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
class CoreConfig:
    """Build parameters of a core.

    Parameters
    ----------
    lanes : int
        Processing lanes; neuron ``n`` of a population lives in lane ``n % lanes``.
    neurons_per_lane : int
        Neuron words (parameters, state, accumulator) per lane, all populations together.
    syn_depth, ptr_depth : int
        Synapse words and row pointers per lane.
    max_pops, max_projs, max_vocab : int
        Table sizes: populations, projections, tokens.
    spike_depth : int
        Each lane's spike buffer: the most spikes one projection can deliver, so at least
        the size of every population that is the source of a projection.
    stages : int
        Register levels of the broadcast, gather and done trees (fan-out/fan-in at most 4
        per level, so ``lanes <= 4 ** stages``). The core's timing depends only on it.
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

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"CoreConfig.{f.name} must be a positive integer, not {v!r}")
        if self.lanes > 1 << LANE_BITS:
            raise ValueError(f"at most {1 << LANE_BITS} lanes, not {self.lanes}")
        if self.max_vocab > 1 << TOKEN_BITS:
            raise ValueError(f"at most {1 << TOKEN_BITS} tokens, not {self.max_vocab}")
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
        """Largest population or vocabulary the core can hold."""
        return max(self.lanes * self.neurons_per_lane, self.max_vocab)

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
    def queue_depth(self):
        """Each lane's spike queue: one bank of ``neurons_per_lane`` per timestep parity."""
        return 2 * self.neurons_per_lane

    @property
    def syn_bank_words(self):
        """Words per bank of a lane's synapse memory, which the gateware builds as banks of
        one block RAM's depth (a DP16KD in 1024 x 18 mode; a wider word takes several side
        by side), so that each bank's output is registered before they are merged."""
        return min(1024, self.syn_depth)

    @property
    def syn_banks(self):
        return -(-self.syn_depth // self.syn_bank_words)

    # Word layouts ----------------------------------------------------------------------------

    def layout(self, mem):
        """The :class:`WordLayout` of memory ``mem``."""
        mem = Mem(mem)
        if mem == Mem.PARAM:
            return WordLayout(Field("alpha", DECAY_BITS), Field("theta", STATE_BITS, True),
                              Field("rho", DECAY_BITS), Field("jump", STATE_BITS, True),
                              Field("bias", STATE_BITS, True))
        if mem == Mem.STATE:
            return WordLayout(Field("v", STATE_BITS, True), Field("a", STATE_BITS, True))
        if mem == Mem.ACC:
            return WordLayout(Field("acc", ACC_BITS, True))
        if mem == Mem.PTR:
            return WordLayout(Field("start", bits_for(self.syn_depth)),
                              Field("length", self.rows_bits))
        if mem == Mem.SYN:
            return WordLayout(Field("addr", self.local_bits), Field("weight", WEIGHT_BITS, True))
        if mem == Mem.POP:
            return WordLayout(Field("kind", 2), Field("base", self.local_bits),
                              Field("rows", self.rows_bits), Field("size", self.size_bits))
        if mem == Mem.PROJ:
            return WordLayout(Field("src", self.pop_bits), Field("input", 1),
                              Field("dst", self.pop_bits), Field("delay", 1),
                              Field("ptr_base", self.ptr_bits))
        return WordLayout(Field("value", RNG_BITS))

    def depth(self, mem):
        """Words in memory ``mem`` (per lane for lane memories)."""
        mem = Mem(mem)
        return {Mem.PARAM: self.neurons_per_lane, Mem.STATE: self.neurons_per_lane,
                Mem.ACC: self.neurons_per_lane, Mem.PTR: self.ptr_depth,
                Mem.SYN: self.syn_depth, Mem.POP: self.max_pops, Mem.PROJ: self.max_projs,
                Mem.CORE: len(CoreReg)}[mem]

    def register_limit(self, reg):
        """The largest value the write port accepts for ``CORE`` register ``reg``, or
        ``None`` for ``SEED`` (any word: the sampler takes its low ``RNG_BITS``)."""
        return {CoreReg.POPS: self.max_pops, CoreReg.PROJS: self.max_projs,
                CoreReg.READOUT: self.max_pops - 1, CoreReg.VOCAB: self.max_vocab,
                CoreReg.TEMPERATURE: (1 << TEMPERATURE_BITS) - 1,
                CoreReg.SEED: None}[CoreReg(reg)]

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
    def image_needs(image):
        """What ``image`` needs of a core: a dict keyed like this class's fields."""
        net = image.net
        lay = lane_layout(net, image.lanes)
        sources = [net.populations[pr.src].size for pr in net.projections if pr.src != INPUT]
        return {
            "lanes": image.lanes,
            "neurons_per_lane": lay.neurons_per_lane,
            "syn_depth": max(lay.synapses_per_lane(), default=0),
            "ptr_depth": lay.ptr_entries,
            "max_pops": len(net.populations),
            "max_projs": len(net.projections),
            "max_vocab": net.vocab_size,
            "spike_depth": max(sources, default=1),
        }

    def check_image(self, image):
        """Raise :class:`CoreFitError` naming everything of ``image`` that does not fit."""
        need = self.image_needs(image)
        what = {
            "neurons_per_lane": "neurons per lane",
            "syn_depth": "synapse words per lane (the fullest lane)",
            "ptr_depth": "row pointers per lane",
            "max_pops": "populations",
            "max_projs": "projections",
            "max_vocab": "vocabulary tokens",
            "spike_depth": "spike buffer entries (the largest source population)",
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
        18 bits).

        ``overrides`` set fields explicitly (e.g. ``stages``); the result is checked.
        """
        need = cls.image_needs(image)
        kw = {k: (v if k == "lanes" else _round_depth(v)) for k, v in need.items()}
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


def image_writes(image, config):
    """The writes that load ``image`` into a core built for ``config``.

    Returns a list of :class:`Write`: every population's parameters, every lane's row
    pointers and synapse words, the population and projection tables and the ``POPS``,
    ``PROJS``, ``READOUT`` and ``VOCAB`` registers. Words a network leaves unused are not
    written (a RESET does not clear them, and the core never reads them). Temperature and
    seed are run settings: see :func:`settings_writes`.
    """
    config.check_image(image)
    net, L = image.net, image.lanes
    lay = lane_layout(net, L)
    out = []
    pl = config.layout(Mem.PARAM)
    for p, pop in zip(lay.pop_base, net.populations):
        for n in range(pop.size):
            out.append(Write(Mem.PARAM, n % L, p + n // L, pl.pack(
                **{k: int(getattr(pop, k)[n]) for k in ("alpha", "theta", "rho", "jump",
                                                           "bias")})))
    ptr, syn = config.layout(Mem.PTR), config.layout(Mem.SYN)
    for lane in range(L):
        for k, (s, n) in enumerate(zip(lay.ptr_start[lane], lay.ptr_len[lane])):
            out.append(Write(Mem.PTR, lane, k, ptr.pack(start=int(s), length=int(n))))
        for k, (a, w) in enumerate(zip(lay.syn_addr[lane], lay.syn_weight[lane])):
            out.append(Write(Mem.SYN, lane, k, syn.pack(addr=int(a), weight=int(w))))
    popl = config.layout(Mem.POP)
    for i, pop in enumerate(net.populations):
        out.append(Write(Mem.POP, 0, i, popl.pack(kind=int(pop.kind), base=lay.pop_base[i],
                                                  rows=-(-pop.size // L), size=pop.size)))
    projl = config.layout(Mem.PROJ)
    for j, pr in enumerate(net.projections):
        out.append(Write(Mem.PROJ, 0, j, projl.pack(
            src=0 if pr.src == INPUT else pr.src, input=int(pr.src == INPUT), dst=pr.dst,
            delay=pr.delay, ptr_base=lay.ptr_base[j])))
    for reg, value in ((CoreReg.POPS, len(net.populations)),
                       (CoreReg.PROJS, len(net.projections)),
                       (CoreReg.READOUT, net.readout), (CoreReg.VOCAB, net.vocab_size)):
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
        word = wr.data & mask[mem]
        if mem in LANE_MEMS:
            lane.setdefault((mem, wr.lane), {})[wr.addr] = word
        elif mem == Mem.CORE:
            regs[CoreReg(wr.addr)] = word
        else:
            table.setdefault(mem, {})[wr.addr] = word
    return Contents(lane=lane, table=table, regs=regs)


# Kinds are stored in 2 bits of the POP word.
assert max(NeuronKind) < 4
