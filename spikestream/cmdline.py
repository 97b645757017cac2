"""What every command-line tool of spikestream shares: how Ctrl-C ends it."""

import os
import sys

__all__ = ["INTERRUPTED", "run"]

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
