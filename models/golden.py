"""The golden model: the bit-exact integer definition of what the core computes.

:class:`GoldenCore` runs a :class:`spikestream.network.Network` laid out over some lanes,
timestep by timestep, on integer tensors only. It follows the schedule documented in
spikestream/network.py, the neuron equations of models/neurons.py, the sampler of
spikestream/sampler.py and the cycle model of models/cycles.py. The gateware, the RTL
simulation and the host must agree with it exactly: any difference is a bug.

It runs ``batch`` independent streams at once (each its own core, as if on several boards),
which is what makes evaluating a whole validation text quick; the hardware is ``batch=1``.
"""

from dataclasses import dataclass

import numpy as np
import torch

from . import cycles as cyc
from spikestream.formats import ACC_MAX, ACC_MIN
from spikestream.timing import DEFAULT_TIMING
from spikestream.network import INPUT, lane_layout, route_groups, spike_input
from .neurons import int_update
from spikestream.sampler import RNG_MASK, sample, seed_state, xorshift32

__all__ = ["StepResult", "CoreState", "GoldenCore"]


@dataclass
class StepResult:
    """Everything one timestep produced, per stream (leading dimension ``batch``).

    ``values``, ``spikes``, ``v`` and ``a`` are lists with one entry per population (core
    neuron order): ``values`` the spike values ``q`` (int64 ``[batch, size]``; 0/1 for
    binary spikes, always 0 for a non-spiking kind), ``spikes`` whether each neuron
    spiked (bool, ``values > 0``), ``v`` and ``a`` the new state (int64). ``logits`` is the
    readout membrane ``[batch, vocab]`` (``None`` without a readout); ``token`` the sampled
    next token ``[batch]`` (0 without a readout); ``cycles`` the timestep's cycle count,
    ``route_cycles`` the part spent routing, and ``events`` the synaptic events performed
    (all ``[batch]``).
    """
    values: list
    spikes: list
    v: list
    a: list
    logits: torch.Tensor
    token: torch.Tensor
    cycles: torch.Tensor
    route_cycles: torch.Tensor
    events: torch.Tensor


@dataclass
class CoreState:
    """What the core carries from one timestep to the next, per stream (leading dimension
    ``batch``): membranes ``v``, adaptations (or synaptic currents) ``a`` and the
    spiked-last-timestep bits ``s`` (int64 ``[batch, size]`` per population); ``history``,
    for every source that a delayed projection reads (a population index, :data:`INPUT` or
    a spike input), its spike values of the last timesteps, newest first (lists of int64
    ``[batch, source size]``); and each stream's sampler state ``rng`` (a list of ints)."""
    v: list
    a: list
    s: list
    history: dict
    rng: list


class GoldenCore:
    """Integer model of the core running one network image.

    Parameters
    ----------
    net : Network
    lanes : int
    timing : CoreTiming
    batch : int
        Number of independent streams.
    groups : list of RouteGroup, optional
        The route phases (default: :func:`spikestream.network.route_groups`, as the host
        loads a network; a board's tables may hold others).
    """

    def __init__(self, net, lanes, timing=DEFAULT_TIMING, batch=1, groups=None):
        net.check()
        self.net, self.lanes, self.timing, self.batch = net, lanes, timing, batch
        self.layout = lane_layout(net, lanes, route_groups(net) if groups is None else groups,
                                  paired=True)
        self.synapses = [_Synapses(pr, net.source_size(pr.src), net.populations[pr.dst].size)
                         for pr in net.projections]
        self.route = [cyc.RouteCost(sl, lanes, timing, lane_major=g.src >= 0, seg_cycles=sc)
                      for sl, sc, g in zip(self.layout.seg_len, self.layout.seg_cycles,
                                           self.layout.groups)]
        # A group's phase runs before its earliest target's update (its cycles add up the
        # same wherever it runs; its source's spikes are those of its delay).
        self.phases = [[k for k, g in enumerate(self.layout.groups) if g.dst == i]
                       for i in range(len(net.populations))]
        self.params = [{k: torch.as_tensor(getattr(p, k)) for k in p.PARAMS}
                       for p in net.populations]
        self.incoming = [[j for j, pr in enumerate(net.projections) if pr.dst == i]
                         for i in range(len(net.populations))]
        # Sources whose past spikes a delayed projection reads, and how many timesteps back.
        self.kept = {}
        for pr in net.projections:
            if pr.delay:
                self.kept[pr.src] = max(self.kept.get(pr.src, 0), pr.delay)
        self.fixed_cycles = sum(cyc.update_cycles(p.size, lanes, timing)
                                for p in net.populations)
        if net.readout is not None:
            self.fixed_cycles += cyc.sample_cycles(net.vocab_size, timing)
        self.temp_word = 0
        self.reset()
        self.seed(0)

    def reset(self):
        """Clear all neuron state and the past timesteps' spikes (the RESET command)."""
        B = self.batch
        zeros = lambda n: torch.zeros(B, n, dtype=torch.int64)
        self._v = [zeros(p.size) for p in self.net.populations]
        self._a = [zeros(p.size) for p in self.net.populations]
        self._s = [zeros(p.size) for p in self.net.populations]
        self._hist = {src: [zeros(self.net.source_size(src)) for _ in range(d)]
                      for src, d in self.kept.items()}

    @property
    def v(self):
        """Membranes per population (read only: change state with :meth:`set_state`)."""
        return tuple(self._v)

    @property
    def a(self):
        """Adaptations per population (read only: change state with :meth:`set_state`)."""
        return tuple(self._a)

    def get_state(self):
        """The state carried between timesteps, as a :class:`CoreState` (copies)."""
        return CoreState(v=[x.clone() for x in self._v], a=[x.clone() for x in self._a],
                         s=[x.clone() for x in self._s],
                         history={k: [x.clone() for x in h] for k, h in self._hist.items()},
                         rng=list(self._rng))

    def set_state(self, state):
        """Continue from ``state`` (a :class:`CoreState`, e.g. from :meth:`get_state` or read
        back from a core's memories); ``ValueError`` if it does not fit this network."""
        B, pops = self.batch, self.net.populations
        shapes = [(B, p.size) for p in pops]
        for name, xs in (("v", state.v), ("a", state.a), ("s", state.s)):
            if len(xs) != len(pops) or any(tuple(x.shape) != sh or x.dtype != torch.int64
                                           for x, sh in zip(xs, shapes)):
                raise ValueError(f"state.{name} does not fit the network: expected int64 "
                                 f"tensors of shapes {shapes}")
        if set(state.history) != set(self.kept) or any(
                len(state.history[k]) != d or any(
                    tuple(x.shape) != (B, self.net.source_size(k)) or x.dtype != torch.int64
                    for x in state.history[k]) for k, d in self.kept.items()):
            raise ValueError("state.history does not fit the network")
        if len(state.rng) != B:
            raise ValueError(f"state.rng must hold {B} generator states")
        self._v, self._a = [x.clone() for x in state.v], [x.clone() for x in state.a]
        self._s = [x.clone() for x in state.s]
        self._hist = {k: [x.clone() for x in h] for k, h in state.history.items()}
        self._rng = [int(r) & RNG_MASK for r in state.rng]

    def seed(self, seed):
        """Seed the sampler's random source of every stream (stream ``b`` gets ``seed + b``)."""
        self._rng = [seed_state(seed + b) for b in range(self.batch)]

    def set_temperature_word(self, word):
        """Set the sampler's temperature word (0: argmax); see spikestream.sampler."""
        self.temp_word = int(word)

    def _inputs(self, tokens, spikes):
        """This timestep's spike values of every input source (a dict keyed by source)."""
        B, net = self.batch, self.net
        now = {}
        if net.has_token_input:
            if tokens is None:
                raise ValueError("this network has a token input: give tokens")
            tokens = torch.as_tensor(tokens, dtype=torch.int64).reshape(B)
            if tokens.min() < 0 or tokens.max() >= net.vocab_size:
                raise ValueError(f"tokens must be 0..{net.vocab_size - 1}")
            one_hot = torch.zeros(B, net.vocab_size, dtype=torch.int64)
            one_hot[torch.arange(B), tokens] = 1
            now[INPUT] = one_hot
        spikes = [] if spikes is None else list(spikes)
        if len(spikes) != len(net.inputs):
            raise ValueError(f"this network has {len(net.inputs)} spike inputs; "
                             f"{len(spikes)} spike vectors given")
        for k, (spec, x) in enumerate(zip(net.inputs, spikes)):
            x = torch.as_tensor(x)
            if tuple(x.shape) == (spec.size,):
                x = x.expand(B, spec.size)
            if tuple(x.shape) != (B, spec.size):
                raise ValueError(f"spike input {spec.name!r}: shape {tuple(x.shape)}, expected "
                                 f"({B}, {spec.size})")
            x = x.to(torch.int64)
            if x.numel() and (x.min() < 0 or x.max() > 1):
                raise ValueError(f"spike input {spec.name!r}: spikes must be 0 or 1")
            now[spike_input(k)] = x
        return now

    def step(self, tokens=None, spikes=None, sample_tokens=True):
        """Run one timestep with input ``tokens`` (ints ``[batch]``, for a network with a
        token input) and ``spikes`` (one 0/1 tensor ``[batch, size]`` or ``[size]`` per spike
        input); see :class:`StepResult`.

        With ``sample_tokens=False`` the sampler's result is not computed (its random source
        still advances, as on the core), which saves time when only logits are needed.
        """
        B, net = self.batch, self.net
        now = self._inputs(tokens, spikes)
        cycles = torch.full((B,), self.fixed_cycles, dtype=torch.int64)
        route_cycles = torch.zeros(B, dtype=torch.int64)
        events = torch.zeros(B, dtype=torch.int64)
        values = [None] * len(net.populations)
        for i, pop in enumerate(net.populations):
            for k in self.phases[i]:
                g = self.layout.groups[k]
                q = now[g.src] if g.delay == 0 else self._hist[g.src][g.delay - 1]
                c, e = cyc.route_cost(self.route[k], q > 0)
                route_cycles += c
                events += e
            acc = torch.zeros(B, pop.size, dtype=torch.int64)
            for j in self.incoming[i]:
                pr = net.projections[j]
                q = now[pr.src] if pr.delay == 0 else self._hist[pr.src][pr.delay - 1]
                if (q > 0).any():
                    self.synapses[j].add_to(acc, q)
            # The accumulator can never leave its range (Network.check guarantees it).
            assert acc.numel() == 0 or (int(acc.min()) >= ACC_MIN and int(acc.max()) <= ACC_MAX)
            q, self._v[i], self._a[i], self._s[i] = int_update(
                pop.kind, pop.reset, pop.level_bits, self._v[i], self._a[i], self._s[i], acc,
                **self.params[i])
            values[i] = now[i] = q
        for src, h in self._hist.items():
            h.insert(0, now[src])
            h.pop()
        token = torch.zeros(B, dtype=torch.int64)
        logits = None
        if net.readout is not None:
            logits = self._v[net.readout]
            for b in range(B):
                if sample_tokens or self.temp_word:
                    t, self._rng[b] = sample(logits[b].tolist(), self.temp_word, self._rng[b])
                    token[b] = t
                else:
                    self._rng[b] = _advance(self._rng[b], net.vocab_size)
            if not sample_tokens and self.temp_word == 0:
                token = logits.argmax(1)    # argmax picks the first maximum, as the sampler does
        cycles += route_cycles
        return StepResult(values=values, spikes=[x > 0 for x in values], v=list(self._v),
                          a=list(self._a), logits=logits, token=token, cycles=cycles,
                          route_cycles=route_cycles, events=events)

    def generate(self, prompt, n_tokens, temperature_word=0, seed=0):
        """Reset, feed ``prompt`` (token ids) and generate ``n_tokens`` more (batch 1).

        Returns the generated token ids; the first is sampled after the last prompt token.
        """
        if self.batch != 1:
            raise ValueError("generate() runs one stream; build the core with batch=1")
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        self.reset()
        self.seed(seed)
        self.set_temperature_word(temperature_word)
        out = []
        for t in prompt:
            r = self.step([t])
        for k in range(n_tokens):
            nxt = int(r.token[0])
            out.append(nxt)
            if k + 1 < n_tokens:
                r = self.step([nxt])
        return out


DENSE_FILL = 0.25
"""A projection whose synapses fill at least this fraction of its ``[source, target]``
matrix is routed by a dense integer matrix product (at most ``8 / DENSE_FILL`` = 32 bytes
per synapse); a sparser one by adding the rows of the spiking sources (about 24 bytes per
synapse). Both are exact integer sums; the choice only trades speed against memory."""


class _Synapses:
    """One projection's weights in the form :meth:`add_to` routes fastest (see
    :data:`DENSE_FILL`), built from the projection's sparse synapses."""

    def __init__(self, pr, n_src, n_dst):
        rows, cols, values = (np.array(a, np.int64) for a in pr.synapses())     # own copies
        self.n_dst = n_dst
        self.dense = len(values) >= DENSE_FILL * n_src * n_dst
        if self.dense:
            self.w = torch.zeros(n_src, n_dst, dtype=torch.int64)
            self.w[torch.from_numpy(rows), torch.from_numpy(cols)] = torch.from_numpy(values)
        else:
            # CSR: row k's synapses are cols/values[ptr[k]:ptr[k + 1]] (rows come sorted).
            # NumPy, not torch: a step touches few, small arrays, where NumPy is quicker.
            self.ptr = np.zeros(n_src + 1, np.int64)
            np.cumsum(np.bincount(rows, minlength=n_src), out=self.ptr[1:])
            self.cols, self.values = cols, values

    def add_to(self, acc, values):
        """``acc += values @ W`` for spike values ``values [B, src]`` (int64 or bool) into
        int64 ``acc [B, dst]``."""
        if self.dense:
            acc += values.long() @ self.w
            return
        q = values.long().numpy()
        b, k = np.nonzero(q)
        first, count = self.ptr[k], self.ptr[k + 1] - self.ptr[k]
        # word i of the expansion belongs to spike spike[i]; its synapse is first + offset
        spike = np.repeat(np.arange(len(k)), count)
        word = np.arange(len(spike)) + np.repeat(first - (np.cumsum(count) - count), count)
        np.add.at(acc.numpy().reshape(-1), b[spike] * self.n_dst + self.cols[word],
                  self.values[word] * q[b, k][spike])


def _advance(state, n):
    for _ in range(n):
        state = xorshift32(state)
    return state
