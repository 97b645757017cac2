"""A float LSTM baseline on a spiking LM's budget: ``python -m bench.lstm --params N --minutes M``.

A one-layer character LSTM (one-hot input, linear readout) whose parameter count is the
nearest to ``--params`` (e.g. the non-zero synapses of the spiking model it is compared
with), trained with the spiking models' settings (`models.train`'s ``shakespeare``: batch 32
x 128 characters, AdamW, warm-up and cosine decay) for ``--steps`` steps or ``--minutes``
of wall time, whichever ends first, on this CPU; then scored on the whole validation split
as ``models.evaluate`` scores the spiking models (64 streams from a zero state). The result
is written to ``bench/results/lstm.json`` for ``bench.lm``'s table.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.data import DEFAULT_TEXT, Vocab, load_text, random_windows, split, stream_batches
from models.train import CONFIGS, _lr
from spikestream.files import atomic_write

__all__ = ["CharLSTM", "lstm_hidden_for", "main"]

RESULT = Path(__file__).parent / "results" / "lstm.json"


class CharLSTM(nn.Module):
    def __init__(self, vocab, hidden):
        super().__init__()
        self.vocab = vocab
        self.lstm = nn.LSTM(vocab, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        x = F.one_hot(tokens, self.vocab).float()
        y, state = self.lstm(x, state)
        return self.out(y), state


def n_params(vocab, hidden):
    return 4 * hidden * (vocab + hidden + 2) + hidden * vocab + vocab


def lstm_hidden_for(params, vocab):
    """The hidden size whose LSTM has the parameter count nearest ``params``."""
    return min(range(1, 4096), key=lambda h: abs(n_params(vocab, h) - params))


@torch.no_grad()
def stream_loss(model, ids, streams, chunk=256):
    x = stream_batches(ids, streams)
    state, total, count = None, 0.0, 0
    for t0 in range(0, x.shape[1] - 1, chunk):
        inp = x[:, t0:min(t0 + chunk, x.shape[1] - 1)]
        tgt = x[:, t0 + 1:t0 + 1 + inp.shape[1]]
        logits, state = model(inp, state)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                 reduction="sum").item()
        count += tgt.numel()
    return total / count


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.lstm", description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=int, required=True, metavar="N",
                    help="parameters to match (e.g. the spiking model's non-zero synapses)")
    ap.add_argument("--minutes", type=float, required=True, metavar="M",
                    help="wall-time budget of the training")
    ap.add_argument("--steps", type=int, default=100000, metavar="N",
                    help="steps of the learning-rate schedule (default: until the time is up)")
    ap.add_argument("--threads", type=int, default=1, metavar="N")
    ap.add_argument("--data", metavar="PATH")
    ap.add_argument("--streams", type=int, default=64, metavar="N")
    ap.add_argument("--out", default=str(RESULT), metavar="JSON")
    args = ap.parse_args(argv)
    if args.params < 1 or not (math.isfinite(args.minutes) and args.minutes > 0):
        raise SystemExit("error: --params and --minutes must be positive")
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    text = load_text(args.data or DEFAULT_TEXT)
    vocab = Vocab.from_text(text)
    train_text, val_text = split(text)
    train_ids = torch.tensor(vocab.encode(train_text))
    val_ids = torch.tensor(vocab.encode(val_text))
    hidden = lstm_hidden_for(args.params, len(vocab))
    model = CharLSTM(len(vocab), hidden)
    tc = CONFIGS["shakespeare"][1]
    tc = type(tc)(**dict(vars(tc), steps=args.steps))
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    gen = torch.Generator().manual_seed(tc.seed)
    t0, step = time.monotonic(), 0
    while step < tc.steps and time.monotonic() - t0 < args.minutes * 60:
        for g in opt.param_groups:
            g["lr"] = _lr(tc, step)
        x = random_windows(train_ids, tc.batch, tc.seq, gen)
        logits, _ = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"step {step}: train {loss.item():.4f} ({(time.monotonic() - t0) / 60:.1f} "
                  "min)", file=sys.stderr, flush=True)
    minutes = (time.monotonic() - t0) / 60
    nats = stream_loss(model, val_ids, args.streams)
    result = {"hidden": hidden, "params": sum(p.numel() for p in model.parameters()),
              "steps": step, "schedule_steps": tc.steps, "minutes": minutes,
              "threads": args.threads, "val_nats": nats, "val_chars": len(val_ids)}
    with atomic_write(args.out) as f:
        f.write(json.dumps(result, indent=1).encode() + b"\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
