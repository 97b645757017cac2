"""The neuron pipeline: ``models.neurons.int_step`` for one neuron per cycle."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from spikestream.formats import ACC_BITS, DECAY_FRAC_BITS, STATE_BITS
from spikestream.memory_map import Mem
from .layouts import reset_mode, word_layout
from spikestream.timing import NEURON_LATENCY

__all__ = ["saturate", "neuron_input_layout", "neuron_output_layout", "NeuronUnit"]


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


def neuron_input_layout(config, tag_shape):
    """What the pipeline takes: kind, parameter word, state word, accumulator and a tag."""
    return data.StructLayout({
        "kind": unsigned(2),
        "params": word_layout(config, Mem.PARAM),
        "state": word_layout(config, Mem.STATE),
        "acc": signed(ACC_BITS),
        "tag": tag_shape,
    })


def neuron_output_layout(config, tag_shape):
    """What the pipeline gives: the spike, the new state word and the input's tag."""
    return data.StructLayout({
        "spike": 1,
        "state": word_layout(config, Mem.STATE),
        "tag": tag_shape,
    })


class NeuronUnit(wiring.Component):
    """One neuron update per cycle, ``NEURON_LATENCY`` cycles deep, no back-pressure.

    Computes exactly ``models.neurons.int_step`` (round-half-up decay multiplies, 16-bit
    saturation of the input current and of every state update)::

        stage 0: operands next to the multipliers; acc + bias, theta + a
        stage 1: alpha*v, rho*a (the multipliers alone)
        stage 2: round: (alpha*v + 128) >> 8, (rho*a + 128) >> 8; I = sat(.), thr = sat(.)
        stage 3: v = sat(. + I);  a candidates sat(. + jump), sat(.)
        stage 4: fire (v >= thr, spiking kinds only), v - thr; after it, reset and
                 choose a

    Parameters
    ----------
    config : CoreConfig
    tag_shape : shape-castable
        Side information carried along unchanged (address, neuron id, ...).

    Attributes
    ----------
    i : In(stream.Signature(neuron_input_layout, always_ready=True))
    o : Out(stream.Signature(neuron_output_layout, always_ready=True))
        Each input reappears here ``NEURON_LATENCY`` cycles later.
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
        half = 1 << (DECAY_FRAC_BITS - 1)
        x = self.i.payload
        tag_shape = x.tag.shape()

        # Every stage's data registers are reset-less (only the valid bits take the reset):
        # a reset in flight is flushed by the valid bits within NEURON_LATENCY cycles, and
        # the core's reset net then reaches a few hundred flip-flops per lane, not all.

        # Stage 0: the multipliers' operands, registered next to the DSP blocks (which sit
        # far from the block RAMs); the two adds.
        s0_valid = Signal(name="s0_valid")
        s0_alpha = Signal.like(x.params.alpha, name="s0_alpha", reset_less=True)
        s0_v = Signal(signed(W), name="s0_v", reset_less=True)
        s0_rho = Signal.like(x.params.rho, name="s0_rho", reset_less=True)
        s0_a = Signal(signed(W), name="s0_a", reset_less=True)
        s0_cur = Signal(signed(ACC_BITS + 1), name="s0_cur", reset_less=True)
        s0_thr = Signal(signed(W + 1), name="s0_thr", reset_less=True)
        s0_jump = Signal(signed(W), name="s0_jump", reset_less=True)
        s0_kind = Signal(2, name="s0_kind", reset_less=True)
        s0_tag = Signal(tag_shape, name="s0_tag", reset_less=True)
        m.d.sync += [
            s0_valid.eq(self.i.valid),
            s0_alpha.eq(x.params.alpha), s0_v.eq(x.state.v),
            s0_rho.eq(x.params.rho), s0_a.eq(x.state.a),
            s0_cur.eq(x.acc + x.params.bias), s0_thr.eq(x.params.theta + x.state.a),
            s0_jump.eq(x.params.jump), s0_kind.eq(x.kind), s0_tag.eq(x.tag),
        ]

        # Stage 1: the multiplies alone, register to register.
        s1_valid = Signal(name="s1_valid")
        s1_pv = Signal(signed(W + 11), name="s1_pv", reset_less=True)
        s1_pa = Signal(signed(W + 11), name="s1_pa", reset_less=True)
        s1_cur = Signal(signed(ACC_BITS + 1), name="s1_cur", reset_less=True)
        s1_thr = Signal(signed(W + 1), name="s1_thr", reset_less=True)
        s1_jump = Signal(signed(W), name="s1_jump", reset_less=True)
        s1_a = Signal(signed(W), name="s1_a", reset_less=True)
        s1_kind = Signal(2, name="s1_kind", reset_less=True)
        s1_tag = Signal(tag_shape, name="s1_tag", reset_less=True)
        m.d.sync += [
            s1_valid.eq(s0_valid),
            s1_pv.eq(s0_alpha * s0_v),
            s1_pa.eq(s0_rho * s0_a),
            s1_cur.eq(s0_cur), s1_thr.eq(s0_thr), s1_jump.eq(s0_jump), s1_a.eq(s0_a),
            s1_kind.eq(s0_kind), s1_tag.eq(s0_tag),
        ]

        # Stage 2: round half up and drop the fraction (arithmetic shift); saturate the sums.
        s2_valid = Signal(name="s2_valid")
        s2_tv = Signal(signed(W + 3), name="s2_tv", reset_less=True)
        s2_ta = Signal(signed(W + 3), name="s2_ta", reset_less=True)
        s2_cur = Signal(signed(W), name="s2_cur", reset_less=True)
        s2_thr = Signal(signed(W), name="s2_thr", reset_less=True)
        s2_jump = Signal(signed(W), name="s2_jump", reset_less=True)
        s2_a = Signal(signed(W), name="s2_a", reset_less=True)
        s2_kind = Signal(2, name="s2_kind", reset_less=True)
        s2_tag = Signal(tag_shape, name="s2_tag", reset_less=True)
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_tv.eq((s1_pv + half) >> DECAY_FRAC_BITS),
            s2_ta.eq((s1_pa + half) >> DECAY_FRAC_BITS),
            s2_cur.eq(saturate(m, s1_cur, W, "cur")), s2_thr.eq(saturate(m, s1_thr, W, "thr")),
            s2_jump.eq(s1_jump), s2_a.eq(s1_a),
            s2_kind.eq(s1_kind), s2_tag.eq(s1_tag),
        ]

        # Stage 3: integrate; both candidates for the new adaptation.
        s3_valid = Signal(name="s3_valid")
        s3_v = Signal(signed(W), name="s3_v", reset_less=True)
        s3_aj = Signal(signed(W), name="s3_aj", reset_less=True)
        s3_a0 = Signal(signed(W), name="s3_a0", reset_less=True)
        s3_thr = Signal(signed(W), name="s3_thr", reset_less=True)
        s3_a = Signal(signed(W), name="s3_a", reset_less=True)
        s3_kind = Signal(2, name="s3_kind", reset_less=True)
        s3_tag = Signal(tag_shape, name="s3_tag", reset_less=True)
        m.d.sync += [
            s3_valid.eq(s2_valid),
            s3_v.eq(saturate(m, s2_tv + s2_cur, W, "v_int")),
            s3_aj.eq(saturate(m, s2_ta + s2_jump, W, "a_jump")),
            s3_a0.eq(saturate(m, s2_ta, W, "a_decay")),
            s3_thr.eq(s2_thr), s3_a.eq(s2_a), s3_kind.eq(s2_kind), s3_tag.eq(s2_tag),
        ]

        # Stage 4: fire; the reset candidates. The choice itself is made after the stage's
        # registers (one LUT level per output bit), keeping the long compare that decides
        # it off the wide multiplexers.
        spikes, zero = reset_mode(s3_kind)
        diff = Signal(signed(W + 1), name="diff")
        m.d.comb += diff.eq(s3_v - s3_thr)
        v_sub = saturate(m, diff, W, "v_sub")
        s4_valid = Signal(name="s4_valid")
        s4_spike = Signal(name="s4_spike", reset_less=True)
        s4_spiking = Signal(name="s4_spiking", reset_less=True)
        s4_zero = Signal(name="s4_zero", reset_less=True)
        s4_v = Signal(signed(W), name="s4_v", reset_less=True)
        s4_v_sub = Signal(signed(W), name="s4_v_sub", reset_less=True)
        s4_aj = Signal(signed(W), name="s4_aj", reset_less=True)
        s4_a0 = Signal(signed(W), name="s4_a0", reset_less=True)
        s4_a = Signal(signed(W), name="s4_a", reset_less=True)
        s4_tag = Signal(tag_shape, name="s4_tag", reset_less=True)
        m.d.sync += [
            s4_valid.eq(s3_valid),
            s4_spike.eq(spikes & ~diff[-1]),
            s4_spiking.eq(spikes), s4_zero.eq(zero),
            s4_v.eq(s3_v), s4_v_sub.eq(v_sub),
            s4_aj.eq(s3_aj), s4_a0.eq(s3_a0), s4_a.eq(s3_a),
            s4_tag.eq(s3_tag),
        ]
        m.d.comb += [
            self.o.valid.eq(s4_valid),
            self.o.payload.spike.eq(s4_spike),
            self.o.payload.state.v.eq(Mux(s4_spike, Mux(s4_zero, 0, s4_v_sub), s4_v)),
            self.o.payload.state.a.eq(Mux(s4_spiking, Mux(s4_spike, s4_aj, s4_a0), s4_a)),
            self.o.payload.tag.eq(s4_tag),
        ]
        assert NEURON_LATENCY == 5
        return m
