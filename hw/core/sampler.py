"""The on-chip sampler: Gumbel-max over the streamed readout membranes (spikestream.sampler)."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from spikestream.formats import (GUMBEL_FRAC_BITS, GUMBEL_TABLE_BITS, RNG_BITS, STATE_BITS,
                            TEMPERATURE_BITS)
from spikestream.sampler import GUMBEL, seed_state
from .bram import BlockRAM
from spikestream.timing import SAMPLER_LATENCY

__all__ = ["xorshift32", "Sampler"]


def xorshift32(x):
    """Amaranth expression of one xorshift32 (13, 17, 5) step of the 32-bit value ``x``."""
    x = x ^ (x << 13)[:RNG_BITS]
    x = x ^ (x >> 17)
    return x ^ (x << 5)[:RNG_BITS]


class Sampler(wiring.Component):
    """Pick the next token from the readout membranes, streamed in token order.

    Every value on ``i`` advances the xorshift32 generator once and is scored
    ``v * 2**GUMBEL_FRAC_BITS + temperature * GUMBEL[top bits of the draw]``; ``token``
    follows the first maximum (``spikestream.sampler.sample``; with temperature 0 the score is
    ``v`` scaled, so the result is the first argmax). ``token`` includes value ``k``
    ``SAMPLER_LATENCY`` cycles after ``k`` is offered.

    Parameters
    ----------
    token_bits : int
    seed : int
        The generator starts (and comes out of reset) at ``spikestream.sampler.seed_state(seed)``.

    Attributes
    ----------
    i : In(stream.Signature(signed(STATE_BITS), always_ready=True))
        Readout membranes, one per readout neuron, in token order.
    start : In(1)
        Pulse before the first value of a timestep: restarts the token count and maximum.
    temperature : In(TEMPERATURE_BITS)
        The temperature word; hold it while values stream.
    seed : In(stream.Signature(RNG_BITS, always_ready=True))
        Seeds the generator with ``spikestream.sampler.seed_state(payload)``.
    state : Out(RNG_BITS)
        The generator's state.
    token : Out(token_bits)
        Index of the first maximum so far.
    """

    def __init__(self, token_bits, seed=0):
        self._token_bits = token_bits
        super().__init__({
            "i": In(stream.Signature(signed(STATE_BITS), always_ready=True)),
            "start": In(1),
            "temperature": In(TEMPERATURE_BITS),
            "seed": In(stream.Signature(RNG_BITS, always_ready=True)),
            "state": Out(RNG_BITS, init=seed_state(seed)),
            "token": Out(token_bits),
        })

    def elaborate(self, platform):
        m = Module()
        # The noise table: a block RAM read in two cycles (see BlockRAM).
        m.submodules.gumbel = rom = BlockRAM(16, 1 << GUMBEL_TABLE_BITS,
                                             init=[g & 0xFFFF for g in GUMBEL], name="gumbel")

        # Stage 0: advance the generator, look up its noise.
        draw = Signal(RNG_BITS, name="draw")
        index = Signal(self._token_bits, name="index")
        m.d.comb += [
            draw.eq(xorshift32(self.state)),
            rom.raddr.eq(draw[RNG_BITS - GUMBEL_TABLE_BITS:]),
        ]
        with m.If(self.seed.valid):
            m.d.sync += self.state.eq(Mux(self.seed.payload == 0, seed_state(0),
                                          self.seed.payload))
        with m.Elif(self.i.valid):
            m.d.sync += self.state.eq(draw)
        with m.If(self.start):
            m.d.sync += index.eq(0)
        with m.Elif(self.i.valid):
            m.d.sync += index.eq(index + 1)

        valid = [self.i.valid]
        v = [self.i.payload]
        idx = [index]
        for k in range(1, 5):
            valid.append(Signal(name=f"valid{k}"))
            v.append(Signal(signed(STATE_BITS), name=f"v{k}"))
            idx.append(Signal(self._token_bits, name=f"index{k}"))
            m.d.sync += [valid[k].eq(valid[k - 1]), v[k].eq(v[k - 1]), idx[k].eq(idx[k - 1])]

        # Stages 1 and 2 are the noise table's read.
        noise = Signal(signed(16), name="noise")
        m.d.comb += noise.eq(rom.rdata)

        # Stage 3: the multiplier's operands, next to the DSP block.
        noise_op = Signal(signed(16), name="noise_op")
        temperature_op = Signal(TEMPERATURE_BITS, name="temperature_op")
        m.d.sync += [noise_op.eq(noise), temperature_op.eq(self.temperature)]

        # Stage 4: the temperature multiply alone.
        scaled = Signal(signed(TEMPERATURE_BITS + 17), name="scaled")
        m.d.sync += scaled.eq(temperature_op * noise_op)
        s_valid = Signal(name="s_valid")
        s_index = Signal(self._token_bits, name="s_index")
        s_v = Signal(signed(STATE_BITS), name="s_v")
        m.d.sync += [s_valid.eq(valid[3]), s_index.eq(idx[3]), s_v.eq(v[3])]

        # Stage 5: the score.
        score = Signal(signed(TEMPERATURE_BITS + 19), name="score")
        c_valid = Signal(name="c_valid")
        c_index = Signal(self._token_bits, name="c_index")
        m.d.sync += [
            score.eq((s_v << GUMBEL_FRAC_BITS) + scaled),
            c_valid.eq(s_valid), c_index.eq(s_index),
        ]

        # Stage 6: keep the first maximum. (Written `best < score`: Yosys maps a less-than
        # to a carry chain whose carry-out is the answer, but a greater-than to a chain and
        # then a tree of LUTs, on the way to the enable of best and token.)
        best = Signal(signed(TEMPERATURE_BITS + 19), name="best")
        first = Signal(name="first")
        with m.If(self.start):
            m.d.sync += first.eq(1)
        with m.Elif(c_valid & (first | (best < score))):
            m.d.sync += [best.eq(score), self.token.eq(c_index), first.eq(0)]
        assert SAMPLER_LATENCY == 6
        return m
