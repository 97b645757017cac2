"""Settings for the whole test suite."""

from pathlib import Path

import pytest

from spikestream.cmdline import interruptible

# Several tests send SIGINT (Ctrl-C) to a command, or to this process, and check that it stops
# at once with one clear line: a suite started as a background job (SIGINT ignored) must
# still have Ctrl-C, and so must the commands it starts.
interruptible()


@pytest.fixture(scope="session")
def v1_image():
    """The bytes of the LM image shipped before issue 18: a file of image format version 1
    (the shipped image is version 2 since)."""
    return (Path(__file__).parent / "fixtures" / "images" / "shakespeare-v1.img").read_bytes()
