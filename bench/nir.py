"""NIR fixtures from snnTorch and Norse: imported, simulated in float and on the golden model,
compared spike for spike with the libraries' own traces.

``python -m bench.nir [--write]`` prints (and with ``--write`` puts into BENCHMARKS.md) one
row per layer of every fixture in tests/fixtures/nir: its node type, neurons, spikes in the
library's trace, float mismatches (must be 0), golden (integer) mismatches and how many of
those lie within one quantisation step of the threshold (the rest, if any, are explained by
the per-neuron error bound or follow an earlier divergence; ``unexplained`` must be 0).
"""

import argparse
import json
from pathlib import Path

from models.nirio import fixture_reports, report_table
from spikestream.cmdline import run

from ._report import update_section

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "nir"
COMMAND = "python -m bench.nir --write"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.nir", description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=str(FIXTURES), help="folder of NAME.nir + NAME.npz")
    ap.add_argument("--lanes", type=int, default=3, help="lanes of the golden model")
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = ap.parse_args(argv)
    reports = fixture_reports(args.fixtures, lanes=args.lanes)
    if not reports:
        raise SystemExit(f"error: {args.fixtures}: no NAME.nir with NAME.npz beside it")
    table = report_table(reports)
    layers = [d for r in reports for d in r["layers"].values()]
    total = {k: sum(d[k] for d in layers) for k in ("spikes", "float_mismatches",
                                                    "golden_mismatches", "within_one_step",
                                                    "unexplained")}
    steps = sum(r["steps"] * sum(d["neurons"] for d in r["layers"].values()) for r in reports)
    body = (f"{len(reports)} fixtures written by snnTorch and Norse themselves "
            f"(tests/fixtures/nir/make_fixtures.py; the libraries' versions are in its "
            f"docstring), imported with `spikestream nir import`'s defaults for each (the "
            f"options are in docs/nir.md), {steps:,} neuron-steps in all, golden model at "
            f"{args.lanes} lanes. Measured.\n\nColumns: a golden mismatch is a neuron-step "
            f"where the integer model's spike differs from the library's; it is *within one "
            f"step* when the float membrane lies within one quantisation step (1/scale) of "
            f"the threshold, *within bound* when it lies within the worst-case drift that "
            f"rounding (8-bit weights, 8-bit decays, bias, threshold) can have accumulated "
            f"while every earlier spike agreed (models.nirio.quantisation_bound), *after "
            f"divergence* when an earlier spike of that neuron or of its inputs already "
            f"differed; *unexplained* is none of these (it must be 0).\n\n{table}\n\nTotals: {total['spikes']:,} spikes; "
            f"float mismatches {total['float_mismatches']}; golden mismatches "
            f"{total['golden_mismatches']}, of which {total['within_one_step']} lie within one "
            f"quantisation step of the threshold; unexplained {total['unexplained']}.")
    print(body)
    if args.write:
        update_section("NIR fixtures: snnTorch and Norse against float and golden", COMMAND,
                       body)
    if args.json:
        print(json.dumps({"fixtures": len(reports), "neuron_steps": steps, **total}))


if __name__ == "__main__":
    run(main)
