"""Every failing endpoint of a routed build, not only the worst path.

nextpnr reports one critical path per clock, so closing timing one build at a time fixes one
path per build (30-60 minutes each for the default core). With ``--detailed-timing-report``
its ``--report`` JSON also holds, for every register input, the arrival time of the latest
signal there and the net that brings it; :func:`failing_endpoints` ranks those against the
clock period, grouped by the register (the design signal) they belong to, with the Python
lines of the last net of each group's worst bit.

    python -m hw.timing_paths BUILD_DIR/top.report.json [--period NS] [--top N] [--json]

``python -m hw.build`` asks nextpnr for the detailed report, so every build folder has one.
"""

import argparse
import json
import re
import sys

__all__ = ["failing_endpoints", "register_name", "format_endpoints", "main"]


def register_name(cell):
    """The design signal a packed cell belongs to: ``design.link.engine.frames_ok`` for
    ``design.link.engine.frames_ok_TRELLIS_FF_Q_3`` (nextpnr names cells after the net they
    drive, with the primitive and port appended; a memory's after the memory)."""
    name = re.split(r"_(?:TRELLIS|LUT4|CCU2C|PFUMX|L6MUX21|DP16KD|MULT18X18D|DPR16X4)|\$", cell)[0]
    return re.sub(r"(\[\d+\]|_\d+)+$", "", name)


def failing_endpoints(report, period_ns, *, limit=None):
    """Register inputs of ``report`` (nextpnr's ``--report`` JSON with
    ``detailed_net_timings``) whose latest arrival is later than ``period_ns``, grouped by
    register, worst first.

    Returns a list of dicts: ``register``, ``slack_ns`` (its worst bit's: the period less
    the arrival; setup time not included), ``endpoints`` (bits failing), ``port`` and
    ``net`` (the worst bit's input and the net into it), ``sources`` (that net's Python
    lines). Raises ``ValueError`` if the report has no detailed net timings.
    """
    nets = report.get("detailed_net_timings") if isinstance(report, dict) else None
    if not nets:
        raise ValueError("the report has no detailed net timings (nextpnr "
                         "--detailed-timing-report)")
    groups = {}
    for n in nets:
        for e in n["endpoints"]:
            slack = period_ns - float(e["delay"][1])
            if slack >= 0:
                continue
            name = register_name(e["cell"])
            g = groups.setdefault(name, {"register": name, "slack_ns": slack, "endpoints": 0,
                                         "port": e["port"], "net": n["net"],
                                         "sources": n.get("sources", [])})
            g["endpoints"] += 1
            if slack < g["slack_ns"]:
                g.update(slack_ns=slack, port=e["port"], net=n["net"],
                         sources=n.get("sources", []))
    out = sorted(groups.values(), key=lambda g: g["slack_ns"])[:limit]
    for g in out:
        g["slack_ns"] = round(g["slack_ns"], 3)
        g["sources"] = [s for s in g["sources"] if not s.startswith("/share/")]
    return out


def format_endpoints(groups):
    """One line per failing register group (and the Python lines of its last net)."""
    lines = []
    for g in groups:
        where = ", ".join(src.rsplit("/", 2)[-2] + "/" + src.rsplit("/", 1)[-1]
                          if "/" in src else src for src in g["sources"][:3])
        lines.append(f"{g['slack_ns']:7.2f} ns  {g['endpoints']:5d} bits  {g['register']}"
                     f".{g['port']}" + (f"  ({where})" if where else ""))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hw.timing_paths", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("report", help="nextpnr --report JSON written with --detailed-timing-report")
    ap.add_argument("--period", type=float, default=10.0, metavar="NS",
                    help="the clock period to check against (default 10 ns: 100 MHz)")
    ap.add_argument("--top", type=int, default=25, metavar="N", help="registers to show")
    ap.add_argument("--json", action="store_true", help="print the groups as one JSON array")
    args = ap.parse_args(argv)
    if not args.period > 0 or args.top < 1:
        ap.error("--period must be positive and --top at least 1")
    try:
        with open(args.report, encoding="utf-8") as f:
            report = json.load(f)
        groups = failing_endpoints(report, args.period, limit=args.top)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        print(f"error: {args.report}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(groups))
    else:
        print("\n".join(format_endpoints(groups)) or f"no endpoint later than {args.period} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
