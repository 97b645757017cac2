"""The on-chip sampler's definition: random source, noise table and temperature word.

Sampling is Gumbel-max, which needs no exponential, no division and no normalisation:
the core streams the readout membranes ``v_i`` (integer logits) once and keeps the index of
the largest score ::

    score_i = v_i                                   if temperature_word == 0 (argmax)
    score_i = v_i * 2**GUMBEL_FRAC_BITS + temperature_word * GUMBEL[u_i]   otherwise

ties going to the lowest index. ``u_i`` is the top ``GUMBEL_TABLE_BITS`` bits of the
``i``-th xorshift32 draw of this timestep: the generator advances once per readout neuron,
every timestep, whatever the temperature, so a seed fixes the whole stream.
``GUMBEL[u] = round(2**GUMBEL_FRAC_BITS * -ln(-ln((u + 1/2) / 2**GUMBEL_TABLE_BITS)))``.
Because ``v_i`` is the logit times the readout scale, ``temperature_word`` is the
temperature times that scale (see :func:`temperature_word`).
"""

import math

from .formats import GUMBEL_FRAC_BITS, GUMBEL_TABLE_BITS, RNG_BITS, TEMPERATURE_BITS

__all__ = ["RNG_MASK", "seed_state", "xorshift32", "GUMBEL", "temperature_word", "sample"]

RNG_MASK = (1 << RNG_BITS) - 1
_ZERO_SEED = 0x6D2B79F5     # xorshift's state must never be 0


def seed_state(seed):
    """The generator state the core starts from for a user's ``seed`` (any int)."""
    s = seed & RNG_MASK
    return s if s else _ZERO_SEED


def xorshift32(x):
    """One step of Marsaglia's xorshift32 (13, 17, 5)."""
    x ^= (x << 13) & RNG_MASK
    x ^= x >> 17
    x ^= (x << 5) & RNG_MASK
    return x


def _gumbel(u):
    p = (u + 0.5) / (1 << GUMBEL_TABLE_BITS)
    return round((1 << GUMBEL_FRAC_BITS) * -math.log(-math.log(p)))


GUMBEL = tuple(_gumbel(u) for u in range(1 << GUMBEL_TABLE_BITS))


def temperature_word(temperature, readout_scale):
    """The core's temperature word for a float temperature and the readout's scale."""
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, not {temperature}")
    return min(round(temperature * readout_scale), (1 << TEMPERATURE_BITS) - 1)


def sample(logits, temp_word, state):
    """Pick a token exactly as the core does.

    Parameters
    ----------
    logits : sequence of int
        Readout membranes, in token order.
    temp_word : int
    state : int
        Generator state before this timestep.

    Returns
    -------
    (token, state) : the sampled index and the generator state after this timestep.
    """
    best, best_i = None, 0
    shift = RNG_BITS - GUMBEL_TABLE_BITS
    for i, v in enumerate(logits):
        state = xorshift32(state)
        score = v if temp_word == 0 else (v << GUMBEL_FRAC_BITS) + temp_word * GUMBEL[state >> shift]
        if best is None or score > best:
            best, best_i = score, i
    return best_i, state
