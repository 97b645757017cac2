"""models.cycles: cycle counts of tiny networks, worked out by hand from the documented rules.

Rules (models/cycles.py): a route phase broadcasts spikes one per cycle in lane-major order;
spike of rank r reaches the lanes at r + broadcast_latency; each lane spends
max(1, segment length) cycles on it, one spike after another; the phase ends when the
slowest lane is done, + route_drain + phase_overhead (phase_overhead alone with no spikes).
update = ceil(size / lanes) + update_latency + phase_overhead;
sample = vocab + sample_latency + phase_overhead. PLANNED_TIMING: broadcast_latency 2,
route_drain 3, update_latency 4, phase_overhead 1, sample_latency 3.
"""

import numpy as np
import pytest
import torch

from models.cycles import RouteCost, lane_major_order, route_cost, sample_cycles, update_cycles
from spikestream.formats import NeuronKind
from spikestream.timing import PLANNED_TIMING, CoreTiming
from models.golden import GoldenCore
from spikestream.network import (INPUT, Network, NetworkError, Projection, RouteGroup,
                                 core_layout, lane_layout, make_population, projection_groups,
                                 route_groups)

CUSTOM = CoreTiming(broadcast_latency=5, route_drain=7, update_latency=11, phase_overhead=13,
                    sample_latency=17)


def _route(seg_len, spikes, lanes, timing=PLANNED_TIMING, seg_cycles=None):
    rc = RouteCost(np.asarray(seg_len, dtype=np.int64), lanes, timing, seg_cycles=seg_cycles)
    c, e = route_cost(rc, torch.as_tensor(spikes, dtype=torch.bool).reshape(1, -1))
    return int(c[0]), int(e[0])


def _reference_route(seg_len, spikes, lanes, timing):
    """Spike-by-spike simulation of the route phase, written from the rules alone."""
    seg_len = np.asarray(seg_len)
    order = [n for lane in range(lanes) for n in range(lane, len(spikes), lanes)]
    sent = [n for n in order if spikes[n]]
    if not sent:
        return timing.phase_overhead, 0
    done = 0
    for lane in range(lanes):
        t = 0
        for rank, n in enumerate(sent):
            t = max(t, rank + timing.broadcast_latency) + max(1, int(seg_len[n, lane]))
        done = max(done, t)
    events = int(sum(seg_len[n].sum() for n in sent))
    return done + timing.route_drain + timing.phase_overhead, events


def test_lane_major_order():
    assert lane_major_order(5, 2).tolist() == [0, 2, 4, 1, 3]
    assert lane_major_order(5, 1).tolist() == [0, 1, 2, 3, 4]
    assert lane_major_order(7, 3).tolist() == [0, 3, 6, 1, 4, 2, 5]
    assert lane_major_order(3, 4).tolist() == [0, 1, 2]


def test_one_lane():
    seg = [[3], [0], [2]]
    # Spikes {0, 2}: ranks 0, 1 arrive at 2, 3. Lane: 2..5 (3 synapses), 5..7 (2).
    # 7 + drain 3 + overhead 1 = 11; events 3 + 2 = 5.
    assert _route(seg, [1, 0, 1], 1) == (11, 5)
    # Spike {1}: an empty segment still costs its pointer read: 2..3; 3 + 3 + 1 = 7; 0 events.
    assert _route(seg, [0, 1, 0], 1) == (7, 0)
    # All three: 2..5, 5..6, 6..8; 8 + 3 + 1 = 12; events 5.
    assert _route(seg, [1, 1, 1], 1) == (12, 5)
    # Custom timing, spikes {0, 2}: arrive 5, 6; lane 5..8, 8..10; 10 + 7 + 13 = 30.
    assert _route(seg, [1, 0, 1], 1, CUSTOM) == (30, 5)


def test_no_spikes_costs_phase_overhead_only():
    seg = [[3, 1], [0, 4]]
    assert _route(seg, [0, 0], 2) == (PLANNED_TIMING.phase_overhead, 0) == (1, 0)
    assert _route(seg, [0, 0], 2, CUSTOM) == (13, 0)


def test_two_lanes_spike_bound():
    # Six sources, every segment 0 or 1 long but unequal between lanes: every lane spends
    # exactly one cycle per spike, so the number of spikes (the broadcast, one per cycle)
    # sets the time, not the 6 synaptic events (3 per lane would be ideal).
    seg = [[1, 0], [0, 1], [1, 0], [0, 1], [1, 1], [0, 0]]
    # Lane-major order [0, 2, 4, 1, 3, 5]; all spike; arrivals 2..7; each lane finishes
    # its sixth one-cycle spike at 7 + 1 = 8. 8 + 3 + 1 = 12; events 1+1+1+1+2+0 = 6.
    assert _route(seg, [1] * 6, 2) == (12, 6)
    # With a deep broadcast tree (latency 5) the latency is most of it: arrivals 5..10,
    # done at 11; 11 + 7 + 13 = 31.
    assert _route(seg, [1] * 6, 2, CUSTOM) == (31, 6)


def test_two_lanes_lane_bound():
    # Two sources; lane 0 holds most of the synapses.
    seg = [[5, 1], [0, 3]]
    # Order [0, 1]; arrivals 2, 3. Lane 0: 2..7 (5), then source 1's empty segment 7..8.
    # Lane 1: 2..3, 3..6. Slowest lane done at 8; 8 + 3 + 1 = 12; events 5+1+0+3 = 9.
    assert _route(seg, [1, 1], 2) == (12, 9)
    # Source 1 alone: arrives at 2; lane 0 2..3, lane 1 2..5; 5 + 3 + 1 = 9; 3 events.
    assert _route(seg, [0, 1], 2) == (9, 3)


def test_route_against_simulation():
    g = np.random.default_rng(0)
    for lanes in (1, 2, 3, 5):
        for timing in (PLANNED_TIMING, CUSTOM):
            for _ in range(20):
                n = int(g.integers(1, 12))
                seg = g.integers(0, 4, (n, lanes)) * (g.random((n, lanes)) < 0.6)
                spikes = g.random((4, n)) < 0.5
                rc = RouteCost(seg, lanes, timing)
                c, e = route_cost(rc, torch.as_tensor(spikes))
                for b in range(4):
                    assert (int(c[b]), int(e[b])) == _reference_route(seg, spikes[b], lanes,
                                                                      timing)
                    # Every lane spends at least one cycle per spike and spikes arrive one
                    # per cycle, so no lane ever waits after the first: the phase is the
                    # first arrival plus the busiest lane's work, whatever the order.
                    if spikes[b].any():
                        work = np.maximum(seg[spikes[b]], 1).sum(0).max()
                        assert int(c[b]) == (timing.broadcast_latency + work + timing.route_drain
                                             + timing.phase_overhead)


def test_update_and_sample_cycles():
    assert update_cycles(5, 2, PLANNED_TIMING) == 8        # ceil(5/2)=3 + 4 + 1
    assert update_cycles(4, 2, PLANNED_TIMING) == 7        # 2 + 4 + 1
    assert update_cycles(1, 16, PLANNED_TIMING) == 6       # 1 + 4 + 1
    assert update_cycles(17, 16, PLANNED_TIMING) == 7      # 2 + 4 + 1
    assert update_cycles(5, 2, CUSTOM) == 27               # 3 + 11 + 13
    assert sample_cycles(6, PLANNED_TIMING) == 10          # 6 + 3 + 1
    assert sample_cycles(65, PLANNED_TIMING) == 69         # 65 + 3 + 1
    assert sample_cycles(6, CUSTOM) == 36                  # 6 + 17 + 13


def _two_population_net():
    """Hidden LIF population h (3 neurons, alpha 0, theta 1) and a 4-token readout.

    Projections: 0 input->h (delay 0), 1 h->h (delay 1), 2 h->readout, 3 input->readout.
    """
    w_in = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]])
    w_rec = np.array([[0, -1, 0], [5, 5, 5], [0, 0, 0]])
    w_out = np.array([[1, 0, 0, 2], [0, 3, 0, 0], [0, 0, 1, 1]])
    w_tok = np.eye(4, dtype=np.int64)
    h = make_population("h", NeuronKind.LIF, 3, alpha=0, theta=1)
    ro = make_population("readout", NeuronKind.READOUT, 4, theta=0)
    return Network(vocab=list("abcd"), populations=[h, ro], readout=1, projections=[
        Projection(INPUT, 0, 0, w_in), Projection(0, 0, 1, w_rec),
        Projection(0, 1, 0, w_out), Projection(INPUT, 1, 0, w_tok)])


def test_lane_layout_segments():
    lay = lane_layout(_two_population_net(), 2)
    # Input row 0 targets h neurons 0 and 2 (lane 0) and none in lane 1.
    assert lay.seg_len[0].tolist() == [[2, 0], [0, 1], [2, 1], [0, 0]]
    assert lay.seg_len[2].tolist() == [[1, 1], [0, 1], [1, 1]]
    # The core's layout: the token's two projections share one row a token (h's synapses,
    # then the readout's), so one phase routes both.
    core = core_layout(_two_population_net(), 2)
    assert core.seg_len[0].tolist() == [[3, 0], [0, 2], [3, 1], [0, 1]]
    assert core.ptr_base == [0, 4, 7, 10]
    assert core.syn_addr[0][:3].tolist() == [0, 1, 2]      # h 0, h 2, then readout 0


def test_golden_step_cycles():
    net = _two_population_net()
    core = GoldenCore(net, lanes=2, timing=PLANNED_TIMING)
    # Fixed part: update h ceil(3/2) + 4 + 1 = 7; update readout ceil(4/2) + 4 + 1 = 7;
    # sample 4 + 3 + 1 = 8. Total 22.
    assert core.fixed_cycles == 22

    # The core routes three groups (one phase per source and delay): G0 the token at delay
    # 0 (proj 0 into h and proj 3 into the readout, one row each), before h's update; G1 h
    # at delay 1 (proj 1); G2 h at delay 0 (proj 2), before the readout's update.
    # Step 1, token 0 (after reset nothing spiked before):
    #   G0: token 0: proj 0 row 0 -> h 0, 2 (lane 0), proj 3 row 0 -> readout 0 (lane 0):
    #       segments [3, 0]; lane 0's targets are local addresses 0, 1, 2 from word 0: a
    #       pair (0, 1), then a tail of one (2): 2 slots. Lane costs 2, 1; done 2 + 2 = 4;
    #       4+3+1 = 8 cycles; 3 ev.
    #   G1: no previous h spikes -> 1 cycle; 0 ev.
    #   h: current [1, 0, 1] -> spikes {0, 2}.
    #   G2: h {0, 2}, lane-major [0, 2, 1]; segments [1, 1] and [1, 1]; each lane
    #       2 cycles; done 4; 8 cycles; events 2 + 2 = 4.
    #   route 8 + 1 + 8 = 17; total 17 + 22 = 39; events 3 + 0 + 4 = 7.
    r = core.step([0])
    assert r.spikes[0].tolist() == [[True, False, True]]
    assert (int(r.route_cycles[0]), int(r.cycles[0]), int(r.events[0])) == (17, 39, 7)
    # Logits: w_out rows 0 + 2 = [1, 0, 1, 3], plus w_tok row 0 = [2, 0, 1, 3]; argmax 3.
    assert r.logits.tolist() == [[2, 0, 1, 3]] and r.token.tolist() == [3]
    _check_events(net, r, token=0, prev_h=[False] * 3)
    prev_h = r.spikes[0][0].tolist()

    # Step 2, token 2:
    #   G0: proj 0 row 2 -> h 0, 2 (lane 0), h 1 (lane 1); proj 3 row 2 -> readout 2
    #       (lane 0): segments [3, 1]; lane 0's row starts at word 3 (odd) with targets
    #       0, 1, 3: a lead (an odd one), then a pair: 2 slots; done 2 + 2 = 4; 8 cycles;
    #       4 ev.
    #   G1: previous h {0, 2}: segments [0, 1] and [0, 0] -> costs 1 per lane each;
    #       done 2 + 2 = 4; 8 cycles; 1 event. Current [1,1,1] + [0,-1,0] = [1,0,1].
    #   G2: h {0, 2} again: 8 cycles, 4 ev.
    #   route 8 + 8 + 8 = 24; total 24 + 22 = 46; events 4 + 1 + 4 = 9.
    r = core.step([2])
    assert r.spikes[0].tolist() == [[True, False, True]]
    assert (int(r.route_cycles[0]), int(r.cycles[0]), int(r.events[0])) == (24, 46, 9)
    _check_events(net, r, token=2, prev_h=prev_h)

    # The whole step is the sum of its phases, computed the long way.
    lay = core_layout(net, 2)
    assert [(g.src, g.delay, g.dst, g.members) for g in lay.groups] == \
        [(INPUT, 0, 0, (0, 3)), (0, 1, 0, (1,)), (0, 0, 1, (2,))]
    phases = [_route(lay.seg_len[k], spikes, 2, seg_cycles=lay.seg_cycles[k])[0]
              for k, spikes in enumerate(([0, 0, 1, 0], prev_h, [1, 0, 1]))]
    phases += [update_cycles(3, 2, PLANNED_TIMING), update_cycles(4, 2, PLANNED_TIMING),
               sample_cycles(4, PLANNED_TIMING)]
    assert phases == [8, 8, 8, 7, 7, 8] and sum(phases) == 46

    # One phase per projection instead (a board's tables may hold that): 6 cycles more a
    # step here, the same sums.
    apart = GoldenCore(net, lanes=2, timing=PLANNED_TIMING, groups=projection_groups(net))
    together = GoldenCore(net, lanes=2, timing=PLANNED_TIMING)
    for token, route in ((0, 23), (2, 30)):
        a, t = apart.step([token]), together.step([token])
        assert int(a.route_cycles[0]) == route == int(t.route_cycles[0]) + 6
        assert a.logits.tolist() == t.logits.tolist() and int(a.events[0]) == int(t.events[0])


def test_golden_step_cycles_custom_timing():
    core = GoldenCore(_two_population_net(), lanes=1, timing=CUSTOM)
    # One lane. Fixed: update h 3 + 11 + 13 = 27, readout 4 + 11 + 13 = 28, sample
    # 4 + 17 + 13 = 34; total 89.
    # Token 3: input row 3 holds no synapse of proj 0 (into h), one of proj 3 (the readout):
    #   G0: one spike, a segment of 1: 5 + 1 = 6; 6 + 7 + 13 = 26; 1 ev.
    #   G1: no previous spikes: 13. h gets no current: no spikes. G2: 13.
    #   route 26 + 13 + 13 = 52; total 52 + 89 = 141.
    r = core.step([3])
    assert (int(r.route_cycles[0]), int(r.cycles[0]), int(r.events[0])) == (52, 141, 1)


def _check_events(net, r, token, prev_h):
    """events == the summed fan-out (nonzero row entries) of every source that spiked."""
    now = r.spikes[0][0].tolist()

    def sources(pr):
        if pr.src == INPUT:
            return [token]          # every input projection of this network has delay 0
        return [i for i, s in enumerate(prev_h if pr.delay else now) if s]

    fan_out = sum(int(np.count_nonzero(pr.weights[n])) for pr in net.projections
                  for n in sources(pr))
    assert int(r.events[0]) == fan_out


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_batch_cycles_are_per_stream(lanes):
    net = _two_population_net()
    batch = GoldenCore(net, lanes=lanes, batch=4)
    singles = [GoldenCore(net, lanes=lanes) for _ in range(4)]
    for tokens in ([0, 1, 2, 3], [2, 2, 0, 1], [1, 3, 3, 0]):
        rb = batch.step(tokens)
        for b, core in enumerate(singles):
            rs = core.step([tokens[b]])
            assert int(rb.cycles[b]) == int(rs.cycles[0])
            assert int(rb.route_cycles[b]) == int(rs.route_cycles[0])
            assert int(rb.events[b]) == int(rs.events[0])


def test_route_groups_must_cover_each_projection_once():
    net = _two_population_net()
    groups = route_groups(net)
    assert [g.members for g in groups] == [(0, 3), (1,), (2,)]
    bad = [groups[0], groups[1]]                                   # projection 2 left out
    with pytest.raises(NetworkError, match="cover every projection once"):
        lane_layout(net, 2, bad)
    with pytest.raises(NetworkError, match="cover every projection once"):
        lane_layout(net, 2, groups + [groups[1]])                 # projection 1 twice
    mixed = [RouteGroup(INPUT, 0, 0, (0, 1))] + groups[2:] + [RouteGroup(INPUT, 0, 1, (3,))]
    with pytest.raises(NetworkError, match="cover every projection once"):
        lane_layout(net, 2, mixed)                 # projection 1 is h's, at delay 1
