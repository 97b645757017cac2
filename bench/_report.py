"""Write a benchmark's result into its own section of BENCHMARKS.md; the recorded default
build the projections use."""

import json
import re
from pathlib import Path

from spikestream.files import atomic_write_bytes

BENCHMARKS = Path(__file__).parent.parent / "BENCHMARKS.md"

BUILD_RESULT = Path(__file__).parent / "results" / "build-85f.json"
"""The result of the last default ULX3S-85F build (``hw.build --json``'s ``result.json``)."""


def build_result(path=BUILD_RESULT):
    """The committed result of the last default build (a dict), or exit with one line."""
    try:
        result = json.loads(Path(path).read_text())
        float(result["fmax_mhz"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: no usable build result in {path}: {e}")
    return result


def board_clock_mhz(result):
    """The clock a board runs the recorded build at: the build's target where timing was met
    (the PLL makes that clock, whatever headroom Fmax shows), otherwise its Fmax (the same
    build again with ``--clock`` at that Fmax)."""
    if result.get("timing_met") and result.get("target_mhz"):
        return float(result["target_mhz"])
    return float(result["fmax_mhz"])


def update_section(title, command, body):
    """Replace (or append) the section ``## title`` with the command and its result."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    section = f"## {title}\n\nCommand: `{command}`\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_bytes(BENCHMARKS, text.encode())
