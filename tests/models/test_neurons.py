"""models.neurons: the integer datapath against the float form, and its hand-checked edges."""

import math

import pytest
import torch

from spikestream.formats import (DECAY_ONE, NEURON_KIND_RESET, STATE_MAX, STATE_MIN, NeuronKind,
                            ResetMode, round_shift)
from models.neurons import float_step, int_step, spike_fn


def _t(x):
    return torch.tensor(x, dtype=torch.int64)


def _int1(kind, v=0, a=0, acc=0, alpha=0, theta=1, rho=0, jump=0, bias=0):
    """One int_step of a single neuron from plain ints; returns (s, v, a) as Python values."""
    s, v, a = int_step(kind, _t([v]), _t([a]), _t([acc]), _t([alpha]), _t([theta]), _t([rho]),
                       _t([jump]), _t([bias]))
    return bool(s[0]), int(v[0]), int(a[0])


def _lockstep(kind, alpha, theta, rho, jump, bias, steps=300, seed=0):
    """Run int_step and float_step side by side on integer currents; assert they agree.

    Neurons with ``alpha == DECAY_ONE / 2`` get their current's parity adjusted each step so
    that the membrane stays even: halving an even integer needs no rounding, so the
    integer form is exact. (For SUBTRACT reset such neurons need an even threshold.)
    Returns the number of spikes, so a caller can check the case was not trivial.
    """
    alpha, theta, rho, jump, bias = map(_t, (alpha, theta, rho, jump, bias))
    n = len(alpha)
    half = alpha == DECAY_ONE // 2
    g = torch.Generator().manual_seed(seed)
    vi, ai = torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)
    vf, af = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    fparams = dict(alpha=alpha.double() / DECAY_ONE, theta=theta.double(),
                   rho=rho.double() / DECAY_ONE, jump=jump.double())
    spikes = 0
    for _ in range(steps):
        assert bool((vi[half] % 2 == 0).all())
        acc = torch.randint(-3, 7, (n,), generator=g)
        acc = torch.where(half, acc + (vi // 2 + acc + bias) % 2, acc)
        si, vi, ai = int_step(kind, vi, ai, acc, alpha, theta, rho, jump, bias)
        sf, vf, af = float_step(kind, vf, af, (acc + bias).double(), **fparams)
        assert torch.equal(si, sf.bool())
        assert torch.equal(vi.double(), vf)
        assert torch.equal(ai.double(), af)
        # Far from saturation, or the float form would not be expected to agree.
        assert int(vi.abs().max()) < 20000 and int(ai.abs().max()) < 20000
        spikes += int(si.sum())
    return spikes


def test_lif_matches_float():
    n = _lockstep(NeuronKind.LIF, alpha=[0, 256, 128, 0, 256, 128], theta=[5, 5, 6, 3, 8, 9],
                  rho=[0] * 6, jump=[0] * 6, bias=[0, 1, -1, 2, 0, 1])
    assert 0 < n < 300 * 6


def test_if_matches_float():
    n = _lockstep(NeuronKind.IF, alpha=[256] * 4, theta=[1, 4, 7, 12], rho=[0] * 4,
                  jump=[0] * 4, bias=[0, -1, 1, 2])
    assert 0 < n < 300 * 4


def test_alif_matches_float():
    # Thresholds and jumps even, rho in {0, 1}: the adaptive threshold stays even, so the
    # alpha = 1/2 neurons keep an even membrane through a subtracting reset too.
    n = _lockstep(NeuronKind.ALIF, alpha=[0, 256, 128, 256, 128, 0],
                  theta=[4, 6, 8, 2, 4, 2], rho=[0, 256, 256, 0, 0, 256],
                  jump=[2, 2, 4, 6, 2, 2], bias=[1, 0, 2, -1, 1, 0])
    assert 0 < n < 300 * 6


def test_readout_matches_float_and_never_spikes():
    n = _lockstep(NeuronKind.READOUT, alpha=[0, 256, 128], theta=[0, 0, 0], rho=[0] * 3,
                  jump=[0] * 3, bias=[0, 1, -2])
    assert n == 0


# -- saturation: every hand value below is the exact 16-bit result --------------------------

def test_input_current_saturates_after_adding_bias():
    R = NeuronKind.READOUT       # alpha = 0: v is the input current itself
    # 40000 - 10000 = 30000 fits: the sum is saturated, not acc first (which would give 22767).
    assert _int1(R, acc=40000, bias=-10000)[1] == 30000
    assert _int1(R, acc=STATE_MAX, bias=10)[1] == STATE_MAX            # 32777 -> 32767
    assert _int1(R, acc=-40000, bias=-5)[1] == STATE_MIN               # -40005 -> -32768
    assert _int1(R, acc=(1 << 23) - 1, bias=STATE_MAX)[1] == STATE_MAX
    assert _int1(R, acc=-(1 << 23), bias=STATE_MIN)[1] == STATE_MIN
    # The current saturates before the leak term is added:
    # v = round(256 * -100 / 256) + sat(50000) = -100 + 32767 = 32667.
    assert _int1(R, v=-100, alpha=256, acc=50000)[1] == 32667


def test_membrane_saturates():
    R = NeuronKind.READOUT
    assert _int1(R, v=32000, alpha=256, acc=1000)[1] == STATE_MAX      # 33000 -> 32767
    assert _int1(R, v=-32000, alpha=256, acc=-1000)[1] == STATE_MIN    # -33000 -> -32768
    assert _int1(R, v=STATE_MAX, alpha=256, acc=STATE_MAX)[1] == STATE_MAX
    assert _int1(R, v=STATE_MIN, alpha=256, acc=STATE_MIN)[1] == STATE_MIN
    # A saturated membrane still spikes against the largest threshold (v >= thr) and an
    # IF reset subtracts the threshold: 32767 - 32767 = 0.
    assert _int1(NeuronKind.IF, v=STATE_MAX, alpha=256, acc=5, theta=STATE_MAX) == (True, 0, 0)


def test_threshold_and_subtract_saturate():
    A = NeuronKind.ALIF
    # thr = sat(30000 + 10000) = 32767, so v = 32767 spikes (40000 would not have been
    # reached); v - thr = 0; a = round(256 * 10000 / 256) + jump 0 = 10000.
    assert _int1(A, v=0, acc=STATE_MAX, theta=30000, a=10000, rho=256) == (True, 0, 10000)
    # thr = sat(-20000 - 20000) = -32768; v = 32767 spikes; v - thr = 65535 -> 32767.
    # a = round(0 * a) + jump 7 = 7.
    assert _int1(A, acc=STATE_MAX, theta=-20000, a=-20000, rho=0, jump=7) == (True, STATE_MAX, 7)


def test_adaptation_saturates():
    A = NeuronKind.ALIF
    # thr = -32000 + 32000 = 0 <= v = 0: spike; v - 0 = 0; a = 32000 + 1000 -> 32767.
    assert _int1(A, a=32000, theta=-32000, rho=256, jump=1000) == (True, 0, STATE_MAX)
    # thr = 0 - 32000; v = 0 spikes; v = 0 + 32000 = 32000; a = -32000 - 1000 -> -32768.
    assert _int1(A, a=-32000, theta=0, rho=256, jump=-1000) == (True, 32000, STATE_MIN)


# -- rounding of the decay multiply ----------------------------------------------------------

@pytest.mark.parametrize("alpha, v, expected", [
    # (alpha * v + 128) >> 8, i.e. alpha * v / 256 rounded half up (towards +inf).
    (128, 3, 2),      # 1.5 -> 2
    (128, 1, 1),      # 0.5 -> 1
    (128, -1, 0),     # -0.5 -> 0 (not -1: half goes up, not away from zero)
    (128, -3, -1),    # -1.5 -> -1
    (128, -5, -2),    # -2.5 -> -2
    (64, 5, 1),       # 1.25 -> 1
    (64, 7, 2),       # 1.75 -> 2
    (64, 2, 1),       # 0.5 -> 1
    (64, -2, 0),      # -0.5 -> 0
    (64, -6, -1),     # -1.5 -> -1
    (64, -7, -2),     # -1.75 -> -2 (truncation towards zero would give -1)
    (64, -5, -1),     # -1.25 -> -1
    (255, -32768, -32640),   # -32640 exactly: (-8355840 + 128) >> 8 = -32640
    (255, 32767, 32639),     # 32639.0039 -> 32639
])
def test_decay_rounds_half_up(alpha, v, expected):
    assert round_shift(alpha * v, 8) == expected
    assert _int1(NeuronKind.READOUT, v=v, alpha=alpha)[1] == expected
    # Same rounding on the adaptation (rho); theta large so that nothing spikes.
    assert _int1(NeuronKind.ALIF, a=v, rho=alpha, theta=STATE_MAX, acc=STATE_MIN) == \
        (False, STATE_MIN, expected)


# -- reset -----------------------------------------------------------------------------------

def test_reset_modes():
    assert NEURON_KIND_RESET[NeuronKind.LIF] == ResetMode.ZERO
    assert NEURON_KIND_RESET[NeuronKind.ALIF] == ResetMode.SUBTRACT
    assert NEURON_KIND_RESET[NeuronKind.IF] == ResetMode.SUBTRACT
    assert NEURON_KIND_RESET[NeuronKind.READOUT] == ResetMode.NONE
    # v = 10 + 5 = 15 >= 10 in each case.
    assert _int1(NeuronKind.LIF, v=10, alpha=256, acc=5, theta=10) == (True, 0, 0)
    assert _int1(NeuronKind.IF, v=10, alpha=256, acc=5, theta=10) == (True, 5, 0)
    # ALIF: thr = 10 + 3 = 13, v = 15 - 13 = 2, a = round(128 * 3 / 256) + 4 = 2 + 4 = 6.
    assert _int1(NeuronKind.ALIF, v=10, alpha=256, acc=5, theta=10, a=3, rho=128, jump=4) == \
        (True, 2, 6)
    # Equal to the threshold spikes; one below does not and keeps its membrane.
    assert _int1(NeuronKind.IF, acc=10, theta=10) == (True, 0, 0)
    assert _int1(NeuronKind.IF, acc=9, theta=10) == (False, 9, 0)
    assert _int1(NeuronKind.READOUT, acc=STATE_MAX, theta=0) == (False, STATE_MAX, 0)

    p = dict(alpha=torch.tensor([1.0]), theta=torch.tensor([10.0]), rho=torch.tensor([0.5]),
             jump=torch.tensor([4.0]))
    v, a, cur = torch.tensor([10.0]), torch.tensor([3.0]), torch.tensor([5.0])
    assert [x.item() for x in float_step(NeuronKind.LIF, v, torch.zeros(1), cur,
                                         **dict(p, jump=torch.zeros(1)))] == [1.0, 0.0, 0.0]
    assert [x.item() for x in float_step(NeuronKind.IF, v, torch.zeros(1), cur,
                                         **dict(p, jump=torch.zeros(1)))] == [1.0, 5.0, 0.0]
    assert [x.item() for x in float_step(NeuronKind.ALIF, v, a, cur, **p)] == [1.0, 2.0, 5.5]


# -- surrogate gradient ----------------------------------------------------------------------

def test_spike_forward_is_a_hard_step():
    x = torch.tensor([-1e3, -1e-6, 0.0, 1e-6, 1e3], dtype=torch.float64)
    assert spike_fn(x).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_surrogate_gradient():
    width = 2.0
    x = torch.tensor([-0.1, 0.0, 0.1, 5.0], dtype=torch.float64, requires_grad=True)
    spike_fn(x, width).sum().backward()
    expected = [(width / 2) / (1 + (math.pi / 2 * width * xi) ** 2) for xi in x.tolist()]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-12)
    assert x.grad[1] == 1.0                                # peak width / 2 at threshold
    assert x.grad[0] > 0.5 and x.grad[2] > 0.5             # nonzero near threshold
    assert x.grad[3] < 0.01                                # small far from it

    # Through float_step: ds/dcurrent is the surrogate at v - thr, for v just below and above.
    cur = torch.tensor([0.95, 1.05], dtype=torch.float64, requires_grad=True)
    one, zero = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    s, _, _ = float_step(NeuronKind.LIF, zero, zero, cur, alpha=one, theta=one, rho=zero,
                         jump=zero)
    assert s.tolist() == [0.0, 1.0]
    s.sum().backward()
    assert (cur.grad > 0.5).all()
