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
from spikestream.network import INPUT, lane_layout
from .neurons import int_step
from spikestream.sampler import RNG_MASK, sample, seed_state, xorshift32

__all__ = ["StepResult", "CoreState", "GoldenCore"]


@dataclass
class StepResult:
    """Everything one timestep produced, per stream (leading dimension ``batch``).

    ``spikes``, ``v`` and ``a`` are lists with one entry per population (bool / int64
    ``[batch, size]``, core neuron order); ``logits`` is the readout membrane
    ``[batch, vocab]``; ``token`` the sampled next token ``[batch]``; ``cycles`` the
    timestep's cycle count, ``route_cycles`` the part spent routing, and ``events`` the
    synaptic events performed (all ``[batch]``).
    """
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
    ``batch``): membranes ``v`` and adaptations ``a`` (int64 ``[batch, size]`` per
    population), the previous timestep's spikes ``prev`` (bool, per population) and input
    tokens ``prev_tokens`` (bool ``[batch, vocab]``), and each stream's sampler state ``rng``
    (a list of ints)."""
    v: list
    a: list
    prev: list
    prev_tokens: torch.Tensor
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
    """

    def __init__(self, net, lanes, timing=DEFAULT_TIMING, batch=1):
        net.check()
        self.net, self.lanes, self.timing, self.batch = net, lanes, timing, batch
        self.layout = lane_layout(net, lanes)
        self.synapses = [_Synapses(pr, net.source_size(pr.src), net.populations[pr.dst].size)
                         for pr in net.projections]
        self.route = [cyc.RouteCost(sl, lanes, timing) for sl in self.layout.seg_len]
        self.params = [{k: torch.as_tensor(getattr(p, k)) for k in p.PARAMS}
                       for p in net.populations]
        self.incoming = [[j for j, pr in enumerate(net.projections) if pr.dst == i]
                         for i in range(len(net.populations))]
        self.fixed_cycles = (sum(cyc.update_cycles(p.size, lanes, timing) for p in net.populations)
                             + cyc.sample_cycles(net.vocab_size, timing))
        self.temp_word = 0
        self.reset()
        self.seed(0)

    def reset(self):
        """Clear all neuron state and the previous timestep's spikes (the RESET command)."""
        B = self.batch
        self._v = [torch.zeros(B, p.size, dtype=torch.int64) for p in self.net.populations]
        self._a = [torch.zeros(B, p.size, dtype=torch.int64) for p in self.net.populations]
        self._prev = [torch.zeros(B, p.size, dtype=torch.bool) for p in self.net.populations]
        self._prev_tokens = torch.zeros(B, self.net.vocab_size, dtype=torch.bool)

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
                         prev=[x.clone() for x in self._prev],
                         prev_tokens=self._prev_tokens.clone(), rng=list(self._rng))

    def set_state(self, state):
        """Continue from ``state`` (a :class:`CoreState`, e.g. from :meth:`get_state` or read
        back from a core's memories); ``ValueError`` if it does not fit this network."""
        B, pops = self.batch, self.net.populations
        shapes = [(B, p.size) for p in pops]
        for name, xs, dtype in (("v", state.v, torch.int64), ("a", state.a, torch.int64),
                                ("prev", state.prev, torch.bool)):
            if len(xs) != len(pops) or any(tuple(x.shape) != s or x.dtype != dtype
                                           for x, s in zip(xs, shapes)):
                raise ValueError(f"state.{name} does not fit the network: expected {dtype} "
                                 f"tensors of shapes {shapes}")
        if tuple(state.prev_tokens.shape) != (B, self.net.vocab_size) \
                or state.prev_tokens.dtype != torch.bool:
            raise ValueError(f"state.prev_tokens must be bool [{B}, {self.net.vocab_size}]")
        if len(state.rng) != B:
            raise ValueError(f"state.rng must hold {B} generator states")
        self._v, self._a = [x.clone() for x in state.v], [x.clone() for x in state.a]
        self._prev = [x.clone() for x in state.prev]
        self._prev_tokens = state.prev_tokens.clone()
        self._rng = [int(r) & RNG_MASK for r in state.rng]

    def seed(self, seed):
        """Seed the sampler's random source of every stream (stream ``b`` gets ``seed + b``)."""
        self._rng = [seed_state(seed + b) for b in range(self.batch)]

    def set_temperature_word(self, word):
        """Set the sampler's temperature word (0: argmax); see spikestream.sampler."""
        self.temp_word = int(word)

    def _source_spikes(self, src, delay, token_spikes, now):
        if src == INPUT:
            return token_spikes if delay == 0 else self._prev_tokens
        return now[src] if delay == 0 else self._prev[src]

    def step(self, tokens, sample_tokens=True):
        """Run one timestep with input ``tokens`` (ints ``[batch]``); see :class:`StepResult`.

        With ``sample_tokens=False`` the sampler's result is not computed (its random source
        still advances, as on the core), which saves time when only logits are needed.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.int64).reshape(self.batch)
        B = self.batch
        token_spikes = torch.zeros(B, self.net.vocab_size, dtype=torch.bool)
        token_spikes[torch.arange(B), tokens] = True
        now = [None] * len(self.net.populations)
        cycles = torch.full((B,), self.fixed_cycles, dtype=torch.int64)
        route_cycles = torch.zeros(B, dtype=torch.int64)
        events = torch.zeros(B, dtype=torch.int64)
        for i, pop in enumerate(self.net.populations):
            acc = torch.zeros(B, pop.size, dtype=torch.int64)
            for j in self.incoming[i]:
                pr = self.net.projections[j]
                s = self._source_spikes(pr.src, pr.delay, token_spikes, now)
                if s.any():
                    self.synapses[j].add_to(acc, s)
                c, e = cyc.route_cost(self.route[j], s)
                route_cycles += c
                events += e
            # The accumulator can never leave its range (Network.check guarantees it).
            assert acc.numel() == 0 or (int(acc.min()) >= ACC_MIN and int(acc.max()) <= ACC_MAX)
            s, self._v[i], self._a[i] = int_step(pop.kind, self._v[i], self._a[i], acc,
                                               **self.params[i])
            now[i] = s
        self._prev = now
        self._prev_tokens = token_spikes
        logits = self._v[self.net.readout]
        token = torch.zeros(B, dtype=torch.int64)
        for b in range(B):
            if sample_tokens or self.temp_word:
                t, self._rng[b] = sample(logits[b].tolist(), self.temp_word, self._rng[b])
                token[b] = t
            else:
                self._rng[b] = _advance(self._rng[b], self.net.vocab_size)
        if not sample_tokens and self.temp_word == 0:
            token = logits.argmax(1)    # argmax picks the first maximum, as the sampler does
        cycles += route_cycles
        return StepResult(spikes=list(now), v=list(self._v), a=list(self._a), logits=logits,
                          token=token, cycles=cycles, route_cycles=route_cycles, events=events)

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

    def add_to(self, acc, spikes):
        """``acc += spikes @ W`` for bool ``spikes [B, src]`` into int64 ``acc [B, dst]``."""
        if self.dense:
            acc += spikes.long() @ self.w
            return
        b, k = np.nonzero(spikes.numpy())
        first, count = self.ptr[k], self.ptr[k + 1] - self.ptr[k]
        # word i of the expansion belongs to spike spike[i]; its synapse is first + offset
        spike = np.repeat(np.arange(len(k)), count)
        word = np.arange(len(spike)) + np.repeat(first - (np.cumsum(count) - count), count)
        np.add.at(acc.numpy().reshape(-1), b[spike] * self.n_dst + self.cols[word],
                  self.values[word])


def _advance(state, n):
    for _ in range(n):
        state = xorshift32(state)
    return state
