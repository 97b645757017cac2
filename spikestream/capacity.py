"""How many block RAMs (and LUTs) a core needs on an ECP5, memory by memory.

This is the one memory model that the compiler, the boards' default configurations and the
build's capacity check share. It follows what Yosys 0.70 (``synth_ecp5``) does with the
core's memories, and is checked against it (tests/hw/test_build_capacity.py maps single
lanes; tests/hw/test_build_real.py compares a whole build with nextpnr's count):

* A memory in block RAM takes the cheapest DP16KD shape (18 Kbit, 16384x1 to 512x36):
  :func:`bram_blocks`. The gateware instantiates the same shapes itself where it can
  (hw.core.bram, to use the blocks' output registers) and tests check that they match.
* Left to its own costs, Yosys puts even a lane's small neuron memories (a hundred words)
  into whole block RAMs: with 16 lanes of 128 neurons, 80 of the 85F's 208 blocks. So the
  build marks lane memories ``ram_style = "distributed"`` (LUT RAM: TRELLIS_DPR16X4 cells
  of 16 words x 4 bits) or ``"block"`` as :func:`lutram_memories` decides: candidates are
  the memories of at most :data:`LUTRAM_MAX_BITS` (half a block RAM), and of those the
  cheapest set in LUT RAM cells that keeps each lane within its block budget. LUT RAM is
  not free (about ten LUT4 sites a cell with its read multiplexers), so only what the
  budget needs goes there.
* The lane's segment queue and the scheduler's tables (the spike table among them) have
  asynchronous read ports: they are always LUT RAM and cost no block RAM.
* Outside the lanes the SoC has :data:`SOC_BRAM` blocks (the sampler's noise table and the
  link's frame buffer) and the core's input memory (the spike inputs' ids, a block RAM of
  ``input_depth`` words: :func:`core_blocks`).

LUT4 and FF counts (:class:`CorePlan` ``lut4``, ``ff``) are estimates fitted to real
builds, used to keep default configurations routable; nextpnr's report is the truth.
"""

from dataclasses import dataclass, replace
from types import SimpleNamespace

from .formats import ACC_BITS, DECAY_BITS, STATE_BITS
from .memory_map import CoreConfig, Mem

__all__ = ["DP16KD_SHAPES", "DP16KD_BITS", "LUTRAM_MAX_BITS", "SOC_BRAM", "bram_blocks",
           "dpr16x4_cells", "LaneMemory", "ptr_bank_words", "lane_memories", "lutram_memories",
           "lane_block_budget",
           "CORE_BRAM", "core_blocks", "spike_table_bits",
           "LUT_PER_LANE", "LUT_PER_CELL", "LUT_SOC", "LUT_PER_SOURCE", "LUT_PER_PROJ",
           "FF_PER_LANE", "FF_SOC", "FF_PER_SOURCE", "FF_PER_PROJ", "SKID_WORDS",
           "CorePlan", "core_plan", "MemoryPlan", "memory_plan"]

DP16KD_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
DP16KD_BITS = 18 * 1024
LUTRAM_MAX_BITS = DP16KD_BITS // 2
"""Lane memories of at most this many bits (depth x width) may go to LUT RAM."""
SOC_BRAM = 2
"""Blocks outside the core: the sampler's noise table (1024 x 16) and the link's frame
buffer (2048 x 8)."""
CORE_BRAM = 1
"""Blocks of the core outside its lanes, as the default configurations have them: the
input memory of 1024 spike input ids (:func:`core_blocks` counts a configuration's)."""


def bram_blocks(words, bits):
    """Fewest DP16KD blocks holding ``words`` words of ``bits`` bits (0 for an empty memory)."""
    if words <= 0 or bits <= 0:
        return 0
    return min(-(-bits // w) * -(-words // d) for w, d in DP16KD_SHAPES)


def dpr16x4_cells(words, bits):
    """TRELLIS_DPR16X4 cells (16 words of 4 bits) of a memory in LUT RAM."""
    return -(-words // 16) * -(-bits // 4)


@dataclass(frozen=True)
class LaneMemory:
    """One block-RAM-class memory of a lane (as hw/core/lane.py builds it)."""
    name: str        # the Amaranth submodule name, which the build's Yosys script selects
    words: int
    bits: int
    lutram: bool = False     # the build puts it into LUT RAM
    bank_words: int = 0      # built as banks of this many words each (0: as one memory)
    halves: int = 1          # built as this many interleaved memories (word a in a % halves)

    @property
    def block_ram(self):
        """DP16KD blocks it takes in block RAM (each bank shaped on its own)."""
        words = -(-self.words // self.halves)
        if not self.bank_words:
            return self.halves * bram_blocks(words, self.bits)
        return self.halves * sum(bram_blocks(min(self.bank_words, words - w), self.bits)
                                 for w in range(0, words, self.bank_words))

    @property
    def blocks(self):
        return 0 if self.lutram else self.block_ram

    @property
    def lutram_cells(self):
        """TRELLIS_DPR16X4 cells it takes in LUT RAM."""
        return self.halves * dpr16x4_cells(-(-self.words // self.halves), self.bits)

    @property
    def cells(self):
        """TRELLIS_DPR16X4 cells if in LUT RAM."""
        return self.lutram_cells if self.lutram else 0


def ptr_bank_words(config):
    """Words of a lane's even row-pointer bank (the odd one has as many or one fewer)."""
    return -(-config.ptr_depth // 2)


def lane_memories(config):
    """The memories of one lane of a core built for ``config`` (a :class:`CoreConfig`)."""
    npl = config.neurons_per_lane
    return (
        LaneMemory("param", npl, config.layout(Mem.PARAM).bits),
        LaneMemory("state", npl, config.layout(Mem.STATE).bits),
        # Two banks by the target's parity: a lane adds two synapses a cycle.
        LaneMemory("acc", npl, ACC_BITS, halves=2),
        # Even and odd words in banks of their own: a row reads its start and its end
        # (the next row's start) in one cycle (hw.core.lane).
        LaneMemory("ptr", config.ptr_depth, config.layout(Mem.PTR).bits,
                   bank_words=ptr_bank_words(config)),
        # Even and odd words in memories of their own, each in banks (hw.core.lane): a
        # lane reads one of each a cycle.
        LaneMemory("syn", config.syn_depth, config.layout(Mem.SYN).bits,
                   bank_words=config.syn_bank_words, halves=2),
        LaneMemory("queue", config.queue_depth, config.layout(Mem.QUEUE).bits),
        LaneMemory("sbuf", config.spike_depth, config.ptr_bits + config.q_bits),
    )


def core_blocks(config):
    """Block RAMs of the core outside its lanes: the input memory (spike input ids)."""
    return bram_blocks(config.input_depth, config.layout(Mem.INPUT).bits)


def spike_table_bits(config):
    """Width of a spike-table entry: the lanes' ``lanes + 1`` bounds and a region base."""
    return (config.lanes + 1) * config.size_bits + config.qbase_bits


def lutram_memories(config, blocks_per_lane=None):
    """Names of the lane memories that the build steers into LUT RAM.

    Candidates are the lane memories of at most :data:`LUTRAM_MAX_BITS` bits. Without a
    budget, all of them (the fewest block RAMs: what an image needs at least). With
    ``blocks_per_lane``, the subset with the fewest LUT RAM cells that brings a lane within
    that many blocks (all candidates if none does): LUT RAM costs logic (about ten LUT4
    sites per cell with its read multiplexers), so it is spent only where block RAM runs out.
    """
    mems = lane_memories(config)
    candidates = [m for m in mems if m.words * m.bits <= LUTRAM_MAX_BITS]
    if blocks_per_lane is None:
        return tuple(m.name for m in candidates)
    fixed = sum(m.block_ram for m in mems if m not in candidates)
    best = None
    for mask in range(1 << len(candidates)):
        chosen = [m for k, m in enumerate(candidates) if mask >> k & 1]
        blocks = fixed + sum(m.block_ram for m in candidates if m not in chosen)
        cells = sum(m.lutram_cells for m in chosen)
        if blocks <= blocks_per_lane and (best is None or (cells, len(chosen)) < best[0]):
            best = ((cells, len(chosen)), chosen)
    chosen = candidates if best is None else best[1]
    return tuple(m.name for m in mems if m in chosen)


def lane_block_budget(dp16kd, lanes, headroom=0):
    """Block RAMs each of ``lanes`` lanes may use on a device with ``dp16kd`` of them,
    keeping :data:`SOC_BRAM` and :data:`CORE_BRAM` for the rest of the SoC and
    ``headroom`` spare."""
    return (dp16kd - SOC_BRAM - CORE_BRAM - headroom) // lanes


@dataclass(frozen=True)
class CorePlan:
    """Block RAMs, LUT RAM cells and multipliers of a core built for ``config``."""
    config: object
    memories: tuple            # LaneMemory, per lane
    blocks_per_lane: int
    blocks: int                # all lanes, the core's own (core_blocks) and SOC_BRAM
    dpr16x4_per_lane: int
    mult18: int
    lut4: int                  # estimated TRELLIS_COMB (LUT4 sites), LUT RAM included
    ff: int                    # estimated flip-flops

    def summary(self):
        parts = ", ".join(
            f"{m.name} {m.words}x{m.bits} " + ("LUT RAM" if m.lutram else f"{m.blocks} DP16KD")
            for m in self.memories)
        rest = self.blocks - self.config.lanes * self.blocks_per_lane
        return (f"{self.config.lanes} lanes x {self.blocks_per_lane} DP16KD + {rest} = "
                f"{self.blocks} DP16KD (per lane: {parts})")


MULT_PER_LANE = 2
"""MULT18X18D per lane: the neuron pipeline's two decay multiplies."""
MULT_SOC = 1
"""The sampler's temperature multiply."""


# Logic of a SoC, fitted to real builds (nextpnr-ecp5 0.11 utilisation: SoC builds of 1 and
# 2 lanes, a probe build of 16 lanes; BENCHMARKS.md): TRELLIS_COMB (LUT4 sites) and
# TRELLIS_FF. Good to about 10%; the build's report is the truth. The general core (issue
# 16: graded spikes, delays, spike inputs) adds to the fitted lane what Yosys's synth_ecp5
# maps one lane of the default 85F build to more than before (LUT4 plus two per CCU2C:
# +273, of which the neuron pipeline's +247; flip-flops: +684, of which its +639), and to
# the rest estimates per source and projection of their history registers; the spike
# table is counted as LUT RAM cells of its own. Placed, the default 85F build of the general
# core (6a2a70a: bench/results/build-85f.json) had 6,165 LUT4 and 10,882 flip-flops more than
# this model said (68,575 and 50,318): nextpnr's packing of the new logic, not Yosys's cell
# count. That is added per lane (+385 LUT4, +680 FF). The lane with its route engine in
# named components (hw.core.walker) and its pipeline's tag cut to one bit placed (seed 1) at
# 57,506 LUT4 and 45,490 flip-flops with 80 neurons a lane: +100 LUT4 and -300 FF a lane;
# with the lanes' windows on a scatter tree (a lane's leaf of the broadcast no longer keeps
# every lane's bounds) at 42,322 flip-flops: -198 FF a lane more. Lanes that add two
# synapses a cycle (a second accumulator, its steering, the walker's pairs; 35b1c7a,
# seed 1) placed at 65,514 LUT4 and 46,171 flip-flops, 9c7a631 at
# 59,810 and 43,723: +356 LUT4 a lane (60 of it the accumulator's LUT RAM cells, counted
# below) and +153 FF.
LUT_PER_LANE = 1160 + 290 + 385 + 100 + 296
"""A lane's logic, LUT RAM aside."""
LUT_PER_CELL = 10
"""Per LUT RAM cell: its four RAM LUTs and its share of the read multiplexers."""
LUT_SOC = 3400 - 530
"""UART, link, scheduler, sampler and the small tables: everything outside the lanes but
the spike table and the history registers."""
LUT_PER_SOURCE = 45
"""A source's history registers (current entry and region, stepped every STEP) and its
share of the multiplexers that read them."""
LUT_PER_PROJ = 20
"""A projection's read entry, stepped every STEP, and its share of the dispatch's look-up."""
FF_PER_LANE = 1600 + 680 + 680 - 300 - 198 + 153
FF_SOC = 2100
FF_PER_SOURCE = 50
FF_PER_PROJ = 16
SKID_WORDS = 16
"""The lane's segment queue (spikestream.timing.SKID_DEPTH), always in LUT RAM."""


def core_plan(config, blocks_per_lane=None):
    """The :class:`CorePlan` of a core built for ``config``, its LUT RAM chosen by
    :func:`lutram_memories` for ``blocks_per_lane``."""
    lut = lutram_memories(config, blocks_per_lane)
    mems = tuple(replace(m, lutram=m.name in lut) for m in lane_memories(config))
    per_lane = sum(m.blocks for m in mems)
    dpr = sum(m.cells for m in mems)
    L = config.lanes
    cells = dpr + dpr16x4_cells(SKID_WORDS, config.segment_layout().bits + config.q_bits)
    table = dpr16x4_cells(config.max_regions, spike_table_bits(config))
    return CorePlan(config=config, memories=mems, blocks_per_lane=per_lane,
                    blocks=per_lane * L + core_blocks(config) + SOC_BRAM,
                    dpr16x4_per_lane=dpr, mult18=MULT_PER_LANE * L + MULT_SOC,
                    lut4=(LUT_SOC + LUT_PER_CELL * table + LUT_PER_SOURCE * config.sources
                          + LUT_PER_PROJ * config.max_projs
                          + L * (LUT_PER_LANE + LUT_PER_CELL * cells)),
                    ff=(FF_SOC + FF_PER_SOURCE * config.sources + FF_PER_PROJ * config.max_projs
                        + L * FF_PER_LANE))


@dataclass
class MemoryPlan:
    """The smallest core that holds a network: per-lane memory sizes and block RAM total."""
    lanes: int
    synapse_words: int        # of the fullest lane
    synapse_bits: int
    pointer_words: int
    pointer_bits: int
    neuron_words: int
    neuron_bits: int
    blocks_per_lane: int
    blocks: int               # all lanes, the core's own and SOC_BRAM
    core: CorePlan = None

    def summary(self):
        lut = ", ".join(m.name for m in self.core.memories if m.lutram) or "nothing"
        rest = self.blocks - self.lanes * self.blocks_per_lane
        return (f"{self.lanes} lanes x {self.blocks_per_lane} DP16KD + {rest} = "
                f"{self.blocks} DP16KD (per lane: {self.synapse_words} synapses of "
                f"{self.synapse_bits} b, {self.pointer_words} row pointers of "
                f"{self.pointer_bits} b, {self.neuron_words} neurons of {self.neuron_bits} b; "
                f"in LUT RAM: {lut})")


def memory_plan(net, lanes):
    """The :class:`MemoryPlan` of ``net`` laid out over ``lanes`` lanes: the block RAMs of
    the smallest core that holds it (``CoreConfig.for_image``: depths rounded up to powers
    of two or multiples of 1024, as a build would size them)."""
    config = CoreConfig.for_image(SimpleNamespace(net=net, lanes=lanes))
    need = CoreConfig.image_needs(SimpleNamespace(net=net, lanes=lanes))
    plan = core_plan(config)
    neuron_bits = 2 * DECAY_BITS + 3 * STATE_BITS + 2 * STATE_BITS + ACC_BITS
    return MemoryPlan(lanes=lanes, synapse_words=need["syn_depth"],
                      synapse_bits=config.layout(Mem.SYN).bits,
                      pointer_words=need["ptr_depth"], pointer_bits=config.layout(Mem.PTR).bits,
                      neuron_words=need["neurons_per_lane"], neuron_bits=neuron_bits,
                      blocks_per_lane=plan.blocks_per_lane, blocks=plan.blocks, core=plan)
