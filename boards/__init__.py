"""Boards the SoC builds for.

A board module (``boards.<name>``) provides ``DEVICES`` (its FPGA sizes), ``DEFAULT_DEVICE``,
``device(name)`` (an :class:`~spikestream.ecp5.ECP5Device`, or ``ValueError`` listing the known
sizes), ``platform(device, program=False)``, ``pll_config(mhz)``, ``Top(design, pll)`` and
``core_config(device, lanes)``. This package imports none of them until asked, so the
compiler can read device budgets without loading Amaranth's board files.
"""

import importlib

__all__ = ["BOARDS", "board"]

BOARDS = ("ulx3s",)


def board(name):
    """The module of board ``name``; ``ValueError`` listing the known boards otherwise."""
    key = str(name).lower()
    if key not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return importlib.import_module(f"boards.{key}")
