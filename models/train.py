"""Train a spiking character LM: ``python -m models.train --config shakespeare``.

Checkpoints (``OUT/ckpt.pt``) carry the model config, the training settings, the vocabulary,
the optimiser state and the loss history; running the same command again resumes from the
last one. The loss curve is written to ``OUT/loss.png`` at every validation.
"""

import json
import math
import sys
import time
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from .checkpoint import (CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint,
                         training_record)
from spikestream.cli import CommandParser
from spikestream.cmdline import INTERRUPTED
from .data import Vocab, load_text, random_windows, split
from .evaluate import float_loss
from spikestream.files import atomic_write
from .lm import PER_LAYER, LMConfig, SpikingLM
from spikestream.network import NetworkError, check_vocab

__all__ = ["TrainConfig", "CONFIGS", "train", "load_checkpoint", "apply_settings",
           "argument_parser", "main"]



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
    qat_steps: int = 0             # the last steps train quantisation-aware (SpikingLM.quantised)
    eval_every: int = 500
    eval_streams: int = 32
    eval_chars: int = 16384
    seed: int = 1

    def check(self):
        """Raise ``ValueError`` (one line) naming the first setting that cannot train."""
        def num(k):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{k} must be a finite number, not {v!r}")
            return v
        for k in ("steps", "batch", "seq", "eval_every", "eval_streams", "eval_chars"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k} must be a positive integer, not {v!r}")
        if not isinstance(self.warmup, int) or isinstance(self.warmup, bool) or self.warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, not {self.warmup!r}")
        if (not isinstance(self.qat_steps, int) or isinstance(self.qat_steps, bool)
                or not 0 <= self.qat_steps <= self.steps):
            raise ValueError(f"qat_steps must be an integer in [0, steps={self.steps}], not "
                             f"{self.qat_steps!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, not {self.seed!r}")
        if num("lr") <= 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        for k in ("weight_decay", "grad_clip", "rate_reg"):
            if num(k) < 0:
                raise ValueError(f"{k} must be >= 0, not {getattr(self, k)}")
        for k in ("min_lr_frac", "prune_start", "prune_end"):
            if not 0 <= num(k) <= 1:
                raise ValueError(f"{k} must be in [0, 1], not {getattr(self, k)}")
        if not 0 <= num("sparsity") < 1:
            raise ValueError(f"sparsity must be in [0, 1), not {self.sparsity}")
        if self.prune_end <= self.prune_start:
            raise ValueError(f"prune_end ({self.prune_end}) must be after prune_start "
                             f"({self.prune_start})")
        if self.eval_chars < 2 * self.eval_streams:
            raise ValueError(f"eval_chars ({self.eval_chars}) must be at least twice "
                             f"eval_streams ({self.eval_streams})")
        return self


CONFIGS = {
    # The shipped model (issue 18): 896 feed-forward ALIF neurons with a token shift and,
    # beside them, 192 recurrent ALIF neurons that hear the token too; both read out. It
    # fits the default ULX3S-85F core (16 lanes: 73 neurons and 1,411 pointer rows a lane).
    # About 65 minutes on one core of a 2-core CPU (budget: 2 hours on 2 cores).
    "shakespeare": (LMConfig(hidden=(896, 192), kind="ALIF", recurrent=(False, True),
                             token_shift=True, readout=True, stacked=(True, False),
                             dense=("out_in",)),
                    TrainConfig(steps=11000, batch=32, seq=128, sparsity=0.55)),
    # Its quantisation-aware fine-tuning (issue 18), which made the shipped checkpoint: from
    # the 11,000-step one (``--init``), 2,000 more steps that run forward as the core computes
    # (weights, thresholds and decays on the compiler's integer grids, the state rounded as
    # the core rounds it). The masks come with the weights; pruning to the same sparsity
    # keeps them. 14 minutes on one core.
    "shakespeare-qat": (LMConfig(hidden=(896, 192), kind="ALIF", recurrent=(False, True),
                                 token_shift=True, readout=True, stacked=(True, False),
                                 dense=("out_in",)),
                        TrainConfig(steps=2000, batch=32, seq=128, lr=1e-3, warmup=50,
                                    sparsity=0.55, qat_steps=2000)),
    # The model shipped before it: one feed-forward layer of 1024 (its weight-sparsity sweep
    # and the numbers of BENCHMARKS.md before issue 18; its adaptation was relu then).
    "shakespeare-ff": (LMConfig(hidden=(1024,), kind="ALIF", recurrent=False, token_shift=True),
                       TrainConfig(steps=3000, batch=32, seq=128, sparsity=0.5)),
    # A seconds-long run for tests and smoke checks.
    "tiny": (LMConfig(hidden=(32,), kind="ALIF"),
             TrainConfig(steps=30, batch=4, seq=32, eval_every=15, eval_streams=2,
                         eval_chars=512, sparsity=0.5, warmup=5)),
}


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
    # matplotlib is imported with the module, not here: the first plot comes right after the
    # first checkpoint, and a Ctrl-C landing in matplotlib's first import (its C extensions'
    # initialisation) surfaced as "ImportError: initialization failed" with a traceback.
    # A Figure of its own (no pyplot): no backend or global state is touched. Its Agg canvas
    # is imported with the module too: savefig would otherwise import it (a C extension)
    # on the first plot, and a Ctrl-C landing there was the same ImportError.
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
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
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format="png")


def train(cfg, tc, text, out, device="cpu", fresh=False, log=print, max_minutes=None,
          init=None):
    """Train (or resume) and return the path of the last checkpoint.

    ``init`` (a checkpoint path) starts a fresh run from that checkpoint's weights and
    pruning masks instead of random ones (fine-tuning, e.g. quantisation-aware with
    ``qat_steps``); its model settings and vocabulary must be this run's. A resumed run
    ignores it (its checkpoint says where it started).

    Raises ``SystemExit`` with one line for settings, text or a checkpoint that cannot be
    used, before any training step.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: cannot make the output folder {out} ({e.strerror})") from None
    ck_path = out / "ckpt.pt"
    train_text, val_text = split(text)
    vocab = Vocab.from_text(text)
    cfg.vocab_size = len(vocab)
    try:
        check_vocab(vocab.chars)
    except NetworkError as e:
        raise SystemExit(f"error: the text's characters cannot be the model's tokens: {e}") from None
    try:
        cfg.check()
        tc.check()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if len(train_text) < tc.seq + 2:
        raise SystemExit(f"error: seq={tc.seq} needs at least {tc.seq + 2} training "
                         f"characters; the text's training part has {len(train_text)}")
    if len(val_text) < 2 * tc.eval_streams:
        raise SystemExit(f"error: the validation part ({len(val_text)} characters) is too "
                         f"short for eval_streams={tc.eval_streams}")
    torch.manual_seed(tc.seed)
    model = SpikingLM(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if n.startswith("weights")]
    other = [p for n, p in model.named_parameters() if not n.startswith("weights")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=tc.lr)
    gen = torch.Generator().manual_seed(tc.seed)
    step, history, started = 0, [], None
    if ck_path.exists() and not fresh:
        try:
            ck = read_checkpoint(ck_path)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}; use --fresh to start over") from None
        missing = [k for k in ("config", "train", "vocab", "model", "optim", "rng", "step",
                               "history") if k not in ck]
        if missing:
            raise SystemExit(f"error: {ck_path} cannot be resumed (no {', '.join(missing)}: "
                             "not a training checkpoint); use --fresh to start over")
        saved = dict(ck["train"]) if isinstance(ck["train"], dict) else ck["train"]
        if isinstance(saved, dict):
            saved.setdefault("qat_steps", 0)        # written before the setting existed
        if ck["config"] != cfg.to_dict() or saved != asdict(tc) or ck["vocab"] != vocab.chars:
            raise SystemExit(f"error: {ck_path} was made with other settings or text; "
                             "use --fresh to start over or --out for a new folder")
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optim"])
            gen.set_state(ck["rng"])
            step, history = ck["step"], ck["history"]
            if (not isinstance(step, int) or not 0 <= step <= tc.steps
                    or not isinstance(history, list)):
                raise ValueError(f"step {step!r:.20} or history is not what training wrote")
        except (ValueError, TypeError, KeyError, RuntimeError, IndexError) as e:
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise SystemExit(f"error: {ck_path} cannot be resumed ({reason}); use --fresh "
                             "to start over") from None
        started = ck.get("init")
        log(f"resuming from {ck_path} at step {step}")
    elif init is not None:
        started = _start_from(model, cfg, vocab, init)
        log(f"starting from {init} (step {started['step']})")
    train_ids = torch.tensor(vocab.encode(train_text))
    val_ids = torch.tensor(vocab.encode(val_text))[:tc.eval_chars]

    def save():
        save_checkpoint({"config": cfg.to_dict(), "train": asdict(tc), "vocab": vocab.chars,
                         "model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                         "rng": gen.get_state(), "history": history,
                         **({"init": started} if started else {})}, ck_path)

    kinds = "/".join(cfg.layer("kind", l) for l in range(len(cfg.hidden)))
    t_start = time.time()
    bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               file=sys.stderr, mininterval=1.0)
    running = None
    try:
        while step < tc.steps:
            target = _sparsity_at(tc, step)
            if target > 0 and (step % 50 == 0 or step == int(tc.prune_end * tc.steps)):
                model.prune_(target)
            for g in opt.param_groups:
                g["lr"] = _lr(tc, step)
            model.quantised = step >= tc.steps - tc.qat_steps
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
                # (quantisation-aware steps validate quantised: within a few thousandths of
                # a nat of the golden model on the shipped model's whole validation split)
                val = float_loss(model, val_ids, tc.eval_streams, device=device)["nats"]
                history.append({"step": step, "val": val, "minutes": (time.time() - t_start) / 60,
                                **({"quantised": True} if model.quantised else {})})
                log(f"step {step}: train {running:.4f} val {val:.4f} nats/char"
                    f"{' (quantised)' if model.quantised else ''}, rate {rate:.3f}, "
                    f"sparsity {model.sparsity():.3f}")
                save()
                plot_history(history, out / "loss.png", f"{kinds} {list(cfg.hidden)}")
            if max_minutes and (time.time() - t_start) / 60 > max_minutes:
                save()
                log(f"stopping after {max_minutes} minutes at step {step}; run again to resume")
                break
    finally:
        bar.close()
    return ck_path


def _start_from(model, cfg, vocab, path):
    """Load the weights and masks of checkpoint ``path`` into ``model``; what the saved
    checkpoints record of it (``init``). ``SystemExit`` (one line) if it is another model."""
    try:
        start, start_vocab, ck = load_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"error: --init: {e}") from None
    if not start.cfg.same_model(cfg) or start_vocab.chars != vocab.chars:
        raise SystemExit(f"error: --init {path} holds another model (its settings or "
                         "vocabulary differ from this run's)")
    model.load_state_dict(start.state_dict())
    step, minutes, _ = training_record(ck)
    return {"checkpoint": Path(path).name, "step": step, "minutes": minutes or 0,
            "train": ck.get("train") if isinstance(ck.get("train"), dict) else None}


def _field_value(field, value):
    """``value`` (the text after ``=``) as the type of dataclass field ``field``; a
    ``ValueError`` (one line) if it is not one."""
    kind = typing.get_origin(field.type) or field.type
    if isinstance(kind, str):                        # postponed annotation
        kind = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple}[kind]
    try:
        v = json.loads(value)
    except json.JSONDecodeError:
        v = value
    if field.name in PER_LAYER and isinstance(v, list):
        # One value per hidden layer (LMConfig.check() checks them against the model).
        item = str if kind is str else bool
        if all(isinstance(x, item) for x in v):
            return tuple(v)
        raise ValueError(f"--set {field.name}={value}: expected a {item.__name__} or a list "
                         f"of them, one per hidden layer")
    if field.name == "dense":
        names = v if isinstance(v, list) else [v] if value else []
        if all(isinstance(x, str) for x in names):
            return tuple(names)
        raise ValueError(f"--set dense={value}: expected projection names, e.g. "
                         "[\"out_in\"]")
    if kind is bool:
        if value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    elif kind is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    elif kind is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    elif kind is str:
        return value
    elif kind is tuple:
        if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                       for x in v):
            return tuple(v)
    name = "a list of numbers, e.g. [256,256]" if kind is tuple else kind.__name__
    raise ValueError(f"--set {field.name}={value}: expected {name}")


def apply_settings(settings, *targets):
    """Apply ``KEY=VALUE`` strings to the dataclass instances ``targets`` (the first that has
    the field), each value checked against the field's type; ``ValueError`` (one line)."""
    for kv in settings:
        key, eq, value = kv.partition("=")
        if not eq:
            raise ValueError(f"--set {kv}: expected KEY=VALUE")
        for target in targets:
            field = {f.name: f for f in fields(target)}.get(key)
            if field is not None:
                setattr(target, key, _field_value(field, value))
                break
        else:
            known = sorted(f.name for t in targets for f in fields(t))
            raise ValueError(f"--set: unknown setting {key!r}; known: {', '.join(known)}")


def argument_parser(prog="python -m models.train"):
    """The command line of ``python -m models.train`` (``spikestream train``)."""
    ap = CommandParser(prog=prog, description="Train a spiking character LM; the same "
                                              "command again resumes from OUT/ckpt.pt.")
    ap.add_argument("--config", default="shakespeare", choices=sorted(CONFIGS),
                    help="model and training settings to start from (tiny: a seconds-long "
                         "smoke run)")
    ap.add_argument("--data", metavar="PATH",
                    help="UTF-8 text file (default: the shipped tiny-shakespeare)")
    ap.add_argument("--out", metavar="DIR", help="output folder (default: runs/CONFIG)")
    ap.add_argument("--torch-device", default="cpu", metavar="DEVICE",
                    help="torch device to train on, e.g. cpu or cuda")
    ap.add_argument("--threads", type=int, metavar="N",
                    help="CPU threads for torch (default: torch's own choice)")
    ap.add_argument("--fresh", action="store_true",
                    help="start over, ignoring a checkpoint in the output folder")
    ap.add_argument("--max-minutes", type=float, metavar="MIN",
                    help="stop (resumably) after this many minutes (default: no limit)")
    ap.add_argument("--init", metavar="CKPT",
                    help="start from this checkpoint's weights (same model settings and "
                         "text), e.g. quantisation-aware fine-tuning of a trained model: "
                         "--init models/pretrained/shakespeare.pt --config shakespeare-qat")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model or training setting, each value checked against "
                         "the setting's type, e.g. --set hidden=[256,256] or --set seed=2 "
                         "(repeatable)")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON: checkpoint, step, last validation loss, "
                         "minutes")
    return ap


def main(argv=None, prog="python -m models.train"):
    """Run the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in its help
    and errors (``spikestream train`` when run from the console script)."""
    args = argument_parser(prog).parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"error: --threads must be at least 1, not {args.threads}")
        torch.set_num_threads(args.threads)
    if args.max_minutes is not None and not (math.isfinite(args.max_minutes)
                                             and args.max_minutes > 0):
        raise SystemExit(f"error: --max-minutes must be a positive number, not {args.max_minutes}")
    try:
        device = torch.device(args.torch_device)
    except RuntimeError:
        raise SystemExit(f"error: --torch-device {args.torch_device!r} is not a torch "
                         "device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --torch-device {args.torch_device}: no CUDA device here")
    cfg, tc = CONFIGS[args.config]
    cfg, tc = LMConfig(**vars(cfg)), TrainConfig(**vars(tc))
    try:
        apply_settings(args.set, cfg, tc)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    text = load_text(args.data)
    out = args.out or f"runs/{args.config}"
    log = lambda s: tqdm.write(s, file=sys.stderr)
    t0 = time.monotonic()
    try:
        path = train(cfg, tc, text, out, device=device, fresh=args.fresh, log=log,
                     max_minutes=args.max_minutes, init=args.init)
    except KeyboardInterrupt:
        ck = Path(out) / "ckpt.pt"
        kept = f"; {ck} holds the last validation's state, run again to resume" \
            if ck.exists() else ""
        print(f"\ninterrupted{kept}", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    print(f"checkpoint: {path}")
    if args.json:
        ck = read_checkpoint(path)
        vals = [h["val"] for h in ck["history"] if "val" in h]
        print(json.dumps({"checkpoint": str(path), "step": ck["step"], "steps": tc.steps,
                          "val_nats": vals[-1] if vals else None,
                          "minutes": (time.monotonic() - t0) / 60}))


if __name__ == "__main__":
    main()
