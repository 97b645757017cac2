"""The float spiking character language model that spikestream trains.

The model is written in the core's own terms so that compiling it is mechanical: spiking
populations (``h0``, ``h1``, ...) and a non-spiking readout, connected by projections with
a delay of 0 or 1 timestep (see spikestream/network.py). One character is one timestep.

* ``input -> h0`` (delay 0 and, with ``token_shift``, delay 1): the token embedding is the
  fan-out of the token's one-hot spike.
* ``h(l-1) -> h(l)`` (delay 0 and, with ``token_shift``, delay 1) for stacked layers; a layer
  that is not ``stacked`` hears ``input`` the same way instead.
* ``h(l) -> h(l)`` (delay 1) with ``recurrent``: the SRNN's recurrent weights.
* ``h(l) -> readout`` (delay 0) from every layer with ``readout`` (all by default), and
  ``input -> readout`` (delay 0).

``recurrent``, ``token_shift``, ``readout`` and ``kind`` may be set per layer.

Training speed: every feed-forward product is computed for all timesteps at once; only
the recurrent product and the neuron update run inside the time loop.
"""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

from spikestream.formats import DECAY_ONE, STATE_BITS, WEIGHT_MAX, NeuronKind
from spikestream.network import INPUT
from .neurons import fake_quant, float_step

__all__ = ["MAX_LAYER", "MAX_THRESHOLD", "PER_LAYER", "LMConfig", "SpikingLM", "ProjSpec",
           "projection_specs"]

MAX_LAYER = 1 << 16
"""Most neurons (or tokens) in one layer of a model (a lane addresses 2**16 neurons)."""


PER_LAYER = ("kind", "recurrent", "token_shift", "readout", "stacked")
"""The settings of :class:`LMConfig` that may differ by layer: one value for every layer, or
a list with one per hidden layer."""

MAX_THRESHOLD = 1 << (STATE_BITS - 4)
"""Largest integer threshold the compiler gives a neuron (a population's scale is at most
this over its float threshold): keeps the membrane's range at 8 thresholds or more."""

KINDS = ("LIF", "ALIF", "IF")
ADAPTATIONS = ("softplus", "relu")


@dataclass
class LMConfig:
    """Hyper-parameters of a :class:`SpikingLM`; saved inside every checkpoint.

    ``kind``, ``recurrent``, ``token_shift``, ``readout`` and ``stacked`` are per layer (see
    :data:`PER_LAYER`): ``readout=[false, true]`` reads only the second layer out (the last
    layer is always read out: nothing else would hear it); a layer that is not ``stacked``
    hears the token input instead of the layer below (beside it, not above it: the first
    layer always hears the token). ``adaptation`` maps an ALIF
    neuron's trained parameter to its threshold jump: ``softplus`` (positive, with a
    gradient everywhere, so no neuron's adaptation dies) or ``relu`` (models trained before
    it: a jump trained to <= 0 stayed there). ``dense`` names projections that pruning keeps
    dense (e.g. ``out_in``, the token -> readout table, small and all used).
    """
    vocab_size: int = 65
    hidden: tuple = (512,)
    kind: str = "ALIF"              # neuron kind of the hidden layers: LIF, ALIF or IF
    recurrent: bool = True
    token_shift: bool = True
    readout: bool = True
    stacked: bool = True
    tau_m: tuple = (2.0, 20.0)      # membrane time constants drawn log-uniformly at init
    tau_adp: tuple = (20.0, 200.0)  # adaptation time constants (ALIF)
    surrogate_width: float = 2.0
    embed_std: float = 1.0
    adaptation: str = "softplus"
    dense: tuple = ()

    def layer(self, key, l):
        """Setting ``key`` (one of :data:`PER_LAYER`) of hidden layer ``l``."""
        v = getattr(self, key)
        return v[l] if isinstance(v, tuple) else v

    def same_model(self, other):
        """Whether ``other`` (an LMConfig) builds the same model: per-layer settings compared
        layer by layer (``True`` and ``[true, true]`` are the same for two layers)."""
        a, b = self.to_dict(), other.to_dict()
        for d, cfg in ((a, self), (b, other)):
            for k in PER_LAYER:
                d[k] = [cfg.layer(k, l) for l in range(len(cfg.hidden))]
        return a == b

    def to_dict(self):
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d.setdefault("adaptation", "relu")      # checkpoints from before the setting
        for k in ("hidden", "tau_m", "tau_adp", "dense"):
            if k in d:
                if not isinstance(d[k], (list, tuple)):
                    raise ValueError(f"{k} must be a list, not {d[k]!r:.40}")
                d[k] = tuple(d[k])
        for k in PER_LAYER:
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return cls(**d)

    def check(self):
        """Raise ``ValueError`` (one line) naming the first setting no model can have."""
        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x):
            return (isinstance(x, (int, float)) and not isinstance(x, bool)
                    and math.isfinite(x))

        if not is_int(self.vocab_size) or not 1 <= self.vocab_size <= MAX_LAYER:
            raise ValueError(f"vocab_size must be an integer in 1..{MAX_LAYER}, "
                             f"not {self.vocab_size!r}")
        if (not isinstance(self.hidden, tuple) or not self.hidden
                or not all(is_int(n) and 1 <= n <= MAX_LAYER for n in self.hidden)):
            raise ValueError(f"hidden must be a non-empty list of layer sizes in "
                             f"1..{MAX_LAYER}, not {list(self.hidden) if isinstance(self.hidden, tuple) else self.hidden!r}")
        L = len(self.hidden)
        for k in PER_LAYER:
            v = getattr(self, k)
            ok = (lambda x: x in KINDS) if k == "kind" else (lambda x: isinstance(x, bool))
            what = "LIF, ALIF or IF" if k == "kind" else "true or false"
            if isinstance(v, tuple):
                if len(v) != L or not all(ok(x) for x in v):
                    raise ValueError(f"{k} must be {what}, or a list of {L} (one per hidden "
                                     f"layer), not {list(v)}")
            elif not ok(v):
                raise ValueError(f"{k} must be {what}, or a list of {L} (one per hidden "
                                 f"layer), not {v!r}")
        for l in range(L):
            if not (self.layer("readout", l) or l + 1 < L and self.layer("stacked", l + 1)):
                raise ValueError(f"readout must include hidden layer {l}: neither the readout "
                                 "nor a layer stacked on it reads its spikes")
        for k in ("tau_m", "tau_adp"):
            t = getattr(self, k)
            if (not isinstance(t, tuple) or len(t) != 2 or not all(is_num(x) for x in t)
                    or not 0 < t[0] <= t[1]):
                raise ValueError(f"{k} must be two time constants 0 < low <= high, not "
                                 f"{list(t) if isinstance(t, tuple) else t!r}")
        if not is_num(self.surrogate_width) or self.surrogate_width <= 0:
            raise ValueError(f"surrogate_width must be a positive number, not "
                             f"{self.surrogate_width!r}")
        if not is_num(self.embed_std) or self.embed_std < 0:
            raise ValueError(f"embed_std must be a number >= 0, not {self.embed_std!r}")
        if self.adaptation not in ADAPTATIONS:
            raise ValueError(f"adaptation must be softplus or relu, not {self.adaptation!r}")
        names = {sp.name for sp in projection_specs(self)}
        if not isinstance(self.dense, tuple) or not all(x in names for x in self.dense):
            raise ValueError(f"dense must list projections of this model "
                             f"({', '.join(sorted(names))}), not {self.dense!r:.80}")
        return self


@dataclass
class ProjSpec:
    """One projection of the model: ``src`` is a layer index or INPUT; ``dst`` a layer index
    or ``len(hidden)`` for the readout."""
    name: str
    src: int
    dst: int
    delay: int


def projection_specs(cfg):
    """The projections of a model with settings ``cfg``, in the order the core routes them
    (grouped by target)."""
    L = len(cfg.hidden)
    specs = []
    for l in range(L):
        src = l - 1 if l > 0 and cfg.layer("stacked", l) else INPUT
        specs.append(ProjSpec(f"ff{l}", src, l, 0))
        if cfg.layer("token_shift", l):
            specs.append(ProjSpec(f"shift{l}", src, l, 1))
        if cfg.layer("recurrent", l):
            specs.append(ProjSpec(f"rec{l}", l, l, 1))
    for l in range(L):
        if cfg.layer("readout", l):
            specs.append(ProjSpec(f"out{l}", l, L, 0))
    specs.append(ProjSpec("out_in", INPUT, L, 0))
    return specs


def _inv_softplus(y):
    return math.log(math.expm1(y))


class SpikingLM(nn.Module):
    """A spiking character LM whose structure maps one-to-one onto the core."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.kinds = [NeuronKind[cfg.layer("kind", l)] for l in range(len(cfg.hidden))]
        H, V, L = cfg.hidden, cfg.vocab_size, len(cfg.hidden)
        self.specs = specs = projection_specs(cfg)
        self.specs_src = [next(sp.src for sp in specs if sp.name == f"ff{l}") for l in range(L)]
        size = lambda i: V if i == INPUT else (H[i] if i < L else V)
        self.weights = nn.ParameterDict()
        for sp in specs:
            n_in, n_out = size(sp.src), size(sp.dst)
            if sp.src == INPUT:
                std = cfg.embed_std if sp.dst < L else 0.02
            else:
                std = 1.0 / math.sqrt(n_in) * (0.5 if sp.name.startswith("rec") else 1.0)
            self.weights[sp.name] = nn.Parameter(torch.randn(n_in, n_out) * std)
            self.register_buffer(f"mask_{sp.name}", torch.ones(n_in, n_out))
        g = torch.Generator().manual_seed(0)
        self.alpha_logit = nn.ParameterList()
        self.rho_logit = nn.ParameterList()
        self.jump = nn.ParameterList()
        self.bias = nn.ParameterList()
        for n in H:
            tau_m = torch.exp(torch.empty(n).uniform_(*map(math.log, cfg.tau_m), generator=g))
            tau_a = torch.exp(torch.empty(n).uniform_(*map(math.log, cfg.tau_adp), generator=g))
            self.alpha_logit.append(nn.Parameter(torch.logit(torch.exp(-1 / tau_m))))
            self.rho_logit.append(nn.Parameter(torch.logit(torch.exp(-1 / tau_a))))
            adaptive = self.kinds[len(self.jump)] == NeuronKind.ALIF
            jump0 = _inv_softplus(0.2) if cfg.adaptation == "softplus" else 0.2
            self.jump.append(nn.Parameter(torch.full((n,), jump0 if adaptive else 0.0),
                                          requires_grad=adaptive))
            self.bias.append(nn.Parameter(torch.zeros(n)))
        self.out_bias = nn.Parameter(torch.zeros(V))
        self.register_buffer("theta", torch.ones(1))
        self.quantised = False
        """Run forward as the compiled core would (quantisation-aware training): weights,
        thresholds, jumps and biases on the compiler's integer grid of each target
        (:meth:`quant_scales`), decays on ``DECAY_ONE``, the decayed state rounded as the
        core rounds it; gradients pass straight through. Not saved: a setting of the run."""

    # -- parameters in neuron terms (what the compiler quantises) --------------------------

    def weight(self, name):
        return self.weights[name] * getattr(self, f"mask_{name}")

    def neuron_params(self, l):
        """Float (alpha, theta, rho, jump, bias) of hidden layer ``l``."""
        n = self.cfg.hidden[l]
        alpha = torch.sigmoid(self.alpha_logit[l])
        kind = self.kinds[l]
        if kind == NeuronKind.IF:
            alpha = torch.ones_like(alpha)
        if kind == NeuronKind.ALIF:
            positive = F.softplus if self.cfg.adaptation == "softplus" else F.relu
            rho, jump = torch.sigmoid(self.rho_logit[l]), positive(self.jump[l])
        else:
            rho, jump = torch.zeros(n), torch.zeros(n)
        return alpha, self.theta.expand(n), rho, jump, self.bias[l]

    @torch.no_grad()
    def quant_scales(self):
        """Integer units per float unit, per target neuron, that the compiler quantises to
        (float64): for hidden layer ``l`` ``min(WEIGHT_MAX / max |w|, MAX_THRESHOLD /
        theta)`` over the weights into each neuron; for the readout one scale for every
        neuron (the sampler compares them), the smallest weight scale, lowered so that the
        biases fit ``STATE_BITS``. A list: the hidden layers', then the readout's."""
        L = len(self.cfg.hidden)
        # (a tensor numerator: torch computes ``number / tensor`` as a reciprocal times the
        # number, an ulp away from the compiler's numpy division)
        const = lambda c, like: torch.full_like(like, float(c))
        scales = []
        for dst in range(L + 1):
            wmax = torch.stack([self.weight(sp.name).detach().double().abs().amax(0)
                                for sp in self.specs if sp.dst == dst]).amax(0)
            wmax = wmax.clamp_min(1e-12)
            if dst < L:
                theta = self.theta.double().expand_as(wmax)
                scales.append(torch.minimum(const(WEIGHT_MAX, wmax) / wmax,
                                            const(MAX_THRESHOLD, theta) / theta))
            else:
                bias = self.out_bias.detach().double().abs().max().clamp_min(1e-12)
                limit = const((1 << (STATE_BITS - 1)) - 1, bias) / bias
                scale = torch.minimum((const(WEIGHT_MAX, wmax) / wmax).min(), limit)
                scales.append(scale.expand_as(wmax).clone())
        return scales

    def _weights(self, scales):
        """Every projection's weights as forward uses them: ``name -> [src, dst]``."""
        w = {sp.name: self.weight(sp.name) for sp in self.specs}
        if scales is not None:
            w = {sp.name: fake_quant(w[sp.name], scales[sp.dst].to(w[sp.name].dtype))
                 for sp in self.specs}
        return w

    # -- forward ---------------------------------------------------------------------------

    def forward(self, tokens, state=None, return_spikes=False):
        """Logits ``[B, T, V]`` for token ids ``[B, T]``; optional initial/final state.

        ``state`` is a list per layer of ``(v, a, s_prev)`` plus the previous one-hot token,
        exactly the state the core carries between timesteps.
        """
        cfg, L = self.cfg, len(self.cfg.hidden)
        B, T = tokens.shape
        onehot = F.one_hot(tokens, cfg.vocab_size).float()
        if state is None:
            state = self.initial_state(B, tokens.device)
        scales = self.quant_scales() if self.quantised else None
        W = self._weights(scales)
        prev_tok = state[-1]
        src = torch.cat([prev_tok[:, None], onehot], 1)        # token at t-1 and t
        layer_spikes, new_state = [], []
        for l in range(L):
            below = (torch.cat([state[l - 1][2][:, None], layer_spikes[-1]], 1)
                     if self.specs_src[l] != INPUT else src)
            drive = below[:, 1:] @ W[f"ff{l}"]
            if cfg.layer("token_shift", l):
                drive = drive + below[:, :-1] @ W[f"shift{l}"]
            alpha, theta, rho, jump, bias = self.neuron_params(l)
            grid = None
            if scales is not None:
                grid = scales[l].to(drive.dtype)
                alpha, rho = fake_quant(alpha, DECAY_ONE), fake_quant(rho, DECAY_ONE)
                theta, jump, bias = (fake_quant(x, grid) for x in (theta, jump, bias))
            drive = drive + bias
            v, a, s = state[l]
            w_rec = W[f"rec{l}"] if cfg.layer("recurrent", l) else None
            out = []
            for t in range(T):
                cur = drive[:, t]
                if w_rec is not None:
                    cur = cur + s @ w_rec
                s, v, a = float_step(self.kinds[l], v, a, cur, alpha, theta, rho, jump,
                                     cfg.surrogate_width, grid=grid)
                out.append(s)
            spikes = torch.stack(out, 1)
            layer_spikes.append(spikes)
            new_state.append((v, a, s))
        out_bias = self.out_bias
        if scales is not None:
            out_bias = fake_quant(out_bias, scales[L].to(out_bias.dtype))
        logits = onehot @ W["out_in"] + out_bias
        for l in range(L):
            if cfg.layer("readout", l):
                logits = logits + layer_spikes[l] @ W[f"out{l}"]
        new_state.append(onehot[:, -1])
        if return_spikes:
            return logits, new_state, layer_spikes
        return logits, new_state

    def initial_state(self, batch, device=None):
        """The state after a core reset: everything zero."""
        st = [tuple(torch.zeros(batch, n, device=device) for _ in range(3))
              for n in self.cfg.hidden]
        st.append(torch.zeros(batch, self.cfg.vocab_size, device=device))
        return st

    # -- pruning ---------------------------------------------------------------------------

    def prune_(self, sparsity):
        """Magnitude-prune every projection to ``sparsity`` (fraction of zeros), in place.

        Each projection is pruned to the same fraction, so no layer is emptied, but those
        the config names ``dense``; the masks stay, so training keeps pruned weights at zero.
        """
        for sp in self.specs:
            if sp.name in self.cfg.dense:
                continue
            w = self.weights[sp.name].detach().abs()
            k = int(round(sparsity * w.numel()))
            mask = torch.ones_like(w)
            if k > 0:
                thresh = w.flatten().kthvalue(k).values
                mask = (w > thresh).float()
            getattr(self, f"mask_{sp.name}").copy_(mask)

    def sparsity(self):
        total = sum(getattr(self, f"mask_{sp.name}").numel() for sp in self.specs)
        zeros = sum((getattr(self, f"mask_{sp.name}") == 0).sum().item() for sp in self.specs)
        return zeros / total
