"""hw.core.Core's host ports: the bounds-checked write port, the read port, the command
port's error handling and the status word.

Every memory is filled with random words and read back; then every kind of bad write
(memory id, read-only memory, lane, address, register value) must set the write error and
change nothing anywhere; bad reads answer with an error; bad commands answer with an error
and run nothing; CLEAR clears the sticky flags; RESET zeroes the state and accumulators.
"""

import numpy as np
from amaranth.sim import Simulator

from hw.core import Core
from hw.core.simhost import command, read_word, write_words
from spikestream.memory_map import (ADDR_BITS, GLOBAL_MEMS, LANE_MEMS, MEM_BITS, CoreConfig, CoreReg,
                           Mem, Op, Write)

CONFIG = CoreConfig(lanes=3, neurons_per_lane=4, syn_depth=8, ptr_depth=6, max_pops=2,
                    max_projs=3, max_vocab=4, spike_depth=4)


def _words(mem):
    """Every (lane, addr) of a memory."""
    lanes = range(CONFIG.lanes) if mem in LANE_MEMS else [0]
    return [(lane, addr) for lane in lanes for addr in range(CONFIG.depth(mem))]


def _random_word(rng, mem, addr):
    if mem == Mem.CORE:
        limits = {CoreReg.POPS: CONFIG.max_pops, CoreReg.PROJS: CONFIG.max_projs,
                  CoreReg.READOUT: CONFIG.max_pops - 1, CoreReg.VOCAB: CONFIG.max_vocab,
                  CoreReg.TEMPERATURE: 65535}
        if addr == CoreReg.SEED:
            return int(rng.integers(1, 1 << 32))
        return int(rng.integers(0, limits[CoreReg(addr)] + 1))
    bits = CONFIG.layout(mem).bits
    return sum(int(rng.integers(0, 1 << 16)) << k for k in range(0, bits, 16)) & ((1 << bits) - 1)


async def _snapshot(ctx, core):
    out = {}
    for mem in Mem:
        for lane, addr in _words(mem):
            data, error = await read_word(ctx, core, mem, lane, addr)
            assert not error
            out[mem, lane, addr] = data
    return out


def _simulate(testbench):
    core = Core(CONFIG)
    sim = Simulator(core)
    sim.add_clock(1e-8)

    async def bench(ctx):
        await testbench(ctx, core)

    sim.add_testbench(bench)
    sim.run()


def test_round_trip_and_bad_writes_change_nothing():
    rng = np.random.default_rng(0)

    async def testbench(ctx, core):
        writes = [Write(mem, lane, addr, _random_word(rng, mem, addr))
                  for mem in Mem if mem != Mem.ACC for lane, addr in _words(mem)]
        await write_words(ctx, core, writes)
        assert not ctx.get(core.status.write_error)
        before = await _snapshot(ctx, core)
        for wr in writes:
            if wr.mem == Mem.CORE and wr.addr == CoreReg.SEED:
                continue                   # reads back the generator state instead
            assert before[wr.mem, wr.lane, wr.addr] == wr.data, wr
        assert all(before[Mem.ACC, lane, addr] == 0 for lane, addr in _words(Mem.ACC))

        bad = []
        for mem in Mem:
            depth = CONFIG.depth(mem)
            good_lane = 0
            bad.append(Write(mem, good_lane, depth, 1))                     # address
            bad.append(Write(mem, good_lane, (1 << ADDR_BITS) - 1, 1))
            bad_lanes = [CONFIG.lanes, 255] if mem in LANE_MEMS else [1, 255]
            bad += [Write(mem, lane, 0, 1) for lane in bad_lanes]           # lane
        bad += [Write(Mem.ACC, 0, 0, 5), Write(Mem.ACC, 2, 3, 5)]            # read-only
        bad += [Write(m, 0, 0, 1) for m in range(len(Mem), 1 << MEM_BITS)]   # memory id
        bad += [Write(Mem.CORE, 0, CoreReg.POPS, CONFIG.max_pops + 1),       # values
                Write(Mem.CORE, 0, CoreReg.PROJS, CONFIG.max_projs + 1),
                Write(Mem.CORE, 0, CoreReg.READOUT, CONFIG.max_pops),
                Write(Mem.CORE, 0, CoreReg.VOCAB, CONFIG.max_vocab + 1),
                Write(Mem.CORE, 0, CoreReg.TEMPERATURE, 1 << 16)]
        for wr in bad:
            await write_words(ctx, core, [wr])
            assert ctx.get(core.status.write_error), wr
            out = await command(ctx, core, Op.CLEAR)
            assert not out.error and not ctx.get(core.status.write_error)
        assert await _snapshot(ctx, core) == before

    _simulate(testbench)


def test_bad_reads():
    async def testbench(ctx, core):
        for mem, lane, addr in [(Mem.PARAM, CONFIG.lanes, 0), (Mem.SYN, 0, CONFIG.syn_depth),
                                (Mem.POP, 1, 0), (Mem.CORE, 0, len(CoreReg)), (9, 0, 0)]:
            data, error = await read_word(ctx, core, mem, lane, addr)
            assert error and data == 0
            assert ctx.get(core.status.read_error)
            await command(ctx, core, Op.CLEAR)
            assert not ctx.get(core.status.read_error)
        data, error = await read_word(ctx, core, Mem.ACC, CONFIG.lanes - 1, 3)
        assert not error and data == 0

    _simulate(testbench)


def test_bad_commands_and_busy():
    async def testbench(ctx, core):
        await write_words(ctx, core, [Write(Mem.CORE, 0, CoreReg.VOCAB, 2)])
        out = await command(ctx, core, Op.STEP, token=2)        # outside the vocabulary
        assert out.error and ctx.get(core.status.cmd_error)
        out = await command(ctx, core, 3)                       # no such opcode
        assert out.error and out.op == 3
        out = await command(ctx, core, Op.CLEAR)
        assert not out.error and not ctx.get(core.status.cmd_error)
        # While a command runs the core is busy and takes nothing else.
        ctx.set(core.cmd.valid, 1)
        ctx.set(core.cmd.payload, {"op": Op.RESET, "token": 0})
        await ctx.tick().until(core.cmd.ready)
        ctx.set(core.cmd.valid, 0)
        ctx.set(core.write.valid, 1)
        ctx.set(core.read.valid, 1)
        for _ in range(CONFIG.neurons_per_lane):
            await ctx.tick()
            assert ctx.get(core.status.busy)
            assert not ctx.get(core.write.ready) and not ctx.get(core.read.ready)
            assert not ctx.get(core.cmd.ready)
        ctx.set(core.write.valid, 0)
        ctx.set(core.read.valid, 0)
        ctx.set(core.result.ready, 1)
        await ctx.tick().until(core.result.valid)
        ctx.set(core.result.ready, 0)
        await ctx.tick()
        assert not ctx.get(core.status.busy)

    _simulate(testbench)


def test_reset_clears_state():
    async def testbench(ctx, core):
        writes = [Write(Mem.STATE, lane, addr, 0x12345678) for lane, addr in _words(Mem.STATE)]
        await write_words(ctx, core, writes)
        data, _ = await read_word(ctx, core, Mem.STATE, 2, 3)
        assert data == 0x12345678
        out = await command(ctx, core, Op.RESET)
        assert not out.error and out.op == Op.RESET
        for lane, addr in _words(Mem.STATE):
            assert await read_word(ctx, core, Mem.STATE, lane, addr) == (0, 0)

    _simulate(testbench)


def test_global_memories_are_lane_zero_only():
    assert set(GLOBAL_MEMS) | set(LANE_MEMS) == set(Mem)
