"""Settings for the whole test suite."""

import signal
from pathlib import Path

import pytest

# Several tests send SIGINT (Ctrl-C) to a command, or to this process, and check that it stops
# at once with one clear line. A shell that starts a job in the background without job
# control (`cmd &` in a script, as a CI runner or `nohup` may) starts it with SIGINT ignored,
# and children inherit that: Python then never raises KeyboardInterrupt, and those tests would
# fail for a reason that is not the project's. Restore Ctrl-C for this process and so for the
# commands it starts (exec resets a handled signal to its default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def v1_image():
    """The bytes of the LM image shipped before issue 18: a file of image format version 1
    (the shipped image is version 2 since)."""
    return (Path(__file__).parent / "fixtures" / "images" / "shakespeare-v1.img").read_bytes()
