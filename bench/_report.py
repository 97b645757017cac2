"""Write a benchmark's result into its own section of BENCHMARKS.md."""

import re
from pathlib import Path

from spikestream.files import atomic_write_bytes

BENCHMARKS = Path(__file__).parent.parent / "BENCHMARKS.md"


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
