"""Stream plumbing shared by the SoC's blocks."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """A one-word stream register: ``i.ready`` and ``o.valid`` (and ``o.payload``) are
    flip-flops.

    Placed between two blocks so that neither's handshake logic runs through the other's:
    each side's ``ready`` or ``valid`` then meets only this register (a combinational
    handshake across blocks is a path that placement can stretch across the die). A word
    taken in cycle ``t`` is offered from ``t + 1``; the register passes a word at most
    every other cycle.

    Parameters
    ----------
    shape : shape-like
        The payload.

    Attributes
    ----------
    i : In(stream.Signature(shape))
        Ready while the register is empty.
    o : Out(stream.Signature(shape))
        The registered word.
    """

    LATENCY = 1
    """Cycles from a word's handshake at ``i`` to its first cycle of ``o.valid``."""

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid)
        # While empty the payload register follows its input whether or not it is valid:
        # its enable is then this register's own flip-flop, not the sender's valid (the
        # decode of a state machine that would fan out to every bit). Only ``o.valid``
        # takes the reset: the payload means nothing until it is valid.
        payload = Signal(self._shape, name="payload", reset_less=True)
        m.d.comb += self.o.payload.eq(payload)
        with m.If(~self.o.valid):
            m.d.sync += payload.eq(self.i.payload)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += self.o.valid.eq(1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
