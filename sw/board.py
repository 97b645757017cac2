"""What the host assumes about a board before it has asked: the default build's core.

A real board says what it is in its IDENTIFY answer; these are for the boards the host
makes itself (the golden board, the simulated SoC).
"""

from boards.ulx3s import core_config, pll_config
from spikestream.board import DEFAULT_CLOCK_MHZ, DEFAULT_FPGA

__all__ = ["board_config", "board_clock_hz"]


def board_config(fpga=DEFAULT_FPGA):
    """The :class:`~spikestream.memory_map.CoreConfig` of the default ULX3S build of
    ``fpga`` (:func:`boards.ulx3s.core_config`)."""
    return core_config(fpga)


def board_clock_hz():
    """The core clock in Hz that a default build (made by the board's PLL from
    :data:`~spikestream.board.DEFAULT_CLOCK_MHZ`) reports in IDENTIFY."""
    return int(pll_config(DEFAULT_CLOCK_MHZ).f_out_hz)
