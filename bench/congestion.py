"""Where a build's routing is congested: nextpnr router2's heatmaps as a picture and a table.

    python -m bench.congestion BUILD_DIR [--iteration N] [--png PATH] [--json]

A build run with ``--nextpnr-option=--router2-heatmap=hm`` (``python -m hw.build ...``)
leaves in its build folder, for every router2 iteration ``N``,
``hm_congestion_by_coordinate_N.csv`` (overused wires per tile: one line per column of tiles,
one value per row) and ``hm_congestion_by_net_N.csv`` (``net,overused wires`` lines). This
reads iteration ``N`` (default: the last one there), prints the overuse by region of the die
(the share in the central square of a third of its width and height) and by the module of the
nets (the design hierarchy up to three levels, lanes counted together), and with ``--png``
draws the per-tile overuse over the die.

With ``--json`` the last line printed is one JSON object: ``iteration``, ``overused``
(the sum over tiles), ``centre_share``, ``modules`` (name and overuse, largest first).
"""

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from spikestream.files import FileProblem, atomic_write, check_output, read_regular

__all__ = ["iterations", "read_iteration", "summarise", "main"]

CSV_LIMIT = 64 << 20
"""Largest heatmap file read (a 126 x 95-tile 85F writes about 25 kB per coordinate file)."""
MAX_TILES = 1 << 20
MODULE_DEPTH = 3


def iterations(build_dir):
    """The router2 iterations that have both heatmaps in ``build_dir``, ascending."""
    pattern = re.compile(r"^hm_congestion_by_coordinate_(\d{1,6})\.csv$")
    found = []
    for p in Path(build_dir).iterdir():
        m = pattern.match(p.name)
        if m and (Path(build_dir) / f"hm_congestion_by_net_{m.group(1)}.csv").is_file():
            found.append(int(m.group(1)))
    return sorted(found)


def _numbers(text, path):
    rows = []
    for k, line in enumerate(text.splitlines(), 1):
        cells = [c for c in line.split(",") if c.strip()]
        try:
            rows.append([int(c) for c in cells])
        except ValueError:
            raise FileProblem(f"{path}:{k}: not a line of integers") from None
        if any(v < 0 for v in rows[-1]):
            raise FileProblem(f"{path}:{k}: a negative count")
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise FileProblem(f"{path}: not a rectangle of counts (empty or ragged lines)")
    if len(rows) * len(rows[0]) > MAX_TILES:
        raise FileProblem(f"{path}: more than {MAX_TILES} tiles")
    return np.array(rows, dtype=np.int64)


def read_iteration(build_dir, n):
    """``(grid, nets)`` of iteration ``n``: per-tile overuse (``grid[x, y]``) and
    ``{net: overuse}``."""
    build_dir = Path(build_dir)
    path = build_dir / f"hm_congestion_by_coordinate_{n}.csv"
    grid = _numbers(read_regular(path, CSV_LIMIT, "heatmap").decode("ascii", "replace"),
                    path)
    path = build_dir / f"hm_congestion_by_net_{n}.csv"
    nets = {}
    text = read_regular(path, CSV_LIMIT, "heatmap").decode("utf-8", "replace")
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, _, value = line.rpartition(",")
        if not name or not value.strip().isdigit():
            raise FileProblem(f"{path}:{k}: not a 'net,count' line")
        nets[name] = nets.get(name, 0) + int(value)
    return grid, nets


def module_of(net):
    """The module a net belongs to: its hierarchical name up to :data:`MODULE_DEPTH`
    levels, every ``laneN`` counted as ``lane*``."""
    parts = re.sub(r"\blane\d+\b", "lane*", net).split(".")
    head = parts[:MODULE_DEPTH] if len(parts) > MODULE_DEPTH else parts[:-1] or parts
    return ".".join(head)


def summarise(grid, nets):
    """Overuse in all, the share in the central third (in each direction) of the die, and
    per module, largest first."""
    total = int(grid.sum())
    w, h = grid.shape
    centre = int(grid[w // 3:w - w // 3, h // 3:h - h // 3].sum())
    modules = {}
    for net, v in nets.items():
        key = module_of(net)
        modules[key] = modules.get(key, 0) + v
    ranked = sorted(modules.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"overused": total, "centre_share": centre / total if total else 0.0,
            "modules": [{"module": k, "overuse": v} for k, v in ranked]}


def draw(grid, n, path):
    """The per-tile overuse over the die, as a PNG."""
    import matplotlib          # heavy, and only needed for the picture
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5.5))
    im = ax.imshow(grid.T, origin="upper", cmap="magma", interpolation="nearest")
    ax.set_xlabel("tile column (x)")
    ax.set_ylabel("tile row (y)")
    ax.set_title(f"router2 overused wires per tile, iteration {n} ({int(grid.sum())} in all)")
    fig.colorbar(im, ax=ax, label="overused wires")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.congestion", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("build_dir", metavar="BUILD_DIR",
                    help="a build folder of a build run with --router2-heatmap=hm")
    ap.add_argument("--iteration", type=int, metavar="N",
                    help="router2 iteration (default: the last one with heatmaps)")
    ap.add_argument("--png", metavar="PATH", help="write the per-tile picture here")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = ap.parse_args(argv)
    try:
        build_dir = Path(args.build_dir)
        if not build_dir.is_dir():
            raise FileProblem(f"{build_dir}: no such build folder")
        found = iterations(build_dir)
        if not found:
            raise FileProblem(f"{build_dir}: no router2 heatmaps (build with "
                              "--nextpnr-option=--router2-heatmap=hm)")
        n = found[-1] if args.iteration is None else args.iteration
        if n not in found:
            raise FileProblem(f"{build_dir}: no heatmaps of iteration {n} (there are "
                              f"{found[0]}..{found[-1]})")
        if args.png:
            check_output(args.png, what="picture")
        grid, nets = read_iteration(build_dir, n)
        result = {"iteration": n, **summarise(grid, nets)}
        if args.png:
            draw(grid, n, args.png)
    except FileProblem as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"iteration {n}: {result['overused']} overused wires, "
          f"{100 * result['centre_share']:.0f}% in the central third of the die")
    for row in result["modules"][:12]:
        print(f"  {row['overuse']:6d}  {row['module']}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
