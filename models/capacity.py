"""How many block RAMs an image needs on an ECP5, lane by lane.

Each lane stores its synapse words, its row pointers, its neurons' parameters and their
state. Widths follow from the image: a synapse word is a target address plus a weight; a
row pointer is a start and a length. Each memory is mapped to ECP5 DP16KD blocks (18 Kbit,
configurable from 16384x1 to 512x36) in the cheapest shape. This is the estimate the
compiler and the board checks use before anything is built; the build report gives the
real count.
"""

from dataclasses import dataclass

from .formats import ACC_BITS, DECAY_BITS, STATE_BITS, WEIGHT_BITS
from .network import lane_layout

__all__ = ["DP16KD_SHAPES", "bram_blocks", "MemoryPlan", "memory_plan", "SOC_BRAM"]

DP16KD_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
SOC_BRAM = 4
"""Blocks outside the lanes: the sampler's noise table, event queues and link buffers."""


def bram_blocks(words, bits):
    """Fewest DP16KD blocks holding ``words`` words of ``bits`` bits (0 for an empty memory)."""
    if words <= 0 or bits <= 0:
        return 0
    return min(-(-bits // w) * -(-words // d) for w, d in DP16KD_SHAPES)


def _bits(n):
    return max(1, (max(n, 1) - 1).bit_length())


@dataclass
class MemoryPlan:
    """Per-lane memory sizes (words and bits) and the block RAM total."""
    lanes: int
    synapse_words: int        # of the fullest lane
    synapse_bits: int
    pointer_words: int
    pointer_bits: int
    neuron_words: int
    neuron_bits: int
    blocks_per_lane: int
    blocks: int               # all lanes plus SOC_BRAM

    def summary(self):
        return (f"{self.lanes} lanes x {self.blocks_per_lane} DP16KD + {SOC_BRAM} = "
                f"{self.blocks} DP16KD (per lane: {self.synapse_words} synapses of "
                f"{self.synapse_bits} b, {self.pointer_words} row pointers of "
                f"{self.pointer_bits} b, {self.neuron_words} neurons of {self.neuron_bits} b)")


def memory_plan(net, lanes):
    """The :class:`MemoryPlan` of ``net`` laid out over ``lanes`` lanes."""
    lay = lane_layout(net, lanes)
    syn = max(lay.synapses_per_lane())
    syn_bits = _bits(lay.neurons_per_lane) + WEIGHT_BITS
    longest = max((int(sl.max()) for sl in lay.seg_len if sl.size), default=0)
    ptr_bits = _bits(syn + 1) + _bits(longest + 1)
    ptr = lay.ptr_entries
    # parameters (alpha, theta, rho, jump, bias) and state (v, a, accumulator)
    neuron_bits = 2 * DECAY_BITS + 3 * STATE_BITS + 2 * STATE_BITS + ACC_BITS
    per_lane = (bram_blocks(syn, syn_bits) + bram_blocks(ptr, ptr_bits)
                + bram_blocks(lay.neurons_per_lane, 2 * DECAY_BITS + 3 * STATE_BITS)
                + bram_blocks(lay.neurons_per_lane, 2 * STATE_BITS + ACC_BITS))
    return MemoryPlan(lanes=lanes, synapse_words=syn, synapse_bits=syn_bits, pointer_words=ptr,
                      pointer_bits=ptr_bits, neuron_words=lay.neurons_per_lane,
                      neuron_bits=neuron_bits, blocks_per_lane=per_lane,
                      blocks=per_lane * lanes + SOC_BRAM)
