"""What every command-line tool of spikestream shares: how Ctrl-C ends it."""

import sys

__all__ = ["INTERRUPTED", "run"]

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


def run(main):
    """Call a command's ``main()``; Ctrl-C ends it with the one line ``interrupted`` on
    stderr and exit status :data:`INTERRUPTED`, never a traceback."""
    try:
        return main()
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("\ninterrupted", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED) from None
