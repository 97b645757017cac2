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
    "NeuronKind", "ResetMode", "NEURON_KIND_RESET", "NEURON_KIND_SPIKES",
    "MAX_VOCAB",
    "RNG_BITS", "GUMBEL_TABLE_BITS", "GUMBEL_FRAC_BITS", "TEMPERATURE_BITS",
    "saturate", "round_shift",
]

# Synaptic weights: signed, two's complement.
WEIGHT_BITS = 8
WEIGHT_MIN = -(1 << (WEIGHT_BITS - 1))
WEIGHT_MAX = (1 << (WEIGHT_BITS - 1)) - 1

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

    ``LIF``: leaky, hard reset to zero (SpikeGPT). ``ALIF``: leaky with an adaptive
    threshold, reset by subtraction (multi-timescale SRNN). ``IF``: no leak (alpha is
    DECAY_ONE), reset by subtraction (spiking TextCNN). ``READOUT``: leaky integrator that
    never spikes; its membrane is the logit.
    """
    LIF = 0
    ALIF = 1
    IF = 2
    READOUT = 3


class ResetMode(enum.IntEnum):
    """What a spike does to the membrane."""
    NONE = 0       # never spikes
    ZERO = 1       # v <- 0
    SUBTRACT = 2   # v <- v - threshold


NEURON_KIND_RESET = {
    NeuronKind.LIF: ResetMode.ZERO,
    NeuronKind.ALIF: ResetMode.SUBTRACT,
    NeuronKind.IF: ResetMode.SUBTRACT,
    NeuronKind.READOUT: ResetMode.NONE,
}
NEURON_KIND_SPIKES = {k: r != ResetMode.NONE for k, r in NEURON_KIND_RESET.items()}


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
