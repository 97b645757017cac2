"""What the host assumes about a board before it has asked: the default build's core.

A real board says what it is in its IDENTIFY answer; these defaults are for the boards
the host makes itself (the golden board, the simulated SoC) and for the shipped image.
"""

from pathlib import Path

__all__ = ["SHIPPED_IMAGE", "board_config", "board_clock_hz"]

SHIPPED_IMAGE = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "shakespeare.img"
"""The shipped network image (found relative to this package, from any working folder)."""



def board_config(device="85f"):
    """The :class:`~hw.memory_map.CoreConfig` of the default ULX3S build of ``device``
    (:func:`boards.ulx3s.core_config`)."""
    from boards.ulx3s import core_config
    return core_config(device)


def board_clock_hz():
    """The core clock in Hz that a default build (:func:`hw.build.build`'s default target,
    made by the board's PLL) reports in IDENTIFY."""
    import inspect

    from boards.ulx3s import pll_config
    from hw.build import build
    mhz = inspect.signature(build).parameters["clock_mhz"].default
    return int(pll_config(mhz).f_out_hz)
