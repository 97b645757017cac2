"""The golden board behind a pseudo-terminal: a serial port with no hardware behind it.

``python -m sw.pty_board`` prints a device path (alone, as its first line on stdout, so that
a script can start one; like :mod:`sw.fake_board`) and serves until SIGINT or SIGTERM;
``python -m sw.generate --port PATH`` then talks to it exactly as to a ULX3S (pyserial, the
same framing and timeouts). The tests use :class:`PtyBoard` to run the serial transport end
to end. POSIX only.
"""

import os
import select
import signal
import sys
import threading
import tty

from .transport import GoldenTransport

__all__ = ["PtyBoard", "main"]


class PtyBoard:
    """Serve a :class:`~sw.transport.GoldenTransport`'s board on a new pseudo-terminal.

    Use as a context manager; :attr:`path` is the slave device to open.

    Parameters
    ----------
    transport : GoldenTransport, optional
        The board to serve (default: a new one with the default build's core).
    """

    def __init__(self, transport=None):
        self.transport = transport or GoldenTransport()
        self.path = None
        self._threads = []
        self._stop = threading.Event()

    def __enter__(self):
        self.transport.open()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._threads = [threading.Thread(target=f, name=f"pty-board-{f.__name__}", daemon=True)
                         for f in (self._to_board, self._from_board)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()
        os.close(self._master)
        os.close(self._slave)
        self.transport.close()

    def _to_board(self):
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master], [], [], 0.05)
            if readable:
                self.transport.write(os.read(self._master, 65536))

    def _from_board(self):
        while not self._stop.is_set():
            out = self.transport.read(65536, timeout=0.05)
            while out:
                out = out[os.write(self._master, out):]


def main():
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    with PtyBoard() as board:
        print(board.path, flush=True)
        print(f"golden board on {board.path} (Ctrl-C to stop); try:\n"
              f"  python -m sw.generate --port {board.path}", file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            pass


if __name__ == "__main__":
    main()
