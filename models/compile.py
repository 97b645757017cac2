"""Compile a trained checkpoint into a network image.

``python -m models.compile [--checkpoint PATH] -o IMAGE [--lanes N] [--sparsity S] [--fpga 85f]
[--json]`` (``spikestream compile``)

Steps: prune (magnitude, per projection) to ``S`` if the checkpoint is less sparse;
quantise (weights to WEIGHT_BITS with one scale per target neuron, decays to
DECAY_FRAC_BITS); balance neurons across lanes by their expected synaptic load; check that
the image fits the board; write the image.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from spikestream.ecp5 import ulx3s_device

from spikestream.capacity import memory_plan
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from spikestream.board import DEFAULT_FPGA, SHIPPED_IMAGE
from spikestream.cli import CommandParser
from spikestream.cmdline import run
from .data import DEFAULT_TEXT, load_text, split
from spikestream.files import FileProblem, check_output
from spikestream.formats import DECAY_ONE, MAX_VOCAB, NeuronKind
from spikestream.image import save_image
from spikestream.network import INPUT, Network, Projection, make_population

__all__ = ["quantise", "balance_permutation", "balance_rows", "firing_rates", "compile_model",
           "MAX_LANES", "SHIPPED_CHECKPOINT", "argument_parser", "main"]

MAX_LANES = 256
"""Most lanes an image can be laid out for (the core's lane ids are 8 bits)."""

SHIPPED_CHECKPOINT = SHIPPED_IMAGE.with_suffix(".pt")
"""The float checkpoint of the shipped image, beside it (the default ``--checkpoint``)."""

def _round(x):
    return np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)


@torch.no_grad()
def firing_rates(model, vocab, text, chars=8192):
    """Mean firing rate of every hidden neuron over ``chars`` characters of ``text``."""
    ids = torch.tensor(vocab.encode(text[:chars + 1], strict=False))[None]
    _, _, spikes = model(ids, return_spikes=True)
    return [s[0].mean(0).numpy() for s in spikes]


def balance_permutation(load, lanes, refine_steps=1000):
    """Order neurons so that the lanes' summed ``load`` is even.

    Longest-processing-time-first: the heaviest neuron goes to the least loaded lane that
    still has room; then, while it lowers the busiest lane's load, swap one of that lane's
    neurons with a lighter one elsewhere (LPT alone leaves the busiest lane well above the
    mean when lanes hold only a few neurons each, as a 65-token readout on 16 lanes does).
    Lane ``j``'s ``k``-th neuron becomes core neuron ``k * lanes + j``.
    Returns ``perm`` with ``perm[core id] = original index``.
    """
    load = np.asarray(load, dtype=np.float64)
    n = len(load)
    room = [len(range(j, n, lanes)) for j in range(lanes)]
    total = np.zeros(lanes)
    members = [[] for _ in range(lanes)]
    for i in np.argsort(-load, kind="stable"):
        open_lanes = [j for j in range(lanes) if len(members[j]) < room[j]]
        j = min(open_lanes, key=lambda j: (total[j], j))
        members[j].append(int(i))
        total[j] += load[i]
    perm = np.zeros(n, np.int64)
    for j in range(lanes):
        for k, i in enumerate(members[j]):
            perm[k * lanes + j] = i
    lane = np.arange(n) % lanes
    for _ in range(refine_steps if lanes > 1 else 0):
        total = np.bincount(lane, weights=load[perm], minlength=lanes)
        top = int(np.argmax(total))
        a = np.flatnonzero(lane == top)
        b = np.flatnonzero(lane != top)
        d = load[perm[a]][:, None] - load[perm[b]][None, :]        # moved off the top lane
        new_max = np.maximum(total[top] - d, total[lane[b]][None, :] + d)
        new_max[d <= 0] = np.inf
        k = np.unravel_index(np.argmin(new_max), new_max.shape)
        if not new_max[k] < total[top] - 1e-9:
            break
        ia, ib = a[k[0]], b[k[1]]
        perm[ia], perm[ib] = perm[ib], perm[ia]
    return perm


def balance_rows(perm, rows, lanes, steps=60000, seed=0):
    """Refine ``perm`` for populations fed by the input only: there one token spikes per
    timestep, and its route costs the busiest lane's share of that token's row, not a mean.

    ``rows`` are 0/1 matrices ``[tokens, neurons]`` (original neuron order), one per input
    projection; random swaps of two neurons in different lanes are kept when they lower the
    sum over projections and tokens of the busiest lane's segment. Deterministic (``seed``).
    """
    n = len(perm)
    lane = np.arange(n) % lanes
    rng = np.random.default_rng(seed)
    perm = np.array(perm)
    rows = [np.asarray(r, dtype=np.int64) for r in rows]
    segs = [np.stack([r[:, perm[lane == l]].sum(1) for l in range(lanes)], 1) for r in rows]
    cost = sum(s.max(1).sum() for s in segs)
    for i, j in rng.integers(0, n, (steps, 2)):
        a, b = lane[i], lane[j]
        if a == b:
            continue
        new = []
        for r, s in zip(rows, segs):
            d = r[:, perm[j]] - r[:, perm[i]]
            s = s.copy()
            s[:, a] += d
            s[:, b] -= d
            new.append(s)
        c = sum(s.max(1).sum() for s in new)
        if c < cost:
            cost, segs = c, new
            perm[i], perm[j] = perm[j], perm[i]
    return perm


@torch.no_grad()
def quantise(model, vocab, lanes=1, rates=None, meta=None):
    """Turn a float :class:`models.lm.SpikingLM` into an integer :class:`Network`.

    ``rates`` (per hidden layer, per neuron firing rates) drives lane balancing; without it
    neurons keep their order.
    """
    cfg, L = model.cfg, len(model.cfg.hidden)
    w = {sp.name: model.weight(sp.name).double().numpy() for sp in model.specs}
    incoming = {dst: [sp for sp in model.specs if sp.dst == dst] for dst in range(L + 1)}
    src_rate = lambda s: (np.full(len(vocab), 1 / len(vocab)) if s == INPUT
                          else (rates[s] if rates is not None else np.ones(cfg.hidden[s])))

    perms = []
    for l in range(L):
        if rates is None or lanes == 1:
            perms.append(np.arange(cfg.hidden[l]))
            continue
        load = sum(src_rate(sp.src) @ (w[sp.name] != 0) for sp in incoming[l])
        perm = balance_permutation(load, lanes)
        if all(sp.src == INPUT for sp in incoming[l]):
            perm = balance_rows(perm, [w[sp.name] != 0 for sp in incoming[l]], lanes)
        perms.append(perm)
    # The vocabulary's order is the compiler's to choose: input token ids and readout
    # neurons are relabelled together (the image carries the vocabulary in core order), so
    # the readout's lanes are balanced like a hidden layer's.
    if rates is None or lanes == 1:
        perms.append(np.arange(len(vocab)))
    else:
        perms.append(balance_permutation(
            sum(src_rate(sp.src) @ (w[sp.name] != 0) for sp in incoming[L]), lanes))
    perm_of = lambda s: perms[L] if s == INPUT else perms[s]

    pops = []
    scales = [s.numpy() for s in model.quant_scales()]
    for dst in range(L + 1):
        scale = scales[dst]
        if dst < L:
            alpha, theta, rho, jump, bias = (t.double().numpy() for t in model.neuron_params(dst))
            p = perms[dst]
            pop = make_population(
                f"h{dst}", model.kinds[dst], cfg.hidden[dst],
                alpha=_round(alpha[p] * DECAY_ONE), theta=_round(theta[p] * scale[p]),
                rho=_round(rho[p] * DECAY_ONE), jump=_round(jump[p] * scale[p]),
                bias=_round(bias[p] * scale[p]), scale=scale[p], perm=p)
        else:
            bias = model.out_bias.double().numpy()
            p = perms[dst]
            pop = make_population("readout", NeuronKind.READOUT, len(vocab), alpha=0,
                                  theta=0, rho=0, jump=0, bias=_round(bias[p] * scale[p]),
                                  scale=scale[p], perm=p)
        pops.append(pop)
    projs = []
    for sp in model.specs:
        dst_scale = scales[sp.dst][perm_of(sp.dst)]
        q = _round(w[sp.name][perm_of(sp.src)][:, perm_of(sp.dst)] * dst_scale[None, :])
        projs.append(Projection(src=sp.src, dst=sp.dst, delay=sp.delay, weights=q))
    net = Network(vocab=[vocab.chars[i] for i in perms[L]], populations=pops, projections=projs, readout=L,
                  meta=dict(meta or {}, model=cfg.to_dict()))
    return net.check()


def compile_model(model, vocab, lanes, sparsity=None, text=None, meta=None):
    """Prune (if asked), measure rates on ``text``, quantise and balance: a Network."""
    if sparsity is not None and sparsity > model.sparsity() + 1e-9:
        model.prune_(sparsity)
    rates = firing_rates(model, vocab, split(text)[0]) if text is not None else None
    return quantise(model, vocab, lanes, rates,
                    meta=dict(meta or {}, sparsity=round(model.sparsity(), 4)))


def _outputs(args):
    """The files that ``args`` will write, checked before any work: ``(image, checkpoint or
    None)``; ``SystemExit`` (one line) if one would overwrite an input or cannot be written."""
    out = Path(args.output)
    inputs = [args.checkpoint, args.data]
    if out.suffix == ".pt":
        raise SystemExit(f"error: -o {out}: an image file must not end in .pt (that names "
                         "a checkpoint); use .img")
    try:
        check_output(out, inputs, "image")
        ck_out = None
        if args.with_checkpoint:
            ck_out = out.with_suffix(".pt")
            check_output(ck_out, inputs, "checkpoint written by --with-checkpoint")
    except FileProblem as e:
        raise SystemExit(f"error: {e}") from None
    return out, ck_out


def argument_parser(prog="python -m models.compile"):
    """The command line of ``python -m models.compile`` (``spikestream compile``)."""
    ap = CommandParser(prog=prog, description="Compile a trained checkpoint into a network "
                                              "image: prune, quantise, balance the lanes, "
                                              "check that it fits the FPGA.")
    ap.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT), metavar="PATH",
                    help="the trained float checkpoint to compile, e.g. "
                         "runs/shakespeare/ckpt.pt (default: the shipped model's)")
    ap.add_argument("-o", "--output", required=True, metavar="IMAGE",
                    help="image file to write (.img)")
    ap.add_argument("--lanes", type=int, default=16, metavar="N",
                    help=f"lanes to lay the image out for (1..{MAX_LANES})")
    ap.add_argument("--sparsity", type=float, metavar="S",
                    help="prune to this weight sparsity, in [0, 1) (default: as trained)")
    ap.add_argument("--fpga", default=DEFAULT_FPGA, metavar="SIZE",
                    help="ULX3S FPGA size the image must fit: 12f, 25f, 45f or 85f")
    ap.add_argument("--data", metavar="PATH",
                    help="text for measuring firing rates (default: the shipped text)")
    ap.add_argument("--with-checkpoint", action="store_true",
                    help="also write the float model (without optimiser state) beside the image "
                         "(IMAGE with .pt), so that models.evaluate can compare float and golden")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON: image, bytes, lanes, neurons, synapses, "
                         "sparsity, block RAMs")
    return ap


def main(argv=None, prog="python -m models.compile"):
    """Run the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in its help
    and errors (``spikestream compile`` when run from the console script)."""
    args = argument_parser(prog).parse_args(argv)
    if args.sparsity is not None and not (math.isfinite(args.sparsity) and 0 <= args.sparsity < 1):
        raise SystemExit(f"error: --sparsity must be in [0, 1), not {args.sparsity}")
    if not 1 <= args.lanes <= MAX_LANES:
        raise SystemExit(f"error: --lanes must be in 1..{MAX_LANES}, not {args.lanes}")
    try:
        device = ulx3s_device(args.fpga)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    out, ck_out = _outputs(args)
    try:
        model, vocab, ck = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    if len(vocab) > MAX_VOCAB:
        raise SystemExit(f"error: the model's vocabulary has {len(vocab)} tokens; the core "
                         f"holds at most {MAX_VOCAB}")
    text = load_text(args.data or DEFAULT_TEXT)
    unknown = vocab.unknown(split(text)[0])
    if unknown:
        print(f"note: {unknown} characters of the rate-measuring text are not in the model's "
              "vocabulary and are skipped", file=sys.stderr)
    meta = {"checkpoint_step": ck.get("step") if isinstance(ck.get("step"), int) else None}
    if ck_out is not None:
        meta["checkpoint"] = ck_out.name
    net = compile_model(model, vocab, args.lanes, args.sparsity, text, meta=meta)
    plan = memory_plan(net, args.lanes)
    print(f"network: {sum(p.size for p in net.populations)} neurons, "
          f"{net.nonzero_synapses} synapses, sparsity {net.meta['sparsity']:.3f}")
    print(f"memory: {plan.summary()}")
    if plan.blocks > device.dp16kd:
        raise SystemExit(f"error: the image needs about {plan.blocks} block RAMs with "
                         f"{args.lanes} lanes but the {device.part} has {device.dp16kd} "
                         f"({plan.blocks - device.dp16kd} too many); prune harder or use fewer lanes")
    size = save_image(net, args.lanes, out)
    if ck_out is not None:
        slim = {k: ck[k] for k in ("config", "train", "vocab", "step", "history", "init")
                if k in ck}
        save_checkpoint(dict(slim, model=model.state_dict()), ck_out)
        print(f"wrote {ck_out}")
    print(f"wrote {out} ({size} bytes, {args.lanes} lanes)")
    if args.json:
        print(json.dumps({
            "image": str(out), "bytes": size, "lanes": args.lanes,
            "neurons": sum(p.size for p in net.populations),
            "synapses": net.nonzero_synapses, "sparsity": net.meta["sparsity"],
            "block_rams": plan.blocks, "block_rams_available": device.dp16kd,
            "fpga": device.part, "checkpoint": str(ck_out) if ck_out is not None else None}))


if __name__ == "__main__":
    run(main)
