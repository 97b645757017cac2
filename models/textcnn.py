"""A TextCNN for MR sentence polarity, its K-bit quantised form, and its two conversions to
a spiking network that streams one word per timestep (issue 19; docs/textcnn.md).

The float model is Kim's CNN-rand scaled down to fit the 16-lane ULX3S-85F core: a random
(learned) embedding of :attr:`TextCNNConfig.emb_dim` dimensions, filters of widths 3, 4, 5
over words, **mean pooling over time** (the SNN's readout integrates over the sentence, so
the ANN is trained with the pooling the core computes; max pooling has no integrating
equivalent), dropout and a linear layer to two classes. Activations, embeddings included,
are clipped to ``[0, lambda]`` with a learned ``lambda`` (the QCFS / LAS activation); the
quantised model rounds them to ``2**K - 1`` levels (``floor(x / s + 1/2)``, straight-through
gradient) and its conv weights to 8 bits with a per-filter scale chosen so that the integer
threshold of each filter is exact.

How the core runs it (one image):

* The host looks each word up in the image's word list and sends its embedding codes
  (``emb_bits`` bits each, plus a "word present" channel at full scale) as spike
  **bit-planes**: input neuron ``j * (E + 1) + i`` is bit ``j`` of dimension ``i``. The
  population ``emb`` (``LIF``, ``alpha = 0``, ``theta = 1``, ``emb_bits``-level spikes)
  sums plane ``j`` with weight ``2**j`` and so re-emits each code as one graded spike.
* A filter of width ``k`` is ``k`` projections ``emb -> conv`` of delays ``0 .. k - 1``
  (one projection per delay, shared by the three widths). After the last word the host
  sends ``max(widths) - 1`` empty steps so that the last windows close.
* **LAS** (``conversion = "las"``): ``conv`` is ``LIF`` with ``alpha = 0`` (no memory),
  ``level_bits = K``, threshold ``theta_f`` and bias ``beta_f``: its spike is
  ``min(2**K - 1, floor((acc + beta_f) / theta_f))`` clipped at 0, exactly the quantised
  ANN's activation code (the OAT neuron's K-bit code, carried by one graded spike).
* **Lv et al.** (``conversion = "lv"``): binary ``IF`` neurons with reset by subtraction,
  the embedding rate-coded over ``T`` sub-steps per word (a deterministic code:
  ``round(c T / L)`` evenly spaced spikes), threshold balanced by the learned clip
  ``lambda``; delays ``d T`` for tap ``d``; then fine-tuned with surrogate gradients
  (:func:`finetune_lv`) as :class:`LvSNN`, the same network in PyTorch, exact in the
  core's integers (its readout is the golden model's, sentence by sentence).
* ``readout`` (``READOUT``, ``alpha = 1``: an integrator) adds ``W q_t + b`` every step, so
  after the sentence it holds the sum-pooled logits; the class is its argmax, on chip.

:func:`quantised_decisions` is the quantised ANN computed in integers with ordinary tensor
operations (convolution, sums), independently of the golden model; LAS is loss-less when
:func:`golden_run` gives the same class for every sentence (``python -m models.textcnn
train`` checks it on the test fold and refuses to write an image otherwise).

``python -m models.textcnn train --fold 0 --out-dir models/pretrained`` trains on nine folds
of MR and writes the shipped images (:data:`SHIPPED`).
"""

import base64
import binascii
import json
import re
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikestream.cli import CommandParser
from spikestream.cmdline import run
from spikestream.files import FileProblem, check_output
from spikestream.formats import (DECAY_ONE, MAX_DELAY, MAX_LEVEL_BITS, STATE_MAX,
                                 STATE_MIN, WEIGHT_MAX, NeuronKind, ResetMode)
from spikestream.image import Image, save_image
from spikestream.memory_map import CoreConfig
from spikestream.network import InputSpec, Network, Projection, make_population, spike_input
from spikestream.timing import DEFAULT_TIMING

from .golden import GoldenCore
from .neurons import spike_fn
from .mr import (FOLDS, SPLIT_SEED, UNK, MRDataError, WordVocab, build_vocab, fold_indices,
                 load_mr)

__all__ = ["TASK", "LABELS", "TextCNNConfig", "TextCNN", "fake_quant", "IntTextCNN",
           "integer_model", "quantised_decisions", "las_network", "lv_network", "TextMeta",
           "text_meta", "TextMetaError", "read_text_meta", "encode_sentence", "golden_run",
           "train_model", "float_accuracy", "Fold", "train_fold", "convert", "summary",
           "evaluate_image", "LvParams", "lv_params", "LvSNN", "lv_decisions", "finetune_lv",
           "LV_FINETUNE_EPOCHS", "SHIPPED", "argument_parser", "main"]

TASK = "mr-sentiment"
"""The ``task`` an image of this module names in its metadata."""
LABELS = ["negative", "positive"]
"""Class labels, in readout order (MR label 0 is negative)."""
MAX_WORD_CHARS = 64
"""Longest word an image's word list may hold."""
_WORD = re.compile(r"[a-z0-9(),!?'`]+")
"""What :func:`models.mr.clean_str` leaves of a word."""
READOUT_HEADROOM = 0.5
"""The readout's scale keeps the largest running sum seen on the training folds within this
fraction of the 16-bit membrane (so that sentences unlike the training ones rarely
saturate; the quantised ANN saturates exactly as the core does anyway)."""


@dataclass
class TextCNNConfig:
    """Model and training settings (saved in every image's metadata)."""
    emb_dim: int = 32
    emb_bits: int = 4
    act_bits: int = 4
    filters: int = 256            # per width: 3 x 256 = 768 neurons, 103k synapses
    widths: tuple = (3, 4, 5)
    dropout: float = 0.5
    float_epochs: int = 3
    qat_epochs: int = 1
    batch_size: int = 50
    lr: float = 2e-3
    min_count: int = 2
    vocab_cap: int = 10000
    seed: int = 0

    @property
    def pad_steps(self):
        """Empty timesteps after the last word: the widest filter's last windows close."""
        return max(self.widths) - 1


# --------------------------------------------------------------------------- float model

def fake_quant(x, clip, levels):
    """``clip * clamp(floor(x / s + 1/2), 0, levels) / levels`` with ``s = clip / levels``:
    the LAS/QCFS activation quantiser; gradient straight through inside ``[0, clip]``
    (and to ``clip`` as in LSQ). ``levels = None``: the float clip ``clamp(x, 0, clip)``."""
    if levels is None:
        return torch.minimum(F.relu(x), clip)
    s = clip / levels
    y = torch.clamp(x / s, 0, levels)
    y = y + (torch.floor(y + 0.5) - y).detach()
    return y * s


class TextCNN(nn.Module):
    """The float (``levels = None``) or quantised TextCNN; see the module docstring.

    ``forward(ids, lengths)``: ``ids`` int64 ``[B, N]`` word ids (anything past a
    sentence's length is ignored), ``lengths`` ``[B]``; returns logits ``[B, 2]``.
    """

    def __init__(self, cfg, vocab_size):
        super().__init__()
        self.cfg = cfg
        E, nF = cfg.emb_dim, cfg.filters
        self.emb = nn.Embedding(vocab_size, E)
        nn.init.uniform_(self.emb.weight, 0.0, 1.0)
        self.convs = nn.ModuleList(nn.Conv1d(E + 1, nF, k) for k in cfg.widths)
        self.fc = nn.Linear(nF * len(cfg.widths), len(LABELS))
        self.emb_clip = nn.Parameter(torch.tensor(1.0))
        self.act_clip = nn.Parameter(torch.ones(len(cfg.widths)))
        self.quantised = False

    @property
    def emb_levels(self):
        return (1 << self.cfg.emb_bits) - 1

    @property
    def act_levels(self):
        return (1 << self.cfg.act_bits) - 1

    def conv_scales(self, i):
        """Per-filter integer thresholds ``theta`` ``[F]`` and weight steps ``s_w`` of conv
        ``i``: ``s_w = s_a / (s_e theta)`` with the largest ``theta`` that keeps every
        weight within 8 bits, so that ``s_a / (s_e s_w)`` is the integer ``theta``."""
        w = self.convs[i].weight.detach()
        s_e = self.emb_clip.detach().abs() / self.emb_levels
        s_a = self.act_clip[i].detach().abs() / self.act_levels
        m = w.abs().amax(dim=(1, 2)).clamp_min(1e-12)
        theta_max = (STATE_MAX + 1) // (self.act_levels + 1) - 1
        theta = torch.floor(WEIGHT_MAX * s_a / (s_e * m)).clamp(1, theta_max)
        return theta, s_a / (s_e * theta)

    def features(self, ids, lengths):
        """Pooled (mean over the ``n + pad_steps`` steps) activations ``[B, 3F]``."""
        cfg = self.cfg
        lv_e = self.emb_levels if self.quantised else None
        lv_a = self.act_levels if self.quantised else None
        B, N = ids.shape
        mask = (torch.arange(N)[None, :] < lengths[:, None]).float()
        e = fake_quant(self.emb(ids), self.emb_clip.abs(), lv_e)
        present = self.emb_clip.abs().expand(B, N, 1)
        x = torch.cat([e, present], -1) * mask[..., None]
        x = F.pad(x.transpose(1, 2), (0, cfg.pad_steps))              # [B, E+1, N + pad]
        steps = lengths + cfg.pad_steps
        valid = (torch.arange(N + cfg.pad_steps)[None, :] < steps[:, None]).float()
        pooled = []
        for i, (k, conv) in enumerate(zip(cfg.widths, self.convs)):
            w = conv.weight
            if self.quantised:
                _, s_w = self.conv_scales(i)
                s_w = s_w[:, None, None]
                wq = torch.clamp(torch.floor(w / s_w + 0.5), -WEIGHT_MAX, WEIGHT_MAX) * s_w
                w = w + (wq - w).detach()
            y = F.conv1d(F.pad(x, (k - 1, 0)), w, conv.bias)          # window ends at t
            a = fake_quant(y, self.act_clip[i].abs(), lv_a)
            pooled.append((a * valid[:, None, :]).sum(2) / steps[:, None])
        return torch.cat(pooled, 1)

    def forward(self, ids, lengths):
        h = F.dropout(self.features(ids, lengths), self.cfg.dropout, self.training)
        return self.fc(h)


def _batches(ids, labels, batch_size, rng=None):
    """Padded ``(ids [B, N], lengths, labels)`` batches of the id lists ``ids``: in order,
    or (with ``rng``) shuffled in buckets of similar length, which saves the padding."""
    if rng is None:
        batches = [np.arange(s, min(s + batch_size, len(ids)))
                   for s in range(0, len(ids), batch_size)]
    else:
        order, batches = rng.permutation(len(ids)), []
        bucket = batch_size * 20
        for b0 in range(0, len(order), bucket):
            chunk = order[b0:b0 + bucket]
            chunk = chunk[np.argsort([len(ids[i]) for i in chunk], kind="stable")]
            batches += [chunk[s:s + batch_size] for s in range(0, len(chunk), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    for idx in batches:
        n = max(1, max(len(ids[i]) for i in idx))
        x = torch.zeros(len(idx), n, dtype=torch.int64)
        for r, i in enumerate(idx):
            x[r, :len(ids[i])] = torch.tensor(ids[i], dtype=torch.int64)
        yield (x, torch.tensor([len(ids[i]) for i in idx]),
               torch.as_tensor(labels[idx]))


@torch.no_grad()
def float_accuracy(model, ids, labels, batch_size=500):
    """Accuracy of ``model`` (as it is: float or quantised) on id lists ``ids``."""
    model.eval()
    right = 0
    for x, n, y in _batches(ids, labels, batch_size):
        right += int((model(x, n).argmax(1) == y).sum())
    model.train()
    return right / len(ids)


@torch.no_grad()
def _calibrate(model, ids, labels, pct=99.9):
    """Set the clips ``lambda`` to the ``pct``-th percentile of the float activations (the
    threshold balancing of ANN-to-SNN conversion), before quantisation-aware training."""
    model.eval()
    e = model.emb.weight.clamp_min(0).flatten()
    model.emb_clip.copy_(torch.quantile(e[e > 0][:100000], pct / 100))
    acts = [[] for _ in model.cfg.widths]
    for j, (x, n, _) in enumerate(_batches(ids, labels, 200)):
        if j >= 5:
            break
        B, N = x.shape
        mask = (torch.arange(N)[None, :] < n[:, None]).float()
        emb = fake_quant(model.emb(x), model.emb_clip.abs(), None)
        xx = torch.cat([emb, model.emb_clip.abs().expand(B, N, 1)], -1) * mask[..., None]
        xx = F.pad(xx.transpose(1, 2), (0, model.cfg.pad_steps))
        for i, (k, conv) in enumerate(zip(model.cfg.widths, model.convs)):
            y = conv(F.pad(xx, (k - 1, 0))).flatten()
            acts[i].append(y[y > 0][:200000])
    for i, a in enumerate(acts):
        model.act_clip[i] = torch.quantile(torch.cat(a)[:500000], pct / 100)
    model.train()


def _epochs(model, ids, labels, n, lr, rng, what, log):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for ep in range(n):
        t0, total, count = time.time(), 0.0, 0
        for x, ln, y in _batches(ids, labels, model.cfg.batch_size, rng):
            loss = F.cross_entropy(model(x, ln), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(y), count + len(y)
        log(f"  {what} epoch {ep + 1}/{n}: loss {total / count:.4f} ({time.time() - t0:.1f} s)")
    model.eval()


def train_model(cfg, train_ids, train_labels, act_bits=(4,), log=print):
    """Train the float model, then from it a quantisation-aware copy for each ``K`` of
    ``act_bits`` (its clips first set by :func:`_calibrate`).

    Returns ``(float_model, {K: quantised_model})``. Deterministic for a given
    ``cfg.seed`` on one thread."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vocab_size = 1 + max(max(s, default=0) for s in train_ids)
    model = TextCNN(cfg, vocab_size)
    _epochs(model, train_ids, train_labels, cfg.float_epochs, cfg.lr, rng, "float", log)
    quantised = {}
    for K in act_bits:
        torch.manual_seed(cfg.seed + K)
        qcfg = TextCNNConfig(**{**asdict(cfg), "act_bits": K})
        quant = TextCNN(qcfg, vocab_size)
        quant.load_state_dict(model.state_dict())
        _calibrate(quant, train_ids, train_labels)
        quant.quantised = True
        _epochs(quant, train_ids, train_labels, cfg.qat_epochs, cfg.lr / 4,
                np.random.default_rng(cfg.seed + K), f"QAT K={K}", log)
        quantised[K] = quant
    return model, quantised


# --------------------------------------------------------------------- integer model

@dataclass
class IntTextCNN:
    """The quantised TextCNN in integers: what an image's network and word list hold.

    ``codes`` uint8 ``[V, E]`` embedding codes of each word id; per width ``k`` (in
    ``widths`` order) ``w[i]`` int ``[F, E + 1, k]`` (kernel position ``j`` reads the word
    ``k - 1 - j`` steps back), ``bias[i]`` and ``theta[i]`` ``[F]``; ``ro_w`` ``[2, 3F]``
    and ``ro_b`` ``[2]`` the readout's weights and bias per step; ``ro_scale`` its
    integers per float logit (per step)."""
    codes: np.ndarray
    emb_bits: int
    act_bits: int
    widths: tuple
    w: list
    bias: list
    theta: list
    ro_w: np.ndarray
    ro_b: np.ndarray
    ro_scale: float
    fc_w: np.ndarray = None        # float readout (dequantised inputs), for the Lv scaling
    fc_b: np.ndarray = None
    act_step: list = field(default_factory=list)   # s_a per width

    @property
    def emb_levels(self):
        return (1 << self.emb_bits) - 1

    @property
    def act_levels(self):
        return (1 << self.act_bits) - 1

    @property
    def pad_steps(self):
        return max(self.widths) - 1

    @property
    def emb_dim(self):
        return self.codes.shape[1]


@torch.no_grad()
def integer_model(quant, train_ids):
    """The :class:`IntTextCNN` of the trained quantised model ``quant``; the readout's
    scale is chosen from the running sums on ``train_ids`` (:data:`READOUT_HEADROOM`)."""
    cfg = quant.cfg
    Le, La = quant.emb_levels, quant.act_levels
    s_e = float(quant.emb_clip.abs()) / Le
    codes = torch.clamp(torch.floor(quant.emb.weight / s_e + 0.5), 0, Le).to(torch.uint8)
    ws, biases, thetas, steps = [], [], [], []
    for i, conv in enumerate(quant.convs):
        theta, s_w = quant.conv_scales(i)
        s_a = float(quant.act_clip[i].abs()) / La
        w = torch.clamp(torch.floor(conv.weight / s_w[:, None, None] + 0.5),
                        -WEIGHT_MAX, WEIGHT_MAX)
        # pre / s_a = (acc + b theta / s_a) / theta; + theta / 2 makes floor() round.
        b = torch.floor(conv.bias * theta / s_a + 0.5) + torch.floor(theta / 2)
        ws.append(w.long().numpy())
        biases.append(b.clamp(STATE_MIN, STATE_MAX).long().numpy())
        thetas.append(theta.long().numpy())
        steps.append(s_a)
    # Readout: only the difference of the two logits matters, so centre the rows.
    W = quant.fc.weight.double()
    W = W - W.mean(0, keepdim=True)
    b = quant.fc.bias.double() - quant.fc.bias.double().mean()
    s_a = torch.tensor(np.repeat(steps, cfg.filters), dtype=torch.float64)
    Wq = W * s_a[None, :]                  # per unit of activation code
    m = IntTextCNN(codes=codes.numpy(), emb_bits=cfg.emb_bits, act_bits=cfg.act_bits,
                   widths=tuple(cfg.widths), w=ws, bias=biases, theta=thetas,
                   ro_w=None, ro_b=None, ro_scale=1.0, fc_w=Wq.numpy(), fc_b=b.numpy(),
                   act_step=steps)
    peak = 0.0
    for q in _code_batches(m, train_ids):
        run = torch.cumsum(q @ Wq.T + b, 1)          # [B, T, 2] running sums (float)
        peak = max(peak, float(run.abs().max()))
    scale = min(WEIGHT_MAX / float(Wq.abs().max()), READOUT_HEADROOM * STATE_MAX / peak)
    m.ro_w = np.rint(Wq.numpy() * scale).astype(np.int64)
    m.ro_b = np.rint(b.numpy() * scale).astype(np.int64)
    m.ro_scale = scale
    return m


def _sat(x):
    return x.clamp(STATE_MIN, STATE_MAX)


def _code_batches(m, ids, batch_size=500):
    """Activation codes ``q`` (float64 ``[B, steps, 3F]``, zero past each sentence's last
    step) of the integer model ``m`` on id lists ``ids``, batch by batch (in order); the
    sentence lengths as ``q.lengths``."""
    codes = torch.from_numpy(m.codes.astype(np.int64))
    Le = m.emb_levels
    for x, n, _ in _batches(ids, np.zeros(len(ids), np.int64), batch_size):
        B, N = x.shape
        mask = torch.arange(N)[None, :] < n[:, None]
        c = torch.cat([codes[x], torch.full((B, N, 1), Le)], -1) * mask[..., None]
        xx = F.pad(c.transpose(1, 2).double(), (0, m.pad_steps))
        T = N + m.pad_steps
        valid = torch.arange(T)[None, :] < (n + m.pad_steps)[:, None]
        qs = []
        for k, w, b, th in zip(m.widths, m.w, m.bias, m.theta):
            acc = F.conv1d(F.pad(xx, (k - 1, 0)), torch.from_numpy(w).double())
            cur = _sat(acc.long() + torch.from_numpy(b)[None, :, None])
            q = torch.div(cur, torch.from_numpy(th)[None, :, None], rounding_mode="floor")
            qs.append(q.clamp(0, m.act_levels))
        q = torch.cat(qs, 1).transpose(1, 2).double() * valid[..., None]
        q.lengths = n
        yield q


@torch.no_grad()
def quantised_decisions(m, ids):
    """The quantised ANN's class (0/1) and final readout ``[S, 2]`` for each id list of
    ``ids``, computed in integers as the core defines it (16-bit saturating readout
    membrane, argmax taking the first maximum) but with ordinary tensor operations."""
    out, logits = [], []
    W, b = torch.from_numpy(m.ro_w).double(), torch.from_numpy(m.ro_b)
    for q in _code_batches(m, ids):
        B, T, _ = q.shape
        drive = _sat((q @ W.T).long() + b)                 # [B, T, 2]
        v = torch.zeros(B, 2, dtype=torch.int64)
        steps = q.lengths + m.pad_steps
        for t in range(T):
            live = (t < steps)[:, None]
            v = torch.where(live, _sat(v + drive[:, t]), v)
        logits.append(v)
        out.append((v[:, 1] > v[:, 0]).long())
    return torch.cat(out).numpy(), torch.cat(logits).numpy()


# ------------------------------------------------------------------------ networks

def _conv_taps(m, scale_w=1):
    """Per delay ``d`` (word steps back), the ``[E + 1, 3F]`` weights of all widths."""
    E1, nF = m.emb_dim + 1, m.w[0].shape[0]
    taps = []
    for d in range(max(m.widths)):
        W = np.zeros((E1, nF * len(m.widths)), np.int64)
        for i, (k, w) in enumerate(zip(m.widths, m.w)):
            if d < k:
                W[:, i * nF:(i + 1) * nF] = w[:, :, k - 1 - d].T * scale_w
        taps.append(W)
    return taps


def _readout(ro_b, scale):
    """The integrating readout: ``v += W q + b`` every step (16-bit, saturating)."""
    return make_population("readout", NeuronKind.READOUT, 2, alpha=DECAY_ONE,
                           bias=ro_b, scale=scale)


def las_network(m):
    """The LAS network of the integer model ``m`` (module docstring): input bit-planes ->
    ``emb`` -> ``conv`` (K-level, memoryless) -> integrating ``readout``."""
    E1, B, nF = m.emb_dim + 1, m.emb_bits, m.w[0].shape[0]
    planes = np.zeros((B * E1, E1), np.int64)
    for j in range(B):
        planes[j * E1:(j + 1) * E1] = np.eye(E1, dtype=np.int64) << j
    emb = make_population("emb", NeuronKind.LIF, E1, alpha=0, theta=1, level_bits=B,
                          reset=ResetMode.ZERO)
    conv = make_population("conv", NeuronKind.LIF, nF * len(m.widths), alpha=0,
                           theta=np.concatenate(m.theta), bias=np.concatenate(m.bias),
                           level_bits=m.act_bits, reset=ResetMode.ZERO)
    projs = [Projection(spike_input(0), 0, 0, planes)]
    projs += [Projection(0, 1, d, W) for d, W in enumerate(_conv_taps(m))]
    projs.append(Projection(1, 2, 0, m.ro_w.T.copy()))
    return Network(vocab=list(LABELS), populations=[emb, conv, _readout(m.ro_b, m.ro_scale)],
                   projections=projs, readout=2, inputs=[InputSpec("bits", B * E1)]).check()


def lv_substeps_max(m):
    """The most sub-steps per word the Lv network can have: the widest filter's oldest tap
    is ``(max(widths) - 1) * T`` timesteps back, which must be a delay of the default core
    (:class:`spikestream.memory_map.CoreConfig`'s ``max_delay``: 15, so ``T <= 3``)."""
    return CoreConfig.max_delay // (max(m.widths) - 1)


@dataclass
class LvParams:
    """The integer parameters of an Lv et al. network (what :func:`lv_network` lays out):
    ``taps`` ``[D, E + 1, N]`` (tap ``d`` reads the input ``d T`` sub-steps back; zero
    where a filter is narrower than ``d + 1``), ``theta``, ``bias`` ``[N]`` of the ``IF``
    neurons, the readout's ``ro_w`` ``[2, N]`` and ``ro_b`` ``[2]`` per sub-step, and its
    ``scale`` (readout integers per float logit and word)."""
    substeps: int
    taps: np.ndarray
    theta: np.ndarray
    bias: np.ndarray
    ro_w: np.ndarray
    ro_b: np.ndarray
    scale: float


def lv_params(m, substeps):
    """The Lv et al. conversion of the integer model ``m`` at ``substeps`` sub-steps per
    word (module docstring), before any fine-tuning."""
    T = int(substeps)
    if not 1 <= T <= lv_substeps_max(m) or (max(m.widths) - 1) * T > MAX_DELAY:
        raise ValueError(f"substeps must be 1..{lv_substeps_max(m)}, not {substeps}")
    Le, La = m.emb_levels, m.act_levels
    theta = np.concatenate(m.theta)
    # A window's input over its T sub-steps is about acc T / Le; the IF neuron fires
    # T q / La times for code q = acc / theta: threshold theta La / Le per sub-step.
    th = np.maximum(1, np.rint(theta * La / Le)).astype(np.int64)
    bias_real = np.concatenate(m.bias) - theta // 2       # without the rounding offset
    bias = np.rint(bias_real * th / theta / T).astype(np.int64)
    # Readout per sub-step: a spike stands for La / T codes, the bias for 1 / T of a step;
    # the running sums are the LAS readout's, so its scale keeps the same headroom.
    Wf = m.fc_w * La / T
    bf = m.fc_b / T
    scale = min(WEIGHT_MAX / np.abs(Wf).max(), m.ro_scale)
    return LvParams(substeps=T, taps=np.stack(_conv_taps(m)), theta=th,
                    bias=np.clip(bias, STATE_MIN, STATE_MAX),
                    ro_w=np.rint(Wf * scale).astype(np.int64),
                    ro_b=np.rint(bf * scale).astype(np.int64), scale=float(scale))


def lv_network(m, substeps, params=None):
    """The Lv et al. network of ``m``: the embedding rate-coded over ``substeps`` steps per
    word straight into binary ``IF`` neurons (reset by subtraction) through delays ``d T``,
    their spikes into the integrating readout (module docstring). ``params``: its
    :class:`LvParams` (fine-tuned, :func:`finetune_lv`); default :func:`lv_params`."""
    p = lv_params(m, substeps) if params is None else params
    T = p.substeps
    if T != int(substeps):
        raise ValueError(f"the parameters are for {T} sub-steps, not {substeps}")
    conv = make_population("conv", NeuronKind.IF, len(p.theta), alpha=DECAY_ONE,
                           theta=p.theta, bias=p.bias, reset=ResetMode.SUBTRACT)
    projs = [Projection(spike_input(0), 0, d * T, W.copy()) for d, W in enumerate(p.taps)]
    projs.append(Projection(0, 1, 0, p.ro_w.T.copy()))
    return Network(vocab=list(LABELS), populations=[conv, _readout(p.ro_b, p.scale)],
                   projections=projs, readout=1,
                   inputs=[InputSpec("rate", m.emb_dim + 1)]).check()


# ------------------------------------------- Lv et al.: surrogate-gradient fine-tuning

def _ste_round(x):
    """``round(x)`` forward, identity backward (straight-through)."""
    return x + (torch.round(x) - x).detach()


class LvSNN(nn.Module):
    """The Lv et al. network of :class:`LvParams` in PyTorch, for surrogate-gradient
    fine-tuning: the parameters are kept as floats in the core's integer units and
    rounded (straight through) on the way in, and every sum is an integer held exactly in
    float32, so its forward pass computes what the golden model computes, saturation
    included: its decisions equal the core's, sentence by sentence (tested). The spike's
    backward is the arctan surrogate of :func:`models.neurons.spike_fn` on
    ``(v - theta) / theta``."""

    def __init__(self, m, p, surrogate_width=2.0):
        super().__init__()
        f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)
        self.T, self.pad_steps, self.width = p.substeps, m.pad_steps, surrogate_width
        self.emb_levels = m.emb_levels
        nF = m.w[0].shape[0]
        mask = np.zeros(p.taps.shape, np.float32)        # a filter's missing taps stay 0
        for i, k in enumerate(m.widths):
            mask[:k, :, i * nF:(i + 1) * nF] = 1
        self.scale = p.scale
        self.taps = nn.Parameter(f32(p.taps))
        self.bias = nn.Parameter(f32(p.bias))
        self.ro_w = nn.Parameter(f32(p.ro_w))
        self.ro_b = nn.Parameter(f32(p.ro_b))
        self.register_buffer("theta", f32(p.theta))
        self.register_buffer("mask", torch.from_numpy(mask))
        self.register_buffer("codes", torch.from_numpy(m.codes.astype(np.int64)))

    def params(self):
        """The current :class:`LvParams` (integers, as the forward pass uses them)."""
        with torch.no_grad():
            q = lambda x, lo, hi: torch.round(x.clamp(lo, hi)).long().numpy()
            return LvParams(substeps=self.T,
                            taps=q(self.taps, -WEIGHT_MAX, WEIGHT_MAX) * self.mask.long().numpy(),
                            theta=self.theta.long().numpy(),
                            bias=q(self.bias, STATE_MIN, STATE_MAX),
                            ro_w=q(self.ro_w, -WEIGHT_MAX, WEIGHT_MAX),
                            ro_b=q(self.ro_b, STATE_MIN, STATE_MAX), scale=self.scale)

    def spikes_in(self, ids, lengths):
        """The rate-coded input spikes ``[B, E + 1, steps]`` (float 0/1) of a padded batch
        of word ids, as :func:`encode_sentence` makes them; and each sentence's steps."""
        B, N = ids.shape
        Le, T = self.emb_levels, self.T
        mask = torch.arange(N)[None, :] < lengths[:, None]
        c = torch.cat([self.codes[ids], torch.full((B, N, 1), Le)], -1) * mask[..., None]
        c = F.pad(c, (0, 0, 0, self.pad_steps))                   # [B, words, E + 1]
        s = torch.from_numpy(_rate_code(c.numpy(), Le, T))          # [T, B, words, E + 1]
        s = s.permute(1, 2, 0, 3).reshape(B, -1, c.shape[-1])
        return s.transpose(1, 2).float(), (lengths + self.pad_steps) * T

    def forward(self, ids, lengths):
        """The readout's membrane after each sentence's last step ``[B, 2]`` (float,
        integer-valued)."""
        x, steps = self.spikes_in(ids, lengths)
        D, T = self.taps.shape[0], self.T
        w = _ste_round(self.taps.clamp(-WEIGHT_MAX, WEIGHT_MAX)) * self.mask
        current = F.conv1d(F.pad(x, ((D - 1) * T, 0)), w.flip(0).permute(2, 1, 0),
                           dilation=T)                               # [B, N, steps]
        bias = _ste_round(self.bias.clamp(STATE_MIN, STATE_MAX))
        ro_w = _ste_round(self.ro_w.clamp(-WEIGHT_MAX, WEIGHT_MAX))
        ro_b = _ste_round(self.ro_b.clamp(STATE_MIN, STATE_MAX))
        B, N, S = current.shape
        v = torch.zeros(B, N)
        r = torch.zeros(B, 2)
        sat = lambda z: z.clamp(STATE_MIN, STATE_MAX)
        for t in range(S):
            v = sat(v + sat(current[:, :, t] + bias))
            s = spike_fn((v - self.theta) / self.theta, self.width)
            v = v - self.theta * s
            live = (t < steps)[:, None]
            r = torch.where(live, sat(r + sat(s @ ro_w.T + ro_b)), r)
        return r

    def logits(self, ids, lengths):
        """The readout as float logits of the mean-pooled ANN (for the loss)."""
        return self(ids, lengths) / (self.scale * (lengths + self.pad_steps))[:, None]


@torch.no_grad()
def lv_decisions(snn, ids, batch_size=200):
    """The class (the core's rule: positive only if its readout is larger) and final
    readout ``[S, 2]`` of :class:`LvSNN` ``snn`` for each id list of ``ids``."""
    out = [snn(x, n) for x, n, _ in _batches(ids, np.zeros(len(ids), np.int64), batch_size)]
    r = torch.cat(out).long()
    return (r[:, 1] > r[:, 0]).long().numpy(), r.numpy()


def finetune_lv(m, substeps, train_ids, train_y, epochs=2, lr=0.25, seed=0, log=print):
    """Lv et al.'s last step: fine-tune the converted network with surrogate gradients
    (:class:`LvSNN`, straight-through rounding to the core's integers) on the training
    folds, starting from :func:`lv_params`. Adam with step ``lr`` in integer units; the
    thresholds stay as balanced. Returns the fine-tuned :class:`LvParams`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    snn = LvSNN(m, lv_params(m, substeps))
    opt = torch.optim.Adam([snn.taps, snn.bias, snn.ro_w, snn.ro_b], lr=lr)
    for ep in range(epochs):
        t0, total, right, count = time.time(), 0.0, 0, 0
        for x, n, y in _batches(train_ids, train_y, 50, rng):
            logits = snn.logits(x, n)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            right += int(((logits[:, 1] > logits[:, 0]).long() == y).sum())
            count += len(y)
        log(f"  Lv T={substeps} fine-tuning epoch {ep + 1}/{epochs}: loss {total / count:.4f}, "
            f"train accuracy {right / count:.4f} ({time.time() - t0:.1f} s)")
    return snn.params()


# ------------------------------------------------------- what the host needs: metadata

@dataclass
class TextMeta:
    """How a host turns a sentence into spike inputs for a TextCNN image (its metadata)."""
    conversion: str          # "las" or "lv"
    vocab: WordVocab
    codes: np.ndarray        # uint8 [V, E]
    emb_bits: int
    substeps: int
    pad_steps: int
    info: dict               # the rest: accuracies, config, fold

    @property
    def emb_levels(self):
        return (1 << self.emb_bits) - 1

    @property
    def emb_dim(self):
        return self.codes.shape[1]


def text_meta(m, vocab, conversion, substeps, info):
    """The image metadata (JSON-able) of integer model ``m`` with word list ``vocab``."""
    packed = base64.b64encode(zlib.compress(np.ascontiguousarray(m.codes).tobytes(), 9))
    return {"task": TASK, "textcnn": {
        "conversion": conversion, "words": " ".join(vocab.words), "emb_dim": m.emb_dim,
        "emb_bits": m.emb_bits, "codes": packed.decode("ascii"), "substeps": int(substeps),
        "pad_steps": m.pad_steps, **info}}


class TextMetaError(ValueError):
    """An image whose TextCNN metadata is missing or inconsistent (one line)."""


def read_text_meta(net):
    """The :class:`TextMeta` of a TextCNN image's network ``net``, checked: every field's
    type and range, the word list (cleaned words, distinct), the codes' size; the image's
    metadata is untrusted. Raises :class:`TextMetaError`."""
    meta = net.meta
    if meta.get("task") != TASK or not isinstance(meta.get("textcnn"), dict):
        raise TextMetaError(f"not a sentence classifier image of this task ({TASK}): its "
                            f"metadata names task {str(meta.get('task'))[:40]!r}")
    t = meta["textcnn"]

    def field_(key, kind, lo=None, hi=None):
        x = t.get(key)
        if not isinstance(x, kind) or isinstance(x, bool) or (
                lo is not None and not lo <= x <= hi):
            raise TextMetaError(f"textcnn.{key} is missing or invalid")
        return x
    conv = t.get("conversion")
    if conv not in ("las", "lv"):
        raise TextMetaError("textcnn.conversion must be 'las' or 'lv'")
    E = field_("emb_dim", int, 1, 256)
    bits = field_("emb_bits", int, 1, MAX_LEVEL_BITS)
    T = field_("substeps", int, 1, MAX_DELAY)
    pad = field_("pad_steps", int, 0, MAX_DELAY)
    words = field_("words", str).split(" ")
    if words[0] != UNK or any(len(w) > MAX_WORD_CHARS or not _WORD.fullmatch(w)
                              for w in words[1:]):
        raise TextMetaError("textcnn.words is not a list of cleaned words after "
                            f"{UNK!r}")
    try:
        vocab = WordVocab(words)
    except ValueError as e:
        raise TextMetaError(f"textcnn.words: {e}") from None
    want = len(words) * E
    try:
        raw = base64.b64decode(field_("codes", str), validate=True)
        d = zlib.decompressobj()
        data = d.decompress(raw, want + 1)
    except (binascii.Error, zlib.error, ValueError):
        raise TextMetaError("textcnn.codes is not base64 of zlib data") from None
    if len(data) != want or d.unconsumed_tail:
        raise TextMetaError(f"textcnn.codes holds not {len(words)} x {E} codes")
    codes = np.frombuffer(data, np.uint8).reshape(len(words), E)
    if codes.max(initial=0) > (1 << bits) - 1:
        raise TextMetaError(f"textcnn.codes exceed {bits} bits")
    n_in = sum(s.size for s in net.inputs)
    if len(net.inputs) != 1 or n_in != (bits * (E + 1) if conv == "las" else E + 1):
        raise TextMetaError("the network's spike input does not fit textcnn's embedding")
    info = {k: v for k, v in t.items() if k not in ("words", "codes")}
    return TextMeta(conv, vocab, codes, bits, T, pad, info)


def _rate_code(c, levels, T):
    """Deterministic rate code: ``round(c T / levels)`` spikes evenly spread over ``T``
    steps; ``[..., E] -> [T, ..., E]`` 0/1."""
    m = np.floor(c.astype(np.int64) * T / levels + 0.5).astype(np.int64)
    s = np.arange(T).reshape((T,) + (1,) * c.ndim)
    return (((s + 1) * m) // T - (s * m) // T).astype(np.uint8)


def encode_sentence(tm, ids):
    """The spike input ``[steps, n_in]`` (uint8 0/1) of word ids ``ids`` for an image with
    metadata ``tm``: each word's codes (plus the full-scale "present" channel), then
    ``pad_steps`` empty words; ``substeps`` steps per word (LAS: 1)."""
    E, Le = tm.emb_dim, tm.emb_levels
    words = np.zeros((len(ids) + tm.pad_steps, E + 1), np.int64)
    if len(ids):
        words[:len(ids), :E] = tm.codes[np.asarray(ids, np.int64)]
        words[:len(ids), E] = Le
    if tm.conversion == "las":
        planes = [(words >> j) & 1 for j in range(tm.emb_bits)]
        return np.concatenate(planes, 1).astype(np.uint8)
    T = tm.substeps
    spikes = _rate_code(words, Le, T)                      # [T, words, E + 1]
    return spikes.transpose(1, 0, 2).reshape(-1, E + 1)


def golden_run(image, tm, ids, batch=128, timing=DEFAULT_TIMING):
    """Run every sentence of ``ids`` (word id lists) on the golden model, each from a reset,
    as independent streams of one batch: a stream's results are taken at its own last step
    (what a core that ran that sentence alone reports; the steps after it do not count).
    Returns a dict of arrays per sentence: ``decision`` (the core's argmax after the last
    step), ``readout`` ``[S, 2]``, ``steps``, ``events`` and ``cycles``."""
    S, net = len(ids), image.net
    out = {"decision": np.zeros(S, np.int64), "readout": np.zeros((S, 2), np.int64),
           "steps": np.zeros(S, np.int64), "events": np.zeros(S, np.int64),
           "cycles": np.zeros(S, np.int64)}
    order = np.argsort(net.populations[net.readout].perm)
    by_len = np.argsort([len(s) for s in ids], kind="stable")
    for s0 in range(0, S, batch):
        idx = by_len[s0:s0 + batch]
        xs = [encode_sentence(tm, ids[i]) for i in idx]
        steps = np.array([len(x) for x in xs])
        x = np.zeros((len(idx), steps.max(), xs[0].shape[1]), np.int64)
        for r, xi in enumerate(xs):
            x[r, :len(xi)] = xi
        core = GoldenCore(net, image.lanes, timing, batch=len(idx))
        ev = torch.zeros(len(idx), dtype=torch.int64)
        cy = torch.zeros(len(idx), dtype=torch.int64)
        for t in range(x.shape[1]):
            r = core.step(spikes=[torch.from_numpy(x[:, t])], sample_tokens=False)
            live = torch.from_numpy(t < steps)
            ev += torch.where(live, r.events, 0)
            cy += torch.where(live, r.cycles, 0)
            done = np.flatnonzero(steps == t + 1)
            if len(done):
                out["decision"][idx[done]] = r.token.numpy()[done]
                out["readout"][idx[done]] = r.logits.numpy()[done][:, order]
        out["steps"][idx] = steps
        out["events"][idx] = ev.numpy()
        out["cycles"][idx] = cy.numpy()
    return out


# ------------------------------------------------------------------- train and build

@dataclass
class Fold:
    """One fold's data and trained models (:func:`train_fold`)."""
    fold: int
    cfg: TextCNNConfig
    vocab: WordVocab
    train_ids: list
    train_y: np.ndarray
    test_ids: list
    test_y: np.ndarray
    float_model: TextCNN
    quantised: dict           # K -> TextCNN
    integer: dict             # K -> IntTextCNN


def train_fold(cfg, data, fold, act_bits=(2, 3, 4), log=print):
    """Split ``data`` (:class:`models.mr.MRData`), build the vocabulary on the nine
    training folds, train the float model and one quantised model per ``K``."""
    tr, te = fold_indices(len(data), fold)
    vocab = build_vocab([data.sentences[i] for i in tr], cfg.min_count, cfg.vocab_cap)
    enc = lambda idx: [vocab.encode(data.sentences[i]) for i in idx]
    tr_ids, te_ids = enc(tr), enc(te)
    fm, qms = train_model(cfg, tr_ids, data.labels[tr], act_bits, log)
    ints = {K: integer_model(q, tr_ids) for K, q in qms.items()}
    return Fold(fold, cfg, vocab, tr_ids, data.labels[tr], te_ids, data.labels[te], fm, qms,
                ints)


def convert(fd, act_bits, conversion="las", substeps=1, lanes=16, finetune=0, log=print):
    """Convert fold ``fd``'s ``act_bits`` model (LAS, or Lv with ``substeps`` and
    ``finetune`` epochs of surrogate-gradient fine-tuning, :func:`finetune_lv`), run the
    golden model on the test fold. Returns ``(image, results)``: the image carries its
    metadata (:func:`text_meta`); ``results`` holds the accuracies (float, quantised,
    golden), the golden's per-sentence arrays and ``mismatches``: for LAS the sentences
    whose SNN class differs from the quantised ANN's, for Lv those whose golden class
    differs from the PyTorch SNN's (:class:`LvSNN`, what was fine-tuned)."""
    m = fd.integer[act_bits]
    acc_float = float_accuracy(fd.float_model, fd.test_ids, fd.test_y)
    q_dec, _ = quantised_decisions(m, fd.test_ids)
    acc_q = float(np.mean(q_dec == fd.test_y))
    info = {"fold": fd.fold, "folds": FOLDS, "split_seed": SPLIT_SEED, "act_bits": act_bits,
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in asdict(fd.cfg).items()},
            "accuracy_float": acc_float, "accuracy_quantised": acc_q,
            "test_sentences": len(fd.test_ids)}
    if conversion == "las":
        net, reference = las_network(m), q_dec
    else:
        params = (finetune_lv(m, substeps, fd.train_ids, fd.train_y, finetune, log=log)
                  if finetune else lv_params(m, substeps))
        net = lv_network(m, substeps, params)
        reference, _ = lv_decisions(LvSNN(m, params), fd.test_ids)
        info["finetune_epochs"] = int(finetune)
    net.meta = text_meta(m, fd.vocab, conversion, substeps if conversion == "lv" else 1, info)
    image = Image(net=net, lanes=lanes)
    g = golden_run(image, read_text_meta(net), fd.test_ids)
    acc_g = float(np.mean(g["decision"] == fd.test_y))
    net.meta["textcnn"]["accuracy_golden"] = acc_g
    res = {"accuracy_float": acc_float, "accuracy_quantised": acc_q, "accuracy_golden": acc_g,
           "golden": g, "quantised_decision": q_dec,
           "mismatches": int(np.sum(g["decision"] != reference))}
    return image, res


def summary(res):
    """The per-sentence means of a :func:`convert` result (JSON-able)."""
    g = res["golden"]
    out = {k: res[k] for k in ("accuracy_float", "accuracy_quantised", "accuracy_golden")}
    out.update(mismatches=res["mismatches"], sentences=len(g["decision"]),
               timesteps_per_example=float(g["steps"].mean()),
               synaptic_events_per_example=float(g["events"].mean()),
               cycles_per_example=float(g["cycles"].mean()))
    return out


def evaluate_image(image, data=None):
    """Evaluate a TextCNN ``image`` on the test fold its metadata names (``data``: an
    :class:`models.mr.MRData`, default the shipped MR): the golden model runs every test
    sentence; the float and quantised ANN's accuracies are those recorded when the image
    was made (the float model does not travel with the image). Returns a JSON-able dict."""
    tm = read_text_meta(image.net)
    data = load_mr() if data is None else data
    fold = tm.info.get("fold")
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < FOLDS:
        raise TextMetaError("textcnn.fold is missing or invalid")
    _, te = fold_indices(len(data), fold)
    ids = [tm.vocab.encode(data.sentences[i]) for i in te]
    g = golden_run(image, tm, ids)
    y = data.labels[te]
    recorded = lambda k: (tm.info.get(k) if isinstance(tm.info.get(k), (int, float)) else None)
    return {"task": TASK, "conversion": tm.conversion, "fold": fold, "sentences": len(te),
            "act_bits": recorded("act_bits"), "substeps": tm.substeps,
            "finetune_epochs": recorded("finetune_epochs"),
            "accuracy_float": recorded("accuracy_float"),
            "accuracy_quantised": recorded("accuracy_quantised"),
            "accuracy_golden": float(np.mean(g["decision"] == y)),
            "accuracy_golden_recorded": recorded("accuracy_golden"),
            "timesteps_per_example": float(g["steps"].mean()),
            "synaptic_events_per_example": float(g["events"].mean()),
            "cycles_per_example": float(g["cycles"].mean()),
            "lanes": image.lanes, "nonzero_synapses": image.net.nonzero_synapses,
            "neurons": sum(p.size for p in image.net.populations)}


LV_FINETUNE_EPOCHS = 2
"""Epochs of surrogate-gradient fine-tuning of the shipped Lv image (:func:`finetune_lv`)."""
SHIPPED = {"mr-las-k2.img": ("las", 2, 1, 0), "mr-las-k3.img": ("las", 3, 1, 0),
           "mr-las-k4.img": ("las", 4, 1, 0), "mr-lv.img": ("lv", 4, 3, LV_FINETUNE_EPOCHS)}
"""The images ``train --out-dir`` writes: name -> (conversion, K, sub-steps, fine-tuning
epochs)."""


def argument_parser(prog="python -m models.textcnn"):
    """The command line of ``python -m models.textcnn``."""
    ap = CommandParser(prog=prog, description="Train the MR TextCNN on nine folds, convert it "
                                              "(LAS at K = 2, 3, 4 and Lv et al.), check it "
                                              "on the test fold and write the images.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train, convert, check on the test fold, write images",
                       formatter_class=ap.formatter_class)
    t.add_argument("--out-dir", required=True, metavar="DIR",
                   help="folder for " + ", ".join(SHIPPED))
    t.add_argument("--fold", type=int, default=0, help=f"test fold 0..{FOLDS - 1}")
    t.add_argument("--data", nargs=2, metavar=("POS", "NEG"),
                   help="your own MR-style files (default: the shipped copy)")
    t.add_argument("--threads", type=int, default=1, help="torch threads")
    t.add_argument("--json", action="store_true", help="end with one line of JSON")
    return ap


def main(argv=None, prog="python -m models.textcnn"):
    """Run ``python -m models.textcnn train ...``."""
    args = argument_parser(prog).parse_args(argv)
    if not 0 <= args.fold < FOLDS:
        raise SystemExit(f"error: --fold must be 0..{FOLDS - 1}, not {args.fold}")
    out = Path(args.out_dir)
    try:
        if not out.is_dir():
            raise FileProblem(f"{out}: no such folder")
        for name in SHIPPED:
            check_output(out / name, inputs=args.data or (), what="image")
        data = load_mr(*(args.data or ()))
    except (FileProblem, MRDataError) as e:
        raise SystemExit(f"error: {e}") from None
    torch.set_num_threads(args.threads)
    log = lambda line: print(line, file=sys.stderr, flush=True)
    try:
        fd = train_fold(TextCNNConfig(), data, args.fold, (2, 3, 4), log)
    except MRDataError as e:
        raise SystemExit(f"error: {e}") from None
    results = {}
    for name, (conversion, K, T, epochs) in SHIPPED.items():
        image, res = convert(fd, K, conversion, T, finetune=epochs, log=log)
        if res["mismatches"]:
            other = "quantised ANN" if conversion == "las" else "PyTorch SNN"
            raise SystemExit(f"error: {name}: the SNN on the golden model differs from the "
                             f"{other} on {res['mismatches']} sentences; no image written")
        save_image(image.net, image.lanes, out / name)
        results[name] = summary(res)
        print(f"{out / name}: float {res['accuracy_float']:.4f}, quantised "
              f"{res['accuracy_quantised']:.4f}, golden {res['accuracy_golden']:.4f} on fold "
              f"{args.fold} ({len(fd.test_ids)} sentences)", flush=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    run(main)
