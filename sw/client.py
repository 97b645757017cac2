"""The host's side of the link protocol (:mod:`hw.protocol`), over any :class:`Transport`.

:class:`Client` numbers requests, frames them, waits for their responses with a timeout,
retries what is safe to retry, and turns every failure into a :class:`~sw.errors.HostError`
whose message is one line. Commands that only read, or write the same words again
(IDENTIFY, WRITE, READ, TAG, STATUS, RESET), are re-sent after a NACK or a timeout; RUN and
GENERATE change the core's state, so they are re-sent only after a NACK that is known to be
theirs (nothing else arrived), never after a timeout.

Typical use::

    with SerialTransport("/dev/ttyUSB0") as link:
        board = Client(link)
        board.identify()
        board.load_image("models/pretrained/shakespeare.img")
        board.reset()
        for result in board.run(prompt_ids): ...
        for result in board.generate(token, 100): ...
"""

import random
import struct
import sys
import time
import zlib
from pathlib import Path

from hw.memory_map import CoreFitError, Mem, image_writes, settings_writes
from hw.protocol import (DONE_FORMAT, GENERATE_FORMAT, IDENTIFY_FORMAT, MAGIC, MAX_READ,
                         MAX_RUN, NACK_OP, PROTOCOL_VERSION, READ_HEADER, STATUS_FORMAT,
                         TAG_FORMAT, TOKEN_FORMAT, WRITE_HEADER, Cmd, FrameDecoder, Identity,
                         LinkCounters, LinkStatus, TokenResult, frame, max_write_words,
                         pack_words, parse_response, request, unpack_words, word_bytes)
from models.image import Image, image_bytes, parse_image

from .errors import (BoardMismatch, CommandFailed, ImageDoesNotFit, NoResponse,
                     TransportError)

__all__ = ["Client", "image_tag", "IDEMPOTENT"]

IDEMPOTENT = frozenset({Cmd.IDENTIFY, Cmd.WRITE, Cmd.READ, Cmd.TAG, Cmd.STATUS, Cmd.RESET})
"""Requests that may be sent twice with the same effect as once."""

_GENERATE_MAX = (1 << 16) - 1      # GENERATE's count is a u16

_WHY = {
    LinkStatus.BAD_CRC: "the request arrived damaged (CRC)",
    LinkStatus.BAD_FRAME: "the request arrived damaged (framing)",
    LinkStatus.TOO_LONG: "the request is longer than the board accepts",
    LinkStatus.TOO_SHORT: "the request is too short",
    LinkStatus.BAD_OPCODE: "the board does not know this request",
    LinkStatus.BAD_LENGTH: "the request's body has the wrong length",
    LinkStatus.BAD_MEMORY: "no such memory, or it is read only",
    LinkStatus.OUT_OF_RANGE: "lane, address, count or value outside the core",
    LinkStatus.BAD_TOKEN: "a token outside the loaded network's vocabulary",
}


def image_tag(data):
    """The tag that names an image on a board: the CRC-32 of its file's bytes (never 0,
    which means "no image")."""
    return zlib.crc32(bytes(data)) or 1


def _name(cmd):
    return Cmd(cmd).name if cmd in set(Cmd) else f"opcode {cmd:#04x}"


def _status_name(status):
    return status.name if isinstance(status, LinkStatus) else f"status {status}"


def _stderr(line):
    print(line, file=sys.stderr, flush=True)


class Client:
    """Protocol client for one board.

    Parameters
    ----------
    transport : sw.transport.Transport
        An open transport.
    timeout : float, optional
        Seconds to wait for each response frame (default: the transport's
        ``response_timeout``).
    retries : int
        Extra attempts for a request after a NACK or (idempotent requests) a timeout.
    progress : bool
        Show a progress bar while loading an image.
    log : callable
        Called with one-line notes (default: print to stderr).
    """

    def __init__(self, transport, *, timeout=None, retries=3, progress=True, log=_stderr):
        self.transport = transport
        self.timeout = transport.response_timeout if timeout is None else timeout
        self.retries = retries
        self.progress = progress
        self.log = log
        self.identity = None
        self.config = None
        # A random first number keeps late frames of an earlier session from matching.
        self._seq = random.randrange(256)
        self._decoder = FrameDecoder(min_length=3)
        self._frames = []
        self.retried = 0            # requests re-sent (for tests and reports)

    # --- frames -----------------------------------------------------------------------------

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _next_frame(self, deadline):
        """The next received frame as ``(decode status, payload)``, or ``None`` at the
        deadline."""
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.transport.read(4096, timeout=left)
            if data:
                self._frames += self._decoder.feed(data)
        return self._frames.pop(0)

    def drain(self, quiet=0.05):
        """Throw away whatever the board sends until it has been quiet for ``quiet`` s."""
        self._frames.clear()
        while self.transport.read(4096, timeout=quiet):
            pass
        self._decoder = FrameDecoder(min_length=3)

    def _send(self, cmd, body):
        seq = self._next_seq()
        self.transport.write(frame(request(cmd, seq, body)))
        return seq

    def _exchange(self, cmd, body=b"", *, stream=False, timeout=None):
        """Send a request and yield its response frames ``(op, status, body)`` (TOKEN frames
        too, for RUN and GENERATE), retrying as the class docstring says; the last frame
        yielded is the final response."""
        name = _name(cmd)
        timeout = self.timeout if timeout is None else timeout
        idempotent = cmd in IDEMPOTENT
        grace = min(timeout, max(0.5, self.transport.response_timeout / 20))
        why = "no answer"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            seq = self._send(cmd, body)
            deadline = time.monotonic() + timeout
            started = False
            nacked = None
            while True:
                f = self._next_frame(deadline)
                if f is None:
                    if started:
                        raise NoResponse(f"{self.transport.description} stopped answering "
                                         f"during {name} (no frame for {timeout:g} s)")
                    if nacked is not None:
                        why = f"NACK {_status_name(nacked)}"
                        break                    # the NACK was ours: nothing ran, resend
                    why = f"no answer within {timeout:g} s"
                    if idempotent:
                        break
                    raise NoResponse(f"no answer to {name} from "
                                     f"{self.transport.description} within {timeout:g} s")
                decoded, payload = f
                if decoded != LinkStatus.OK:
                    # A response damaged on the way back: it may have been ours.
                    if started or not idempotent:
                        raise TransportError(f"a damaged frame ({decoded.name}) arrived "
                                             f"from {self.transport.description} during "
                                             f"{name}")
                    why = f"a damaged response ({decoded.name})"
                    break
                op, rseq, status, rbody = parse_response(payload)
                if op == NACK_OP:
                    if idempotent and not started:
                        why = f"NACK {_status_name(status)}"
                        break
                    if not started:
                        # Ours, or line noise before ours: wait a little to see whether our
                        # request's answer follows.
                        nacked = status
                        deadline = min(deadline, time.monotonic() + grace)
                    continue
                if rseq != seq or op not in (cmd, Cmd.TOKEN):
                    continue                     # a late answer to an earlier attempt
                if op == Cmd.TOKEN and not stream:
                    continue
                started = True
                deadline = time.monotonic() + timeout
                yield op, status, rbody
                if op == cmd:
                    return
        if cmd == Cmd.IDENTIFY and why.startswith("no answer"):
            raise NoResponse(f"no answer from {self.transport.description}: is the board "
                             "powered, and programmed with the spikestream bitstream "
                             "(python -m hw.build --program)?")
        raise NoResponse(f"{name} failed after {self.retries + 1} attempts "
                         f"({why}) on {self.transport.description}")

    def _request(self, cmd, body=b"", *, timeout=None):
        """Send a request that has one response; returns its body (status OK)."""
        for op, status, rbody in self._exchange(cmd, body, timeout=timeout):
            pass
        self._check_status(cmd, status)
        return rbody

    @staticmethod
    def _check_status(cmd, status, extra=""):
        if status != LinkStatus.OK:
            why = _WHY.get(status, "unknown status")
            raise CommandFailed(f"the board refused {_name(cmd)}: {_status_name(status)} "
                                f"({why}){extra}",
                                status=status, command=cmd)

    # --- requests ---------------------------------------------------------------------------

    def identify(self):
        """Ask the board what it is; returns its :class:`~hw.protocol.Identity`.

        Raises :class:`~sw.errors.BoardMismatch` for a device that is not a spikestream SoC
        or speaks another protocol version.
        """
        body = self._request(Cmd.IDENTIFY)
        size = struct.calcsize(IDENTIFY_FORMAT)
        if len(body) != size or body[:4] != MAGIC:
            raise BoardMismatch(f"{self.transport.description} answers, but not as a "
                                f"spikestream SoC (wrong bitstream?)")
        ident = Identity(struct.unpack(IDENTIFY_FORMAT, body))
        if ident.version != PROTOCOL_VERSION:
            raise BoardMismatch(f"the board speaks protocol version {ident.version}, this "
                                f"host version {PROTOCOL_VERSION}: rebuild the bitstream "
                                f"or update the host so that they match")
        self.identity = ident
        self.config = ident.core_config()
        return ident

    def _need_config(self):
        if self.config is None:
            self.identify()
        return self.config

    def write(self, mem, lane, addr, words):
        """Write ``words`` to consecutive addresses from ``addr`` (split into requests of
        at most :func:`~hw.protocol.max_write_words` words; a ``CORE`` register a request
        each, as the protocol requires)."""
        config = self._need_config()
        nbytes = word_bytes(config)
        most = 1 if mem == Mem.CORE else max_write_words(config)
        words = list(words)
        for k in range(0, len(words), most):
            chunk = words[k:k + most]
            self._request(Cmd.WRITE, struct.pack(WRITE_HEADER, int(mem), lane, addr + k,
                                                 len(chunk)) + pack_words(chunk, nbytes))

    def write_all(self, writes, *, desc=None):
        """Send a list of :class:`~hw.memory_map.Write`, merging runs of consecutive
        addresses into as few WRITE requests as fit; shows a progress bar if ``desc``."""
        config = self._need_config()
        most = max_write_words(config)
        runs = []
        for w in writes:
            last = runs[-1] if runs else None
            if (last and last[0] == w.mem != Mem.CORE and last[1] == w.lane
                    and last[2] + len(last[3]) == w.addr and len(last[3]) < most):
                last[3].append(w.data)
            else:
                runs.append((w.mem, w.lane, w.addr, [w.data]))
        bar = None
        if desc and self.progress:
            from tqdm import tqdm
            bar = tqdm(total=len(writes), desc=desc, unit="word", unit_scale=True,
                       leave=False, file=sys.stderr)
        try:
            for mem, lane, addr, words in runs:
                self.write(mem, lane, addr, words)
                if bar:
                    bar.update(len(words))
        finally:
            if bar:
                bar.close()

    def read(self, mem, lane, addr, count):
        """Read ``count`` words from consecutive addresses; returns a list of ints."""
        config = self._need_config()
        nbytes = word_bytes(config)
        out = []
        for k in range(0, count, MAX_READ):
            n = min(MAX_READ, count - k)
            body = self._request(Cmd.READ, struct.pack(READ_HEADER, int(mem), lane, addr + k, n))
            if len(body) != n * nbytes:
                raise TransportError(f"READ answered {len(body)} bytes for {n} words")
            out += unpack_words(body, nbytes)
        return out

    def reset(self):
        """Clear the core's neuron state and spike history (RESET)."""
        self._request(Cmd.RESET)

    def set_tag(self, tag):
        """Name the loaded image (TAG); 0 means "no image"."""
        self._request(Cmd.TAG, struct.pack(TAG_FORMAT, tag))

    def status(self):
        """The board's :class:`~hw.protocol.LinkCounters` (STATUS)."""
        return LinkCounters(struct.unpack(STATUS_FORMAT, self._request(Cmd.STATUS)))

    def settings(self, temperature_word=None, seed=None):
        """Set the sampler's temperature word and/or seed its random source."""
        self.write_all(settings_writes(temperature_word, seed))

    def _steps(self, cmd, body, first_index):
        done = None
        count = 0
        try:
            for op, status, rbody in self._exchange(cmd, body, stream=True):
                if op == Cmd.TOKEN:
                    index, token, cycles, spikes = struct.unpack(TOKEN_FORMAT, rbody)
                    count += 1
                    yield TokenResult((first_index + index, token, cycles, spikes))
                else:
                    done = (status, rbody)
        finally:
            if done is None:
                # The caller stopped early: let the board finish, so that the next request
                # is not answered by this one's frames.
                self.drain(quiet=min(self.timeout, 1.0))
        status, rbody = done
        ran = struct.unpack(DONE_FORMAT, rbody)[0] if len(rbody) == 2 else count
        self._check_status(cmd, status, f" after {ran} timesteps")

    def run(self, tokens):
        """Feed ``tokens`` (ints), one timestep each; yields a
        :class:`~hw.protocol.TokenResult` per timestep as its frame arrives (indices count
        from 0 over all of ``tokens``)."""
        tokens = [int(t) for t in tokens]
        for k in range(0, len(tokens), MAX_RUN):
            chunk = tokens[k:k + MAX_RUN]
            yield from self._steps(Cmd.RUN, struct.pack(f"<{len(chunk)}H", *chunk), k)

    def generate(self, token, n):
        """Feed ``token``, then each sampled token back, ``n`` timesteps; yields each
        :class:`~hw.protocol.TokenResult` (its ``token`` is the sampled one) as it arrives."""
        done = 0
        while done < n:
            count = min(_GENERATE_MAX, n - done)
            for r in self._steps(Cmd.GENERATE, struct.pack(GENERATE_FORMAT, token, count), done):
                token = r.token
                yield r
            done += count

    # --- images -----------------------------------------------------------------------------

    def load_image(self, image, *, tag=None, force=False):
        """Load a network image (a path, or an :class:`~models.image.Image`) into the board.

        The image's tag (:func:`image_tag` of its file) is compared with the board's first:
        if the board already holds it, nothing is sent. An image laid out for another lane
        count is laid out again for the board's lanes (one note). An image that does not fit
        the board's core raises :class:`~sw.errors.ImageDoesNotFit` before anything is
        written. Returns ``True`` if the image was sent, ``False`` if it was already there.
        """
        if isinstance(image, (str, Path)):
            data = Path(image).read_bytes()
            image = parse_image(data)
            tag = image_tag(data) if tag is None else tag
        elif tag is None:
            tag = image_tag(image_bytes(image.net, image.lanes))
        ident = self.identify()
        config = self.config
        file_lanes = image.lanes
        if file_lanes != config.lanes:
            image = Image(net=image.net, lanes=config.lanes)
        try:
            config.check_image(image)
        except CoreFitError as e:
            raise ImageDoesNotFit(f"{e} (board: {config.lanes} lanes)") from None
        if ident.tag == tag and not force:
            return False
        if file_lanes != config.lanes:
            self.log(f"note: the image is laid out for {file_lanes} lanes; laying it out "
                     f"again for the board's {config.lanes}")
        self.write_all(image_writes(image, config), desc="loading image")
        self.set_tag(tag)
        return True

    def read_state(self, lanes=None):
        """Every ``STATE`` word of every lane (``[lane][address]``), for comparisons."""
        config = self._need_config()
        return [self.read(Mem.STATE, lane, 0, config.neurons_per_lane)
                for lane in range(config.lanes if lanes is None else lanes)]
