"""The neuron pipeline: ``models.neurons.int_update`` for one neuron per cycle."""

from types import SimpleNamespace

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from spikestream.formats import (ACC_BITS, DECAY_BITS, DECAY_FRAC_BITS, MAX_LEVEL_BITS,
                                 NEURON_KIND_CUBA, NEURON_KIND_SPIKES, STATE_BITS, ResetMode)
from spikestream.memory_map import Mem
from spikestream.timing import NEURON_LATENCY
from .layouts import word_layout

__all__ = ["saturate", "population_layout", "neuron_input_layout", "neuron_output_layout",
           "NeuronUnit"]


def saturate(m, value, bits, name):
    """Drive and return a ``signed(bits)`` signal holding ``value`` clamped to its range.

    Overflow shows as the bits above the sign bit differing from it, which is cheaper than
    two full-width comparisons.
    """
    value = value.as_signed() if not value.shape().signed else value
    out = Signal(signed(bits), name=name)
    top = value[bits - 1:]
    fits = (top == 0) | (top == (1 << len(top)) - 1)
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    m.d.comb += out.eq(Mux(fits, value[:bits], Mux(value[-1], lo, hi)))
    return out


def population_layout(config):
    """The fields of a population's POP word that the update reads: kind, reset mode and
    spike levels ``K`` (``level_bits``)."""
    return data.StructLayout({f.name: unsigned(f.bits) for f in config.layout(Mem.POP)
                              if f.name in ("kind", "reset", "level_bits")})


def neuron_input_layout(config, tag_shape):
    """What the pipeline takes: the population's fields, parameter word, state word,
    accumulator and a tag."""
    return data.StructLayout({
        "pop": population_layout(config),
        "params": word_layout(config, Mem.PARAM),
        "state": word_layout(config, Mem.STATE),
        "acc": signed(ACC_BITS),
        "tag": tag_shape,
    })


def neuron_output_layout(config, tag_shape):
    """What the pipeline gives: the spike value ``q`` (0: none), the new state word and the
    input's tag."""
    return data.StructLayout({
        "q": unsigned(MAX_LEVEL_BITS),
        "state": word_layout(config, Mem.STATE),
        "tag": tag_shape,
    })


def _is_one_of(kind, table):
    """1 where ``kind`` is one of the kinds that ``table`` maps to true."""
    return Cat(*[kind == int(k) for k, yes in table.items() if yes]).any()


class NeuronUnit(wiring.Component):
    """One neuron update per cycle, ``NEURON_LATENCY`` cycles deep, no back-pressure.

    Computes exactly ``models.neurons.int_update`` (docs/general-networks.md, "The neuron
    update") for any kind, reset mode and ``K`` = ``level_bits`` (1 .. MAX_LEVEL_BITS),
    which may change from one input to the next. Between two registers stands at most one
    carry chain of 17 to 20 bits, with a multiplexer before it and a saturation after it::

        stage 0: operands next to the multipliers; acc clamped to 18 bits; theta + a
        stage 1: alpha*v, rho*a (the multipliers alone); thr = theta (CUBA) or sat(theta + a)
        stage 2: rs(alpha*v); sat(rs(rho*a) + acc) (a1 of the CUBA kinds), sat(rs(rho*a) +
                 jump) and sat(rs(rho*a)), each rounding in its own adder; the threshold
                 owed for the last step's spike (SUBTRACT_NEXT)
        stage 3: I = sat(a1 + bias) (a1 = acc for the other kinds); rs(alpha*v) - owed;
                 the new a if q > 0 and if not
        stage 4: v1 = sat(. + I)
        stage 5..8: successive approximation, bit i = 3, 2, 1, 0 of q: r - (thr << i)
                 on the remainder r (the next stage takes the difference if it is >= 0
                 and bit i is enabled: i < K, spiking kinds only)
        stage 9: the reset (zero, the remainder saturated, or v1) and the new a

    The remainder starts at v1 and only grows when ``thr <= 0`` (an adaptive threshold
    driven below 1); ``v1 + (2^K - 1) * 2^15`` bounds it, so ``STATE_BITS +
    MAX_LEVEL_BITS`` bits hold it and every difference exactly.

    Parameters
    ----------
    config : CoreConfig
    tag_shape : shape-castable
        Side information carried along unchanged (address, neuron id, ...).

    Attributes
    ----------
    i : In(stream.Signature(neuron_input_layout, always_ready=True))
    o : Out(stream.Signature(neuron_output_layout, always_ready=True))
        Each input reappears here ``NEURON_LATENCY`` cycles later, straight from registers.
    """

    def __init__(self, config, tag_shape=unsigned(1)):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(neuron_input_layout(config, tag_shape), always_ready=True)),
            "o": Out(stream.Signature(neuron_output_layout(config, tag_shape),
                                      always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        W = STATE_BITS
        F = DECAY_FRAC_BITS
        R = W + MAX_LEVEL_BITS          # the remainder of the successive approximation
        # acc clamped to CLAMP bits leaves sat(rs(rho*a) + acc) and sat(acc + bias) as they
        # are, since |rs(rho*a)| and |bias| stay below 2^16 for every parameter word.
        CLAMP = W + 2
        x = self.i.payload

        # Every stage's data registers are reset-less (only the valid bits take the reset):
        # a reset in flight is flushed by the valid bits within NEURON_LATENCY cycles, and
        # the core's reset net then reaches a few hundred flip-flops per lane, not all.
        valid = self.i.valid
        for n in range(NEURON_LATENCY):
            nxt = Signal(name=f"s{n}_valid")
            m.d.sync += nxt.eq(valid)
            valid = nxt
        m.d.comb += self.o.valid.eq(valid)

        def stage(n, **values):
            """Register each value (or ``(value, shape)``) as ``s<n>_<name>``."""
            out = {}
            for name, value in values.items():
                value, shape = value if isinstance(value, tuple) else (value, None)
                if shape is None:
                    shape = (value.shape() if isinstance(value, data.View)
                             else Value.cast(value).shape())
                out[name] = Signal(shape, name=f"s{n}_{name}", reset_less=True)
                m.d.sync += out[name].eq(value)
            return SimpleNamespace(**out)

        def rs_plus(product, addend=Const(0, 1)):
            """``rs(product) + addend`` in one adder no wider than the sum: the rounding bit
            (the fraction's top bit) and a 1 below both operands make the carry in."""
            total = product[F - 1:].as_signed() + Cat(Const(1, 1), addend).as_signed()
            return total[1:].as_signed()

        # Stage 0: the multipliers' operands, registered next to the DSP blocks (which sit
        # far from the block RAMs); the population's fields decoded.
        kind, reset, K = x.pop.kind, x.pop.reset, x.pop.level_bits
        spiking = _is_one_of(kind, NEURON_KIND_SPIKES)
        s0 = stage(
            0, alpha=x.params.alpha, v=x.state.v, rho=x.params.rho, a=x.state.a,
            acc=saturate(m, x.acc, CLAMP, "acc_clamp"),
            thr=(x.params.theta + x.state.a, signed(W + 1)),
            theta=x.params.theta, jump=x.params.jump, bias=x.params.bias,
            cuba=_is_one_of(kind, NEURON_KIND_CUBA), spiking=spiking,
            zero=reset == ResetMode.ZERO, sub=reset == ResetMode.SUBTRACT,
            owe=(reset == ResetMode.SUBTRACT_NEXT) & x.state.s,
            en=Cat(*[spiking & (K > i) for i in range(MAX_LEVEL_BITS)]),
            tag=x.tag)

        # Stage 1: the multiplies alone, register to register.
        s1 = stage(
            1, pv=(s0.alpha * s0.v, signed(W + DECAY_BITS)),
            pa=(s0.rho * s0.a, signed(W + DECAY_BITS)),
            thr=(Mux(s0.cuba, s0.theta, saturate(m, s0.thr, W, "thr_sat")), signed(W)),
            acc=s0.acc, jump=s0.jump, bias=s0.bias, a=s0.a, cuba=s0.cuba,
            spiking=s0.spiking, zero=s0.zero, sub=s0.sub, owe=s0.owe, en=s0.en, tag=s0.tag)

        # Stage 2: round half up and drop the fraction; the synaptic current and the
        # jumped adaptation each in the same adder as the rounding. (The adaptation's two
        # sums are saturated in stage 3, in front of the multiplexer that picks one: here,
        # behind the DSP block's product and the adder, the saturation made the path long.)
        s2 = stage(
            2, tv=(rs_plus(s1.pv), signed(W + DECAY_BITS - F + 1)),
            syn=saturate(m, rs_plus(s1.pa, s1.acc), W, "syn_cur"), acc=s1.acc,
            aj=rs_plus(s1.pa, s1.jump), a0=rs_plus(s1.pa),
            owed=(Mux(s1.owe, s1.thr, 0), signed(W)),
            thr=s1.thr, bias=s1.bias, a=s1.a, cuba=s1.cuba, spiking=s1.spiking,
            zero=s1.zero, sub=s1.sub, en=s1.en, tag=s1.tag)

        # Stage 3: the input current; the leak less what is owed; a' if q > 0, if not.
        s3 = stage(
            3, cur=saturate(m, Mux(s2.cuba, s2.syn, s2.acc) + s2.bias, W, "cur"),
            tv=(s2.tv - s2.owed, signed(W + 2)),
            a_fired=(Mux(s2.cuba, s2.syn, saturate(m, s2.aj, W, "a_jump")), signed(W)),
            a_quiet=(Mux(s2.cuba, s2.syn,
                         Mux(s2.spiking, saturate(m, s2.a0, W, "a_decay"), s2.a)), signed(W)),
            thr=s2.thr, zero=s2.zero, sub=s2.sub, en=s2.en, tag=s2.tag)

        # Stage 4: integrate.
        s = stage(
            4, v1=saturate(m, s3.tv + s3.cur, W, "v_int"),
            thr=s3.thr, zero=s3.zero, sub=s3.sub, en=s3.en,
            a_fired=s3.a_fired, a_quiet=s3.a_quiet, tag=s3.tag)

        # Stages 5..8: one bit of q each, most significant first. A stage only subtracts
        # (thr << i has i zero bits, so the difference's low i bits are r's); which of r and
        # r - (thr << i) goes on is chosen by the next stage, off the comparison's path.
        r, q = s.v1, {}
        for i in reversed(range(MAX_LEVEL_BITS)):
            diff = Signal(signed(R - i), name=f"diff{i}")
            m.d.comb += diff.eq(r[i:].as_signed() - s.thr)
            s = stage(
                5 + MAX_LEVEL_BITS - 1 - i, r=(r, signed(R)), diff=diff,
                hit=s.en[i] & ~diff[-1], **q,
                thr=s.thr, v1=s.v1, zero=s.zero, sub=s.sub, en=s.en,
                a_fired=s.a_fired, a_quiet=s.a_quiet, tag=s.tag)
            r = Mux(s.hit, Cat(s.r[:i], s.diff).as_signed(), s.r)
            q = {"q": Cat(s.hit, s.q) if q else s.hit}

        # Stage 9: the reset. The remainder is v1 - q*thr exactly.
        q = q["q"]
        fired = q.any()
        out = stage(
            5 + MAX_LEVEL_BITS,
            q=(q, unsigned(MAX_LEVEL_BITS)),
            v=(Mux(fired & s.zero, 0, Mux(s.sub, saturate(m, r, W, "v_sub"), s.v1)), signed(W)),
            a=(Mux(fired, s.a_fired, s.a_quiet), signed(W)),
            s=fired, tag=s.tag)
        m.d.comb += [
            self.o.payload.q.eq(out.q),
            self.o.payload.state.v.eq(out.v),
            self.o.payload.state.a.eq(out.a),
            self.o.payload.state.s.eq(out.s),
            self.o.payload.tag.eq(out.tag),
        ]
        assert NEURON_LATENCY == 6 + MAX_LEVEL_BITS      # stages 0 .. 5 + MAX_LEVEL_BITS
        return m
