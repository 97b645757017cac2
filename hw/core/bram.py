"""A block RAM with a registered read: one read port, one write port, two cycles of latency.

On an ECP5 (a platform whose ``family`` is ``"ecp5"``) a memory too large for LUT RAM is
built from ``DP16KD`` primitives in 1024 x 18 mode with the output register on
(``REGMODE = "OUTREG"``): the block RAM's own slow clock-to-output (about 5.8 ns, more than
half a 100 MHz cycle) then ends inside the block, and the fabric sees a register. Yosys's
memory inference cannot use that register, so this component instantiates the primitive.
Everywhere else (simulation, tests, other platforms) it is an Amaranth ``Memory`` followed
by two registers, which behaves identically: data for the address of cycle ``c`` in cycle
``c + 2``. The core never reads a word in the cycle it is written.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from models.capacity import LUTRAM_MAX_BITS
from ..memory_map import addr_bits

__all__ = ["BLOCK_WORDS", "BLOCK_BITS", "BlockRAM", "initval"]

BLOCK_WORDS = 1024
"""Depth of one DP16KD in the 18-bit mode used here."""
BLOCK_BITS = 18
# A memory of at most LUTRAM_MAX_BITS bits may be put in LUT RAM by the build (its Yosys
# script chooses by name, see models.capacity): it is always built as a ``Memory``.


def initval(words, width, block, row):
    """The ``INITVAL_<row>`` parameter of the DP16KD holding bits ``block * 18`` up of
    ``words`` (each ``width`` bits): 16 words of 18 bits, each in a 20-bit slot, as Yosys's
    own DP16KD mapping lays them out."""
    value = 0
    for i in range(16):
        k = row * 16 + i
        if k < len(words):
            value |= ((words[k] >> (block * BLOCK_BITS)) & ((1 << BLOCK_BITS) - 1)) << (20 * i)
    return value


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
        ``depth`` at most :data:`BLOCK_WORDS` where primitives are used.
    init : list of int
        Initial words from address 0.
    attrs : dict
        Attributes of the ``Memory`` (where one is built).
    name : str
        The ``Memory``'s name (the build's Yosys script chooses LUT RAM by name).
    """

    def __init__(self, width, depth, init=(), attrs=None, name="mem"):
        self._width, self._depth = width, depth
        self._name = name
        self._init = list(init)
        self._attrs = dict(attrs or {})
        super().__init__({
            "raddr": In(addr_bits(depth)),
            "rdata": Out(width),
            "we": In(1),
            "waddr": In(addr_bits(depth)),
            "wdata": In(width),
        })

    def uses_primitives(self, platform):
        return (getattr(platform, "family", None) == "ecp5"
                and self._width * self._depth > LUTRAM_MAX_BITS
                and self._depth <= BLOCK_WORDS)

    def elaborate(self, platform):
        m = Module()
        if not self.uses_primitives(platform):
            m.submodules[self._name] = mem = Memory(shape=self._width, depth=self._depth,
                                            init=self._init, attrs=self._attrs)
            r, w = mem.read_port(domain="comb"), mem.write_port()
            raw = Signal(self._width, name="raw")
            m.d.comb += [r.addr.eq(self.raddr), w.en.eq(self.we), w.addr.eq(self.waddr),
                         w.data.eq(self.wdata)]
            m.d.sync += [raw.eq(r.data), self.rdata.eq(raw)]
            return m

        # 1024 x 18 mode: the word address is ADx[13:4]; ADA[1:0] are the write's byte
        # enables. Port A writes, port B reads.
        blocks = -(-self._width // BLOCK_BITS)
        wdata = Signal(blocks * BLOCK_BITS)
        rdata = Signal(blocks * BLOCK_BITS)
        m.d.comb += [wdata.eq(self.wdata), self.rdata.eq(rdata)]
        ada = Cat(C(0b11, 2), C(0, 2), self.waddr, C(0, 10 - len(self.waddr)))
        adb = Cat(C(0, 4), self.raddr, C(0, 10 - len(self.raddr)))
        for b in range(blocks):
            params = {f"p_INITVAL_{row:02X}": C(initval(self._init, self._width, b, row), 320)
                      for row in range(64)}
            ports = {}
            for i in range(BLOCK_BITS):
                ports[f"i_DIA{i}"] = wdata[b * BLOCK_BITS + i]
                ports[f"i_DIB{i}"] = C(0, 1)
                ports[f"o_DOB{i}"] = rdata[b * BLOCK_BITS + i]
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
                p_DATA_WIDTH_A=BLOCK_BITS, p_DATA_WIDTH_B=BLOCK_BITS,
                p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
                i_WEA=self.we, i_WEB=C(0, 1),
                **params, **ports)
        return m
