"""The ULX3S (12F, 25F, 45F, 85F): platform, clock, reset, pins and default core sizes.

* :func:`pll_config` finds EHXPLLL dividers for a core clock from the board's 25 MHz
  oscillator; :class:`PLL` instantiates them.
* :class:`Top` puts a design with ``rx``/``tx``/``leds`` ports (the SoC) on the board: PLL
  to the ``sync`` domain (constrained at the frequency the PLL really makes, so that
  nextpnr checks the clock the board will run), reset from the PWR button and PLL lock,
  UART to the FT231X, the 8 LEDs.
* :func:`platform` gives amaranth-boards' platform for a size, without openFPGALoader among
  the tools a build requires (only programming needs it).
* :func:`core_config` sizes a :class:`~spikestream.memory_map.CoreConfig` to a size's block RAMs
  and LUTs (:mod:`spikestream.capacity`); :func:`lane_budget` is the block RAM per lane the
  build's LUT RAM choice works to.
"""

from dataclasses import dataclass
from fractions import Fraction

from amaranth import *
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform,
                                   ULX3S_45F_Platform, ULX3S_85F_Platform)

from spikestream.board import DEFAULT_FPGA
from spikestream.capacity import core_plan, lane_block_budget
from spikestream.ecp5 import ULX3S_DEVICES, ulx3s_device
from spikestream.memory_map import CoreConfig

__all__ = ["DEVICES", "DEFAULT_DEVICE", "device", "OSC_MHZ", "PROGRAMMER", "PLLConfig",
           "pll_config", "PLL", "Top", "platform", "DEFAULT_LANES", "HEADROOM_BRAM", "LUT_FILL",
           "NEURON_STEP", "lane_budget", "core_config"]

DEVICES = ULX3S_DEVICES
DEFAULT_DEVICE = DEFAULT_FPGA
device = ulx3s_device

OSC_MHZ = 25
"""The ULX3S's oscillator (pin G2)."""

PROGRAMMER = "openFPGALoader"

# EHXPLLL limits (Lattice TN1263 and prjtrellis' ecppll), in MHz.
_PFD = (Fraction(3125, 1000), Fraction(400))
_VCO = (Fraction(400), Fraction(800))
_VCO_BEST = Fraction(600)
_OUT = (Fraction(3125, 1000), Fraction(400))
_CLKI_DIV, _CLKFB_DIV, _CLKOP_DIV = 128, 80, 128


@dataclass(frozen=True)
class PLLConfig:
    """EHXPLLL dividers: ``f_out = f_in / clki_div * clkfb_div`` (feedback from CLKOP),
    ``f_vco = f_out * clkop_div``. Frequencies in MHz (exact fractions)."""
    f_in: Fraction
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out(self):
        return self.f_in / self.clki_div * self.clkfb_div

    @property
    def f_vco(self):
        return self.f_out * self.clkop_div

    @property
    def f_out_hz(self):
        return float(self.f_out * 1_000_000)

    @property
    def clkop_cphase(self):
        """CLKOP shifted by 180 degrees, as Lattice's tools (and ecppll) set it."""
        return self.clkop_div // 2


def pll_config(f_out_mhz, f_in_mhz=OSC_MHZ):
    """The EHXPLLL dividers whose output is nearest ``f_out_mhz``.

    The search is ecppll's (prjtrellis): every input, feedback and output divider whose
    phase detector and VCO frequencies are within range; the smallest error wins, and of
    equal errors the VCO nearest 600 MHz (of two as near, the faster: less jitter; ecppll
    leaves that tie to floating-point noise). Raises
    ``ValueError`` if ``f_out_mhz`` is outside what CLKOP can make (3.125 to 400 MHz).
    """
    f_in = Fraction(str(f_in_mhz))
    target = Fraction(str(f_out_mhz))
    if not _OUT[0] <= target <= _OUT[1]:
        raise ValueError(f"the ECP5 PLL makes {float(_OUT[0])} to {float(_OUT[1])} MHz, "
                         f"not {f_out_mhz} MHz")
    best, best_err, best_vco = None, None, None
    for clki in range(1, _CLKI_DIV + 1):
        pfd = f_in / clki
        if not _PFD[0] <= pfd <= _PFD[1]:
            continue
        for clkfb in range(1, _CLKFB_DIV + 1):
            f_out = pfd * clkfb
            err = abs(f_out - target)
            if best_err is not None and err > best_err:
                continue
            lo = max(1, -(-_VCO[0] // f_out))
            hi = min(_CLKOP_DIV, _VCO[1] // f_out)
            for clkop in range(int(lo), int(hi) + 1):
                vco = f_out * clkop
                if (best_err is None or err < best_err
                        or (err == best_err and _vco_rank(vco) < _vco_rank(best_vco))):
                    best, best_err, best_vco = (clki, clkfb, clkop), err, vco
    if best is None:
        raise ValueError(f"no PLL setting makes {f_out_mhz} MHz from {f_in_mhz} MHz")
    return PLLConfig(f_in, *best)


def _vco_rank(vco):
    return (abs(vco - _VCO_BEST), -vco)


class PLL(wiring.Component):
    """One ECP5 EHXPLLL with the dividers of ``config`` (see :func:`pll_config`).

    Attributes
    ----------
    clk_in : In(1)
        Reference clock (``config.f_in``).
    clk_out : Out(1)
        CLKOP, ``config.f_out``; it is also the feedback.
    locked : Out(1)
        The PLL's LOCK output (asynchronous).
    """
    clk_in: In(1)
    clk_out: Out(1)
    locked: Out(1)

    def __init__(self, config):
        self.config = config
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(float(c.f_in)),
            a_FREQUENCY_PIN_CLKOP=str(float(c.f_out)),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=c.clki_div, p_CLKFB_DIV=c.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=c.clkop_div,
            p_CLKOP_CPHASE=c.clkop_cphase, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, i_CLKFB=self.clk_out,
            o_CLKOP=self.clk_out, o_LOCK=self.locked,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
        )
        return m


class Top(Elaboratable):
    """``design`` on a ULX3S, clocked at ``pll.f_out``.

    ``design`` is a component with ``rx: In(1)``, ``tx: Out(1)`` and ``leds: Out(8)`` (the
    SoC) that runs in the ``sync`` domain. ``rx``/``tx`` are the FT231X's lines (the
    ``uart`` resource: ``rx`` is the FPGA's input, M1; ``tx`` its output, L4); the design
    synchronises ``rx`` itself. Reset is held while the PLL is unlocked or the PWR button
    (D6) is pressed.
    """

    def __init__(self, design, pll):
        self.design = design
        self.pll = pll

    def elaborate(self, platform):
        m = Module()
        clk25 = platform.request("clk25", dir="-")
        m.submodules.clk25_buf = clk25_buf = io.Buffer("i", clk25)
        m.submodules.pll = pll = PLL(self.pll)
        m.d.comb += pll.clk_in.eq(clk25_buf.i)

        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += sync.clk.eq(pll.clk_out)
        platform.add_clock_constraint(sync.clk, self.pll.f_out_hz)

        button = platform.request("button_pwr", 0, dir="-")
        m.submodules.button_buf = button_buf = io.Buffer("i", button)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked | button_buf.i, domain="sync")

        m.submodules.design = design = self.design
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [design.rx.eq(uart_rx.i), uart_tx.o.eq(design.tx)]
        for k in range(8):
            m.submodules[f"led{k}"] = led = io.Buffer("o", platform.request("led", k, dir="-"))
            m.d.comb += led.o.eq(design.leds[k])
        return m


_PLATFORMS = {"12f": ULX3S_12F_Platform, "25f": ULX3S_25F_Platform,
              "45f": ULX3S_45F_Platform, "85f": ULX3S_85F_Platform}


def platform(device=DEFAULT_FPGA, *, program=False):
    """amaranth-boards' ULX3S platform for ``device`` ("12f" .. "85f").

    amaranth-boards lists openFPGALoader among the tools every build requires; only
    programming does, so it is dropped unless ``program`` is true.
    """
    base = _PLATFORMS[_key(device)]
    if program:
        return base()

    class BuildOnly(base):
        @property
        def required_tools(self):
            return [t for t in super().required_tools if t != PROGRAMMER]

    BuildOnly.__name__ = BuildOnly.__qualname__ = base.__name__
    return BuildOnly()


def _key(device):
    ulx3s_device(device)             # a clear error for an unknown size
    return str(device).lower().removeprefix("lfe5u-").removeprefix("ulx3s-")


DEFAULT_LANES = {"12f": 2, "25f": 4, "45f": 8, "85f": 16}
"""Lanes of each size's default build."""

HEADROOM_BRAM = 8
"""Block RAMs a default configuration leaves free (placement slack, later SoC features)."""

LUT_FILL = 0.80
"""Largest share of a size's LUT4 sites a default configuration may be estimated to use:
fuller designs route slowly and miss timing. (The 85F's default core with lanes that add two
synapses a cycle is estimated at 76% and placed at 78%: routed at 100 MHz, seed 1.)"""

_NEURONS = {"12f": 256, "25f": 256, "45f": 1024, "85f": 1280}
"""Neurons of each size's default build (all lanes together): 1280 on the 85F (80 a lane at 16
lanes), so that the shipped model's 1089 (69 a lane) fit. Each neuron costs LUT RAM in
every lane (parameters, accumulator, spike queue: about 100 LUT4 a 16-neuron step at 16
lanes), so the default holds no more than the shipped model needs with a little room: with
2048 (128 a lane) the 85F build filled 81% of its LUTs and did not finish routing."""

NEURON_STEP = 16
"""Neurons per lane come in multiples of this: the words of one LUT RAM cell
(TRELLIS_DPR16X4), so that no cell is paid for and left empty."""


_EBR_ROWS = {"85f": ((22, 46, 70, 82), (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114))}
"""Where a size's DP16KD sites are, as nextpnr-ecp5 0.11 names them: rows (``Y``) of groups of
four (``EBR0`` .. ``EBR3`` at ``X = x0, x0 + 2, x0 + 4, x0 + 6``). Read off a placement of
208 blocks on the 85F; the other sizes are not mapped (their builds are not floorplanned)."""


def ebr_rows(device):
    """The DP16KD site names of ``device``, one list per row (left to right), or ``None``
    if its sites are not mapped here."""
    grid = _EBR_ROWS.get(_key(device))
    if grid is None:
        return None
    ys, groups = grid
    return [[f"X{x0 + 2 * k}/Y{y}/EBR{k}" for x0 in groups for k in range(4)] for y in ys]


_DSP_ROWS = {"85f": (10, 34, 58)}
"""Rows (``Y``) of a size's MULT18X18D sites, as nextpnr-ecp5 0.11 names them: four in each
group of nine columns that starts at a DP16KD group's ``x0`` (``MULT18_0`` at ``x0``,
``MULT18_1`` at ``x0 + 1``, ``MULT18_4`` at ``x0 + 4``, ``MULT18_5`` at ``x0 + 5``), 52 a row.
Checked site by site against nextpnr on the 85F."""


def mult18_sites(device):
    """The MULT18X18D site names of ``device``, row by row, left to right, or ``None`` if its
    sites are not mapped here."""
    ys = _DSP_ROWS.get(_key(device))
    if ys is None:
        return None
    return [f"X{x0 + dx}/Y{y}/MULT18_{dx}" for y in ys for x0 in _EBR_ROWS[_key(device)][1]
            for dx in (0, 1, 4, 5)]


def lane_budget(device, lanes):
    """Block RAMs per lane that a build for ``device`` with ``lanes`` lanes may use (the
    budget :func:`spikestream.capacity.lutram_memories` chooses the LUT RAM for)."""
    return lane_block_budget(ulx3s_device(device).dp16kd, lanes, HEADROOM_BRAM)


def core_config(device=DEFAULT_FPGA, lanes=None, *, lut_fill=LUT_FILL, **overrides):
    """The default :class:`~spikestream.memory_map.CoreConfig` of a ULX3S size.

    Neurons per lane are the size's neuron budget over ``lanes`` (rounded up to a multiple
    of :data:`NEURON_STEP`); row pointers 2048 and spike buffers 1024 (a source population of
    up to 1024 neurons, as the shipped model's hidden layer); a spike queue of as many words as
    neurons per lane (in LUT RAM: one timestep of every population, or several timesteps
    of the populations that delayed projections read); the other limits of general
    networks (delays up to 15, 32 kept timesteps of all sources, 4 spike inputs of up to
    256 spikes a timestep each, 4-bit spike values) as :class:`CoreConfig` has them.
    The synapse memory, in multiples of 1024
    words, is the deepest for which the lanes' block RAMs stay within :func:`lane_budget`
    (moving small memories into LUT RAM where needed) and the estimated logic within
    ``lut_fill`` (default :data:`LUT_FILL`) of the LUTs. ``overrides`` set fields explicitly
    (the synapse depth is then not grown). Raises ``ValueError`` if even 1024 synapse words
    per lane do not fit.
    """

    key = _key(device)
    dev = ULX3S_DEVICES[key]
    lanes = DEFAULT_LANES[key] if lanes is None else lanes
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    npl = NEURON_STEP * max(1, -(-_NEURONS[key] // (lanes * NEURON_STEP)))
    stages = max(2, -(-(lanes - 1).bit_length() // 2))
    kw = dict(lanes=lanes, neurons_per_lane=npl, ptr_depth=2048, spike_depth=1024,
              syn_depth=1024, stages=stages, queue_depth=npl)
    kw.update(overrides)
    budget = lane_budget(key, lanes)
    config = CoreConfig(**kw)

    def problem(c):
        plan = core_plan(c, budget)
        found = []
        if plan.blocks_per_lane > budget:
            found.append(f"{plan.summary()}, but the {dev.part} has {dev.dp16kd} "
                         f"(keeping {HEADROOM_BRAM} free: {budget} per lane)")
        if plan.lut4 > lut_fill * dev.lut4:
            found.append(f"an estimated {plan.lut4} LUT4 ({plan.dpr16x4_per_lane} LUT RAM "
                         f"cells per lane), more than {lut_fill:.0%} of the {dev.part}'s "
                         f"{dev.lut4}")
        if plan.ff > dev.lut4:
            found.append(f"an estimated {plan.ff} flip-flops, more than the {dev.part}'s "
                         f"{dev.lut4}")
        return "; ".join(found)

    why = problem(config)
    if why:
        raise ValueError(f"{lanes} lanes do not fit the {dev.part}: {why}")
    if "syn_depth" not in overrides:
        while not problem(bigger := config.replace(syn_depth=config.syn_depth + 1024)):
            config = bigger
    return config
