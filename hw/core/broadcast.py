"""Pipelined trees between the scheduler and the lanes.

A signal that drives every lane directly has a fan-out of hundreds of loads and spans the
whole die; on an ECP5-85F that alone limits a 64-lane core to about 70 MHz. These trees
spend ``stages`` register levels instead, with at most 4 loads (or 4 inputs) per register.
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["tree_arity", "Broadcast", "Scatter", "Reduce"]


def tree_arity(count, stages):
    """Smallest fan-out ``f`` with ``f ** stages >= count``."""
    f = 1
    while f ** stages < count:
        f += 1
    return f


class Broadcast(wiring.Component):
    """Copy ``i`` to ``count`` outputs through ``stages`` levels of registers.

    Parameters
    ----------
    shape : shape-castable
    count : int
    stages : int
        Latency in cycles (at least 1).
    control : function, optional
        With a ``StructLayout`` shape: given a register (a view of ``shape``), the parts of
        it that take the reset (an op, a valid bit). The rest of every register is
        reset-less: the reset then reaches only those bits, however wide the tree. Without
        it the whole tree takes the reset.

    Attributes
    ----------
    i : In(shape)
    o : Out(ArrayLayout(shape, count))
        ``o[k]`` is ``i`` delayed by ``stages`` cycles.
    """

    def __init__(self, shape, count, stages, control=None):
        if stages < 1:
            raise ValueError("a broadcast tree needs at least one stage")
        self._shape, self._count, self._stages = shape, count, stages
        self._control = control
        super().__init__({"i": In(shape), "o": Out(data.ArrayLayout(shape, count))})

    def _register(self, m, value, name):
        """A register of ``value``: reset-less but for the control parts."""
        if self._control is None:
            r = Signal(self._shape, name=name)
            m.d.sync += r.eq(value)
            return r
        data_r = Signal(self._shape, name=f"{name}_data", reset_less=True)
        m.d.sync += data_r.eq(value)
        r = Signal(self._shape, name=name)
        m.d.comb += r.eq(data_r)
        for k, (part, source) in enumerate(zip(self._control(r), self._control(value))):
            ctl = Signal.like(part, name=f"{name}_ctl{k}")
            m.d.sync += ctl.eq(source)
            m.d.comb += part.eq(ctl)
        return r

    def elaborate(self, platform):
        m = Module()
        f = tree_arity(self._count, self._stages)
        level = [self.i]
        for s in range(1, self._stages + 1):
            copies = -(-self._count // f ** (self._stages - s))
            regs = []
            for c in range(copies):
                regs.append(self._register(m, level[c // f] if len(level) > 1 else level[0],
                                           f"level{s}_{c}"))
            level = regs
        for k in range(self._count):
            m.d.comb += self.o[k].eq(level[k])
        return m


class Scatter(wiring.Component):
    """Give output ``k`` the elements ``k .. k + window - 1`` of ``i`` through ``stages``
    levels of registers (a :class:`Broadcast` tree's shape), each register holding only the
    elements that the outputs below it use: a lane's window of a per-lane array reaches it
    without every lane's copy of the whole array.

    Attributes
    ----------
    i : In(ArrayLayout(shape, count + window - 1))
    o : Out(ArrayLayout(ArrayLayout(shape, window), count))
        ``o[k][w]`` is ``i[k + w]`` delayed by ``stages`` cycles.

    The registers are reset-less.
    """

    def __init__(self, shape, count, stages, window=2):
        if stages < 1:
            raise ValueError("a scatter tree needs at least one stage")
        self._shape, self._count, self._stages, self._window = shape, count, stages, window
        super().__init__({
            "i": In(data.ArrayLayout(shape, count + window - 1)),
            "o": Out(data.ArrayLayout(data.ArrayLayout(shape, window), count)),
        })

    def elaborate(self, platform):
        m = Module()
        n, W = self._count, self._window
        f = tree_arity(n, self._stages)
        # A node: the outputs [lo, hi) below it and its copies of elements lo .. hi+W-2.
        level = [(0, n, {e: self.i[e] for e in range(n + W - 1)})]
        for s in range(1, self._stages + 1):
            span = f ** (self._stages - s)
            nodes = []
            for c in range(-(-n // span)):
                lo, hi = c * span, min((c + 1) * span, n)
                parent = level[c // f][2] if len(level) > 1 else level[0][2]
                elems = {}
                for e in range(lo, hi + W - 1):
                    r = Signal(self._shape, name=f"level{s}_{c}_e{e}", reset_less=True)
                    m.d.sync += r.eq(parent[e])
                    elems[e] = r
                nodes.append((lo, hi, elems))
            level = nodes
        for k in range(n):
            elems = level[k][2]
            for w in range(W):
                m.d.comb += self.o[k][w].eq(elems[k + w])
        return m


class Reduce(wiring.Component):
    """OR (``op="or"``) or AND (``op="and"``) ``count`` inputs through ``stages`` registers.

    Attributes
    ----------
    i : In(ArrayLayout(width, count))
    o : Out(width)
        The reduction of ``i``, ``stages`` cycles later.

    The registers are reset-less: after a reset ``o`` shows what was in flight for
    ``stages`` cycles (the core waits for the tree to flush, ``reset_settle``).
    """

    def __init__(self, width, count, stages, op):
        if op not in ("or", "and"):
            raise ValueError(f"op must be 'or' or 'and', not {op!r}")
        if stages < 1:
            raise ValueError("a reduction tree needs at least one stage")
        self._width, self._count, self._stages, self._op = width, count, stages, op
        super().__init__({"i": In(data.ArrayLayout(width, count)), "o": Out(width)})

    def elaborate(self, platform):
        m = Module()
        f = tree_arity(self._count, self._stages)
        level = [Value.cast(self.i[k]) for k in range(self._count)]
        for s in range(1, self._stages + 1):
            regs = []
            for c in range(0, len(level), f):
                group = level[c:c + f]
                r = Signal(self._width, name=f"level{s}_{c // f}", reset_less=True)
                acc = group[0]
                for x in group[1:]:
                    acc = (acc | x) if self._op == "or" else (acc & x)
                m.d.sync += r.eq(acc)
                regs.append(r)
            level = regs
        assert len(level) == 1
        m.d.comb += self.o.eq(level[0])
        return m
