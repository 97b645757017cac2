"""Misbehaving boards, for tests and the hostile-input bench: each breaks the protocol in
one way a faulty board, a wrong bitstream or a hostile device could.

``python -m sw.fake_board --mode MODE`` serves one on a new pseudo-terminal and prints the
device path as its first line on stdout; ``python -m sw.generate --port PATH`` then meets it
as it would a ULX3S. It serves until SIGINT or SIGTERM. In a test, :class:`FakePtyBoard` does
the same in a thread, and :class:`FakeTransport` plays the board behind the transport
interface with no pseudo-terminal at all. POSIX only.

Until its fault comes up, a fake board answers as the SoC of the default build
(:func:`sw.board.board_config`) that already holds the shipped image (its IDENTIFY tag is the
image's, so a host loads nothing): WRITE, TAG and RESET are accepted (and forgotten), READ
answers zeros, STATUS zero counters, and RUN, GENERATE and STREAM sample token 0 at every
timestep (each timestep 700 cycles and 40 spikes). Like the SoC it drops the bytes that arrive
while it answers. The modes that break RUN and GENERATE break a STREAM's answer in the same
way where it has the same part (flood, bad-token, bad-done, short-done, stall); the
``stream-*`` modes break only STREAM. The modes (:data:`MODES`):
"""

import argparse
import os
import random
import select
import signal
import struct
import sys
import threading
import time
import tty

from spikestream.protocol import (CRC_INIT, DONE_FORMAT, GENERATE_FORMAT, IDENTIFY_FORMAT, MAGIC,
                         MAX_PAYLOAD, NACK_OP, PROTOCOL_VERSION, READ_HEADER, STATUS_FORMAT,
                         STREAM_BODY, STREAM_END_BODY, STREAM_START_BODY, TOKEN_FORMAT, Cmd,
                         FrameDecoder, LinkStatus, crc16, frame, identity_of, response,
                         stream_token_bytes, word_bytes)
from spikestream.image import read_image_bytes

from spikestream.board import SHIPPED_IMAGE
from .board import board_config, board_clock_hz
from .client import image_tag
from .errors import TransportError
from spikestream.board import DEFAULT_BAUD
from .transport import Transport

__all__ = ["MODES", "FakeBoard", "FakeTransport", "FakePtyBoard", "main"]

MODES = {
    "silent": "never answers anything",
    "garbage": "answers every request with random bytes (damaged frames, no valid one)",
    "flood": "a RUN or GENERATE streams valid TOKEN frames past the count asked for, "
             "without end (a STREAM, token bytes without end)",
    "impossible": "IDENTIFY claims a core that cannot exist: 0 lanes, memories 2**32-1 "
                  "words deep",
    "huge": "IDENTIFY claims memories 2**32-1 words deep (lanes as built)",
    "short-identify": "the IDENTIFY body is 10 bytes short",
    "short-token": "TOKEN frames carry a body 3 bytes short",
    "bad-token": "TOKEN frames carry token 65535, outside every vocabulary (a STREAM's "
                 "tokens are all ones, with their CRC)",
    "wrong-index": "TOKEN frames count their index from 5",
    "bad-done": "the final RUN/GENERATE answer carries a 3-byte body (STREAM's one byte "
                "too many)",
    "short-done": "the final RUN/GENERATE answer says OK after one TOKEN frame fewer than "
                  "asked (STREAM's counts one timestep fewer than the tokens sent)",
    "stall": "a RUN, GENERATE or STREAM sends one TOKEN frame (token byte), then nothing "
             "more, ever",
    "short-read": "READ answers one byte short",
    "short-status": "STATUS answers a 3-byte body",
    "stream-drop": "a STREAM loses one of its token bytes on the way",
    "stream-add": "a STREAM gains a byte on the way, after its token bytes",
    "stream-flip": "one of a STREAM's token bytes arrives changed (still a valid token)",
    "stream-crc": "a STREAM's final frame carries a wrong CRC",
    "stream-stall": "a STREAM sends half of its token bytes, then nothing more, ever",
    "stream-start": "STREAM_START announces one token more than was asked for",
}
"""Every mode of fake board: its name and what goes wrong."""

__doc__ += "\n" + "\n".join(f"* ``{name}``: {what};" for name, what in MODES.items()) + "\n"

_HUGE = (1 << 32) - 1
_FLOOD_BATCH = 64          # TOKEN frames made at a time while flooding
_RAW_BATCH = 4096          # STREAM token bytes made at a time
_CYCLES, _SPIKES = 700, 40  # every timestep's


class FakeBoard:
    """The protocol side of a fake board: requests in, response bytes out.

    Parameters
    ----------
    mode : str
        One of :data:`MODES`.
    config : spikestream.memory_map.CoreConfig, optional
        The core it claims (default :func:`sw.board.board_config`).
    tag : int, optional
        The image tag it claims to hold (default: the shipped image's).
    seed : int
        Seeds the ``garbage`` mode's bytes.
    """

    def __init__(self, mode, *, config=None, tag=None, seed=0):
        if mode not in MODES:
            raise ValueError(f"no fake board mode {mode!r}; the modes are "
                             f"{', '.join(MODES)}")
        self.mode = mode
        self.config = config or board_config()
        self.tag = image_tag(read_image_bytes(SHIPPED_IMAGE)) if tag is None else int(tag)
        self.clock_hz = board_clock_hz()
        self._random = random.Random(seed)
        self.requests = 0          # requests received (for tests)

    def answer(self, payload):
        """The bytes to send for the request ``payload`` (CRC good), as an iterator of
        chunks (possibly without end)."""
        self.requests += 1
        if self.mode == "silent":
            return iter(())
        if self.mode == "garbage":
            # 0xC0 (END) is frequent, so the host sees many damaged frames.
            data = bytes(self._random.choice((0xC0, self._random.randrange(256)))
                         for _ in range(self._random.randrange(8, 200)))
            return iter((data,))
        op, seq, body = payload[0], payload[1], bytes(payload[2:])
        if op in (Cmd.RUN, Cmd.GENERATE):
            return self._steps(op, seq, body)
        if op == Cmd.STREAM and len(body) == STREAM_BODY.size:
            return self._stream(seq, *STREAM_BODY.unpack_from(body))
        return iter((frame(self._single(op, seq, body)),))

    def _single(self, op, seq, body):
        mode, c = self.mode, self.config
        if op == Cmd.IDENTIFY:
            if mode in ("impossible", "huge"):
                lanes = 0 if mode == "impossible" else c.lanes
                out = struct.pack(IDENTIFY_FORMAT, MAGIC, PROTOCOL_VERSION, lanes, c.stages,
                                  c.data_bits, _HUGE, _HUGE, _HUGE, 0xFFFF, 0xFFFF, _HUGE,
                                  _HUGE, self.clock_hz, DEFAULT_BAUD, MAX_PAYLOAD, self.tag,
                                  0xFFFF, _HUGE, 0xFFFF, 0xFFFF, _HUGE, _HUGE, 0xFF)
            else:
                out = identity_of(c, self.clock_hz, DEFAULT_BAUD, self.tag)
                if mode == "short-identify":
                    out = out[:-10]
            return response(op, seq, LinkStatus.OK, out)
        if op == Cmd.READ and len(body) == struct.calcsize(READ_HEADER):
            count = struct.unpack(READ_HEADER, body)[3]
            out = bytes(count * word_bytes(c))
            return response(op, seq, LinkStatus.OK, out[:-1] if mode == "short-read" else out)
        if op == Cmd.STATUS:
            out = struct.pack(STATUS_FORMAT, 0, 0, 0, 0, 0, 0, self.tag)
            return response(op, seq, LinkStatus.OK, out[:3] if mode == "short-status" else out)
        if op in (Cmd.WRITE, Cmd.TAG, Cmd.RESET):
            return response(op, seq, LinkStatus.OK)
        if op == NACK_OP or op not in set(Cmd) or op in (Cmd.TOKEN, Cmd.STREAM_START):
            return response(op, seq, LinkStatus.BAD_OPCODE)
        return response(op, seq, LinkStatus.BAD_LENGTH)

    def _steps(self, op, seq, body):
        if op == Cmd.RUN:
            if not body or len(body) % 2:
                yield frame(response(op, seq, LinkStatus.BAD_LENGTH))
                return
            count = len(body) // 2
        else:
            if len(body) != struct.calcsize(GENERATE_FORMAT):
                yield frame(response(op, seq, LinkStatus.BAD_LENGTH))
                return
            count = struct.unpack(GENERATE_FORMAT, body)[1]
        mode = self.mode

        def token_frame(index, token=0):
            tbody = struct.pack(TOKEN_FORMAT, index & 0xFFFF, token, _CYCLES, _SPIKES)
            if mode == "short-token":
                tbody = tbody[:-3]
            return frame(response(Cmd.TOKEN, seq, LinkStatus.OK, tbody))

        if mode == "flood":
            index = 0
            while True:
                yield b"".join(token_frame(index + k) for k in range(_FLOOD_BATCH))
                index += _FLOOD_BATCH
        if mode == "stall":
            yield token_frame(0)
            while True:
                yield b""
        first = 5 if mode == "wrong-index" else 0
        token = 0xFFFF if mode == "bad-token" else 0
        sent = count - 1 if mode == "short-done" else count
        out = [token_frame(first + i, token) for i in range(sent)]
        done = struct.pack(DONE_FORMAT, sent)
        out.append(frame(response(op, seq, LinkStatus.OK,
                                  done + b"\0" if mode == "bad-done" else done)))
        for k in range(0, len(out), _FLOOD_BATCH):
            yield b"".join(out[k:k + _FLOOD_BATCH])


    def _stream(self, seq, first, count):
        """A STREAM's answer: ``STREAM_START``, the token bytes a batch at a time (a count
        of 2**32 - 1 is never made whole), the final frame; broken as the mode says."""
        mode = self.mode
        if count == 0:
            yield frame(response(Cmd.STREAM, seq, LinkStatus.OUT_OF_RANGE))
            return
        nbytes = stream_token_bytes(self.config)
        announced = count + 1 if mode == "stream-start" else count
        yield frame(response(Cmd.STREAM_START, seq, LinkStatus.OK,
                             STREAM_START_BODY.pack(count=announced, token_bytes=nbytes)))
        token = bytes([0xFF] * nbytes if mode == "bad-token" else nbytes)
        if mode == "flood":
            while True:
                yield token * _RAW_BATCH
        total = count * nbytes
        sent = {"stall": 1, "stream-stall": total // 2}.get(mode)
        crc, at = CRC_INIT, 0
        while at < (total if sent is None else sent):
            n = min(_RAW_BATCH, (total if sent is None else sent) - at)
            data = token * (n // nbytes) + token[:n % nbytes]
            crc = crc16(data, crc)
            if at == 0 and mode in ("stream-drop", "stream-flip"):
                # The board's CRC is of what it sent; the line lost or changed a byte.
                data = data[1:] if mode == "stream-drop" else bytes([1]) + data[1:]
            at += n
            yield data
        if sent is not None:
            while True:
                yield b""
        if mode == "stream-add":
            yield b"\x00"
        steps = count - 1 if mode == "short-done" else count
        end = STREAM_END_BODY.pack(steps=steps, cycles=_CYCLES * steps, spikes=_SPIKES * steps,
                                   crc=crc ^ 1 if mode == "stream-crc" else crc)
        yield frame(response(Cmd.STREAM, seq, LinkStatus.OK,
                             end + b"\0" if mode == "bad-done" else end))


class _Link:
    """The byte side shared by the pseudo-terminal and the in-process fake: frames decoded
    while idle start an answer; bytes arriving while one is sent are dropped."""

    def __init__(self, board):
        self.board = board
        self._decoder = FrameDecoder(MAX_PAYLOAD, 2)
        self._answer = None
        self._pending = b""

    def received(self, data):
        self.outgoing()                             # is the answer in progress done?
        if self._answer is not None or self._pending:
            return                                  # busy: dropped, as the SoC does
        for status, payload in self._decoder.feed(data):
            if status == LinkStatus.OK:
                self._answer = self.board.answer(payload)
            elif self.board.mode not in ("silent", "garbage"):
                self._answer = iter((frame(response(NACK_OP, 0, status)),))
            else:
                self._answer = self.board.answer(payload)
            self._decoder = FrameDecoder(MAX_PAYLOAD, 2)
            return

    def outgoing(self):
        """Bytes waiting to be sent (``b""`` if none now)."""
        while not self._pending and self._answer is not None:
            chunk = next(self._answer, None)
            if chunk is None:
                self._answer = None
            elif chunk:
                self._pending = chunk
            else:
                break                               # a stalled answer: nothing now
        return self._pending

    def sent(self, n):
        self._pending = self._pending[n:]


class FakeTransport(Transport):
    """A fake board behind the transport interface, in this process (no pseudo-terminal).

    Parameters are those of :class:`FakeBoard`; ``response_timeout`` is short (0.5 s), so
    that tests of a silent board are quick.
    """

    name = "fake"
    response_timeout = 0.5

    def __init__(self, mode, **kwargs):
        self.board = FakeBoard(mode, **kwargs)
        self._link = None

    @property
    def description(self):
        return f"fake board ({self.board.mode})"

    def open(self):
        self._link = self._link or _Link(self.board)

    def close(self):
        self._link = None

    def write(self, data):
        if self._link is None:
            raise TransportError(f"{self.description} is not open")
        self._link.received(bytes(data))

    def read(self, size=4096, timeout=None):
        if self._link is None:
            raise TransportError(f"{self.description} is not open")
        deadline = time.monotonic() + (timeout or 0)
        while True:
            data = self._link.outgoing()[:size]
            if data:
                self._link.sent(len(data))
                return data
            left = deadline - time.monotonic()
            if timeout is None or left <= 0:
                return b""
            time.sleep(min(left, 0.01))


class FakePtyBoard:
    """Serve a :class:`FakeBoard` on a new pseudo-terminal, in a thread of this process.

    Use as a context manager; :attr:`path` is the slave device to open (pyserial, or
    ``python -m sw.generate --port``). Parameters are those of :class:`FakeBoard`.
    """

    def __init__(self, mode, **kwargs):
        self.board = FakeBoard(mode, **kwargs)
        self.path = None
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._serve, name="fake-board", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """Stop serving and close the pseudo-terminal (twice is harmless)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        os.close(self._master)
        os.close(self._slave)

    def serve_forever(self):
        """Serve until :meth:`stop` (from a signal handler, say)."""
        while not self._stop.wait(0.2):
            pass

    def _serve(self):
        link = _Link(self.board)
        while not self._stop.is_set():
            out = link.outgoing()
            readable, writable, _ = select.select([self._master], [self._master] if out
                                                  else [], [], 0.02)
            if readable:
                try:
                    link.received(os.read(self._master, 65536))
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    time.sleep(0.02)             # EIO: nobody has the slave open
            if writable and out:
                try:
                    link.sent(os.write(self._master, out))
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    time.sleep(0.02)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m sw.fake_board",
        description="Serve a misbehaving board on a pseudo-terminal; prints its path first.",
        epilog="modes: " + "; ".join(f"{k}: {v}" for k, v in MODES.items()))
    ap.add_argument("--mode", required=True, choices=sorted(MODES))
    ap.add_argument("--garbage-seed", type=int, default=0, help="seeds the garbage mode's bytes")
    args = ap.parse_args(argv)
    board = FakePtyBoard(args.mode, seed=args.garbage_seed)

    def stop(signum, frame_):
        board._stop.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with board:
        print(board.path, flush=True)
        print(f"fake board ({args.mode}: {MODES[args.mode]}) on {board.path}; SIGINT or "
              f"SIGTERM stops it", file=sys.stderr, flush=True)
        board.serve_forever()


if __name__ == "__main__":
    main()
