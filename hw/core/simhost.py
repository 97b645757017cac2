"""A host for a :class:`~hw.core.Core` in ``amaranth.sim``: async helpers on its ports.

Each helper takes the testbench context ``ctx`` and the core, drives one port transaction
and returns its outcome; they keep ``valid`` high across back-to-back transfers and never
use generator testbenches.
"""

from spikestream.memory_map import Mem, Op, output_reads
from spikestream.timing import WRITE_LATENCY

__all__ = ["write_words", "read_word", "read_state", "read_outputs", "command", "StepOutcome"]


async def write_words(ctx, core, writes):
    """Push ``writes`` (:class:`~spikestream.memory_map.Write`) through the write port, one per cycle.

    Returns when the last write has been checked (``status.write_error`` then tells); lane
    writes land a few cycles later, always before any later read or command reaches the
    lanes.
    """
    port = core.write
    for wr in writes:
        ctx.set(port.valid, 1)
        ctx.set(port.payload, {"mem": int(wr.mem), "lane": wr.lane, "addr": wr.addr,
                               "data": wr.data})
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)
    await ctx.tick().repeat(WRITE_LATENCY)


async def read_word(ctx, core, mem, lane, addr):
    """Read one word; returns ``(data, error)``."""
    ctx.set(core.read.valid, 1)
    ctx.set(core.read.payload, {"mem": int(mem), "lane": lane, "addr": addr})
    await ctx.tick().until(core.read.ready)
    ctx.set(core.read.valid, 0)
    ctx.set(core.read_data.ready, 1)
    (payload,) = await ctx.tick().sample(core.read_data.payload).until(core.read_data.valid)
    ctx.set(core.read_data.ready, 0)
    return payload.data, payload.error


class StepOutcome:
    """A command's result, plus ``latency``: cycles from the one after the command's
    handshake to the one before ``result.valid`` rose (for a STEP, ``COMMAND_LATENCY``
    more than its cycle count)."""

    def __init__(self, payload, latency):
        self.op = payload.op
        self.token = payload.token
        self.cycles = payload.cycles
        self.spikes = payload.spikes
        self.error = payload.error
        self.latency = latency

    def __repr__(self):
        return (f"StepOutcome(op={self.op}, token={self.token}, cycles={self.cycles}, "
                f"spikes={self.spikes}, error={self.error}, latency={self.latency})")


async def command(ctx, core, op, token=0, limit=1_000_000):
    """Send one command and wait for its result; returns a :class:`StepOutcome`."""
    ctx.set(core.cmd.valid, 1)
    ctx.set(core.cmd.payload, {"op": int(op), "token": token})
    await ctx.tick().until(core.cmd.ready)
    ctx.set(core.cmd.valid, 0)
    ctx.set(core.result.ready, 1)
    for n in range(limit):
        _, _, valid, payload = await ctx.tick().sample(core.result.valid, core.result.payload)
        if valid:
            ctx.set(core.result.ready, 0)
            return StepOutcome(payload, n)
    raise TimeoutError(f"no result to {Op(op).name} within {limit} cycles")


async def read_state(ctx, core, base, size):
    """``(v, a)`` lists of the ``size`` neurons of a population at local address ``base``."""
    cfg = core.config
    layout = cfg.layout(Mem.STATE)
    vs, as_ = [], []
    for n in range(size):
        word, error = await read_word(ctx, core, Mem.STATE, n % cfg.lanes, base + n // cfg.lanes)
        assert not error
        fields = layout.unpack(word)
        vs.append(fields["v"])
        as_.append(fields["a"])
    return vs, as_



async def read_outputs(ctx, core, image):
    """The :class:`~spikestream.memory_map.Outputs` of the last STEP, read as a host does
    (:func:`spikestream.memory_map.output_reads`)."""
    proc = output_reads(image, core.config)
    try:
        request = next(proc)
        while True:
            words = []
            for k in range(request.count):
                word, error = await read_word(ctx, core, request.mem, request.lane,
                                              request.addr + k)
                assert not error, request
                words.append(word)
            request = proc.send(words)
    except StopIteration as done:
        return done.value
