"""hw.core.Core's host ports: the bounds-checked write port, the read port, the command
port's error handling and the status word.

Every memory is filled with random words and read back; then every kind of bad write
(memory id, read-only memory, lane, address, register value) must set the write error and
change nothing anywhere; bad reads answer with an error; bad commands answer with an error
and run nothing; CLEAR clears the sticky flags; RESET zeroes the state and accumulators.
Spike inputs: ids and counts land in (and read back from) the region and entry of the next
STEP; every write the source word does not allow is refused and changes nothing.
"""

import numpy as np
from amaranth.sim import Simulator

from hw.core import Core
from hw.core.simhost import command, read_word, write_words
from spikestream.memory_map import (ADDR_BITS, GLOBAL_MEMS, LANE_MEMS, MEM_BITS, READ_ONLY_MEMS,
                                    CoreConfig, CoreReg, Mem, Op, Write)

CONFIG = CoreConfig(lanes=3, neurons_per_lane=4, syn_depth=8, ptr_depth=6, max_pops=2,
                    max_projs=3, max_vocab=4, spike_depth=4, queue_depth=5, max_regions=6,
                    max_inputs=2, input_ids=3, input_depth=10, max_delay=3)
PER_STEP = (Mem.INPUT, Mem.INCOUNT)
"""Written for the next STEP, through the sources' words (test_spike_input_words)."""


def _words(mem):
    """Every (lane, addr) of a memory."""
    lanes = range(CONFIG.lanes) if mem in LANE_MEMS else [0]
    return [(lane, addr) for lane in lanes for addr in range(CONFIG.depth(mem))]


def _random_word(rng, mem, addr):
    if mem == Mem.CORE:
        if addr == CoreReg.SEED:
            return int(rng.integers(1, 1 << 32))
        return int(rng.integers(0, CONFIG.register_limit(addr) + 1))
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
                  for mem in Mem if mem not in READ_ONLY_MEMS + PER_STEP
                  for lane, addr in _words(mem)]
        await write_words(ctx, core, writes)
        assert not ctx.get(core.status.write_error)
        before = await _snapshot(ctx, core)
        for wr in writes:
            if wr.mem == Mem.CORE and wr.addr == CoreReg.SEED:
                continue                   # reads back the generator state instead
            assert before[wr.mem, wr.lane, wr.addr] == wr.data, wr
        for mem in (Mem.ACC, Mem.QUEUE):
            assert all(before[mem, lane, addr] == 0 for lane, addr in _words(mem))

        bad = []
        for mem in Mem:
            depth = CONFIG.depth(mem)
            good_lane = 0
            bad.append(Write(mem, good_lane, depth, 1))                     # address
            bad.append(Write(mem, good_lane, (1 << ADDR_BITS) - 1, 1))
            bad_lanes = [CONFIG.lanes, 255] if mem in LANE_MEMS else [1, 255]
            bad += [Write(mem, lane, 0, 1) for lane in bad_lanes]           # lane
        bad += [Write(Mem.ACC, 0, 0, 5), Write(Mem.ACC, 2, 3, 5),            # read-only
                Write(Mem.QUEUE, 1, 2, 5), Write(Mem.SPIKES, 0, 3, 1)]
        bad += [Write(m, 0, 0, 1) for m in range(len(Mem), 1 << MEM_BITS)]   # memory id
        bad += [Write(Mem.CORE, 0, CoreReg.POPS, CONFIG.max_pops + 1),       # values
                Write(Mem.CORE, 0, CoreReg.PROJS, CONFIG.max_projs + 1),
                Write(Mem.CORE, 0, CoreReg.READOUT, CONFIG.max_pops),
                Write(Mem.CORE, 0, CoreReg.VOCAB, CONFIG.max_vocab + 1),
                Write(Mem.CORE, 0, CoreReg.TEMPERATURE, 1 << 16),
                Write(Mem.CORE, 0, CoreReg.SAMPLE, 2), Write(Mem.CORE, 0, CoreReg.TOKENS, 2),
                Write(Mem.CORE, 0, CoreReg.INPUTS, CONFIG.max_inputs + 1)]
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
                                (Mem.POP, 1, 0), (Mem.CORE, 0, len(CoreReg)), (len(Mem), 0, 0),
                                (Mem.QUEUE, CONFIG.lanes, 0),
                                (Mem.SPIKES, 0, CONFIG.depth(Mem.SPIKES))]:
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
        out = await command(ctx, core, Op.STEP, token=0)        # no network loaded (POPS 0)
        assert out.error and ctx.get(core.status.cmd_error)
        await command(ctx, core, Op.CLEAR)
        await write_words(ctx, core, [Write(Mem.CORE, 0, CoreReg.POPS, 1)])
        out = await command(ctx, core, Op.STEP, token=2)        # no token input: not checked
        assert not out.error and not ctx.get(core.status.cmd_error)
        await write_words(ctx, core, [Write(Mem.CORE, 0, CoreReg.TOKENS, 1)])
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


def test_spike_input_words():
    """Input 0 keeps 2 timesteps of 3 ids from entry 1 and input word 4; input 1 keeps
    nothing. The next STEP's region is the second (the source's current one is ``first``
    after its word is written)."""
    src = CONFIG.layout(Mem.SRC)
    words = [Write(Mem.SRC, 0, CONFIG.max_pops, src.pack(keep=1, first=1, last=2, base=4,
                                                        stride=3, size=5)),
             Write(Mem.SRC, 0, CONFIG.max_pops + 1, src.pack(keep=0, first=0, last=0, base=0,
                                                            stride=3, size=5)),
             Write(Mem.CORE, 0, CoreReg.INPUTS, 2)]
    at = lambda k, i: (k << CONFIG.input_bits) + i

    async def testbench(ctx, core):
        await write_words(ctx, core, words + [Write(Mem.INPUT, 0, at(0, 0), 4),
                                              Write(Mem.INPUT, 0, at(0, 2), 1),
                                              Write(Mem.INCOUNT, 0, 0, 3)])
        assert not ctx.get(core.status.write_error)
        assert await read_word(ctx, core, Mem.INPUT, 0, at(0, 0)) == (4, 0)
        assert await read_word(ctx, core, Mem.INPUT, 0, at(0, 2)) == (1, 0)
        assert await read_word(ctx, core, Mem.INCOUNT, 0, 0) == (3, 0)
        before = {(mem, a): await read_word(ctx, core, mem, 0, a)
                  for mem, a in [(Mem.INPUT, at(0, i)) for i in range(3)] + [(Mem.INCOUNT, 0),
                                                                             (Mem.INCOUNT, 1)]}
        refused = [Write(Mem.INPUT, 0, at(0, 1), 5),        # id outside the input's size
                   Write(Mem.INPUT, 0, at(0, 3), 0),        # beyond its stride
                   Write(Mem.INCOUNT, 0, 0, 4),             # more than its stride
                   Write(Mem.INPUT, 0, at(1, 0), 0),        # an input that keeps nothing
                   Write(Mem.INCOUNT, 0, 1, 1)]
        for wr in refused:
            await write_words(ctx, core, [wr])
            assert ctx.get(core.status.write_error), wr
            await command(ctx, core, Op.CLEAR)
        await write_words(ctx, core, [Write(Mem.CORE, 0, CoreReg.INPUTS, 0),
                                      Write(Mem.INCOUNT, 0, 0, 1)])   # not the network's
        assert ctx.get(core.status.write_error)
        await command(ctx, core, Op.CLEAR)
        for (mem, a), word in before.items():
            assert await read_word(ctx, core, mem, 0, a) == word, (mem, a)
        # RESET drops what was written for the next STEP.
        await write_words(ctx, core, [Write(Mem.CORE, 0, CoreReg.INPUTS, 2)])
        await command(ctx, core, Op.RESET)
        assert await read_word(ctx, core, Mem.INCOUNT, 0, 0) == (0, 0)

    _simulate(testbench)
