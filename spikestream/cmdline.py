"""What every command-line tool of spikestream shares: how Ctrl-C ends it."""

import os
import signal
import sys

__all__ = ["INTERRUPTED", "interruptible", "run"]

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


def run(main):
    """Call a command's ``main()``; Ctrl-C ends it with the one line ``interrupted`` on
    stderr and exit status :data:`INTERRUPTED`, never a traceback.

    By then the interrupt has unwound ``main``: its ``with`` blocks have closed links and
    removed temporary files. The process then ends at once (``os._exit``) rather than
    through the interpreter's own teardown, which takes a second or more with torch
    loaded and would keep the user waiting after Ctrl-C."""
    try:
        return main()
    except KeyboardInterrupt:
        try:
            sys.stdout.flush()
        except OSError:
            pass
        print("\ninterrupted", file=sys.stderr, flush=True)
        os._exit(INTERRUPTED)


def interruptible():
    """Take Ctrl-C (SIGINT) as from a terminal, here and in the commands this process starts.

    A shell without job control (``cmd &`` in a script, as a CI runner or ``nohup`` may)
    starts a background command with SIGINT ignored, and an ignored signal stays ignored
    across ``exec``: Python then installs no KeyboardInterrupt handler, and neither does any
    command started from it. A caught signal is reset to its default at ``exec``, so
    catching it here is enough. Call it from the main thread."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
