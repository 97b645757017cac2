"""hw.core.Core's built-in initial contents (``init``) and its observation port (``trace``).

* ``init``: a core built with a network's writes behaves exactly as one that loads the same
  writes through its write port (every step's result and latency, every readable word
  before and after), ``rst`` returns the registers to the built-in values, and a write the
  port would refuse is refused at build time.
* ``trace``: every STEP shows each neuron written back exactly once, with the golden
  model's spike, ``v`` and ``a``; ``trace.valid`` is the OR of the lanes'; a core without
  the port behaves identically.
* A command offered in the cycle after a write handshake (while that write is still
  registered) runs once: before the fix it ran twice.
"""

import numpy as np
import pytest
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from hw.core import Core, core_timing
from hw.core.simhost import command, read_word, write_words
from spikestream.memory_map import (CoreConfig, CoreReg, LANE_MEMS, Mem, Op, Write, contents_after,
                           image_writes, settings_writes, write_problem)
from models.golden import GoldenCore
from spikestream.image import Image
from spikestream.network import core_layout, route_groups
from sim.core_check import NeuronMap, WriteBack
from sim.netgen import recipe_network


def _setup(recipe, lanes, seed, temperature_word=150, rng_seed=9):
    net = recipe_network(recipe, lanes, seed)
    image = Image(net=net, lanes=lanes)
    config = CoreConfig.for_image(image)
    writes = image_writes(image, config) + settings_writes(temperature_word=temperature_word,
                                                           seed=rng_seed)
    return net, config, writes


def _simulate(core, bench, *processes, domain=None):
    # A top with an explicit sync domain (``domain``), so that a testbench can drive its
    # reset.
    top = Module()
    top.domains.sync = domain or ClockDomain("sync")
    top.submodules.core = core
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    for process in processes:
        sim.add_process(process)
    sim.run()


async def _snapshot(ctx, core, net):
    """Every word the network uses, the tables and the registers (the sampler's state
    included), read through the read port."""
    cfg = core.config
    lay = core_layout(net, cfg.lanes)
    extent = {Mem.PARAM: lambda lane: lay.neurons_per_lane,
              Mem.STATE: lambda lane: lay.neurons_per_lane,
              Mem.ACC: lambda lane: lay.neurons_per_lane,
              Mem.PTR: lambda lane: lay.ptr_entries + 1,
              Mem.SYN: lambda lane: len(lay.syn_addr[lane])}
    out = {}
    for mem in Mem:
        for lane in (range(cfg.lanes) if mem in LANE_MEMS else [0]):
            depth = extent[mem](lane) if mem in extent else cfg.depth(mem)
            for addr in range(depth):
                data, error = await read_word(ctx, core, mem, lane, addr)
                assert not error
                out[mem, lane, addr] = data
    return out


def _run(core, net, writes, tokens, *, load):
    """Load (or not), snapshot, run ``tokens``, snapshot; returns everything seen."""
    seen = {}

    async def bench(ctx):
        if load:
            await write_words(ctx, core, writes)
        seen["before"] = await _snapshot(ctx, core, net)
        seen["steps"] = []
        for token in tokens:
            out = await command(ctx, core, Op.STEP, token)
            seen["steps"].append((out.error, out.token, out.cycles, out.spikes, out.latency))
        seen["after"] = await _snapshot(ctx, core, net)

    _simulate(core, bench)
    return seen


@pytest.mark.parametrize("recipe, lanes, seed", [("mixed", 2, 1), ("mixed", 1, 2)])
def test_init_behaves_as_the_write_port(recipe, lanes, seed):
    net, config, writes = _setup(recipe, lanes, seed)
    tokens = np.random.default_rng(seed).integers(0, net.vocab_size, 5).tolist()
    built = _run(Core(config, init=writes), net, writes, tokens, load=False)
    loaded = _run(Core(config), net, writes, tokens, load=True)
    assert built["before"] == loaded["before"]
    assert built["steps"] == loaded["steps"]
    assert built["after"] == loaded["after"]
    # And both are the golden model (the fuller check is the cocotb suite).
    golden = GoldenCore(net, lanes, timing=core_timing(config.stages))
    golden.set_temperature_word(150)
    golden.seed(9)
    for token, (error, got, cycles, spikes, _) in zip(tokens, built["steps"]):
        ref = golden.step([token])
        assert (error, got, cycles, spikes) == (0, int(ref.token[0]), int(ref.cycles[0]),
                                                sum(int(s.sum()) for s in ref.spikes))


def test_init_contents_and_reset():
    net, config, writes = _setup("mixed", 2, 3)
    # A later write to the same word wins, as through the port.
    writes = writes + [Write(Mem.CORE, 0, CoreReg.TEMPERATURE, 77)]
    contents = contents_after(writes, config)
    assert contents.regs[CoreReg.TEMPERATURE] == 77
    assert contents.regs[CoreReg.POPS] == len(net.populations)
    core = Core(config, init=writes)
    sync = ClockDomain("sync")

    async def bench(ctx):
        for reg, want in ((CoreReg.POPS, len(net.populations)),
                          (CoreReg.PROJS, len(route_groups(net))),
                          (CoreReg.READOUT, net.readout), (CoreReg.VOCAB, net.vocab_size),
                          (CoreReg.TEMPERATURE, 77), (CoreReg.SEED, 9)):
            await write_words(ctx, core, [Write(Mem.CORE, 0, reg, 0)])
            assert (await read_word(ctx, core, Mem.CORE, 0, reg))[0] != want
            ctx.set(sync.rst, 1)
            await ctx.tick()
            ctx.set(sync.rst, 0)
            assert (await read_word(ctx, core, Mem.CORE, 0, reg)) == (want, 0), reg

    _simulate(core, bench, domain=sync)


@pytest.mark.parametrize("pulse_at", [1, 6, 14, 30])
def test_reset_pulse_mid_step_then_steps_match_golden(pulse_at):
    # A one-cycle reset while a STEP is under way (the lanes routing or updating, the trees
    # full; the lanes' reset comes later and lasts longer, spikestream.timing.reset_settle): the
    # core serves commands again, and after a RESET command every step is the golden
    # model's again, cycle for cycle.
    net, config, writes = _setup("mixed", 3, 5)
    core = Core(config, init=writes)
    golden = GoldenCore(net, 3, timing=core.timing)
    golden.set_temperature_word(150)
    golden.seed(9)
    tokens = [1, 2, 0, 3]
    sync = ClockDomain("sync")

    async def bench(ctx):
        ref = golden.step([tokens[0]])
        out = await command(ctx, core, Op.STEP, tokens[0])
        assert (out.token, out.cycles) == (int(ref.token[0]), int(ref.cycles[0]))
        ctx.set(core.cmd.valid, 1)
        ctx.set(core.cmd.payload, {"op": int(Op.STEP), "token": tokens[1]})
        await ctx.tick().until(core.cmd.ready)
        ctx.set(core.cmd.valid, 0)
        await ctx.tick().repeat(pulse_at)
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        assert not (await command(ctx, core, Op.RESET)).error
        golden.reset()
        golden.seed(9)
        for tok in tokens[2:] + tokens:
            ref = golden.step([tok])
            out = await command(ctx, core, Op.STEP, tok)
            assert not out.error
            assert (out.token, out.cycles, out.spikes) == (
                int(ref.token[0]), int(ref.cycles[0]), sum(int(x.sum()) for x in ref.spikes))

    _simulate(core, bench, domain=sync)


def test_init_refuses_what_the_port_refuses():
    config = CoreConfig(lanes=2, neurons_per_lane=4, syn_depth=8, ptr_depth=8, max_pops=2,
                        max_projs=2, max_vocab=4, spike_depth=4)
    bad = {
        Write(Mem.ACC, 0, 0, 1): "read only",
        Write(Mem.SYN, 2, 0, 1): "no lane 2",
        Write(Mem.POP, 1, 0, 1): "lane must be 0",
        Write(Mem.PTR, 0, 8, 1): "address 8 outside",
        Write(Mem.CORE, 0, CoreReg.POPS, 3): "POPS = 3 exceeds 2",
        Write(len(Mem), 0, 0, 0): f"no memory {len(Mem)}",
        Write(Mem.PARAM, 0, 0, 1 << config.data_bits): "does not fit",
    }
    for wr, reason in bad.items():
        assert reason in write_problem(wr, config)
        with pytest.raises(ValueError, match=reason):
            Core(config, init=[Write(Mem.SYN, 0, 0, 5), wr])
    assert write_problem(Write(Mem.CORE, 0, CoreReg.SEED, (1 << 40) + 3), config) is None
    # Spike inputs are for the next STEP, through the port: not an initial content.
    for wr in (Write(Mem.INCOUNT, 0, 0, 0), Write(Mem.INPUT, 0, 0, 0)):
        assert write_problem(wr, config) is None
        with pytest.raises(ValueError, match="written per STEP"):
            Core(config, init=[wr])


def _trace_process(core, log):
    """An amaranth.sim process that appends each cycle's write-backs to ``log[-1]``."""
    cfg = core.config

    async def process(ctx):
        async for _, _, valid, lanes in ctx.tick().sample(core.trace.valid, core.trace.lanes):
            any_lane = False
            for lane in range(cfg.lanes):
                x = lanes[lane]
                if x.valid:
                    any_lane = True
                    log[-1].append(WriteBack(lane, x.addr, x.q, x.v, x.a, x.s))
            assert bool(valid) == any_lane
    return process


@pytest.mark.parametrize("recipe, lanes, seed", [("deep", 3, 4), ("rows", 4, 5)])
def test_trace_shows_every_write_back(recipe, lanes, seed):
    net, config, writes = _setup(recipe, lanes, seed, temperature_word=0, rng_seed=0)
    tokens = np.random.default_rng(seed).integers(0, net.vocab_size, 4).tolist()
    traced, plain = Core(config, init=writes, trace=True), Core(config, init=writes)
    assert "trace" in traced.signature.members and "trace" not in plain.signature.members
    golden = GoldenCore(net, lanes, timing=traced.timing)
    neurons = NeuronMap(net, lanes)
    log, outcomes = [], {}

    def bench_for(core, key):
        async def bench(ctx):
            outcomes[key] = []
            for token in tokens:
                if key == "traced":
                    log.append([])
                out = await command(ctx, core, Op.STEP, token)
                outcomes[key].append((out.token, out.cycles, out.spikes, out.latency))
        return bench

    _simulate(traced, bench_for(traced, "traced"), _trace_process(traced, log))
    _simulate(plain, bench_for(plain, "plain"))
    assert outcomes["traced"] == outcomes["plain"]
    assert len(log) == len(tokens)
    for step, (token, wbs) in enumerate(zip(tokens, log)):
        ref = golden.step([token])
        want = {}
        for p, pop in enumerate(net.populations):
            for n in range(pop.size):
                lane, addr = neurons.place(p, n)
                q = int(ref.values[p][0, n])
                want[lane, addr] = WriteBack(lane, addr, q, int(ref.v[p][0, n]),
                                             int(ref.a[p][0, n]), int(q > 0))
        assert sorted(wbs, key=lambda w: (w.lane, w.addr)) == \
               sorted(want.values(), key=lambda w: (w.lane, w.addr)), f"step {step}"


def test_command_right_after_a_write_runs_once():
    net, config, writes = _setup("mixed", 2, 6, temperature_word=0, rng_seed=0)
    core = Core(config, init=writes, trace=True)
    log = [[]]
    results = []

    async def bench(ctx):
        # The write is taken, then the command is offered at once, while the write is still
        # registered (cmd.ready low for that cycle).
        ctx.set(core.result.ready, 1)
        ctx.set(core.write.valid, 1)
        ctx.set(core.write.payload, {"mem": int(Mem.CORE), "lane": 0,
                                     "addr": int(CoreReg.TEMPERATURE), "data": 0})
        await ctx.tick().until(core.write.ready)
        ctx.set(core.write.valid, 0)
        ctx.set(core.cmd.valid, 1)
        ctx.set(core.cmd.payload, {"op": int(Op.STEP), "token": 1})
        assert not ctx.get(core.cmd.ready)
        for _ in range(4000):
            _, _, ready, valid = await ctx.tick().sample(core.cmd.ready, core.result.valid)
            if ready:
                ctx.set(core.cmd.valid, 0)
            if valid:
                results.append(ctx.get(core.result.payload.cycles))

    _simulate(core, bench, _trace_process(core, log))
    golden = GoldenCore(net, config.lanes, timing=core.timing).step([1])
    assert results == [int(golden.cycles[0])]
    assert len(log[0]) == sum(p.size for p in net.populations)
