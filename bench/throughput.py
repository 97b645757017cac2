"""Tokens per second of the shipped model on the default board, end to end: core, link, CPU.

    python -m bench.throughput [--chars 2000] [--streams 8] [--lanes 8 16 32]
                               [--stream-tokens 3000] [--tokens 200] [--write] [--json]

Measured in one run (nothing is rebuilt; the bench takes minutes):

* **cycles per token, synaptic events per token, routing efficiency** of the shipped model at
  each ``--lanes`` (the compiler's layout for that many lanes, the golden model with the
  timing of the core built for it, which the cocotb suites prove the RTL meets cycle for
  cycle), over the first ``--chars`` characters of the validation text in ``--streams``
  streams from reset. The default build's lane count (16 on the 85F) gives the board's row.
* **line bytes per token**: the host driver (:class:`sw.client.Client`) generates
  ``--stream-tokens`` tokens with STREAM requests from the golden board
  (:class:`sw.transport.GoldenTransport`, the golden model behind the link protocol, word
  for word what the SoC answers), and every byte the board puts on the line is counted: the
  raw tokens plus each request's STREAM_START and final frames. The per-request overhead
  measured there is then applied at the request size the client settles at for the board's
  own speed (``sw.client.REQUEST_SECONDS`` of tokens per request).
* ``fmax_mhz``: recorded from the last default build, ``bench/results/build-85f.json``
  (``python -m hw.build --json`` writes it as ``result.json``; the file says which commit and
  seed, and whether timing was met; ``stage`` says when the number is nextpnr's estimate
  after placement, for a build whose routing did not finish). ``clock_mhz``: the clock the
  board runs it at (``bench._report.board_clock_mhz``: the build's target where timing was met,
  otherwise Fmax).
* ``cpu_float_tokens_per_second``: the same checkpoint in PyTorch on this CPU, batch 1
  (``bench.generate.float_rate``, the faster of 1 and 2 threads).

Derived: ``compute_tokens_per_second`` = clock / cycles per token; ``link_tokens_per_second`` =
baud / 10 bits / line bytes per token; ``board_tokens_per_second`` = the smaller of the two
(less the idle line time between requests); ``gsops`` = synaptic events per token x board
tokens/s; ``bram_bound_gsops`` = both read ports of every DP16KD holding synapses read every
cycle at the clock (one synapse per read); ``speedup_vs_cpu``. No board has been attached: the
board rates are projections from measured cycles, bytes and the build's timing.

With ``--json`` the last line printed is one JSON object of the results.
"""

import argparse
import json
import sys
import time

from boards.ulx3s import core_config, lane_budget, ulx3s_device
from hw.build import BuildError, check_fit
from spikestream.board import DEFAULT_BAUD, SHIPPED_IMAGE
from spikestream.capacity import lane_memories, lutram_memories
from spikestream.image import Image, image_tag, load_image
from spikestream.memory_map import image_writes
from spikestream.protocol import TOKEN_BODY, Cmd, frame, response, stream_token_bytes
from sw.client import REQUEST_SECONDS, Client
from sw.transport import GoldenTransport, Transport

from ._report import BENCHMARKS, BUILD_RESULT, board_clock_mhz, build_result, update_section
from .core import measure, table
from .generate import float_rate

BITS_PER_BYTE = 10
"""A UART byte on the line: start bit, 8 data bits, stop bit."""

FIGURE = BENCHMARKS.parent / "docs" / "img" / "throughput.png"
"""The chart ``--write`` draws."""


class CountingTransport(Transport):
    """Another transport, counting the bytes read from it (the board's side of the line) and
    written to it."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.response_timeout = inner.response_timeout
        self.down = 0
        self.up = 0

    @property
    def description(self):
        return self.inner.description

    def open(self):
        self.inner.open()

    def close(self):
        self.inner.close()

    def write(self, data):
        self.up += len(data)
        return self.inner.write(data)

    def read(self, size=4096, timeout=None):
        data = self.inner.read(size, timeout)
        self.down += len(data)
        return data


def line_bytes(tokens, config):
    """Generate ``tokens`` tokens with STREAM from the golden board holding the shipped image;
    returns the bytes on the line (down: board to host; up) and the requests made."""
    img = load_image(SHIPPED_IMAGE)
    init = image_writes(Image(net=img.net, lanes=config.lanes), config)
    counting = CountingTransport(GoldenTransport(config, init=init,
                                                 tag=image_tag(SHIPPED_IMAGE.read_bytes())))
    with counting:
        client = Client(counting, log=lambda line: None, progress=False)
        client.identify()
        client.reset()
        first = client.run([0])
        token = list(first)[-1].token
        down0, up0 = counting.down, counting.up
        chunks = list(client.stream(token, tokens))
    got = sum(len(c.tokens) for c in chunks)
    if got != tokens:
        raise SystemExit(f"error: the golden board streamed {got} tokens, not {tokens}")
    return {"tokens": tokens, "requests": len(chunks), "down_bytes": counting.down - down0,
            "up_bytes": counting.up - up0, "token_bytes": stream_token_bytes(config)}


def synapse_blocks(config):
    """DP16KD blocks holding the synapse memories of a core built for ``config``."""
    lut = lutram_memories(config, lane_budget("85f", config.lanes))
    syn = next(m for m in lane_memories(config) if m.name == "syn")
    return 0 if "syn" in lut else config.lanes * syn.block_ram


def fits_85f(lanes):
    """Whether the default ULX3S-85F core at ``lanes`` lanes fits the chip and holds the
    shipped model (laid out for that many lanes): ``"yes"``, or why not (one line)."""
    image = load_image(SHIPPED_IMAGE)
    try:
        config = core_config("85f", lanes)
        check_fit(config, ulx3s_device("85f"), image, lane_budget("85f", lanes))
    except (ValueError, BuildError) as e:
        return str(e).split(";")[0]
    return "yes"


def derive(rows, line, fmax_mhz, cpu_rate, config, baud=DEFAULT_BAUD, clock_mhz=None):
    """The board's rates from the measurements (see the module docstring); the core runs at
    ``clock_mhz`` (default: ``fmax_mhz``)."""
    row = next(r for r in rows if r["lanes"] == config.lanes)
    cycles, events = row["cycles_per_token"], row["events_per_token"]
    clock_mhz = fmax_mhz if clock_mhz is None else clock_mhz
    compute = clock_mhz * 1e6 / cycles
    per_request = (line["down_bytes"] - line["tokens"] * line["token_bytes"]) / line["requests"]
    up_per_request = line["up_bytes"] / line["requests"]
    # The client's requests at the board's speed: REQUEST_SECONDS worth of tokens each.
    chunk = max(1, int(compute * REQUEST_SECONDS))
    byte_s = BITS_PER_BYTE / baud
    link = 1 / ((line["token_bytes"] + per_request / chunk) * byte_s)
    # A request's tokens stream while the core computes; between requests the line carries
    # the final frame and the next request (the core idles).
    busy = max(chunk / compute, chunk * line["token_bytes"] * byte_s)
    idle = (per_request + up_per_request) * byte_s
    board = min(chunk / (busy + idle), link, compute)
    syn_blocks = synapse_blocks(config)
    return {
        "lanes": config.lanes,
        "cycles_per_token": cycles,
        "synaptic_events_per_token": events,
        "routing_efficiency": row["routing_efficiency"],
        "fmax_mhz": fmax_mhz,
        "clock_mhz": clock_mhz,
        "compute_tokens_per_second": compute,
        "line_bytes_per_token": line["token_bytes"] + per_request / chunk,
        "request_overhead_bytes": per_request,
        "tokens_per_request": chunk,
        "link_tokens_per_second": link,
        "board_tokens_per_second": board,
        "gsops": events * board / 1e9,
        "synapse_dp16kd": syn_blocks,
        "bram_bound_gsops": 2 * syn_blocks * clock_mhz * 1e6 / 1e9,
        "cpu_float_tokens_per_second": cpu_rate,
        "speedup_vs_cpu": board / cpu_rate,
        "baud": baud,
    }


def token_frame_bytes(cycles):
    """Line bytes of one GENERATE TOKEN frame of a timestep of ``cycles`` (the way generation
    went before STREAM; its spike count taken as 0, and no field byte needing an escape)."""
    body = TOKEN_BODY.pack(index=1, token=1, cycles=int(cycles), spikes=0)
    return len(frame(response(Cmd.TOKEN, 1, 0, body)))


def plot(result, path):
    """A bar chart of the rates in ``result`` (tokens per second, log scale) to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    r = result
    bars = [
        ("CPU float (PyTorch, batch 1)", r["cpu_float_tokens_per_second"], "measured"),
        ("board, GENERATE: a TOKEN frame per token", r["generate_tokens_per_second"],
         "projected"),
        (f"board, STREAM: compute at {r['clock_mhz']:.1f} MHz", r["board_tokens_per_second"],
         "projected"),
        # (The 100 MHz target's bar only while the board's clock is another.)
        *([("board, STREAM: compute at 100 MHz", 100e6 / r["cycles_per_token"], "target")]
          if r["clock_mhz"] != 100.0 else []),
        ("link cap, STREAM at 3 Mbaud", r["link_tokens_per_second"], "limit"),
    ]
    colours = {"measured": "tab:blue", "projected": "tab:orange", "target": "tab:gray",
               "limit": "tab:green"}
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ys = range(len(bars))
    ax.barh(list(ys), [b[1] for b in bars], color=[colours[b[2]] for b in bars])
    for y, (_, rate, kind) in zip(ys, bars):
        ax.text(rate * 1.05, y, f"{rate:,.0f} ({kind})", va="center", fontsize=8)
    ax.set_yticks(list(ys), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(100, 3e6)
    ax.set_xlabel("tokens per second (log)")
    ax.set_title("Shipped character LM, default ULX3S-85F core (16 lanes): tokens per second",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.throughput",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--chars", type=int, default=2000,
                    help="validation characters per lane count (default 2000)")
    ap.add_argument("--streams", type=int, default=8, help="parallel streams, each from reset")
    ap.add_argument("--lanes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--stream-tokens", type=int, default=3000,
                    help="tokens streamed from the golden board to count line bytes")
    ap.add_argument("--tokens", type=int, default=200, help="tokens for the CPU float rate")
    ap.add_argument("--build-result", default=str(BUILD_RESULT),
                    help="hw.build result.json of the default build (default: the committed one)")
    ap.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)
    for name in ("chars", "streams", "stream_tokens", "tokens"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(n < 1 for n in args.lanes):
        ap.error("--lanes must be positive")

    config = core_config("85f")
    lanes = sorted(set(args.lanes) | {config.lanes})
    build = build_result(args.build_result)
    t0 = time.perf_counter()
    rows = measure(lanes, args.chars, args.streams)
    for row in rows:
        row["fits_85f"] = fits_85f(row["lanes"])
    print(f"cycle model: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    line = line_bytes(args.stream_tokens, config)
    print(f"line: {line['down_bytes']} bytes for {line['tokens']} tokens in "
          f"{line['requests']} STREAM requests", file=sys.stderr)
    tries = [float_rate(args.tokens, n) for n in (1, 2)]
    cpu = max(r["tokens_per_second"] for r in tries)
    result = derive(rows, line, float(build["fmax_mhz"]), cpu, config,
                    clock_mhz=board_clock_mhz(build))
    result["token_frame_bytes"] = token_frame_bytes(result["cycles_per_token"])
    result["generate_tokens_per_second"] = min(
        result["compute_tokens_per_second"],
        DEFAULT_BAUD / BITS_PER_BYTE / result["token_frame_bytes"])
    result.update({"build": {k: build.get(k) for k in ("commit", "seed", "stage", "timing_met",
                                                         "fmax_mhz", "target_mhz", "lut4", "ff",
                                                         "dp16kd", "note")},
                   "line": line, "lanes_rows": rows})
    r = result
    md = "\n".join([
        "| quantity | value | |",
        "|---|---|---|",
        f"| cycles per token ({r['lanes']} lanes) | {r['cycles_per_token']:.1f} | "
        "measured (cycle model = RTL) |",
        f"| synaptic events per token | {r['synaptic_events_per_token']:.0f} | measured |",
        f"| Fmax | {r['fmax_mhz']:.2f} MHz | build result, {build.get('stage', 'after routing')} "
        f"({'timing met' if build.get('timing_met') else 'timing NOT met'}) |",
        f"| board clock | {r['clock_mhz']:.2f} MHz | "
        f"{'the build target (timing met)' if build.get('timing_met') else 'Fmax'} |",
        f"| compute: clock / cycles per token | {r['compute_tokens_per_second']:,.0f} tokens/s "
        "| projected |",
        f"| line bytes per token (STREAM, {r['tokens_per_request']:,} tokens per request, "
        f"{r['request_overhead_bytes']:.0f} bytes of frames each) | "
        f"{r['line_bytes_per_token']:.4f} | measured bytes, golden board |",
        f"| link: {DEFAULT_BAUD / 1e6:g} Mbaud / 10 bits / bytes per token | "
        f"{r['link_tokens_per_second']:,.0f} tokens/s | limit |",
        f"| **board** (smaller, less idle line between requests) | "
        f"**{r['board_tokens_per_second']:,.0f} tokens/s** | projected |",
        f"| synaptic events per second at the board's rate | {r['gsops']:.2f} GSOP/s | projected |",
        f"| block-RAM bound ({r['synapse_dp16kd']} synapse DP16KD x 2 ports x clock) | "
        f"{r['bram_bound_gsops']:.1f} GSOP/s | bound |",
        f"| CPU float (PyTorch, batch 1, this machine) | {r['cpu_float_tokens_per_second']:,.0f} "
        f"tokens/s | measured |",
        f"| board / CPU float | {r['speedup_vs_cpu']:.1f}x | projected |",
        f"| before STREAM: GENERATE, {r['token_frame_bytes']} line bytes per token | "
        f"{r['generate_tokens_per_second']:,.0f} tokens/s | projected |",
    ])
    print(md)
    print(table(rows))
    for row in rows:
        print(f"{row['lanes']} lanes on the 85F: {row['fits_85f']}")
    if args.write:
        cmd = "python -m bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:])
        intro = (f"The shipped model on the default ULX3S-85F build ({config.lanes} lanes), the "
                 f"build recorded in `bench/results/build-85f.json` (commit "
                 f"{build.get('commit', '?')}, nextpnr seed {build.get('seed', '?')}). "
                 f"Cycles: {args.chars} validation characters in {args.streams} streams per lane "
                 f"count. Line bytes: {args.stream_tokens} tokens streamed from the golden board. "
                 "No board attached: board rates are projections from measured cycles, bytes "
                 "and the build's clock.")
        figure_link = FIGURE.relative_to(BENCHMARKS.parent).as_posix()
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        plot(result, FIGURE)
        update_section("Throughput: the board end to end (bench.throughput)", cmd,
                       intro + f"\n\n![tokens per second]({figure_link})\n\n" + md
                       + "\n\nCycles per token and routing efficiency by lane count:\n\n"
                       + table(rows) + "\n\nDoes the default 85F core at "
                       "that many lanes fit and hold the shipped model? "
                       + "; ".join(f"{r['lanes']} lanes: {r['fits_85f']}" for r in rows) + ".")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
