"""The general network model in the golden model: spike inputs, delays, reset modes,
multi-level spikes, CUBA neurons, networks without a readout (docs/general-networks.md)."""

import numpy as np
import pytest
import torch

from models.golden import GoldenCore
from models.neurons import int_update
from spikestream.formats import DECAY_ONE, STATE_MAX, NeuronKind, ResetMode
from spikestream.network import (INPUT, Network, NetworkError, Projection, make_population,
                                 spike_input)


def _t(*xs):
    return [torch.tensor(x, dtype=torch.int64) for x in xs]


def _update(kind, reset, k, v, a, s, acc, alpha=DECAY_ONE, theta=10, rho=0, jump=0, bias=0):
    out = int_update(kind, reset, k, *_t([v], [a], [s], [acc]),
                     *_t([alpha], [theta], [rho], [jump], [bias]))
    return tuple(int(x[0]) for x in out)


# -- the neuron update, by hand -----------------------------------------------------------------

@pytest.mark.parametrize("v, want_q, want_v", [(9, 0, 9), (10, 1, 0), (37, 3, 7), (69, 6, 9),
                                               (70, 7, 0), (500, 7, 430)])
def test_multi_level_spike_is_the_floor_of_v_over_theta_capped(v, want_q, want_v):
    # IF, no leak, theta 10, K = 3: q = min(7, v // 10), v <- v - q * 10
    q, v1, a1, s1 = _update(NeuronKind.IF, ResetMode.SUBTRACT, 3, 0, 0, 0, v)
    assert (q, v1, s1) == (want_q, want_v, int(want_q > 0))


def test_multi_level_reset_to_zero():
    assert _update(NeuronKind.LIF, ResetMode.ZERO, 2, 0, 0, 0, 25)[:2] == (2, 0)


def test_binary_spike_with_a_negative_threshold_fires_at_once():
    assert _update(NeuronKind.IF, ResetMode.SUBTRACT, 1, 0, 0, 0, -5, theta=-8)[:2] == (1, 3)


def test_subtract_next_is_decay_then_subtract():
    # snnTorch Leaky(beta=0.5, threshold=10, subtract): mem = beta*mem + x - thr*[prev mem > thr]
    v, s, trace = 0, 0, []
    for x in (12, 0, 0, 9, 9):
        q, v, _, s = _update(NeuronKind.LIF, ResetMode.SUBTRACT_NEXT, 1, v, 0, s, x, alpha=128)
        trace.append((q, v))
    # 12 -> fires, kept 12; then 6 + 0 - 10 = -4; -2; -1 + 9 = 8; 4 + 9 = 13 fires
    assert trace == [(1, 12), (0, -4), (0, -2), (0, 8), (1, 13)]


def test_cuba_current_feeds_the_membrane_in_the_same_step():
    # a1 = rs(rho a) + acc; I = a1 + bias; v1 = rs(alpha v) + I
    q, v, a, s = _update(NeuronKind.CUBA_LIF, ResetMode.ZERO, 1, 4, 8, 0, 3, alpha=128, rho=128,
                         theta=100, bias=1)
    assert (q, v, a) == (0, 2 + (4 + 3) + 1, 4 + 3)
    q, v, a, s = _update(NeuronKind.CUBA_LI, ResetMode.NONE, 1, 0, 0, 0, 5, rho=DECAY_ONE)
    assert (q, v, a, s) == (0, 5, 5, 0)


def test_saturation():
    q, v, a, s = _update(NeuronKind.READOUT, ResetMode.NONE, 1, STATE_MAX, 0, 0, 1000)
    assert v == STATE_MAX


# -- the schedule ----------------------------------------------------------------------------------

def _relay(delay, kind=NeuronKind.IF, level_bits=1, weight=1):
    """spike input (1 neuron) -> h (1 neuron, fires on any input) with ``delay``."""
    h = make_population("h", kind, 1, alpha=DECAY_ONE, theta=1, level_bits=level_bits,
                        output=True)
    return Network(vocab=[], populations=[h], inputs=[("x", 1)],
                   projections=[Projection(spike_input(0), 0, delay,
                                           np.array([[weight]]))]).check()


@pytest.mark.parametrize("delay", [0, 1, 5, 15, 40])
def test_a_delay_d_projection_delivers_d_steps_later(delay):
    core = GoldenCore(_relay(delay), lanes=2)
    fired = []
    for t in range(delay + 3):
        fired.append(int(core.step(spikes=[[1 if t == 0 else 0]]).values[0][0, 0]))
    assert fired == [0] * delay + [1, 0, 0]
    core.reset()
    assert not any(int(core.step(spikes=[[0]]).values[0][0, 0]) for _ in range(delay + 2))


def test_multi_level_spikes_scale_the_weights():
    # g (K = 3, theta 10) gets 37 from the input: q = 3; out gets 3 * 5 through its synapse.
    g = make_population("g", NeuronKind.IF, 1, alpha=DECAY_ONE, theta=10, level_bits=3)
    out = make_population("out", NeuronKind.READOUT, 1, alpha=DECAY_ONE, output=True)
    net = Network(vocab=[], populations=[g, out], inputs=[("x", 1)], projections=[
        Projection(spike_input(0), 0, 0, np.array([[37]])),
        Projection(0, 1, 0, np.array([[5]]))]).check()
    r = GoldenCore(net, lanes=1).step(spikes=[[1]])
    assert int(r.values[0][0, 0]) == 3 and int(r.v[1][0, 0]) == 15
    assert r.token.tolist() == [0] and r.logits is None


def test_no_readout_means_no_sample_phase():
    from models import cycles
    from spikestream.timing import DEFAULT_TIMING
    net = _relay(0)
    core = GoldenCore(net, lanes=1)
    r = core.step(spikes=[[0]])
    assert int(r.cycles[0]) == cycles.update_cycles(1, 1, DEFAULT_TIMING) + \
        DEFAULT_TIMING.phase_overhead


def test_spike_inputs_are_checked():
    core = GoldenCore(_relay(0), lanes=1)
    with pytest.raises(ValueError, match="spikes must be 0 or 1"):
        core.step(spikes=[[2]])
    with pytest.raises(ValueError, match=r"shape \(2,\), expected \(1, 1\)"):
        core.step(spikes=[[1, 0]])
    with pytest.raises(ValueError, match="1 spike inputs; 0 spike vectors given"):
        core.step()


@pytest.mark.parametrize("change, problem", [
    (dict(level_bits=5), "level_bits must be 1..4"),
    (dict(level_bits=2, kind=NeuronKind.ALIF), "need a fixed threshold"),
    (dict(level_bits=2, reset=ResetMode.SUBTRACT_NEXT), "SUBTRACT_NEXT is for binary"),
    (dict(level_bits=2, theta=0), "every threshold theta >= 1"),
    (dict(kind=NeuronKind.READOUT, reset=ResetMode.ZERO), "reset must be NONE"),
    (dict(kind=NeuronKind.LIF, reset=ResetMode.NONE), "must be ZERO, SUBTRACT or SUBTRACT_NEXT"),
])
def test_modes_the_core_cannot_run_are_refused(change, problem):
    kw = dict(kind=NeuronKind.LIF, theta=5, level_bits=1, reset=None)
    kw.update(change)
    h = make_population("h", kw.pop("kind"), 2, **kw)
    net = Network(vocab=[], populations=[h], inputs=[("x", 2)],
                  projections=[Projection(spike_input(0), 0, 0, np.eye(2, dtype=np.int64))])
    with pytest.raises(NetworkError, match=problem):
        net.check()


@pytest.mark.parametrize("level_bits, fits", [(1, True), (4, False)])
def test_the_accumulator_bound_counts_spike_values(level_bits, fits):
    # 4500 sources x weight 127 x q: 571,500 for binary spikes, 8,572,500 > ACC_MAX for q <= 15
    g = make_population("g", NeuronKind.IF, 4500, theta=1, level_bits=level_bits)
    h = make_population("h", NeuronKind.IF, 1, theta=1)
    net = Network(vocab=[], populations=[g, h], inputs=[("x", 1)], projections=[
        Projection(spike_input(0), 0, 0, np.ones((1, 4500), np.int64)),
        Projection(0, 1, 0, np.full((4500, 1), 127))])
    if fits:
        net.check()
    else:
        with pytest.raises(NetworkError, match=r"times spike values \(8572500\)"):
            net.check()


def test_sources_must_exist():
    h = make_population("h", NeuronKind.LIF, 1)
    net = Network(vocab=[], populations=[h], inputs=[("x", 1)],
                  projections=[Projection(spike_input(1), 0, 0, np.ones((1, 1), np.int64))])
    with pytest.raises(NetworkError, match="no such source"):
        net.check()
    net = Network(vocab=[], populations=[h],
                  projections=[Projection(INPUT, 0, 0, np.ones((0, 1), np.int64))])
    with pytest.raises(NetworkError, match="vocabulary is empty"):
        net.check()
