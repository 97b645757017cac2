"""A block RAM with a registered read: one read port, one write port, two cycles of latency.

On an ECP5 (a platform whose ``family`` is ``"ecp5"``) a block-RAM memory is built from
``DP16KD`` primitives with the output register on (``REGMODE = "OUTREG"``): the block RAM's
own slow clock-to-output (about 5.8 ns, more than half a 100 MHz cycle) then ends inside
the block, and the fabric sees a register. Yosys's memory inference cannot use that
register, so this component instantiates the primitive, in the shape Yosys would choose
(:data:`MODES`: 512 x 36, 1024 x 18 or 2048 x 9, as many side by side as the width needs).
Everywhere else (simulation, tests, other platforms), and for a memory the build puts in
LUT RAM, it is an Amaranth ``Memory`` followed by two registers, which behaves identically:
data for the address of cycle ``c`` in cycle ``c + 2``. The core never reads a word in the
cycle it is written.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikestream.capacity import LUTRAM_MAX_BITS
from spikestream.memory_map import addr_bits

LUTRAM_SLICE_BITS = 16
"""Widest column slice of a LUT RAM (four ``TRELLIS_DPR16X4`` per 16 words), each with its own
registered read address."""

__all__ = ["LUTRAM_SLICE_BITS", "BLOCK_WORDS", "BLOCK_BITS", "MODES", "mode", "BlockRAM",
           "PipelinedRAM", "registered_read", "initval"]

BLOCK_WORDS = 1024
"""Rows of a DP16KD's array (each :data:`BLOCK_BITS` bits)."""
BLOCK_BITS = 18
MODES = ((36, 512), (18, 1024), (9, 2048))
"""The DP16KD shapes built here, ``(width, depth)``: 36 bits wide is the pseudo-dual-port
mode (port A writes, port B reads, the word on ``DOA`` and ``DOB``)."""
_ADDR_LOW = {36: 5, 18: 4, 9: 3}
"""The lowest address bit of a mode (below it: byte enables, or unused)."""
# A memory of at most LUTRAM_MAX_BITS bits may be put in LUT RAM by the build (its Yosys
# script chooses by name, see spikestream.capacity): that one is always built as a ``Memory``.


def mode(width, depth):
    """The :data:`MODES` entry with the fewest blocks for ``width`` x ``depth`` (the widest
    of equals, as Yosys chooses), or ``None`` if ``depth`` is deeper than all of them."""
    fits = [(-(-width // w), -w, w, d) for w, d in MODES if depth <= d]
    return min(fits)[2:] if fits else None


def initval(words, width, block, row, mode_width=BLOCK_BITS):
    """The ``INITVAL_<row>`` parameter of the DP16KD holding bits ``block * mode_width`` up
    of ``words`` (each ``width`` bits), as Yosys's own DP16KD mapping lays them out: the
    array is 1024 rows of 18 bits, 16 rows per ``INITVAL`` in 20-bit slots, and word ``a``
    of a ``mode_width``-bit mode starts at bit ``a * mode_width`` of the rows taken end to
    end (two words a row at 9 bits, two rows a word at 36)."""
    value = 0
    mask = (1 << mode_width) - 1
    per_row = BLOCK_BITS // mode_width if mode_width <= BLOCK_BITS else 0
    for i in range(16):
        r = row * 16 + i
        bits = 0
        if per_row:
            for j in range(per_row):
                k = r * per_row + j
                if k < len(words):
                    bits |= ((words[k] >> (block * mode_width)) & mask) << (j * mode_width)
        else:
            k, half = divmod(r, mode_width // BLOCK_BITS)
            if k < len(words):
                bits = (words[k] >> (block * mode_width + half * BLOCK_BITS)) & ((1 << BLOCK_BITS) - 1)
        value |= bits << (20 * i)
    return value


def _ports(width, depth):
    """The members of a one-read, one-write memory component."""
    return {"raddr": In(addr_bits(depth)), "rdata": Out(width),
            "we": In(1), "waddr": In(addr_bits(depth)), "wdata": In(width)}


def registered_read(m, ports, name, width, depth, init, attrs, slice_bits,
                    output_register=True, row_words=None, write_ahead=False):
    """Build ``ports`` (``raddr``, ``rdata``, ``we``, ``waddr``, ``wdata``) in ``m`` as
    column slices of at most ``slice_bits`` bits: each a ``Memory`` (named ``name``,
    ``name_s1``, ...) read asynchronously at its own register of ``raddr`` (``raddr_s<i>``),
    into one output register ``rdata``. The word of the address given in cycle ``c`` is in
    ``rdata`` in cycle ``c + 2``, as the memory holds it in cycle ``c + 1`` (after a write of
    cycle ``c``). Without ``output_register``, ``rdata`` is that read itself, in ``c + 1``.

    With ``row_words`` (a power of two below ``depth``), each slice is split by rows too:
    a ``Memory`` per ``row_words`` words (``name_b1``, ``name_s1_b1``, ...), each read at
    its own copy of the address (``raddr_s<i>_b<k>``), the row group chosen by one more
    copy of its upper bits (``rgroup_s<i>``). Each address register then drives the cells of
    one group only, not every cell of a deep memory.

    With ``write_ahead``, ``we`` and ``waddr`` are given a cycle before the write (each slice
    registers its own copy, ``we_s<i>`` and ``waddr_s<i>``) and ``wdata`` in the write's
    cycle: the write's enable and address then come to the cells from a flip-flop, not
    through the logic that decides them."""
    init = list(init)
    grouped = row_words is not None and row_words < depth
    if grouped:
        assert row_words & (row_words - 1) == 0, "row groups are a power of two deep"
    else:
        row_words = depth
    low = addr_bits(row_words) if grouped else len(ports.raddr)
    for i, lo in enumerate(range(0, width, slice_bits)):
        bits = min(slice_bits, width - lo)
        mask = (1 << bits) - 1
        we, waddr = ports.we, ports.waddr
        if write_ahead:
            we = Signal(name=f"we_s{i}")
            waddr = Signal.like(ports.waddr, name=f"waddr_s{i}", reset_less=True)
            m.d.sync += [we.eq(ports.we), waddr.eq(ports.waddr)]
        reads = []
        for k, base in enumerate(range(0, depth, row_words)):
            words = min(row_words, depth - base)
            mem = Memory(shape=bits, depth=words, attrs=attrs,
                         init=[(x >> lo) & mask for x in init[base:base + words]])
            label = (name if lo == 0 else f"{name}_s{i}") + (f"_b{k}" if k else "")
            m.submodules[label] = mem
            r, w = mem.read_port(domain="comb"), mem.write_port()
            group = f"_b{k}" if grouped else ""
            addr = Signal(low, name=f"raddr_s{i}{group}", reset_less=True)
            m.d.sync += addr.eq(ports.raddr[:low])
            mine = (waddr[low:] == k) if grouped else C(1, 1)
            m.d.comb += [r.addr.eq(addr), w.en.eq(we & mine),
                         w.addr.eq(waddr[:low]), w.data.eq(ports.wdata[lo:lo + bits])]
            reads.append(r.data)
        read = reads[0]
        if len(reads) > 1:
            select = Signal(len(ports.raddr) - low, name=f"rgroup_s{i}", reset_less=True)
            m.d.sync += select.eq(ports.raddr[low:])
            read = Array(reads)[select]
        raw = Signal(bits, name=f"raw_s{i}", reset_less=True)
        m.d[("sync" if output_register else "comb")] += raw.eq(read)
        m.d.comb += ports.rdata[lo:lo + bits].eq(raw)


class PipelinedRAM(wiring.Component):
    """``depth`` words of ``width`` bits read at a registered address (into a register).

    For a memory whose read cannot start a cycle before its data is needed, as a block RAM's
    does, but whose address is known a cycle early: the address register is the memory's
    (one copy per LUT RAM slice), so no address multiplexer stands in front of the read.

    Attributes
    ----------
    raddr : In(addr_bits(depth))
    rdata : Out(width)
        The word at ``raddr`` of two cycles before, as the memory holds it one cycle before
        (a write in the cycle of ``raddr`` is seen; one in the next cycle is not).
    we, waddr, wdata : In
        Write ``wdata`` at ``waddr`` (at the clock edge) when ``we``.

    Parameters
    ----------
    width, depth, init, attrs, name :
        As :class:`BlockRAM`.
    lutram : bool
        The build puts this memory in LUT RAM: column slices of at most
        :data:`LUTRAM_SLICE_BITS` bits, each with its own address register. Otherwise one
        ``Memory`` (Yosys maps it).
    output_register : bool
        Without it, ``rdata`` is the asynchronous read of the registered address: the word
        at ``raddr`` of one cycle before, as the memory holds it now.
    row_words : int or None
        In LUT RAM, also split the memory by rows, ``row_words`` words a group, each group
        with its own address register (:func:`registered_read`).
    write_ahead : bool
        ``we`` and ``waddr`` come a cycle before the write, ``wdata`` with it; they are
        registered (a copy per slice) on their way to the cells.
    """

    def __init__(self, width, depth, init=(), attrs=None, name="mem", lutram=True,
                 output_register=True, row_words=None, write_ahead=False):
        self._width, self._depth = width, depth
        self._name = name
        self._init = list(init)
        self._attrs = dict(attrs or {})
        self._lutram = bool(lutram)
        self._output_register = bool(output_register)
        self._row_words = row_words
        self._write_ahead = bool(write_ahead)
        super().__init__(_ports(width, depth))

    def elaborate(self, platform):
        m = Module()
        registered_read(m, self, self._name, self._width, self._depth, self._init,
                        self._attrs, LUTRAM_SLICE_BITS if self._lutram else self._width,
                        self._output_register, self._row_words if self._lutram else None,
                        self._write_ahead)
        return m


class BlockRAM(wiring.Component):
    """``depth`` words of ``width`` bits.

    Attributes
    ----------
    raddr : In(addr_bits(depth))
    rdata : Out(width)
        The word at ``raddr`` of two cycles before.
    we, waddr, wdata : In
        Write ``wdata`` at ``waddr`` (at the clock edge) when ``we``.

    Parameters
    ----------
    width, depth : int
        ``depth`` at most 2048 where primitives are used (:func:`mode`).
    init : list of int
        Initial words from address 0.
    attrs : dict
        Attributes of the ``Memory`` (where one is built).
    name : str
        The ``Memory``'s name (the build's Yosys script chooses LUT RAM by name).
    lutram : bool or None
        The build puts this memory in LUT RAM: build a ``Memory``. ``None``: so it does
        if it is small enough to be a candidate (at most ``LUTRAM_MAX_BITS``).
    """

    def __init__(self, width, depth, init=(), attrs=None, name="mem", lutram=None):
        self._width, self._depth = width, depth
        self._name = name
        self._init = list(init)
        self._attrs = dict(attrs or {})
        self._lutram = (width * depth <= LUTRAM_MAX_BITS) if lutram is None else bool(lutram)
        super().__init__(_ports(width, depth))

    def uses_primitives(self, platform):
        return (getattr(platform, "family", None) == "ecp5" and not self._lutram
                and mode(self._width, self._depth) is not None)

    def elaborate(self, platform):
        m = Module()
        if self._lutram:
            # Column slices, each read at its own copy of the registered address: the
            # address register then drives only its slice's cells (not every cell of a wide
            # memory, across the lane), and the read multiplexer has the whole second cycle.
            registered_read(m, self, self._name, self._width, self._depth, self._init,
                            self._attrs, LUTRAM_SLICE_BITS)
            return m
        if not self.uses_primitives(platform):
            m.submodules[self._name] = mem = Memory(shape=self._width, depth=self._depth,
                                            init=self._init, attrs=self._attrs)
            r, w = mem.read_port(domain="comb"), mem.write_port()
            raw = Signal(self._width, name="raw", reset_less=True)
            m.d.comb += [r.addr.eq(self.raddr), w.en.eq(self.we), w.addr.eq(self.waddr),
                         w.data.eq(self.wdata)]
            q = Signal(self._width, name="q", reset_less=True)
            m.d.sync += [raw.eq(r.data), q.eq(raw)]
            m.d.comb += self.rdata.eq(q)
            return m

        # Port A writes, port B reads. The word address is ADx[13:low]; below it, at 36
        # and 18 bits, are the write's byte enables. At 36 bits a word is DIA then DIB
        # (written through port A) and DOA then DOB (read through port B).
        wide, depth = mode(self._width, self._depth)
        low = _ADDR_LOW[wide]
        half = min(wide, BLOCK_BITS)
        blocks = -(-self._width // wide)
        wdata = Signal(blocks * wide)
        rdata = Signal(blocks * wide)
        m.d.comb += [wdata.eq(self.wdata), self.rdata.eq(rdata)]
        enables = {36: self.we.replicate(4), 18: C(0b11, 2), 9: C(0, 3)}[wide]
        ada = Cat(enables, C(0, low - len(enables)), self.waddr,
                  C(0, 14 - low - len(self.waddr)))
        adb = Cat(C(0, low), self.raddr, C(0, 14 - low - len(self.raddr)))
        for b in range(blocks):
            params = {f"p_INITVAL_{row:02X}": C(initval(self._init, self._width, b, row, wide),
                                                320)
                      for row in range(64)}
            ports = {}
            word = slice(b * wide, (b + 1) * wide)
            wd, rd = wdata[word], rdata[word]
            for i in range(BLOCK_BITS):
                if wide == 36:
                    ports[f"i_DIA{i}"], ports[f"i_DIB{i}"] = wd[i], wd[BLOCK_BITS + i]
                    ports[f"o_DOA{i}"], ports[f"o_DOB{i}"] = rd[i], rd[BLOCK_BITS + i]
                else:
                    ports[f"i_DIA{i}"] = wd[i] if i < half else C(0, 1)
                    ports[f"i_DIB{i}"] = C(0, 1)
                    if i < half:
                        ports[f"o_DOB{i}"] = rd[i]
            for i in range(14):
                ports[f"i_ADA{i}"] = ada[i]
                ports[f"i_ADB{i}"] = adb[i]
            for c in "AB":
                ports.update({f"i_CLK{c}": ClockSignal(), f"i_CE{c}": C(1, 1),
                              f"i_OCE{c}": C(1, 1), f"i_RST{c}": C(0, 1),
                              f"i_CS{c}0": C(0, 1), f"i_CS{c}1": C(0, 1),
                              f"i_CS{c}2": C(0, 1)})
            m.submodules[f"block{b}"] = Instance(
                "DP16KD",
                p_DATA_WIDTH_A=wide, p_DATA_WIDTH_B=wide,
                # At 36 bits both halves of the read word leave through output registers.
                p_REGMODE_A="OUTREG" if wide == 36 else "NOREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
                i_WEA=C(1, 1) if wide == 36 else self.we, i_WEB=C(0, 1),
                **params, **ports)
        return m
