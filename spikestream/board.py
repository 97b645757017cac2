"""What every layer assumes about the board before it has asked: the default build.

A real board says what it is in its IDENTIFY answer; these defaults are what the build
makes when given no options, what the host's own boards (the golden board, the simulated
SoC) are, and where the shipped network image lies.
"""

from pathlib import Path

__all__ = ["DEFAULT_BOARD", "DEFAULT_FPGA", "DEFAULT_CLOCK_MHZ", "DEFAULT_BAUD", "SHIPPED_IMAGE"]

DEFAULT_BOARD = "ulx3s"
"""The board ``python -m hw.build`` builds for."""

DEFAULT_FPGA = "85f"
"""The ULX3S size (its ECP5 part) of the default build."""

DEFAULT_CLOCK_MHZ = 100.0
"""The core clock the default build asks of the PLL (the achieved one may differ slightly:
boards.ulx3s.pll_config)."""

DEFAULT_BAUD = 3_000_000
"""The UART's baud rate: the ULX3S's FT231X runs 3 Mbaud reliably."""

SHIPPED_IMAGE = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "shakespeare.img"
"""The shipped network image (found relative to the installed packages, from any folder)."""
