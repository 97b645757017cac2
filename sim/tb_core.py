"""cocotb testbench of :class:`hw.core.Core` (built with ``trace=True``) against the golden
model, timestep by timestep and cycle by cycle.

Every STEP is checked in full by :func:`sim.core_check.compare_step` against
``GoldenCore(net, lanes, timing=core.timing)``: every neuron's spike value ``q``, ``v``,
``a`` and ``s`` (from the trace port, which shows each lane's neuron write-backs), the
output populations' spikes and membranes as the host reads them after the step
(:func:`spikestream.memory_map.output_reads`), the sampled token, the spike total, the
cycle count the core reports and the one measured on its ports
(``result.valid`` rises ``COMMAND_LATENCY + cycles`` clock edges after the edge that
completes the command's handshake: it is first high in the cycle ``COMMAND_LATENCY + 1 +
cycles`` after the handshake cycle).

Python wakes are what a cocotb run costs, so: ports are driven and sampled at falling
edges (values there are settled on every simulator), and a port's ``ready`` is read in the
cycle before the edge it applies to, which the core allows because its ``ready`` s depend
only on its state and on other ports held still; result latencies are measured from
simulation time (one wake per command, not per cycle); the trace monitor sleeps until
``trace.valid`` rises and reads the whole packed bus of all lanes once per cycle while it
stays high.

Run through :func:`sim.runner.build_and_run`; its ``config`` says what to run:

``core`` (dict, required)
    The :class:`~spikestream.memory_map.CoreConfig` fields the top was built with.
``init`` (dict)
    What the top was built with as ``init``: ``{"image": path}`` (an image file) or
    ``{"recipe", "seed"}`` (:func:`sim.netgen.recipe_network`), plus the
    ``temperature_word`` and ``seed_word`` given to :func:`spikestream.memory_map.settings_writes`
    (see :func:`init_writes`).
``lm`` (dict)
    :func:`test_shipped_lm`: ``text`` (path) and ``offset`` of the text fed in,
    ``text_steps`` (at the built-in temperature), ``greedy_steps`` (temperature 0),
    ``feedback_steps`` (its own samples fed back, after reseeding with ``reseed``) and
    ``unchecked_steps`` (timed without the monitor and checker, to measure speed).
``init_steps`` (int)
    :func:`test_init_matches_write_port`: timesteps to run from the built-in image.
``nets`` (list of dict)
    :func:`test_random_nets`: each ``recipe``, ``seed``, ``steps``, ``temperature_word``,
    ``rng_seed`` and ``reset_at`` (steps before which a RESET is sent). The general
    recipes' inputs are :func:`sim.netgen.stimulus` (spike inputs written before every
    STEP, but for some silent steps: nothing written), the others' random tokens.
``classify`` (list of dict)
    :func:`test_classifiers`: each an ``image`` (path of a TextCNN sentence classifier,
    :mod:`models.textcnn`) and its ``sentences`` (text), each run from a RESET, one word per
    timestep as the host encodes it (:func:`models.textcnn.encode_sentence`); the class
    the core reports after each sentence's last step is written to ``classify.json``.
``corrupt`` (dict)
    :func:`test_corrupted_weight`: the network (``recipe``, ``seed``), ``tokens``, and the
    synapse word to overwrite after loading (``lane``, ``addr``, ``data``).

Mismatches are also written to ``mismatches.json`` in the run folder (the current
directory), so that a test can compare them with what it predicted.
"""

import json
import time
from pathlib import Path

import cocotb
import numpy as np
from amaranth import Shape
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout

from hw.core.layouts import (Command, Result, read_request_layout, read_response_layout,
                             trace_layout, write_request_layout)
from spikestream.timing import COMMAND_LATENCY, core_timing
from spikestream.memory_map import (CoreConfig, CoreReg, Mem, Op, Write, image_writes,
                                    input_writes, output_reads, settings_writes)
from models.data import Vocab
from models.golden import GoldenCore
from models.mr import tokenize
from models.textcnn import encode_sentence, read_text_meta
from spikestream.image import Image, load_image
from sim.core_check import (NeuronMap, Observed, WriteBack, compare_step,
                            format_mismatches)
from sim.netgen import recipe_network, stimulus
from sim.runner import load_config

__all__ = ["CLK_NS", "GENERAL", "init_network", "init_writes", "CoreTB", "Scoreboard"]

GENERAL = ("general", "delays", "sensor")
"""The recipes of general networks (spike inputs, delays, multi-level spikes, outputs)."""

CLK_NS = 10
CLK_PS = 1000 * CLK_NS


def _now_ps():
    # Whole picoseconds (the simulation's precision), so that differences are exact.
    return round(get_sim_time("ps"))


def init_network(init, lanes):
    """The network an ``init`` description (see the module docstring) names."""
    if "image" in init:
        image = load_image(init["image"])
        if image.lanes != lanes:
            raise ValueError(f"{init['image']} is laid out for {image.lanes} lanes, not {lanes}")
        return image.net
    return recipe_network(init["recipe"], lanes, init["seed"])


def init_writes(init, config):
    """The writes that an ``init`` description loads: the image, then the settings."""
    net = init_network(init, config.lanes)
    return (image_writes(Image(net=net, lanes=config.lanes), config) +
            settings_writes(temperature_word=init.get("temperature_word"),
                            seed=init.get("seed_word")))


def _fields(layout):
    """``{name: (offset, width, signed)}`` of an Amaranth struct layout."""
    return {name: (f.offset, f.width, Shape.cast(f.shape).signed) for name, f in layout}


def _get(word, spec):
    offset, width, signed = spec
    x = (word >> offset) & ((1 << width) - 1)
    return x - (1 << width) if signed and x >> (width - 1) else x


def _put(values, specs):
    word = 0
    for name, x in values.items():
        offset, width, _ = specs[name]
        if not 0 <= int(x) < (1 << width):
            raise ValueError(f"{name} = {x} does not fit the port's {width} bits")
        word |= int(x) << offset
    return word


class CoreTB:
    """Clock, port drivers and the trace monitor of one core.

    Every driver method starts and returns at a falling clock edge.
    """

    def __init__(self, dut, config):
        self.dut, self.config = dut, config
        self.timing = core_timing(config.stages)
        self._write = _fields(write_request_layout(config))
        self._read = _fields(read_request_layout(config))
        self._read_data = _fields(read_response_layout(config))
        self._cmd = _fields(Command)
        self._result = _fields(Result)
        lane = trace_layout(config)
        self._lane_bits = lane.size
        self._trace = _fields(lane)
        self.writebacks = []
        self.fall = FallingEdge(dut.clk)
        dut.rst.value = 0
        for port in ("write__valid", "read__valid", "cmd__valid"):
            getattr(dut, port).value = 0
        dut.result__ready.value = 1          # results are always taken at once
        dut.read_data__ready.value = 1
        # Low first: the first rising edge comes after the inputs above are in force (an
        # edge at time 0 would take them as X on Icarus).
        Clock(dut.clk, CLK_NS, unit="ns").start(start_high=False)
        self._monitor_task = cocotb.start_soon(self._monitor())

    def stop_monitor(self):
        """Stop watching the trace port (to time the core and the port drivers alone)."""
        self._monitor_task.cancel()

    async def start(self):
        """Wait for the first falling edge after a rising one, then read a register.

        The read is harmless and makes Icarus evaluate the core's ready signals: in the
        Verilog that Yosys writes they are ``always @*`` blocks of registers with initial
        values, which Icarus leaves X until one of their inputs first changes.
        """
        await RisingEdge(self.dut.clk)
        await self.fall
        await self.read(Mem.CORE, 0, CoreReg.VOCAB)

    async def _monitor(self):
        dut = self.dut
        valid, bus = dut.trace__valid, dut.trace__lanes
        L, W = self.config.lanes, self._lane_bits
        t = self._trace
        v_off, a_off = t["valid"][0], t["addr"][0]
        amask = (1 << t["addr"][1]) - 1
        while True:
            await RisingEdge(valid)
            while True:
                await self.fall
                if not int(valid.value):
                    break
                word = bus.value.to_unsigned()
                for lane in range(L):
                    x = word >> (lane * W)
                    if (x >> v_off) & 1:
                        self.writebacks.append(WriteBack(
                            lane, (x >> a_off) & amask, _get(x, t["q"]),
                            _get(x, t["v"]), _get(x, t["a"]), _get(x, t["s"])))

    async def write(self, writes):
        """Push ``writes`` (:class:`spikestream.memory_map.Write`) through the write port."""
        dut = self.dut
        specs = self._write
        dut.write__valid.value = 1
        for wr in writes:
            dut.write__payload.value = _put({"mem": int(wr.mem), "lane": wr.lane,
                                             "addr": wr.addr, "data": wr.data}, specs)
            while True:
                ready = int(dut.write__ready.value)     # in force at the coming edge
                await self.fall
                if ready:
                    break
        dut.write__valid.value = 0

    async def read(self, mem, lane, addr):
        """Read one word through the read port; returns ``(data, error)``."""
        dut = self.dut
        dut.read__payload.value = _put({"mem": int(mem), "lane": lane, "addr": addr},
                                       self._read)
        dut.read__valid.value = 1
        while True:
            ready = int(dut.read__ready.value)
            await self.fall
            if ready:
                break
        dut.read__valid.value = 0
        await with_timeout(RisingEdge(dut.read_data__valid), 1000 * CLK_NS, "ns")
        await self.fall
        word = dut.read_data__payload.value.to_unsigned()
        return _get(word, self._read_data["data"]), _get(word, self._read_data["error"])

    async def command(self, op, token=0, limit=1_000_000):
        """Send one command; returns ``(result fields, measured cycles)``: the clock edges
        from the one that took the command to the one at which ``result.valid`` rose, less
        ``COMMAND_LATENCY`` (for a STEP, its cycle count)."""
        dut = self.dut
        dut.cmd__payload.value = _put({"op": int(op), "token": token}, self._cmd)
        dut.cmd__valid.value = 1
        while True:
            ready = int(dut.cmd__ready.value)
            now = _now_ps()
            await self.fall
            if ready:
                break
        dut.cmd__valid.value = 0
        handshake = now + CLK_PS // 2       # the rising edge that took the command
        if int(dut.result__valid.value):
            raise AssertionError(f"{Op(op).name}: result.valid already high one cycle after "
                                 "the command was taken")
        await with_timeout(RisingEdge(dut.result__valid), limit * CLK_NS, "ns")
        rose = _now_ps()
        await self.fall
        word = dut.result__payload.value.to_unsigned()
        result = {name: _get(word, spec) for name, spec in self._result.items()}
        edges, off = divmod(rose - handshake, CLK_PS)
        if off:
            raise AssertionError(f"result.valid rose between clock edges ({rose} ps)")
        return result, edges - COMMAND_LATENCY

    async def step(self, token, limit=1_000_000, image=None):
        """Run one STEP; returns the :class:`~sim.core_check.Observed`, with the outputs of
        ``image``'s network read after it (if given and it has any)."""
        self.writebacks = []
        result, measured = await self.command(Op.STEP, token, limit)
        wbs, self.writebacks = self.writebacks, []
        outputs = None
        if image is not None and image.net.outputs and not result["error"]:
            outputs = await self.read_outputs(image)
        return Observed(error=result["error"], token=result["token"], cycles=result["cycles"],
                        measured=measured, spikes=result["spikes"], writebacks=wbs,
                        outputs=outputs)

    async def read_outputs(self, image):
        """The :class:`~spikestream.memory_map.Outputs` of the last STEP, read as a host
        does (:func:`spikestream.memory_map.output_reads`)."""
        proc = output_reads(image, self.config)
        try:
            request = next(proc)
            while True:
                words = []
                for k in range(request.count):
                    word, error = await self.read(request.mem, request.lane, request.addr + k)
                    assert not error, f"read refused: {request}"
                    words.append(word)
                request = proc.send(words)
        except StopIteration as done:
            return done.value

    async def reset(self):
        """The RESET command (clears state, previous spikes and token)."""
        result, _ = await self.command(Op.RESET)
        assert result["error"] == 0 and result["op"] == Op.RESET, result

    async def load(self, net, temperature_word=None, seed=None):
        """Load ``net`` and the sampler settings through the write port, then RESET."""
        writes = (image_writes(Image(net=net, lanes=self.config.lanes), self.config) +
                  settings_writes(temperature_word=temperature_word, seed=seed))
        await self.write(writes)
        await self.reset()
        return len(writes)


class Scoreboard:
    """Runs the golden model beside the core and collects :class:`Mismatch` es.

    Parameters
    ----------
    net, lanes, timing
        As for :class:`models.golden.GoldenCore`.
    name : str
        Says which network a report is about.
    """

    def __init__(self, net, lanes, timing, name, temperature_word=0, seed=0):
        self.golden = GoldenCore(net, lanes, timing=timing)
        self.golden.set_temperature_word(temperature_word or 0)
        self.golden.seed(seed or 0)
        self.neurons = NeuronMap(net, lanes)
        self.name = name
        self.net = net
        self.steps = 0
        self.cycles = 0
        self.mismatches = []
        self.observed = []
        self.seconds = 0.0          # spent in the golden model and the comparison

    def check(self, token_in, observed, spikes=None):
        """Step the golden model with ``token_in`` (and the spike inputs' vectors
        ``spikes``) and compare; returns this step's mismatches."""
        start = time.perf_counter()
        expected = self.golden.step([token_in] if self.net.has_token_input else None,
                                    spikes=spikes or [])
        found = compare_step(self.steps, token_in, expected, observed, self.neurons)
        self.seconds += time.perf_counter() - start
        self.mismatches += found
        self.observed.append(observed)
        self.steps += 1
        self.cycles += int(expected.cycles[0])
        return found

    def report(self):
        return f"{self.name}: {format_mismatches(self.mismatches)}"


async def run_steps(tb, board, tokens=None, *, count=None, first=None, strict=True,
                    spikes=None, image=None):
    """Run STEPs, checking each on ``board``: the given ``tokens`` (with, per step, the
    spike inputs' vectors ``spikes``, written before it unless all are zero at an even
    step: then nothing is written), or ``count`` steps that feed back the core's own
    sampled token starting from ``first``. With ``image`` (of the board's network) the
    outputs are read and checked after every step. Returns the last token the core
    sampled; stops at the first step that mismatches if ``strict``.
    """
    token = first
    feed = tokens if tokens is not None else [None] * count
    for t, given in enumerate(feed):
        token_in = given if given is not None else token
        vectors = spikes[t] if spikes is not None else []
        if image is not None and (any(x.any() for x in vectors) or board.steps % 2):
            await tb.write(input_writes(image, tb.config, vectors))
        observed = await tb.step(token_in, limit=_limit(board), image=image)
        found = board.check(token_in, observed, vectors)
        token = observed.token
        if found and strict:
            _dump(board.mismatches)
            raise AssertionError(board.report())
    return token


def _limit(board):
    # A timestep cannot take longer than every synapse walked one at a time plus every phase.
    net = board.net
    return 4 * (net.nonzero_synapses + sum(p.size for p in net.populations) +
                sum(pr.weights.shape[0] for pr in net.projections)) + 10_000


def _dump(mismatches):
    Path("mismatches.json").write_text(json.dumps([m.as_dict() for m in mismatches],
                                                  indent=1))


def _setup(dut):
    config = load_config({})
    core = CoreConfig(**config["core"])
    return config, core, CoreTB(dut, core)


@cocotb.test()
async def test_shipped_lm(dut):
    """The shipped language model, preloaded through ``init``: real text, then argmax, then
    its own samples fed back, every neuron checked every timestep."""
    config, core, tb = _setup(dut)
    init, lm = config["init"], config["lm"]
    image = load_image(init["image"])
    board = Scoreboard(image.net, core.lanes, tb.timing, "shipped LM",
                       init.get("temperature_word"), init.get("seed_word"))
    vocab = Vocab(image.net.vocab)
    text = Path(lm["text"]).read_text(encoding="utf-8")
    n_text = lm["text_steps"] + lm["greedy_steps"]
    tokens = vocab.encode(text[lm["offset"]:lm["offset"] + n_text])
    await tb.start()
    wall, sim0 = time.perf_counter(), get_sim_time("ns")
    # No writes and no RESET: power-up is the image, the settings and a reset state.
    await run_steps(tb, board, tokens[:lm["text_steps"]])
    await tb.write(settings_writes(temperature_word=0))
    board.golden.set_temperature_word(0)
    last = await run_steps(tb, board, tokens[lm["text_steps"]:])
    await tb.write(settings_writes(temperature_word=init["temperature_word"], seed=lm["reseed"]))
    board.golden.set_temperature_word(init["temperature_word"])
    board.golden.seed(lm["reseed"])
    await run_steps(tb, board, count=lm["feedback_steps"], first=last)
    wall = time.perf_counter() - wall
    clocks = (get_sim_time("ns") - sim0) / CLK_NS
    generated = vocab.decode([o.token for o in board.observed[-lm["feedback_steps"]:]])
    # The same without the trace monitor and the checker: the model and the port drivers.
    tb.stop_monitor()
    bare, sim0 = time.perf_counter(), get_sim_time("ns")
    token = board.observed[-1].token
    for _ in range(lm.get("unchecked_steps", 0)):
        result, _ = await tb.command(Op.STEP, token)
        token = result["token"]
    bare = time.perf_counter() - bare
    bare_clocks = (get_sim_time("ns") - sim0) / CLK_NS
    stats = {"steps": board.steps, "core_cycles": board.cycles, "clock_cycles": clocks,
             "wall_s": wall, "clocks_per_s": clocks / wall, "checker_s": board.seconds,
             "unchecked_clocks": bare_clocks, "unchecked_s": bare,
             "unchecked_clocks_per_s": bare_clocks / bare if bare else None,
             "writebacks": sum(len(o.writebacks) for o in board.observed),
             "generated": generated}
    Path("lm_stats.json").write_text(json.dumps(stats, indent=1))
    dut._log.info("shipped LM: %d steps, %d core cycles, %.0f clock cycles in %.1f s "
                  "(%.0f cycles/s; %.1f s of it in the golden model and checker); "
                  "generated %r", board.steps, board.cycles, clocks, wall, clocks / wall,
                  board.seconds, generated)
    assert board.steps == len(tokens) + lm["feedback_steps"]


@cocotb.test()
async def test_init_matches_write_port(dut):
    """The network built in through ``init`` runs as the golden model from power-up, and
    exactly as it does after loading the same writes through the write port."""
    config, core, tb = _setup(dut)
    init = config["init"]
    net = init_network(init, core.lanes)
    image = Image(net=net, lanes=core.lanes)
    if init.get("recipe") in GENERAL:
        steps = stimulus(net, init["seed"], config["init_steps"])
        tokens, spikes = [tok for tok, _ in steps], [sp for _, sp in steps]
    else:
        rng = np.random.default_rng(init["seed"])
        tokens = rng.integers(0, net.vocab_size, config["init_steps"]).tolist()
        spikes = [[] for _ in tokens]
    await tb.start()
    preloaded = Scoreboard(net, core.lanes, tb.timing, "preloaded",
                           init.get("temperature_word"), init.get("seed_word"))
    await run_steps(tb, preloaded, tokens, spikes=spikes, image=image)
    await tb.write(init_writes(init, core))
    await tb.reset()
    loaded = Scoreboard(net, core.lanes, tb.timing, "loaded through the write port",
                        init.get("temperature_word"), init.get("seed_word"))
    await run_steps(tb, loaded, tokens, spikes=spikes, image=image)
    for t, (a, b) in enumerate(zip(preloaded.observed, loaded.observed)):
        assert (a.token, a.cycles, a.measured, a.spikes, a.writebacks, a.outputs) == \
               (b.token, b.cycles, b.measured, b.spikes, b.writebacks, b.outputs), \
               f"step {t}: preloaded and loaded cores differ"


@cocotb.test()
async def test_random_nets(dut):
    """Seeded random networks loaded through the write port (with RESETs, sampling
    temperatures and seeds, and one refused out-of-vocabulary STEP each)."""
    config, core, tb = _setup(dut)
    await tb.start()
    failed = []
    totals = {"nets": 0, "steps": 0, "writebacks": 0, "outputs": 0}
    for spec in config["nets"]:
        net = recipe_network(spec["recipe"], core.lanes, spec["seed"])
        name = f"{spec['recipe']} seed {spec['seed']} ({core.lanes} lanes)"
        image = Image(net=net, lanes=core.lanes)
        core.check_image(image)
        tw, seed = spec.get("temperature_word", 0), spec.get("rng_seed", 0)
        writes = await tb.load(net, temperature_word=tw, seed=seed)
        board = Scoreboard(net, core.lanes, tb.timing, name, tw, seed)
        if spec["recipe"] in GENERAL:
            steps = stimulus(net, spec["seed"], spec["steps"])
            tokens, spikes = [tok for tok, _ in steps], [sp for _, sp in steps]
        else:
            rng = np.random.default_rng(spec["seed"])
            tokens = rng.integers(0, net.vocab_size, spec["steps"]).tolist()
            spikes = [[] for _ in tokens]
        try:
            for t, token in enumerate(tokens):
                if t in spec.get("reset_at", ()):
                    await tb.reset()
                    board.golden.reset()
                if t == len(tokens) // 2 and net.has_token_input \
                        and net.vocab_size < core.max_vocab:
                    # Refused: no phase runs, no state changes (the next steps show it).
                    bad = await tb.step(net.vocab_size)
                    assert bad.error == 1 and not bad.writebacks, \
                        f"{name}: STEP {net.vocab_size} (outside the vocabulary) ran: {bad}"
                await run_steps(tb, board, [token], spikes=[spikes[t]], image=image)
        except AssertionError as error:
            failed.append(str(error))
            continue
        totals["nets"] += 1
        totals["steps"] += board.steps
        totals["writebacks"] += sum(len(o.writebacks) for o in board.observed)
        totals["outputs"] += sum(o.outputs is not None for o in board.observed)
        dut._log.info("%s: %d writes, %d steps, %d core cycles, %d write-backs checked",
                      name, writes, board.steps, board.cycles,
                      sum(len(o.writebacks) for o in board.observed))
    Path("random_nets.json").write_text(json.dumps(totals, indent=1))
    assert not failed, "\n".join(failed)


@cocotb.test()
async def test_classifiers(dut):
    """TextCNN sentence classifier images (MR) loaded through the write port, real
    sentences run as the host runs them: every neuron, every step, and the class."""
    config, core, tb = _setup(dut)
    await tb.start()
    report = []
    for spec in config["classify"]:
        net = load_image(spec["image"]).net
        tm = read_text_meta(net)
        image = Image(net=net, lanes=core.lanes)
        core.check_image(image)
        # The class is the argmax: temperature 0, as spikestream classify sets it.
        writes = await tb.load(net, temperature_word=0, seed=0)
        board = Scoreboard(net, core.lanes, tb.timing, Path(spec["image"]).name)
        classes = []
        for text in spec["sentences"]:
            x = encode_sentence(tm, tm.vocab.encode(tokenize(text))).astype(np.int64)
            await tb.reset()
            board.golden.reset()
            await run_steps(tb, board, [0] * len(x), spikes=[[row] for row in x],
                            image=image)
            classes.append(board.observed[-1].token)
        report.append({"image": spec["image"], "writes": writes, "steps": board.steps,
                       "cycles": board.cycles, "classes": classes,
                       "writebacks": sum(len(o.writebacks) for o in board.observed)})
        dut._log.info("%s: %d writes, %d sentences, %d steps, %d core cycles, classes %s",
                      Path(spec["image"]).name, writes, len(classes), board.steps,
                      board.cycles, classes)
    Path("classify.json").write_text(json.dumps(report, indent=1))


@cocotb.test()
async def test_corrupted_weight(dut):
    """Load a network, overwrite one synapse word, and check as usual: this must fail,
    naming the first timestep and neuron that the corruption changes."""
    config, core, tb = _setup(dut)
    spec = config["corrupt"]
    net = recipe_network(spec["recipe"], core.lanes, spec["seed"])
    await tb.start()
    await tb.load(net, temperature_word=0, seed=0)
    await tb.write([Write(Mem.SYN, spec["lane"], spec["addr"], spec["data"])])
    board = Scoreboard(net, core.lanes, tb.timing, f"{spec['recipe']} seed {spec['seed']} "
                       f"with SYN word {spec['addr']} of lane {spec['lane']} overwritten")
    await run_steps(tb, board, spec["tokens"])
