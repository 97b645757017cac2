"""The one definition of spikestream's number formats, neuron kinds and core timing.

Everything that the gateware, the golden model, the compiler and the host must agree on
lives here: bit widths, rounding, saturation, the neuron kinds and the constants of the
cycle model (whose pipeline constants are in spikestream.timing). Import these names; never restate the numbers.

Fixed-point conventions
-----------------------
Each neuron ``i`` has its own integer scale ``s_i`` (chosen by the compiler): weights,
bias, threshold, membrane and adaptation of that neuron are all multiplied by ``s_i``.
Because the neuron equations are linear in those quantities, a per-neuron scale changes
no spike; it only buys resolution. Decay factors (``alpha``, ``rho``) are unsigned
fractions with ``DECAY_FRAC_BITS`` fractional bits, so ``DECAY_ONE`` means "no decay".
"""

import enum

__all__ = [
    "WEIGHT_BITS", "WEIGHT_MIN", "WEIGHT_MAX",
    "ACC_BITS", "ACC_MIN", "ACC_MAX",
    "STATE_BITS", "STATE_MIN", "STATE_MAX",
    "DECAY_FRAC_BITS", "DECAY_ONE", "DECAY_BITS",
    "NeuronKind", "ResetMode", "NEURON_KIND_RESET", "NEURON_KIND_SPIKES", "NEURON_KIND_CUBA",
    "MAX_LEVEL_BITS", "MAX_DELAY",
    "MAX_VOCAB", "TAIL_BITS", "MAX_TAIL",
    "RNG_BITS", "GUMBEL_TABLE_BITS", "GUMBEL_FRAC_BITS", "TEMPERATURE_BITS",
    "saturate", "round_shift",
]

# Synaptic weights: signed, two's complement.
WEIGHT_BITS = 8
WEIGHT_MIN = -(1 << (WEIGHT_BITS - 1))
WEIGHT_MAX = (1 << (WEIGHT_BITS - 1)) - 1

# A lane walks its synapse words two a cycle (one from the even, one from the odd address)
# where the row pairs them, one a cycle elsewhere: a row starting at an odd address begins
# with one synapse, then pairs (each of one even and one odd target: the lane's accumulator
# is two banks by target parity), then its *tail* of synapses walked one a cycle, whose
# number the row pointer holds in TAIL_BITS (spikestream.network.lane_layout).
TAIL_BITS = 4
MAX_TAIL = (1 << TAIL_BITS) - 1

# Input accumulator. It is wide enough that it can never overflow: the image checker refuses
# any neuron whose sum of |weights| over all incoming synapses exceeds ACC_MAX. That makes the
# accumulated sum independent of event order, so lanes may walk their rows in any order.
ACC_BITS = 24
ACC_MIN = -(1 << (ACC_BITS - 1))
ACC_MAX = (1 << (ACC_BITS - 1)) - 1

# Neuron state and parameters (membrane v, adaptation a, threshold, jump, bias, input I):
# signed, saturating at both ends.
STATE_BITS = 16
STATE_MIN = -(1 << (STATE_BITS - 1))
STATE_MAX = (1 << (STATE_BITS - 1)) - 1

# Decay factors alpha (membrane) and rho (adaptation): unsigned, value / DECAY_ONE,
# 0 <= value <= DECAY_ONE (DECAY_ONE itself: no leak, as in an IF neuron).
DECAY_FRAC_BITS = 8
DECAY_ONE = 1 << DECAY_FRAC_BITS
DECAY_BITS = DECAY_FRAC_BITS + 1

# Tokens a default core's vocabulary holds (CoreConfig.max_vocab of every ULX3S build): the
# compiler refuses a larger vocabulary before any work.
MAX_VOCAB = 256

# Sampler: xorshift32 random source; RNG_BITS of each draw index a table of Gumbel noise
# stored with GUMBEL_FRAC_BITS fractional bits; the temperature word is unsigned.
RNG_BITS = 32
GUMBEL_TABLE_BITS = 10
GUMBEL_FRAC_BITS = 8
TEMPERATURE_BITS = 16


class NeuronKind(enum.IntEnum):
    """Neuron model of a population. All share one datapath (see models/neurons.py).

    ``LIF``: leaky, integrate-and-fire (SpikeGPT; NIR ``LIF``); reset to zero by default.
    ``ALIF``: leaky with an adaptive threshold ``theta + a`` (multi-timescale SRNN), reset by
    subtraction. ``IF``: no leak (alpha is DECAY_ONE), reset by subtraction (spiking TextCNN;
    NIR ``IF``). ``READOUT``: leaky integrator that never spikes (NIR ``LI``; with alpha
    DECAY_ONE an ``Integrator``); its membrane is a logit or an output value. ``CUBA_LIF``:
    current-based LIF (NIR ``CubaLIF``): ``a`` holds the synaptic current, decaying by
    ``rho``, which feeds the membrane. ``CUBA_LI``: the same without spikes (NIR ``CubaLI``).
    The values of the first four are those of image version 1.
    """
    LIF = 0
    ALIF = 1
    IF = 2
    READOUT = 3
    CUBA_LIF = 4
    CUBA_LI = 5


class ResetMode(enum.IntEnum):
    """What a spike (of graded value ``q``, 1 for a binary spike) does to the membrane.

    ``SUBTRACT`` subtracts ``q * threshold`` in the timestep of the spike, before the next
    decay (reset, then decay: spikingjelly, the converted TextCNN, LAS). ``SUBTRACT_NEXT``
    leaves the membrane as it is and subtracts the threshold in the next timestep's
    integration, after the decay (decay, then reset: snnTorch's ``Leaky`` and ``Synaptic``,
    the SRNN's ``u = alpha u + I - B s``); binary spikes only.
    """
    NONE = 0           # never spikes
    ZERO = 1           # v <- 0
    SUBTRACT = 2       # v <- v - q * threshold, now
    SUBTRACT_NEXT = 3  # v <- alpha v + I - threshold in the next timestep


NEURON_KIND_RESET = {
    NeuronKind.LIF: ResetMode.ZERO,
    NeuronKind.ALIF: ResetMode.SUBTRACT,
    NeuronKind.IF: ResetMode.SUBTRACT,
    NeuronKind.READOUT: ResetMode.NONE,
    NeuronKind.CUBA_LIF: ResetMode.ZERO,
    NeuronKind.CUBA_LI: ResetMode.NONE,
}
"""Each kind's reset mode unless a population names another (spiking kinds only)."""
NEURON_KIND_SPIKES = {k: r != ResetMode.NONE for k, r in NEURON_KIND_RESET.items()}
NEURON_KIND_CUBA = {k: k in (NeuronKind.CUBA_LIF, NeuronKind.CUBA_LI) for k in NeuronKind}
"""Kinds whose ``a`` is a synaptic current (``a = rho a + acc``, ``I = a + bias``) rather
than an adaptation (``a = rho a + jump [spiked]``, threshold ``theta + a``)."""

MAX_LEVEL_BITS = 4
"""A multi-threshold (graded) neuron's spike is a value ``0 .. 2**K - 1`` with ``K`` (its
population's ``level_bits``) at most this; ``K = 1`` is the binary spike."""
MAX_DELAY = 255
"""Largest delay (in timesteps) a projection of an image may have; a core holds those up to
its ``CoreConfig.max_delay``."""


def saturate(x, bits):
    """Clamp integer tensor/array/int ``x`` to the signed range of ``bits`` bits."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if isinstance(x, int):
        return min(max(x, lo), hi)
    return x.clamp(lo, hi) if hasattr(x, "clamp") else x.clip(lo, hi)


def round_shift(x, shift):
    """Arithmetic right shift by ``shift`` rounding half up: ``(x + 2**(shift-1)) >> shift``.

    This is what the gateware does after every multiply by a decay factor.
    """
    return (x + (1 << (shift - 1))) >> shift
