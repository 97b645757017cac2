"""Cycles per token of the shipped model on the core, against the ideal, per lane count.

    python -m bench.core [--lanes 1 4 16 32] [--chars 4000] [--streams 16] [--sim-tokens 50]
                         [--write] [--json]

For each lane count the shipped checkpoint is compiled for that many lanes (the compiler
balances the lanes by measured firing rate, as a user's compile would) and run on the golden
model with the timing of the core built for that lane count (``hw.core.core_timing``: the
RTL's pipeline, which the cocotb tests prove the RTL meets cycle for cycle) over the first
``--chars`` characters of the validation text, ``--streams`` streams from reset. Reported
per lane count: synaptic events per token, cycles per token (whole timestep), routing
cycles per token, the ideal routing cycles (events / (2 x lanes): every lane adding a pair
of synapses every cycle) and the routing efficiency
(ideal / routing cycles), plus ideal / whole timestep.

``--sim-tokens`` runs the shipped image (as laid out in the file) on the Verilated core for
that many tokens and reports the simulator's speed in simulated core cycles per second of
wall time (after the Verilator build, which is cached and not counted).

With ``--json`` the last line printed is one JSON object with ``lanes``,
``cycles_per_token``, ``ideal_cycles_per_token``, ``routing_efficiency`` (each a list, one
entry per lane count) and ``sim_cycles_per_second``.
"""

import argparse
import json
import sys
import time

import torch

from hw.core import core_timing
from models.checkpoint import load_checkpoint
from models.compile import compile_model
from models.data import Vocab, load_text, split
from models.evaluate import golden_loss
from sim.core_speed import measure_sim_speed
from spikestream.board import SHIPPED_IMAGE
from spikestream.memory_map import CoreConfig

from ._report import update_section


def stages_for(lanes):
    """Tree depth of the core built for ``lanes`` (as ``CoreConfig.for_image`` picks it)."""
    s = CoreConfig.stages
    while 4 ** s < lanes:
        s += 1
    return s


def measure(lanes_list, chars, streams, data=None):
    model, vocab, _ = load_checkpoint(SHIPPED_IMAGE.with_suffix(".pt"))
    text = load_text(data)
    rows = []
    for lanes in lanes_list:
        t0 = time.perf_counter()
        net = compile_model(model, vocab, lanes, text=text)
        timing = core_timing(stages_for(lanes))
        # the compiler may relabel the vocabulary: encode with the network's own
        ids = torch.tensor(Vocab(net.vocab).encode(split(text)[1], strict=False))[:chars]
        g = golden_loss(net, lanes, ids, streams, timing=timing)
        row = {
            "lanes": lanes,
            "stages": stages_for(lanes),
            "events_per_token": g["events_per_token"],
            "cycles_per_token": g["cycles_per_token"],
            "route_cycles_per_token": g["route_cycles_per_token"],
            "ideal_cycles_per_token": g["ideal_route_cycles_per_token"],
            "routing_efficiency": g["ideal_route_cycles_per_token"] / g["route_cycles_per_token"],
            "timestep_efficiency": g["ideal_route_cycles_per_token"] / g["cycles_per_token"],
            "golden_nats": g["nats"],
        }
        rows.append(row)
        print(f"lanes {lanes:3d}: {row['cycles_per_token']:8.1f} cycles/token, routing "
              f"{row['route_cycles_per_token']:7.1f} vs ideal {row['ideal_cycles_per_token']:7.1f}"
              f" (efficiency {row['routing_efficiency']:.3f})  [{time.perf_counter() - t0:.0f} s]",
              file=sys.stderr, flush=True)
    return rows


def sim_speed(tokens):
    """Simulated core cycles per wall-clock second of the Verilated core on the shipped
    image (``None`` when no simulator can run)."""
    return measure_sim_speed(tokens)


def table(rows):
    out = ["| lanes | tree stages | synaptic events/token | cycles/token | routing cycles/token | "
           "ideal (events / 2 lanes) | routing efficiency | ideal / cycles |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['lanes']} | {r['stages']} | {r['events_per_token']:.0f} | "
                   f"{r['cycles_per_token']:.1f} | {r['route_cycles_per_token']:.1f} | "
                   f"{r['ideal_cycles_per_token']:.1f} | {r['routing_efficiency']:.3f} | "
                   f"{r['timestep_efficiency']:.3f} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__.split("\n")[0])
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--chars", type=int, default=4000,
                    help="validation characters per measurement (default 4000)")
    ap.add_argument("--streams", type=int, default=16, help="parallel streams, each from reset")
    ap.add_argument("--data", help="text file (default: the shipped tiny-shakespeare)")
    ap.add_argument("--sim-tokens", type=int, default=50,
                    help="tokens to run on the Verilated core for its speed (0: skip)")
    ap.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.lanes):
        ap.error("--lanes must be positive")

    rows = measure(args.lanes, args.chars, args.streams, args.data)
    speed = sim_speed(args.sim_tokens) if args.sim_tokens > 0 else None
    body = table(rows)
    if speed:
        body += (f"\n\nVerilator: {speed['cycles_per_second']:,.0f} simulated core cycles per "
                 f"second ({speed['tokens']} tokens of the shipped {speed['lanes']}-lane image, "
                 f"{speed['cycles']:,} cycles in {speed['seconds']:.1f} s, "
                 f"{speed['simulator']}; build not counted).")
    body += ("\n\nRouting cycles are the route phases of a timestep; a timestep also updates "
             "every population and samples the readout. Cycle counts come from the golden "
             "cycle model with the RTL's pipeline constants (`hw.core.core_timing`), which "
             "the cocotb tests check against the Verilated core cycle for cycle.")
    print(body)
    if args.write:
        cmd = "python -m bench.core " + " ".join(argv if argv is not None else sys.argv[1:])
        update_section("Core: cycles per token and routing efficiency", cmd.strip(), body)
    if args.json:
        print(json.dumps({
            "lanes": [r["lanes"] for r in rows],
            "cycles_per_token": [r["cycles_per_token"] for r in rows],
            "route_cycles_per_token": [r["route_cycles_per_token"] for r in rows],
            "ideal_cycles_per_token": [r["ideal_cycles_per_token"] for r in rows],
            "routing_efficiency": [r["routing_efficiency"] for r in rows],
            "sim_cycles_per_second": speed["cycles_per_second"] if speed else None,
        }))


if __name__ == "__main__":
    main()
