"""Train a spiking character LM: ``python -m models.train --config shakespeare``.

Checkpoints (``OUT/ckpt.pt``) carry the model config, the training settings, the vocabulary,
the optimiser state and the loss history; running the same command again resumes from the
last one. The loss curve is written to ``OUT/loss.png`` at every validation.
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import Vocab, load_text, random_windows, split
from .evaluate import float_loss
from .lm import LMConfig, SpikingLM

__all__ = ["TrainConfig", "CONFIGS", "train", "load_checkpoint", "main"]


@dataclass
class TrainConfig:
    """Optimisation settings; saved in every checkpoint beside the model's LMConfig."""
    steps: int = 12000
    batch: int = 32
    seq: int = 128
    lr: float = 3e-3
    min_lr_frac: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    sparsity: float = 0.0          # final weight sparsity, reached by gradual magnitude pruning
    prune_start: float = 0.2       # fraction of training where pruning starts ...
    prune_end: float = 0.7         # ... and where it reaches ``sparsity``
    rate_reg: float = 0.0          # penalty on the mean firing rate (activity sparsity)
    eval_every: int = 500
    eval_streams: int = 32
    eval_chars: int = 16384
    seed: int = 1


CONFIGS = {
    # The shipped model. Budget: about 2 hours on a 2-core CPU.
    "shakespeare": (LMConfig(hidden=(1024,), kind="ALIF", recurrent=False, token_shift=True),
                    TrainConfig(steps=3000, batch=32, seq=128, sparsity=0.5)),
    # A seconds-long run for tests and smoke checks.
    "tiny": (LMConfig(hidden=(32,), kind="ALIF"),
             TrainConfig(steps=30, batch=4, seq=32, eval_every=15, eval_streams=2,
                         eval_chars=512, sparsity=0.5, warmup=5)),
}


def load_checkpoint(path):
    """Load a checkpoint; returns ``(model, vocab, checkpoint dict)``."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        cfg = LMConfig.from_dict(ck["config"])
        model = SpikingLM(cfg)
        model.load_state_dict(ck["model"])
    except FileNotFoundError:
        raise SystemExit(f"error: no such checkpoint: {path}") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear line
        raise SystemExit(f"error: {path} is not a spikestream checkpoint ({e})") from None
    return model, Vocab(ck["vocab"]), ck


def _lr(tc, step):
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    p = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return tc.lr * (tc.min_lr_frac + (1 - tc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def _sparsity_at(tc, step):
    """Cubic gradual pruning schedule (Zhu & Gupta, 2017)."""
    a, b = tc.prune_start * tc.steps, tc.prune_end * tc.steps
    if tc.sparsity <= 0 or step < a:
        return 0.0
    if step >= b:
        return tc.sparsity
    return tc.sparsity * (1 - (1 - (step - a) / (b - a)) ** 3)


def plot_history(history, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    tr = [h for h in history if "train" in h]
    va = [h for h in history if "val" in h]
    if tr:
        ax.plot([h["step"] for h in tr], [h["train"] for h in tr], label="train", alpha=0.6)
    if va:
        ax.plot([h["step"] for h in va], [h["val"] for h in va], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg, tc, text, out, device="cpu", fresh=False, log=print, max_minutes=None):
    """Train (or resume) and return the path of the last checkpoint."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck_path = out / "ckpt.pt"
    train_text, val_text = split(text)
    vocab = Vocab.from_text(text)
    cfg.vocab_size = len(vocab)
    torch.manual_seed(tc.seed)
    model = SpikingLM(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if n.startswith("weights")]
    other = [p for n, p in model.named_parameters() if not n.startswith("weights")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=tc.lr)
    gen = torch.Generator().manual_seed(tc.seed)
    step, history = 0, []
    if ck_path.exists() and not fresh:
        ck = torch.load(ck_path, map_location=device, weights_only=False)
        if ck["config"] != cfg.to_dict() or ck["train"] != asdict(tc) or ck["vocab"] != vocab.chars:
            raise SystemExit(f"error: {ck_path} was made with other settings or text; "
                             "use --fresh to start over or --out for a new folder")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optim"])
        gen.set_state(ck["rng"])
        step, history = ck["step"], ck["history"]
        log(f"resuming from {ck_path} at step {step}")
    train_ids = torch.tensor(vocab.encode(train_text))
    val_ids = torch.tensor(vocab.encode(val_text))[:tc.eval_chars]

    def save():
        tmp = ck_path.with_suffix(".tmp")
        torch.save({"config": cfg.to_dict(), "train": asdict(tc), "vocab": vocab.chars,
                    "model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                    "rng": gen.get_state(), "history": history}, tmp)
        os.replace(tmp, ck_path)

    t_start = time.time()
    bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               file=sys.stderr, mininterval=1.0)
    running = None
    while step < tc.steps:
        target = _sparsity_at(tc, step)
        if target > 0 and (step % 50 == 0 or step == int(tc.prune_end * tc.steps)):
            model.prune_(target)
        for g in opt.param_groups:
            g["lr"] = _lr(tc, step)
        x = random_windows(train_ids, tc.batch, tc.seq, gen).to(device)
        logits, _, spikes = model(x[:, :-1], return_spikes=True)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        total = loss
        if tc.rate_reg:
            total = total + tc.rate_reg * torch.stack([s.mean() for s in spikes]).mean()
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        with torch.no_grad():       # pruned weights stay exactly zero
            for sp in model.specs:
                model.weights[sp.name].mul_(getattr(model, f"mask_{sp.name}"))
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        rate = float(torch.stack([s.detach().mean() for s in spikes]).mean())
        bar.set_postfix(loss=f"{running:.3f}", rate=f"{rate:.3f}", sparsity=f"{target:.2f}")
        bar.update(1)
        if step % 50 == 0:
            history.append({"step": step, "train": running, "rate": rate})
        if step % tc.eval_every == 0 or step == tc.steps:
            val = float_loss(model, val_ids, tc.eval_streams, device=device)["nats"]
            history.append({"step": step, "val": val, "minutes": (time.time() - t_start) / 60})
            log(f"step {step}: train {running:.4f} val {val:.4f} nats/char, rate {rate:.3f}, "
                f"sparsity {model.sparsity():.3f}")
            save()
            plot_history(history, out / "loss.png", f"{cfg.kind} {list(cfg.hidden)}")
        if max_minutes and (time.time() - t_start) / 60 > max_minutes:
            save()
            log(f"stopping after {max_minutes} minutes at step {step}; run again to resume")
            break
    bar.close()
    return ck_path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="shakespeare", choices=sorted(CONFIGS))
    ap.add_argument("--data", help="UTF-8 text file (default: the shipped tiny-shakespeare)")
    ap.add_argument("--out", help="output folder (default: runs/CONFIG)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="CPU threads for torch")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--max-minutes", type=float, help="stop (resumably) after this long")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model or training setting, e.g. --set hidden=[256,256]")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, tc = CONFIGS[args.config]
    cfg, tc = LMConfig(**vars(cfg)), TrainConfig(**vars(tc))
    for kv in args.set:
        key, _, value = kv.partition("=")
        target = cfg if hasattr(cfg, key) else tc if hasattr(tc, key) else None
        if target is None:
            raise SystemExit(f"error: unknown setting {key!r}")
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = value
        setattr(target, key, tuple(v) if isinstance(v, list) else v)
    text = load_text(args.data)
    out = args.out or f"runs/{args.config}"
    path = train(cfg, tc, text, out, device=args.device, fresh=args.fresh,
                 log=lambda s: tqdm.write(s, file=sys.stderr), max_minutes=args.max_minutes)
    print(f"checkpoint: {path}")


if __name__ == "__main__":
    main()
