"""Neuron models: the float (training) form and the integer (core) form, side by side.

Both forms are the same equations, per neuron and per timestep::

    I   = acc + bias                  # acc: this timestep's synaptic input
    v   = alpha * v + I               # leak, then integrate
    thr = theta + a                   # adaptive threshold (a == 0 unless ALIF)
    s   = [v >= thr]                  # spiking kinds only
    v   = 0           if s and reset is ZERO
          v - thr     if s and reset is SUBTRACT
    a   = rho * a + jump * s          # adaptation (jump == 0 unless ALIF)

The integer form adds exactly three things, all defined in spikestream/formats.py: every
multiply by a decay factor is followed by ``round_shift`` (round half up), ``I`` and every
state update saturate to ``STATE_BITS``, and the accumulator is ``ACC_BITS`` wide and can
never overflow (the image checker guarantees it). The paper-4 ALIF
(``b <- rho b + (1 - rho) s; B = b0 + beta b``) is this form with ``a = beta * b``,
``theta = b0`` and ``jump = beta * (1 - rho)``. SpikeGPT's LIF (``H = (V + X) / 2``) is
``alpha = 1/2`` with the 1/2 on the input folded into the weights.
"""

import math

import torch

from spikestream.formats import (DECAY_FRAC_BITS, STATE_BITS, NeuronKind, ResetMode, NEURON_KIND_RESET,
                      round_shift, saturate)

__all__ = ["spike_fn", "float_step", "int_step"]


class _ArctanSpike(torch.autograd.Function):
    """Heaviside forward; the arctan surrogate of spikingjelly backward."""

    @staticmethod
    def forward(ctx, x, width):
        ctx.save_for_backward(x)
        ctx.width = width
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        w = ctx.width
        return grad * (w / 2) / (1 + (math.pi / 2 * w * x) ** 2), None


def spike_fn(x, width=2.0):
    """Binary spike ``[x >= 0]`` with an arctan surrogate gradient of sharpness ``width``."""
    return _ArctanSpike.apply(x, width)


def float_step(kind, v, a, current, alpha, theta, rho, jump, surrogate_width=2.0):
    """One timestep of the float form, for training.

    Parameters
    ----------
    kind : NeuronKind
        Neuron model of the population.
    v, a : torch.Tensor
        Membrane and adaptation state, ``[..., N]``.
    current : torch.Tensor
        Synaptic input plus bias for this timestep, ``[..., N]``.
    alpha, theta, rho, jump : torch.Tensor
        Per-neuron parameters, ``[N]``.

    Returns
    -------
    (s, v, a)
        Spikes (float 0/1 with a surrogate gradient; zeros for a readout) and new state.
    """
    reset = NEURON_KIND_RESET[NeuronKind(kind)]
    v = alpha * v + current
    if reset == ResetMode.NONE:
        return torch.zeros_like(v), v, a
    thr = theta + a
    s = spike_fn(v - thr, surrogate_width)
    if reset == ResetMode.ZERO:
        v = v * (1 - s)
    else:
        v = v - thr * s
    a = rho * a + jump * s
    return s, v, a


def int_step(kind, v, a, acc, alpha, theta, rho, jump, bias):
    """One timestep of the integer form: exactly what a lane's neuron unit computes.

    All arguments are integer tensors (any integer dtype; computed in int64): state
    ``v``, ``a`` and accumulator ``acc`` shaped ``[..., N]``, parameters shaped ``[N]``.

    Returns
    -------
    (s, v, a)
        Spikes (bool) and the new state, int64.
    """
    reset = NEURON_KIND_RESET[NeuronKind(kind)]
    v, a, acc = v.long(), a.long(), acc.long()
    current = saturate(acc + bias.long(), STATE_BITS)
    v = saturate(round_shift(alpha.long() * v, DECAY_FRAC_BITS) + current, STATE_BITS)
    if reset == ResetMode.NONE:
        return torch.zeros_like(v, dtype=torch.bool), v, a
    thr = saturate(theta.long() + a, STATE_BITS)
    s = v >= thr
    if reset == ResetMode.ZERO:
        v = torch.where(s, torch.zeros_like(v), v)
    else:
        v = torch.where(s, saturate(v - thr, STATE_BITS), v)
    a = saturate(round_shift(rho.long() * a, DECAY_FRAC_BITS) + torch.where(s, jump.long(), 0),
                 STATE_BITS)
    return s, v, a
