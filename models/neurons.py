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

from spikestream.formats import (DECAY_FRAC_BITS, NEURON_KIND_CUBA, NEURON_KIND_RESET,
                                 NEURON_KIND_SPIKES, STATE_BITS, NeuronKind, ResetMode,
                                 round_shift, saturate)

__all__ = ["spike_fn", "fake_quant", "float_step", "int_step", "int_update"]


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


def fake_quant(x, scale, half_up=False):
    """``x`` on the grid ``1 / scale`` in the forward pass, unchanged in the backward pass
    (straight-through): what the compiler (``half_up=False``: ``np.rint``, half to even) or
    the core (``half_up=True``: ``round_shift`` after a decay) makes of it."""
    y = x * scale
    q = torch.floor(y + 0.5) if half_up else torch.round(y)
    return x + (q / scale - x).detach()


def spike_fn(x, width=2.0):
    """Binary spike ``[x >= 0]`` with an arctan surrogate gradient of sharpness ``width``."""
    return _ArctanSpike.apply(x, width)


def float_step(kind, v, a, current, alpha, theta, rho, jump, surrogate_width=2.0, grid=None):
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
    grid : torch.Tensor, optional
        Per-neuron integer units per float unit (quantisation-aware training): each decayed
        state (``alpha * v``, ``rho * a``) is rounded half up on the grid ``1 / grid``, as
        the integer form's ``round_shift`` rounds it, the gradient passing straight through.

    Returns
    -------
    (s, v, a)
        Spikes (float 0/1 with a surrogate gradient; zeros for a readout) and new state.
    """
    reset = NEURON_KIND_RESET[NeuronKind(kind)]
    decay = (lambda x: x) if grid is None else (lambda x: fake_quant(x, grid, half_up=True))
    v = decay(alpha * v) + current
    if reset == ResetMode.NONE:
        return torch.zeros_like(v), v, a
    thr = theta + a
    s = spike_fn(v - thr, surrogate_width)
    if reset == ResetMode.ZERO:
        v = v * (1 - s)
    else:
        v = v - thr * s
    a = decay(rho * a) + jump * s
    return s, v, a


def int_step(kind, v, a, acc, alpha, theta, rho, jump, bias):
    """One timestep of the integer form of a version-1 population (its kind's reset mode,
    binary spikes): :func:`int_update` without the ``s`` state bit, which only
    ``SUBTRACT_NEXT`` reads.

    Returns
    -------
    (s, v, a)
        Spikes (bool) and the new state, int64.
    """
    kind = NeuronKind(kind)
    q, v, a, _ = int_update(kind, NEURON_KIND_RESET[kind], 1, v, a, torch.zeros_like(v), acc,
                            alpha, theta, rho, jump, bias)
    return q > 0, v, a


def int_update(kind, reset, level_bits, v, a, s, acc, alpha, theta, rho, jump, bias):
    """One timestep of one population: exactly what a lane's neuron unit computes
    (docs/general-networks.md, "The neuron update").

    ``kind`` (NeuronKind), ``reset`` (ResetMode) and ``level_bits`` (``K``) are the
    population's; the rest are integer tensors (computed in int64): state ``v``, ``a``,
    ``s`` (spiked in the previous timestep) and accumulator ``acc`` shaped ``[..., N]``,
    parameters shaped ``[N]``.

    Returns
    -------
    (q, v, a, s)
        Spike values ``0 .. 2**K - 1`` (int64; 0 for non-spiking kinds) and the new state.
    """
    kind, reset = NeuronKind(kind), ResetMode(reset)
    v, a, s, acc = v.long(), a.long(), s.long(), acc.long()
    alpha, theta, rho, jump, bias = (x.long() for x in (alpha, theta, rho, jump, bias))
    if NEURON_KIND_CUBA[kind]:
        a1 = saturate(round_shift(rho * a, DECAY_FRAC_BITS) + acc, STATE_BITS)
        current = saturate(a1 + bias, STATE_BITS)
        thr = theta.expand_as(v)
    else:
        a1 = a
        current = saturate(acc + bias, STATE_BITS)
        thr = saturate(theta + a, STATE_BITS)
    v1 = round_shift(alpha * v, DECAY_FRAC_BITS) + current
    if reset == ResetMode.SUBTRACT_NEXT:
        v1 = v1 - thr * s
    v1 = saturate(v1, STATE_BITS)
    if not NEURON_KIND_SPIKES[kind]:
        zero = torch.zeros_like(v1)
        return zero, v1, a1, zero
    if level_bits == 1:
        q = (v1 >= thr).long()
        rest = v1 - thr * q
    else:
        # Successive approximation, as the gateware does it: K compare-and-subtract steps.
        q, rest = torch.zeros_like(v1), v1
        for i in reversed(range(level_bits)):
            step = thr << i
            hit = rest >= step
            q = q | (hit.long() << i)
            rest = torch.where(hit, rest - step, rest)
    fired = q > 0
    if reset == ResetMode.ZERO:
        v_new = torch.where(fired, torch.zeros_like(v1), v1)
    elif reset == ResetMode.SUBTRACT:
        v_new = torch.where(fired, saturate(rest, STATE_BITS), v1)
    else:
        v_new = v1
    if NEURON_KIND_CUBA[kind]:
        a_new = a1
    else:
        a_new = saturate(round_shift(rho * a, DECAY_FRAC_BITS) + torch.where(fired, jump, 0),
                         STATE_BITS)
    return q, v_new, a_new, fired.long()
