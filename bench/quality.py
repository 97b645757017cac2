"""Quality, activity and cost of the shipped model: ``python -m bench.quality [--write]``.

Evaluates the shipped image (float model and golden model on the whole validation split of
tiny-shakespeare, 64 streams from reset) and the training time recorded in its checkpoint.
"""

import argparse
import sys

from models.checkpoint import read_checkpoint, training_record
from models.evaluate import main as evaluate
from spikestream.board import SHIPPED_IMAGE
from spikestream.capacity import memory_plan
from spikestream.image import load_image

from ._report import update_section


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])
    ap.add_argument("--image", default=str(SHIPPED_IMAGE))
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args(argv)
    r = evaluate(["--image", args.image, "--json"])
    img = load_image(args.image)
    plan = memory_plan(img.net, img.lanes)
    ck = read_checkpoint(SHIPPED_IMAGE.with_suffix(".pt")) \
        if args.image == str(SHIPPED_IMAGE) else {}
    _, minutes, steps = training_record(ck)
    dense = sum(pr.weights.size for pr in img.net.projections)
    md = "\n".join([
        "| quantity | value |", "|---|---|",
        f"| validation characters (last 10% of tiny-shakespeare) | {r['val_chars']} |",
        f"| float validation loss | {r['float_val_nats']:.4f} nats/char ({r['float_val_bits']:.4f} bits/char) |",
        f"| golden (integer) validation loss | {r['golden_val_nats']:.4f} nats/char ({r['golden_val_bits']:.4f} bits/char) |",
        f"| quantisation cost (golden - float) | {r['golden_val_nats'] - r['float_val_nats']:+.4f} nats/char |",
        f"| neurons / non-zero synapses | {r['neurons']} / {r['nonzero_synapses']} (weight sparsity {1 - r['nonzero_synapses'] / dense:.3f}) |",
        f"| firing rate per hidden layer | {', '.join(f'{x:.4f}' for x in r['golden_rate'])} |",
        f"| synaptic events per token | {r['synaptic_events_per_token']:.1f} |",
        f"| predicted cycles per token ({r['lanes']} lanes) | {r['cycles_per_token']:.1f} (routing {r['route_cycles_per_token']:.1f}, ideal {r['ideal_route_cycles_per_token']:.1f}, efficiency {r['ideal_route_cycles_per_token'] / r['route_cycles_per_token']:.3f}) |",
        f"| block RAM estimate | {plan.summary()} |",
        f"| training | {steps}, {minutes:.1f} min wall-clock as recorded in the checkpoint |" if minutes else "| training | (not recorded) |",
    ])
    print(md)
    if args.write:
        update_section("Shipped model: quality and activity",
                       "python -m bench.quality " + " ".join(argv if argv is not None else sys.argv[1:]), md)


if __name__ == "__main__":
    main()
