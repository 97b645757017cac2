"""Where a spiking LM stands: ``python -m bench.lm [--checkpoint CK ...] [--write]``.

Scores, on the whole validation split (the last 10% of the text), character n-gram models
counted on the training split (interpolated Kneser-Ney, Chen & Goodman 1999, one discount
per order from its count-of-counts), and each given checkpoint: its float loss, and the
golden model's on the image compiled from it for 16 lanes (the same streams from reset as
``models.evaluate``), with its training steps and minutes as the checkpoint recorded them,
and whether the image fits the default ULX3S-85F core (``boards.ulx3s.core_config``); and
the float LSTM baseline that ``bench.lstm`` trained and recorded.
"""

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from boards.ulx3s import core_config
from models.checkpoint import CheckpointError, load_checkpoint, training_record
from models.compile import compile_model
from models.data import DEFAULT_TEXT, Vocab, load_text, split
from models.evaluate import float_loss, golden_loss
from spikestream.image import Image

from ._report import update_section
from .lstm import RESULT as LSTM_RESULT

__all__ = ["KneserNey", "main"]

LANES = 16


class KneserNey:
    """An interpolated Kneser-Ney character model of order ``order``, counted on ``text``.

    ``prob(history, c)`` is the probability of character ``c`` after ``history`` (its last
    ``order - 1`` characters are used); the distribution over ``vocab`` sums to one for
    every history (checked by the tests), unseen characters keep a uniform floor.
    """

    def __init__(self, text, order, vocab):
        if order < 1:
            raise ValueError(f"order must be at least 1, not {order}")
        self.order, self.vocab = order, sorted(set(vocab))
        # counts[k]: k-gram -> count for the highest order, continuation counts (distinct
        # left neighbours) for the lower ones.
        top = Counter(text[i:i + order] for i in range(len(text) - order + 1))
        self.counts = {order: top}
        for k in range(order - 1, 0, -1):
            self.counts[k] = Counter(g[1:] for g in self.counts[k + 1])
        self.discount, self.context, self.types = {}, {}, {}
        for k, cnt in self.counts.items():
            n1 = sum(1 for v in cnt.values() if v == 1)
            n2 = sum(1 for v in cnt.values() if v == 2)
            self.discount[k] = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
            ctx, types = Counter(), Counter()
            for g, v in cnt.items():
                ctx[g[:-1]] += v
                types[g[:-1]] += 1
            self.context[k], self.types[k] = ctx, types

    def prob(self, history, c):
        p = 1 / len(self.vocab)
        for k in range(1, self.order + 1):
            h = history[len(history) - (k - 1):] if k > 1 else ""
            if len(h) < k - 1:
                break
            total = self.context[k].get(h, 0)
            if total == 0:
                continue                # unseen history: the lower order as it is
            d = self.discount[k]
            p = (max(self.counts[k].get(h + c, 0) - d, 0) + d * self.types[k][h] * p) / total
        return p

    def nats(self, text):
        """Mean negative log-likelihood per character of ``text``, from its first character
        (a character sees at most ``order - 1`` characters of ``text`` before it)."""
        n = self.order - 1
        return -sum(math.log(self.prob(text[max(0, i - n):i], c))
                    for i, c in enumerate(text)) / len(text)


def checkpoint_row(path, text, streams):
    """Float and golden loss of a checkpoint on the validation split, as in models.evaluate."""
    try:
        model, vocab, ck = load_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    val = split(text)[1]
    ids = torch.tensor(vocab.encode(val))
    net = compile_model(model, vocab, LANES, None, text)
    fits = core_config("85f").fits(Image(net=net, lanes=LANES))
    fl = float_loss(model, ids, streams)["nats"]
    # The compiler relabels the vocabulary (the image's order balances the readout's lanes).
    gl = golden_loss(net, LANES, torch.tensor(Vocab(net.vocab).encode(val)), streams)
    step, minutes, steps = training_record(ck)
    cfg = model.cfg
    return {"checkpoint": str(path), "hidden": list(cfg.hidden), "step": step,
            "steps": steps, "minutes": minutes, "float": fl, "golden": gl["nats"],
            "events": gl["events_per_token"], "cycles": gl["cycles_per_token"],
            "synapses": net.nonzero_synapses, "fits_85f": fits, "val_chars": len(ids)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.lm", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                    help="a trained checkpoint to score (repeatable)")
    ap.add_argument("--orders", type=int, nargs="+", default=[3, 4, 5], metavar="N")
    ap.add_argument("--data", metavar="PATH", help="text (default: the shipped tiny-shakespeare)")
    ap.add_argument("--streams", type=int, default=64, metavar="N")
    ap.add_argument("--lstm", default=str(LSTM_RESULT), metavar="JSON",
                    help="the float LSTM baseline's result (bench.lstm; default: %(default)s)")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args(argv)
    text = load_text(args.data or DEFAULT_TEXT)
    train, val = split(text)
    rows = ["| model | validation nats/char | notes |", "|---|---|---|"]
    for n in args.orders:
        t0 = time.monotonic()
        nats = KneserNey(train, n, text).nats(val)
        print(f"{n}-gram: {nats:.4f} nats/char ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        rows.append(f"| character {n}-gram, interpolated Kneser-Ney | {nats:.4f} | counted on "
                    f"the training split |")
    for path in args.checkpoint:
        r = checkpoint_row(path, text, args.streams)
        print(r, file=sys.stderr)
        spent = (f"{r['steps']}, {r['minutes']:.0f} min" if r["minutes"] is not None
                 else r["steps"])
        rows.append(f"| {path} (hidden {r['hidden']}) | float {r['float']:.4f}, golden "
                    f"{r['golden']:.4f} | {spent}; {r['synapses']:,} synapses; "
                    f"{r['events']:.0f} events, {r['cycles']:.0f} cycles a token at {LANES} "
                    f"lanes; fits the default 85F core: {'yes' if r['fits_85f'] else 'no'} |")
    if args.lstm and Path(args.lstm).exists():
        r = json.loads(Path(args.lstm).read_text())
        rows.append(f"| float LSTM, {r['hidden']} units ({r['params']:,} parameters; "
                    f"`python -m bench.lstm`) | {r['val_nats']:.4f} | {r['steps']} steps, "
                    f"{r['minutes']:.0f} min on {r['threads']} CPU thread(s), from "
                    f"`{Path(args.lstm).name}` |")
    body = "\n".join(rows) + (f"\n\nValidation: the last 10% of the text, {len(val):,} "
                              "characters.")
    print(body)
    if args.write:
        update_section("Language model: spiking models against n-gram baselines",
                       "python -m bench.lm " + " ".join(argv if argv is not None else sys.argv[1:]),
                       body)


if __name__ == "__main__":
    main()
