"""Time and peak memory to load network images: the shipped one, a valid one ten times its
size, and the issue-14 image that claims 32 GiB.

    python -m bench.imageload [--repeat 5] [--json] [--write]

Cases (the last two are built in a temporary folder, with a fixed seed):

* ``shipped``: ``models/pretrained/shakespeare.img`` (1,153 neurons, 115,740 synapses,
  16 lanes).
* ``10x``: the shape of the network shipped before issue 18 (one layer of 1024 ALIF
  neurons) ten times wider: 10,240 ALIF neurons, the same four
  projections at the same density (half of every weight non-zero), random int8 weights,
  16 lanes: about ten times the synapses and the file.
* ``claims-32GiB``: the reproducer of issue 14: two 32,000-neuron populations joined by four
  projections of one synapse each (plus one into the readout), 1 lane. Valid; a loader that
  builds dense weight matrices asks for 4 x 32,000 x 32,000 x 8 bytes = 30.5 GiB.

Each case is loaded with ``spikestream.image.load_image`` in a fresh Python process (so one
case's memory cannot hide another's): first for the growth of the process's peak resident
set (``VmHWM``; Linux keeps ``ru_maxrss`` across ``exec``) over the load; then under :mod:`tracemalloc` (NumPy's buffers included)
for the peak of ``parse_image`` on the file's bytes (the decode) and of ``load_image`` (read
included); then ``--repeat`` more times for the time (best wall-clock and best CPU time).
Reported per case: file size, neurons, synapses, the dense weight bytes its sizes imply
(``8 x source x target`` summed over projections: what a dense decoder allocates), and the
peaks, the decode's also as a multiple of the file size.

With ``--json`` the last line printed is one JSON object: ``{"cases": [...]}``, one object
per case with the columns of the table.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from spikestream.board import SHIPPED_IMAGE
from spikestream.formats import DECAY_ONE, NeuronKind
from spikestream.image import load_image, save_image
from spikestream.network import INPUT, Network, Projection, make_population

from ._report import update_section

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, resource, sys, time, tracemalloc
from spikestream.image import load_image, parse_image, read_image_bytes
path, repeat = sys.argv[1], int(sys.argv[2])

def hwm():
    # VmHWM is this process's own peak; ru_maxrss would keep the parent's across exec
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

rss0 = hwm()
img = load_image(path)
rss1 = hwm()
del img
data = read_image_bytes(path)
tracemalloc.start()
img = parse_image(data)
parse_peak = tracemalloc.get_traced_memory()[1]
del img, data
tracemalloc.reset_peak()
img = load_image(path)
load_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
del img
wall, cpu = [], []
for _ in range(repeat):
    w, c = time.perf_counter(), time.process_time()
    img = load_image(path)
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
    del img
print(json.dumps({"rss_growth": (rss1 - rss0) * 1024, "parse_peak": parse_peak,
                  "load_peak": load_peak, "wall_s": min(wall), "cpu_s": min(cpu)}))
"""


def ten_times_shipped(seed=0, scale=10):
    """The shipped network's shape, ``scale`` times wider, with random weights."""
    rng = np.random.default_rng(seed)
    shipped = load_image(SHIPPED_IMAGE).net
    vocab = list(shipped.vocab)
    v, n = len(vocab), 1024 * scale
    hidden = make_population("h0", NeuronKind.ALIF, n, alpha=rng.integers(200, DECAY_ONE, n),
                             theta=rng.integers(50, 400, n), rho=rng.integers(200, DECAY_ONE, n),
                             jump=rng.integers(0, 100, n), bias=rng.integers(-50, 50, n))
    readout = make_population("readout", NeuronKind.READOUT, v, alpha=DECAY_ONE, theta=0,
                              bias=rng.integers(-500, 500, v))

    def half(src, dst, delay, rows, cols):
        """A projection with half of its weights non-zero."""
        flat = rng.permutation(rows * cols)[:rows * cols // 2]
        w = rng.integers(1, 128, len(flat)) * rng.choice([-1, 1], len(flat))
        return Projection.from_synapses(src, dst, delay, (rows, cols), flat // cols,
                                        flat % cols, w)
    return Network(vocab=vocab, populations=[hidden, readout], readout=1, projections=[
        half(INPUT, 0, 0, v, n), half(INPUT, 0, 1, v, n), half(0, 1, 0, n, v),
        half(INPUT, 1, 0, v, v)], meta={"bench": "10x the shipped network"}).check()


def claims_32_gib(size=32000):
    """Issue 14's reproducer: a valid 2.4 MB image whose dense weights would take 30.5 GiB."""
    vocab = [chr(c) for c in range(ord("!"), ord("!") + 65)]
    pops = [make_population("a", NeuronKind.LIF, size), make_population("b", NeuronKind.LIF, size),
            make_population("readout", NeuronKind.READOUT, len(vocab), theta=0)]

    def one(src, dst, delay, rows, cols):
        return Projection.from_synapses(src, dst, delay, (rows, cols), [rows - 1], [cols - 1],
                                        [5])
    return Network(vocab=vocab, populations=pops, readout=2, projections=[
        one(0, 0, 1, size, size), one(1, 0, 1, size, size), one(0, 1, 0, size, size),
        one(1, 1, 1, size, size), one(INPUT, 2, 0, len(vocab), len(vocab))]).check()


def measure(path, repeat):
    """Load ``path`` in a fresh process; returns the case's row."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(repeat)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"error: loading {path} failed: {r.stderr.strip().splitlines()[-1]}")
    row = json.loads(r.stdout.strip().splitlines()[-1])
    net = load_image(path).net
    row.update(bytes=Path(path).stat().st_size, neurons=sum(p.size for p in net.populations),
               synapses=net.nonzero_synapses,
               dense_bytes=sum(8 * pr.shape[0] * pr.shape[1] for pr in net.projections))
    return row


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def table(rows):
    mib = lambda b: f"{b / 2 ** 20:,.1f} MiB"
    out = ["| image | file | neurons | synapses | dense weights its sizes imply | load time "
           "(wall / CPU) | peak RSS growth (first load) | decode peak (tracemalloc) | decode "
           "peak / file | load peak (tracemalloc, read included) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dense = (f"{r['dense_bytes'] / 2 ** 30:,.1f} GiB" if r["dense_bytes"] >= 2 ** 30
                 else mib(r["dense_bytes"]))
        out.append(f"| {r['case']} | {mib(r['bytes'])} | {r['neurons']:,} | {r['synapses']:,} | "
                   f"{dense} | {1e3 * r['wall_s']:,.0f} ms / {1e3 * r['cpu_s']:,.0f} ms | "
                   f"{mib(r['rss_growth'])} | {mib(r['parse_peak'])} | "
                   f"{r['parse_peak'] / r['bytes']:.1f} | {mib(r['load_peak'])} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.imageload",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed loads per case (default 5)")
    ap.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    rows = []
    with tempfile.TemporaryDirectory(prefix="imageload-") as tmp:
        cases = [("shipped", SHIPPED_IMAGE)]
        for name, build, lanes in (("10x", ten_times_shipped, 16),
                                   ("claims-32GiB", claims_32_gib, 1)):
            path = Path(tmp) / f"{name}.img"
            save_image(build(), lanes, path)
            cases.append((name, path))
        for name, path in cases:
            rows.append({"case": name, **measure(path, args.repeat)})
            print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    body = table(rows)
    body += (f"\n\nMachine: {_cpu()}, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f} at the end of the run (times vary with it; the "
             "memory columns do not).")
    body += ("\n\nEach image is loaded (`spikestream.image.load_image`: read, check, decode, "
             "canonical-layout check) in a fresh process; times are the best of "
             f"{args.repeat} loads. \"Peak RSS growth\": how far the first load raised the "
             "process's resident high-water mark (over the interpreter and its imports). "
             "\"Decode peak\": tracemalloc's peak (NumPy buffers included) over "
             "`parse_image` of the file's bytes already in memory; \"load peak\" the same "
             "over `load_image`, reading included. The decoder is sparse: memory follows the "
             "synapses, neurons and row pointers the file holds, never the dense matrices "
             "its sizes imply (the dense decoder before issue 14 allocated the \"dense "
             "weights\" column, as int64, before any check).")
    print(body)
    if args.write:
        cmd = "python -m bench.imageload " + " ".join(argv if argv is not None else sys.argv[1:])
        update_section("Image loading: time and peak memory", cmd.strip(), body)
    if args.json:
        print(json.dumps({"cases": rows}))


if __name__ == "__main__":
    main()
