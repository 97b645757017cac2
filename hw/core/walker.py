"""A lane's route engine after its row-pointer read: the segment queue, the synapse walker
and the accumulator with forwarding (hw.core.lane wires them to its memories)."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikestream.formats import ACC_BITS, TAIL_BITS, WEIGHT_BITS
from spikestream.timing import SKID_DEPTH
from .layouts import segment_layout

__all__ = ["segment_entry_layout", "head_layout", "synapse_read_layout", "synapse_layout",
           "acc_write_layout", "SegmentQueue", "Walker", "Accumulator"]


def segment_entry_layout(config):
    """A spike's segment in this lane (its row pointer) and the spike's value ``q``."""
    return data.StructLayout({"seg": segment_layout(config), "q": unsigned(config.q_bits)})


def head_layout(config):
    """A segment as the walker takes it, decoded ahead: its first synapse, whether it has
    any slot with a synapse (``nonzero``), whether it has at most one slot (``single``), the
    slots after the first (``more``), how many of its last slots are single (``tail``) and
    the spike's value."""
    return data.StructLayout({"start": unsigned(config.syn_bits), "nonzero": 1, "single": 1,
                              "more": unsigned(config.rows_bits),
                              "tail": unsigned(TAIL_BITS), "q": unsigned(config.q_bits)})


def synapse_read_layout(config):
    """A synapse read the walker issues: its address, whether it reads the word after it too
    (``pair``: the address is even) and the value of its spike."""
    return data.StructLayout({"addr": unsigned(config.syn_bits), "pair": 1,
                              "q": unsigned(config.q_bits)})


def synapse_layout(config):
    """A synapse as the accumulator takes it: target address, weight and spike value."""
    return data.StructLayout({"addr": unsigned(config.local_bits),
                              "weight": signed(WEIGHT_BITS), "q": unsigned(config.q_bits)})


def acc_write_layout(config):
    """An accumulator write: address and new value."""
    return data.StructLayout({"addr": unsigned(config.local_bits), "value": signed(ACC_BITS)})


class SegmentQueue(wiring.Component):
    """Segments between the row-pointer read and the walker: a head register (what the
    walker looks at) in front of a ``SKID_DEPTH``-word LUT RAM.

    A segment enters the head directly when it is free, so the queue adds no latency, and
    the walker decides from flip-flops only. The queue never refuses a segment: its
    producer (the lane's spike buffer) counts what it has issued and not yet seen taken.

    Attributes
    ----------
    i : In(stream.Signature(segment_entry_layout(config), always_ready=True))
    o : Out(stream.Signature(head_layout(config)))
    clear : In(1)
        Empties the queue (a route phase begins).
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(segment_entry_layout(config), always_ready=True)),
            "o": Out(stream.Signature(head_layout(config))),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        SEG = segment_entry_layout(self._config)
        m.submodules.skid = skid = Memory(shape=SEG, depth=SKID_DEPTH, init=[])
        skid_r, skid_w = skid.read_port(domain="comb"), skid.write_port()

        head = Signal(head_layout(self._config), name="head", reset_less=True)
        head_valid = Signal(name="head_valid")
        take = Signal(name="take")
        m.d.comb += [self.o.valid.eq(head_valid), self.o.payload.eq(head),
                     take.eq(head_valid & self.o.ready)]

        def load_head(entry):
            seg = entry.seg
            return [head.start.eq(seg.start), head.nonzero.eq(seg.slots != 0),
                    head.single.eq(seg.slots <= 1),
                    head.more.eq(Mux(seg.slots != 0, seg.slots - 1, 0)),
                    head.tail.eq(seg.tail), head.q.eq(entry.q), head_valid.eq(1)]

        skid_wp = Signal(range(SKID_DEPTH), name="skid_wp")
        skid_rp = Signal(range(SKID_DEPTH), name="skid_rp")
        stored = Signal(range(SKID_DEPTH + 1), name="stored")      # segments in the LUT RAM
        head_free = Signal(name="head_free")
        refill = Signal(name="refill")
        to_ram = Signal(name="to_ram")
        m.d.comb += [
            head_free.eq(~head_valid | take),
            refill.eq(head_free & (stored != 0)),
            to_ram.eq(self.i.valid & ~(head_free & (stored == 0))),
            skid_w.en.eq(to_ram),
            skid_w.addr.eq(skid_wp),
            skid_w.data.eq(self.i.payload),
            skid_r.addr.eq(skid_rp),
        ]
        with m.If(self.clear):
            m.d.sync += [skid_wp.eq(0), skid_rp.eq(0), stored.eq(0), head_valid.eq(0)]
        with m.Else():
            with m.If(to_ram):
                m.d.sync += skid_wp.eq(skid_wp + 1)
            with m.If(refill):
                m.d.sync += skid_rp.eq(skid_rp + 1)
            m.d.sync += stored.eq(stored + to_ram - refill)
            with m.If(refill):
                m.d.sync += load_head(skid_r.data)
            with m.Elif(head_free & self.i.valid):
                m.d.sync += load_head(self.i.payload)
            with m.Elif(take):
                m.d.sync += head_valid.eq(0)
        return m


class Walker(wiring.Component):
    """Walk each segment one slot per cycle, ``max(1, slots)`` slots per segment.

    A segment is taken (``i.ready``) when the walker is ``enable`` d and has no slot left of
    the last one; from then on it issues one synapse read a cycle (none for an empty
    segment's single slot). A slot reads one word, or two (``pair``: the word at an even
    address and the next), as spikestream.network.pair_row lays a row out: one word at an
    odd address, one word in the row's last ``tail`` slots, two otherwise.

    Attributes
    ----------
    i : In(stream.Signature(head_layout(config)))
    o : Out(stream.Signature(synapse_read_layout(config), always_ready=True))
        ``payload.addr`` is the walk's current address also while ``valid`` is low.
    enable : In(1)
    clear : In(1)
        Forgets the segment being walked and zeroes ``walked`` (a route phase begins).
    walked : Out(config.size_bits)
        Segments taken since the last ``clear``.
    idle : Out(1)
        No slot of the last segment is left.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(head_layout(config))),
            "o": Out(stream.Signature(synapse_read_layout(config), always_ready=True)),
            "enable": In(1),
            "clear": In(1),
            "walked": Out(config.size_bits),
            "idle": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        head = self.i.payload
        rem = Signal(cfg.rows_bits, name="rem")           # slots of this segment still to go
        rem_zero = self.idle
        cur = Signal(cfg.syn_bits, name="cur", reset_less=True)
        cur_q = Signal(cfg.q_bits, name="cur_q", reset_less=True)   # the spike walked
        tail = Signal(TAIL_BITS, name="tail", reset_less=True)     # of the segment walked
        take = Signal(name="take")
        pair = Signal(name="pair")
        # A slot is a pair unless its address is odd or it is one of the last `tail` (slots
        # after it: `more` when taken, `rem - 1` later).
        m.d.comb += [
            self.i.ready.eq(self.enable & rem_zero),
            take.eq(self.i.valid & self.i.ready),
            self.o.valid.eq((take & head.nonzero) | ~rem_zero),
            self.o.payload.addr.eq(Mux(take, head.start, cur)),
            pair.eq(Mux(take, ~head.start[0] & (head.more >= head.tail),
                        ~cur[0] & (rem > tail))),
            self.o.payload.pair.eq(pair),
            self.o.payload.q.eq(Mux(take, head.q, cur_q)),
        ]
        with m.If(self.clear):
            m.d.sync += [self.walked.eq(0), rem.eq(0), rem_zero.eq(1)]
        with m.Elif(take):
            m.d.sync += [
                self.walked.eq(self.walked + 1),
                cur.eq(head.start + 1 + pair),
                cur_q.eq(head.q),
                tail.eq(head.tail),
                rem.eq(head.more),
                rem_zero.eq(head.single),
            ]
        with m.Elif(~rem_zero):
            m.d.sync += [cur.eq(cur + 1 + pair), rem.eq(rem - 1), rem_zero.eq(rem == 1)]
        return m


class Accumulator(wiring.Component):
    """Add each synapse's weight times its spike's value to its target's accumulator word:
    read (R, the cycle a synapse is offered on ``i``), wait (M), add and write (W).

    The memory is the lane's: its word for the synapse in M arrives on ``raw`` (the lane
    loads the read address a cycle ahead). The two writes still in flight when a read
    samples the memory are forwarded from registers: the older one is merged into the read
    word already in M (it is then in ``wr1``), so that W has one multiplexer in front of its
    adder. ``weight * q`` is built from shifts and adds (``q`` has at most MAX_LEVEL_BITS
    bits; binary spikes have ``q = 1``): no multiplier block.

    Attributes
    ----------
    i : In(stream.Signature(synapse_layout(config), always_ready=True))
    raw : In(signed(ACC_BITS))
        The memory's word at the address of the synapse in M.
    o : Out(stream.Signature(acc_write_layout(config), always_ready=True))
        The write of the synapse in W.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "i": In(stream.Signature(synapse_layout(config), always_ready=True)),
            "raw": In(signed(ACC_BITS)),
            "o": Out(stream.Signature(acc_write_layout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        syn = self.i.payload
        v_m = Signal(name="v_m")
        v_w = Signal(name="v_w")
        a_m = Signal(cfg.local_bits, name="a_m", reset_less=True)
        a_w = Signal(cfg.local_bits, name="a_w", reset_less=True)
        WQ = WEIGHT_BITS + cfg.q_bits           # weight times spike value
        w_m = Signal(signed(WQ), name="w_m", reset_less=True)
        w_w = Signal(signed(WQ), name="w_w", reset_less=True)
        wr1 = Signal(data.StructLayout({"valid": 1, "addr": unsigned(cfg.local_bits),
                                        "value": signed(ACC_BITS)}), name="wr1")
        hit1 = Signal(name="hit1")      # the synapse in W targets the word wr1 wrote
        hit2 = Signal(name="hit2")      # the synapse in M targets the word wr1 holds
        base = Signal(signed(ACC_BITS), name="acc_base", reset_less=True)   # two back merged
        # weight * q as the shifted weights of q's bits, added in a balanced tree
        terms = [Mux(syn.q[i], syn.weight.as_signed() << i, 0) for i in range(cfg.q_bits)]
        while len(terms) > 1:
            terms = [a + b for a, b in zip(terms[::2], terms[1::2])] + terms[len(terms) & ~1:]
        scaled = terms[0]
        # Both hits are compared a cycle ahead, from what v_m, a_m, v_w and a_w (and wr1,
        # loaded from W) are about to hold: the merge is then a multiplexer on a flip-flop.
        m.d.sync += [
            v_m.eq(self.i.valid), a_m.eq(syn.addr), w_m.eq(scaled),
            v_w.eq(v_m), a_w.eq(a_m), w_w.eq(w_m),
            hit1.eq(v_m & v_w & (a_m == a_w)),
            hit2.eq(self.i.valid & v_w & (syn.addr == a_w)),
            base.eq(Mux(hit2, wr1.value, self.raw)),
        ]
        old = Signal(signed(ACC_BITS), name="old")
        new = Signal(signed(ACC_BITS), name="new")
        m.d.comb += [
            old.eq(Mux(hit1, wr1.value, base)),
            new.eq(old + w_w),
            self.o.valid.eq(v_w),
            self.o.payload.addr.eq(a_w),
            self.o.payload.value.eq(new),
        ]
        m.d.sync += [wr1.valid.eq(v_w), wr1.addr.eq(a_w), wr1.value.eq(new)]
        return m
