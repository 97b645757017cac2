"""Weight-sparsity sweep: does weight sparsity multiply with activity sparsity (paper 3)?

    python -m bench.sparsity --trained DIR [--levels 0 0.5 0.8 0.9] [--chars N] [--lanes 16]

``DIR`` holds one checkpoint per level, ``sparsity-<level>/ckpt.pt``, each trained with the
shipped configuration and gradual magnitude pruning to that level, e.g.::

    python -m models.train --config shakespeare --set sparsity=0.5 --out DIR/sparsity-0.5

For each level it compiles the checkpoint and reports the float and golden validation loss,
the firing rate, the synaptic events per token and the cycles per token; it writes a
markdown table (to stdout, and into BENCHMARKS.md with --write) and bench/sparsity.png.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from models.compile import compile_model
from models.data import Vocab, load_text, split
from models.evaluate import float_loss, golden_loss
from models.train import load_checkpoint

from ._report import update_section

HERE = Path(__file__).parent


def sweep(trained, levels, chars, lanes, streams, data=None):
    text = load_text(data)
    rows = []
    for level in levels:
        ck = Path(trained) / f"sparsity-{level:g}" / "ckpt.pt"
        model, vocab, info = load_checkpoint(ck)
        ids = torch.tensor(vocab.encode(split(text)[1], strict=False))[:chars]
        net = compile_model(model, vocab, lanes, text=text)
        f = float_loss(model, ids, streams)
        g = golden_loss(net, lanes, torch.tensor(Vocab(net.vocab).encode(
            split(text)[1], strict=False))[:chars], streams)
        dense = sum(pr.weights.size for pr in net.projections)
        rows.append({"level": level, "measured_sparsity": 1 - net.nonzero_synapses / dense,
                     "steps": info["step"], "float_nats": f["nats"], "golden_nats": g["nats"],
                     "rate": sum(g["rate"]) / len(g["rate"]), "synapses": net.nonzero_synapses,
                     "events": g["events_per_token"], "cycles": g["cycles_per_token"]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def table(rows):
    base = rows[0]["events"]
    out = ["| weight sparsity | synapses | float val (nats/char) | golden val (nats/char) | "
           "firing rate | synaptic events/token | events vs first row | cycles/token |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['measured_sparsity']:.2f} | {r['synapses']} | {r['float_nats']:.4f} | "
                   f"{r['golden_nats']:.4f} | {r['rate']:.4f} | {r['events']:.0f} | "
                   f"{r['events'] / base:.3f} | {r['cycles']:.0f} |")
    return "\n".join(out)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    s = [r["measured_sparsity"] for r in rows]
    ax[0].plot(s, [r["float_nats"] for r in rows], "o-", label="float")
    ax[0].plot(s, [r["golden_nats"] for r in rows], "s--", label="golden (int)")
    ax[0].set_xlabel("weight sparsity")
    ax[0].set_ylabel("validation loss (nats/char)")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    ax[1].plot(s, [r["events"] for r in rows], "o-", label="measured events/token")
    dense_rate = rows[0]["events"] / (1 - rows[0]["measured_sparsity"])
    ax[1].plot(s, [dense_rate * (1 - x) * r["rate"] / rows[0]["rate"] for x, r in zip(s, rows)],
               ":", label="product: (1 - sparsity) x rate")
    ax[1].set_xlabel("weight sparsity")
    ax[1].set_ylabel("synaptic events per token")
    ax[1].set_yscale("log")
    ax[1].legend()
    ax[1].grid(alpha=0.3)
    fig.suptitle("Weight sparsity x activity sparsity (shipped architecture)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.sparsity", description=__doc__.split("\n")[0])
    ap.add_argument("--trained", required=True)
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9])
    ap.add_argument("--chars", type=int, default=32768)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--data")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args(argv)
    rows = sweep(args.trained, args.levels, args.chars, args.lanes, args.streams, args.data)
    md = table(rows)
    plot(rows, HERE / "sparsity.png")
    print(md)
    if args.write:
        cmd = "python -m bench.sparsity " + " ".join(argv if argv is not None else sys.argv[1:])
        update_section("Weight-sparsity sweep", cmd, md + "\n\n![sweep](bench/sparsity.png)")


if __name__ == "__main__":
    main()
