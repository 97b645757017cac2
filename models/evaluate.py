"""Evaluate an image or a checkpoint: ``python -m models.evaluate [--image PATH | --checkpoint
PATH] [--json]`` (``spikestream evaluate``; default: the shipped image)."""

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint
from spikestream.cli import CommandParser
from spikestream.cmdline import run
from .compile import MAX_LANES, compile_model
from .data import Vocab, load_text, split, stream_batches
from spikestream.board import SHIPPED_IMAGE
from spikestream.formats import NeuronKind
from spikestream.timing import DEFAULT_TIMING, LANE_SYNAPSES
from .golden import GoldenCore
from .mr import MRDataError, load_mr
from .textcnn import TASK as TEXT_TASK, TextMetaError, evaluate_image
from spikestream.image import ImageError, load_image

__all__ = ["float_loss", "golden_loss", "argument_parser", "main"]



@torch.no_grad()
def float_loss(model, ids, streams, device="cpu", chunk=256):
    """Validation loss of the float model, streamed as the core runs it.

    ``ids`` is cut into ``streams`` contiguous streams, each started from the reset state
    and run in chunks with the state carried over (the same protocol as the golden model).
    Returns a dict with ``nats``, ``bits`` and the mean firing ``rate`` per layer.
    """
    model.eval()
    x = stream_batches(ids, streams).to(device)
    state = model.initial_state(x.shape[0], device)
    total, count = 0.0, 0
    rates = torch.zeros(len(model.cfg.hidden))
    for t0 in range(0, x.shape[1] - 1, chunk):
        inp = x[:, t0:min(t0 + chunk, x.shape[1] - 1)]
        tgt = x[:, t0 + 1:t0 + 1 + inp.shape[1]]
        logits, state, spikes = model(inp, state, return_spikes=True)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                 reduction="sum").item()
        count += tgt.numel()
        rates += torch.tensor([s.sum().item() for s in spikes]) / x.shape[0]
    model.train()
    steps = x.shape[1] - 1
    nats = total / count
    return {"nats": nats, "bits": nats / math.log(2),
            "rate": (rates / steps / torch.tensor(model.cfg.hidden, dtype=torch.float)).tolist()}


@torch.no_grad()
def golden_loss(net, lanes, ids, streams, timing=None, progress=False):
    """Validation loss and activity of the golden model, same protocol as :func:`float_loss`.

    Returns a dict with ``nats``, ``bits``, ``rate`` (per spiking population),
    ``events_per_token``, ``cycles_per_token``, ``route_cycles_per_token`` and
    ``ideal_route_cycles_per_token`` (events / (lanes x LANE_SYNAPSES): every lane adding
    a pair of synapses every cycle).
    """
    core = GoldenCore(net, lanes, timing or DEFAULT_TIMING, batch=streams)
    x = stream_batches(ids, streams)
    scale = torch.as_tensor(net.populations[net.readout].scale)
    total, steps = 0.0, x.shape[1] - 1
    spikes = torch.zeros(len(net.populations))
    events = cycles = route = 0
    for t in tqdm(range(steps), desc="golden", unit="tok", disable=not progress,
                  mininterval=1.0, leave=False):
        r = core.step(x[:, t], sample_tokens=False)
        total += F.cross_entropy(r.logits.double() / scale, x[:, t + 1], reduction="sum").item()
        spikes += torch.tensor([s.sum().item() for s in r.spikes], dtype=torch.float)
        events += r.events.sum().item()
        cycles += r.cycles.sum().item()
        route += r.route_cycles.sum().item()
    n = steps * streams
    nats = total / n
    spiking = [i for i, p in enumerate(net.populations) if p.kind != NeuronKind.READOUT]
    return {"nats": nats, "bits": nats / math.log(2),
            "rate": [spikes[i].item() / n / net.populations[i].size for i in spiking],
            "events_per_token": events / n, "cycles_per_token": cycles / n,
            "route_cycles_per_token": route / n,
            "ideal_route_cycles_per_token": events / n / lanes / LANE_SYNAPSES}


def _note(line):
    print(line, file=sys.stderr, flush=True)


def checkpoint_beside(image_path, net):
    """The float checkpoint that the image names (``meta["checkpoint"]``, written by
    ``models.compile --with-checkpoint``) if it is a plain file name in the image's own
    folder and exists; else ``None`` (with a note when the image names something else).
    The name comes from a file: it is never followed out of the image's folder."""
    name = net.meta.get("checkpoint")
    if name is None:
        return None
    folder = Path(image_path).parent
    if (not isinstance(name, str) or Path(name).name != name or name.startswith(".")
            or not name.endswith(".pt")):
        _note(f"note: ignoring the checkpoint the image names ({str(name)!r:.60}): not a "
              "file name in the image's folder")
        return None
    candidate = folder / name
    if not candidate.exists():
        return None
    if candidate.resolve().parent != folder.resolve():
        _note(f"note: ignoring {candidate}: it links out of the image's folder")
        return None
    return candidate


def argument_parser(prog="python -m models.evaluate"):
    """The command line of ``python -m models.evaluate`` (``spikestream evaluate``)."""
    ap = CommandParser(prog=prog, description="Validation loss, activity and cycles per token "
                                              "of an image or a checkpoint.")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--image", metavar="PATH",
                      help="network image to evaluate on the golden model, with the float "
                           "model too if the image names a checkpoint beside it (default: the "
                           "shipped image)")
    what.add_argument("--checkpoint", metavar="PATH",
                      help="float checkpoint to evaluate: compiled for --lanes, then run as "
                           "float and golden model")
    ap.add_argument("--data", metavar="PATH",
                    help="text file (default: the shipped tiny-shakespeare); the last 10%% is "
                         "the validation split")
    ap.add_argument("--mr", nargs=2, metavar=("POS", "NEG"),
                    help="a sentence classifier image (models.textcnn): MR-style files to "
                         "take its test fold from (default: the shipped MR)")
    ap.add_argument("--chars", type=int, metavar="N",
                    help="evaluate only the first N validation characters (default: all)")
    ap.add_argument("--streams", type=int, default=64, metavar="N",
                    help="parallel streams, each from reset")
    ap.add_argument("--lanes", type=int, default=16, metavar="N",
                    help="lanes to compile a --checkpoint for (an image keeps its own)")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON: losses, rates, events and cycles per token")
    return ap


def main(argv=None, prog="python -m models.evaluate"):
    """Run the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in its help
    and errors (``spikestream evaluate`` when run from the console script)."""
    args = argument_parser(prog).parse_args(argv)
    if args.image is not None:
        try:
            img = load_image(args.image)
        except ImageError as e:
            raise SystemExit(f"error: {e}") from None
        if img.net.meta.get("task") == TEXT_TASK:
            return _evaluate_classifier(args, img)
    if args.chars is not None and args.chars < 2:
        raise SystemExit(f"error: --chars must be at least 2 (one character predicts the "
                         f"next), not {args.chars}")
    if args.streams < 1:
        raise SystemExit(f"error: --streams must be at least 1, not {args.streams}")
    if not 1 <= args.lanes <= MAX_LANES:
        raise SystemExit(f"error: --lanes must be in 1..{MAX_LANES}, not {args.lanes}")

    path = Path(args.checkpoint or args.image or SHIPPED_IMAGE)
    model = None
    try:
        if args.checkpoint is not None:
            model, vocab, ck = load_checkpoint(path)
            text = load_text(args.data)
            net, lanes = compile_model(model, vocab, args.lanes, text=text), args.lanes
        else:
            img = load_image(path)
            net, lanes = img.net, img.lanes
            vocab = Vocab(net.vocab)
            ck_path = checkpoint_beside(path, net)
            text = load_text(args.data)
            if ck_path is not None:
                try:
                    model, ck_vocab, _ = load_checkpoint(ck_path)
                except CheckpointError as e:
                    _note(f"note: no float comparison: {e}")
                else:
                    if sorted(ck_vocab.chars) == sorted(net.vocab):
                        vocab = ck_vocab
                    else:
                        _note(f"note: no float comparison: {ck_path} has another vocabulary "
                              "than the image")
                        model = None
    except (ImageError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    val = split(text)[1]
    unknown = vocab.unknown(val)
    if unknown == len(val):
        raise SystemExit(f"error: none of the {len(val):,} validation characters is in the "
                         "model's vocabulary")
    if unknown:
        _note(f"warning: {unknown:,} of {len(val):,} validation characters are not in the "
              "model's vocabulary and were skipped")
    # The compiler may relabel the vocabulary: the float model reads its own token ids, the
    # golden model the image's (the same characters).
    ids = torch.tensor(vocab.encode(val, strict=False))
    core_ids = torch.tensor(Vocab(net.vocab).encode(val, strict=False))
    if args.chars:
        ids, core_ids = ids[:args.chars], core_ids[:args.chars]
    if len(ids) < 2:
        raise SystemExit(f"error: only {len(ids)} validation character(s) to score; need 2")
    streams = max(1, min(args.streams, len(ids) // 2))
    result = {"path": str(path), "lanes": lanes, "val_chars": len(ids), "streams": streams,
              "unknown_chars_skipped": unknown,
              "nonzero_synapses": net.nonzero_synapses,
              "neurons": sum(p.size for p in net.populations)}
    if model is not None:
        f = float_loss(model, ids, streams)
        result.update(float_val_nats=f["nats"], float_val_bits=f["bits"], float_rate=f["rate"])
        print(f"float : {f['nats']:.4f} nats/char ({f['bits']:.4f} bits/char)")
    else:
        result.update(float_val_nats=None, float_val_bits=None)
        print("float : (no checkpoint beside the image)")
    g = golden_loss(net, lanes, core_ids, streams, progress=True)
    result.update(golden_val_nats=g["nats"], golden_val_bits=g["bits"], golden_rate=g["rate"],
                  synaptic_events_per_token=g["events_per_token"],
                  cycles_per_token=g["cycles_per_token"],
                  route_cycles_per_token=g["route_cycles_per_token"],
                  ideal_route_cycles_per_token=g["ideal_route_cycles_per_token"])
    print(f"golden: {g['nats']:.4f} nats/char ({g['bits']:.4f} bits/char)")
    print("firing rate per layer: " + ", ".join(f"{r:.4f}" for r in g["rate"]))
    print(f"synaptic events/token: {g['events_per_token']:.1f}; cycles/token: "
          f"{g['cycles_per_token']:.1f} (routing {g['route_cycles_per_token']:.1f}, ideal "
          f"{g['ideal_route_cycles_per_token']:.1f}) at {lanes} lanes")
    if args.json:
        print(json.dumps(result))
    return result


def _evaluate_classifier(args, img):
    """Accuracy, events and cycles per sentence of a sentence classifier image."""
    try:
        data = load_mr(*args.mr) if args.mr else None
        result = evaluate_image(img, data)
    except (MRDataError, TextMetaError) as e:
        raise SystemExit(f"error: {e}") from None
    result["path"] = str(args.image)
    show = lambda x: "n/a" if x is None else f"{x:.4f}"
    print(f"{result['task']} ({result['conversion']}), fold {result['fold']}, "
          f"{result['sentences']} sentences: float {show(result['accuracy_float'])}, "
          f"quantised {show(result['accuracy_quantised'])} (recorded when the image was "
          f"made), golden {show(result['accuracy_golden'])}")
    print(f"per sentence: {result['timesteps_per_example']:.1f} timesteps, "
          f"{result['synaptic_events_per_example']:.0f} synaptic events, "
          f"{result['cycles_per_example']:.0f} cycles at {result['lanes']} lanes")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    run(main)
