"""MR sentence polarity with the spiking TextCNN: cross-validated accuracy of the float,
quantised and spiking models, events, cycles and sentences per second.

``python -m bench.textcnn [--folds 0 1 ...] [--json]`` trains on nine folds and tests on
the tenth, for each fold asked (default all ten), exactly as ``python -m models.textcnn
train`` does (one torch thread): the float TextCNN, its quantised copies at K = 2, 3, 4
(LAS; the golden model must give the quantised ANN's class on every test sentence, and the
count of differences is reported), and the Lv et al. IF conversion of the K = 4 model at
``--lv-substeps`` sub-steps per word, as converted and after ``--finetune-epochs`` of
surrogate-gradient fine-tuning. Each fold's numbers are kept in
``bench/results/textcnn.json`` as they are measured (a later run measures only what a
fold's record lacks, unless ``--fresh``), so a long run can be stopped and resumed; the
report covers the folds measured and says how many.

Sentences per second on the board are **projected**: the clock of the default 16-lane 85F
build recorded in ``bench/results/build-85f.json`` (its target where timing was met, else its
Fmax) over the golden cycle model's cycles per
sentence (compute only; no board has run). The float model's rate is measured on this CPU,
one sentence at a time (batch 1, one thread).
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.mr import FOLDS, load_mr
from models.textcnn import (LV_FINETUNE_EPOCHS, SHIPPED, TextCNNConfig, convert, summary,
                             train_fold)
from spikestream.cli import CommandParser
from spikestream.cmdline import run
from spikestream.files import atomic_write_bytes
from spikestream.image import save_image

from ._report import board_clock_mhz, build_result, update_section

RESULTS = Path(__file__).parent / "results" / "textcnn.json"
LAS_BITS = (2, 3, 4)
LV_BITS = 4
"""The Lv conversions start from the K = 4 quantised model (its weights and clips)."""
TITLE = "MR sentence classification (spiking TextCNN, LAS and Lv et al.)"


@torch.no_grad()
def cpu_rate(model, ids, n=300):
    """Sentences per second of the float ``model`` on this CPU, one at a time."""
    model.eval()
    xs = [(torch.tensor([s or [0]]), torch.tensor([len(s)])) for s in ids[:n]]
    t0 = time.perf_counter()
    for x, ln in xs:
        model(x, ln)
    return len(xs) / (time.perf_counter() - t0)


def configurations(lv_substeps, finetune):
    """The configurations measured: name -> ``(conversion, K, sub-steps, fine-tuning
    epochs)`` (as :data:`models.textcnn.SHIPPED`)."""
    out = {f"las-k{K}": ("las", K, 1, 0) for K in LAS_BITS}
    out.update({f"lv-t{T}": ("lv", LV_BITS, T, 0) for T in lv_substeps})
    if finetune:
        out.update({f"lv-ft-t{T}": ("lv", LV_BITS, T, finetune) for T in lv_substeps})
    return out


def measure_fold(data, fold, wanted, log, images=None, record=None):
    """The numbers of the configurations ``wanted`` (:func:`configurations`) on one fold
    that its earlier ``record`` (a JSON-able dict, kept) lacks; only the models they need
    are trained (training is deterministic per ``K``, so the models are those of the
    record). With ``images`` (a folder), every configuration is measured again and the
    images of :data:`models.textcnn.SHIPPED` made on this fold are written there (what
    ``python -m models.textcnn train --fold F --out-dir DIR`` writes)."""
    out = record if record is not None and images is None else {"fold": fold, "configs": {}}
    missing = {n: c for n, c in wanted.items() if n not in out["configs"]}
    if images is not None:
        missing.update({name: key for name, key in SHIPPED.items()})
    if not missing:
        return out
    t0 = time.time()
    fd = train_fold(TextCNNConfig(), data, fold, sorted({c[1] for c in missing.values()}), log)
    if "train_seconds" not in out:
        out["train_seconds"] = time.time() - t0
        out["float_cpu_sentences_per_s"] = cpu_rate(fd.float_model, fd.test_ids)
    for name, (conversion, K, T, epochs) in missing.items():
        t1 = time.time()
        image, res = convert(fd, K, conversion, T, finetune=epochs, log=log)
        if name in SHIPPED:
            if res["mismatches"]:
                raise SystemExit(f"error: {name}: {res['mismatches']} mismatches; not written")
            save_image(image.net, image.lanes, Path(images) / name)
            continue
        row = {**summary(res), "finetune_epochs": epochs, "seconds": time.time() - t1}
        for other, (_, K2, _, _) in wanted.items():
            old = out["configs"].get(other)
            if old and (old["accuracy_float"] != row["accuracy_float"] or (
                    K2 == K and old["accuracy_quantised"] != row["accuracy_quantised"])):
                raise SystemExit(f"error: fold {fold}: the models trained again differ from "
                                 f"those of its record ({other}); measure it with --fresh")
        out["configs"][name] = row
        log(f"fold {fold} {name}: {out['configs'][name]}")
    return out


def aggregate(folds, clock_mhz):
    """Mean (and spread) over the measured folds, per configuration."""
    names = list(folds[0]["configs"])
    rows = {}
    for name in names:
        got = [f["configs"][name] for f in folds if name in f["configs"]]
        mean = lambda k: float(np.mean([g[k] for g in got]))
        std = lambda k: float(np.std([g[k] for g in got]))
        rows[name] = {
            "folds": len(got),
            "accuracy_float": mean("accuracy_float"), "accuracy_float_std": std("accuracy_float"),
            "accuracy_quantised": mean("accuracy_quantised"),
            "accuracy_quantised_std": std("accuracy_quantised"),
            "accuracy_golden": mean("accuracy_golden"),
            "accuracy_golden_std": std("accuracy_golden"),
            "mismatches": (None if any(g["mismatches"] is None for g in got)
                           else sum(g["mismatches"] for g in got)),
            "sentences": sum(g["sentences"] for g in got),
            "timesteps_per_example": mean("timesteps_per_example"),
            "synaptic_events_per_example": mean("synaptic_events_per_example"),
            "cycles_per_example": mean("cycles_per_example"),
            "projected_sentences_per_s": clock_mhz * 1e6 / mean("cycles_per_example"),
        }
    return rows


def report(folds, rows, clock, cpu):
    """The BENCHMARKS.md section body."""
    n = len(folds)
    pct = lambda r, k: f"{100 * r[k]:.1f} ± {100 * r[k + '_std']:.1f}"
    lines = [f"{n} of {FOLDS} folds of MR measured (folds {', '.join(str(f['fold']) for f in folds)}; "
             "train on nine, test on the tenth; seeded split, models/mr.py). Accuracy in %, "
             "mean ± standard deviation over the folds; per sentence: timesteps, synaptic "
             "events and cycles of the golden model (16 lanes). Float and quantised: the "
             "ANNs (mean pooling over the sentence, as the SNN's integrating readout); "
             "golden: the spiking network on the golden model (bit-exact with the core). "
             "`mismatches`: test sentences whose SNN class differs from the quantised ANN's "
             "(LAS is loss-less when this is 0; for the Lv rows: from the PyTorch SNN's that "
             "was fine-tuned, which computes what the core does; — where not checked). "
             "Reference: Kim's CNN-rand 76.1% (10-fold, "
             "300-d embedding, 100 filters per width, max pooling).", "",
             "| configuration | float | quantised | SNN golden | mismatches | timesteps | "
             "events | cycles | sentences/s (projected) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        mm = "—" if r["mismatches"] is None else f"{r['mismatches']} / {r['sentences']}"
        lines.append(f"| {name} | {pct(r, 'accuracy_float')} | {pct(r, 'accuracy_quantised')} "
                     f"| {pct(r, 'accuracy_golden')} | {mm} | {r['timesteps_per_example']:.1f} "
                     f"| {r['synaptic_events_per_example']:,.0f} | "
                     f"{r['cycles_per_example']:,.0f} | {r['projected_sentences_per_s']:,.0f} |")
    lines += ["", f"Projected sentences/s: {clock:.1f} MHz (the clock of the default 16-lane 85F "
              "build recorded in `bench/results/build-85f.json`) over the cycles per sentence; "
              "compute only, no board has run this. Float TextCNN on this CPU "
              f"({platform.processor() or platform.machine()}, one thread, batch 1): "
              f"{cpu:,.0f} sentences/s (measured). `las-kK`: LAS/OAT conversion with K-bit "
              "activations (one graded spike per word); `lv-tT`: Lv et al. IF conversion "
              "(binary spikes, reset by subtraction, deterministic rate code) with T "
              "sub-steps per word, as converted; `lv-ft-tT`: the same after "
              f"{LV_FINETUNE_EPOCHS} epochs of surrogate-gradient fine-tuning on the training "
              "folds (models.textcnn.finetune_lv; the shipped mr-lv.img is lv-ft-t3)."]
    return "\n".join(lines)


def argument_parser(prog="python -m bench.textcnn"):
    ap = CommandParser(prog=prog, description="Cross-validated MR accuracy, events, cycles "
                                              "and sentences/s of the spiking TextCNN.")
    ap.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)),
                    help="the folds to measure")
    ap.add_argument("--lv-substeps", type=int, nargs="+", default=[1, 2, 3], metavar="T",
                    help="sub-steps per word of the Lv conversions")
    ap.add_argument("--finetune-epochs", type=int, default=LV_FINETUNE_EPOCHS, metavar="N",
                    help="epochs of surrogate-gradient fine-tuning of the lv-ft configurations "
                         "(0: none)")
    ap.add_argument("--fresh", action="store_true",
                    help="measure again the folds already in bench/results/textcnn.json")
    ap.add_argument("--images", metavar="DIR",
                    help="also write the shipped images made on fold 0 into DIR")
    ap.add_argument("--no-report", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON")
    return ap


def main(argv=None, prog="python -m bench.textcnn"):
    args = argument_parser(prog).parse_args(argv)
    if any(not 0 <= f < FOLDS for f in args.folds):
        raise SystemExit(f"error: folds are 0..{FOLDS - 1}")
    torch.set_num_threads(1)
    log = lambda line: print(line, file=sys.stderr, flush=True)
    done = {}
    if RESULTS.exists() and not args.fresh:
        done = {f["fold"]: f for f in json.loads(RESULTS.read_text())["folds"]}
    data = load_mr()
    if args.finetune_epochs < 0 or any(t < 1 for t in args.lv_substeps):
        raise SystemExit("error: --finetune-epochs must be >= 0 and --lv-substeps >= 1")
    wanted = configurations(args.lv_substeps, args.finetune_epochs)
    for fold in args.folds:
        done[fold] = measure_fold(data, fold, wanted, log,
                                  args.images if fold == 0 else None, done.get(fold))
        atomic_write_bytes(RESULTS, json.dumps({"folds": [done[k] for k in sorted(done)]},
                                               indent=1).encode())
    folds = [done[k] for k in sorted(done) if k in args.folds]
    clock = board_clock_mhz(build_result())
    rows = aggregate(folds, clock)
    cpu = float(np.mean([f["float_cpu_sentences_per_s"] for f in folds]))
    body = report(folds, rows, clock, cpu)
    print(body)
    if not args.no_report:
        cmd = "python -m bench.textcnn" + (
            "" if sorted(args.folds) == list(range(FOLDS))
            else " --folds " + " ".join(map(str, sorted(args.folds))))
        update_section(TITLE, cmd, body)
    if args.json:
        print(json.dumps({"folds": len(folds), "configs": rows,
                          "float_cpu_sentences_per_s": cpu, "clock_mhz": clock}))


if __name__ == "__main__":
    run(main)
