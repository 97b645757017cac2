"""The host's side of the link protocol (:mod:`spikestream.protocol`), over any :class:`Transport`.

:class:`Client` numbers requests, frames them, waits for their responses with a timeout,
retries what is safe to retry, and turns every failure into a :class:`~sw.errors.HostError`
whose message is one line. Commands that only read, or write the same words again
(IDENTIFY, WRITE, READ, TAG, STATUS, RESET), are re-sent after a NACK or a timeout; RUN and
GENERATE change the core's state, so they are re-sent only after a NACK that is known to be
theirs (nothing else arrived), never after a timeout.

The protocol has no way to stop a request, and a board drops what arrives while it works,
so the client keeps every request short: RUN, GENERATE and STREAM are sent in chunks sized
so that the board answers each in about :attr:`Client.request_seconds` (the first chunk
small, the next ones scaled from the tokens per second measured, up to the protocol's
limits). A caller that stops a stream early, or is interrupted (Ctrl-C), then waits at most
about a second for the chunk in flight to end (:meth:`Client.finish`) and finds the board
answerable.

:meth:`Client.stream` generates with STREAM, one byte per token on the link (for the
vocabularies of today's builds): each request's answer is a ``STREAM_START`` frame, exactly
``count * token_bytes`` raw bytes (read from the transport as they are, not through the frame
decoder) and a final frame with the sums of cycles and spikes and the CRC of those bytes. A
chunk's tokens are handed on only once that final frame has checked them. A chunk of about
:attr:`Client.request_seconds` is long enough that its two frames (about 40 bytes on the
line) cost under 1% once the link is what limits the rate (above ~17k tokens/s a chunk holds
over 4,000 tokens). A byte lost on the line makes the host read the final frame's leading
``END`` as a token byte (the frame still decodes: that ``END`` only flushes) and the CRC
differs; a byte added leaves a stray byte before the final frame's ``END``, which the decoder
reports as a damaged frame; a byte changed fails the CRC; a stream cut short runs into the
timeout. Each is one error line, never text.

The client trusts nothing the board sends: a TOKEN frame past the count asked for, out of
order, of the wrong size or with a token outside the vocabulary, a STREAM whose announced
count, width, steps or CRC are not what was asked, an IDENTIFY that claims a core that
cannot exist, and any answer body of the wrong size raise :class:`~sw.errors.BoardMismatch`
(one line; a stream damaged on the line, :class:`~sw.errors.TransportError`).

Typical use::

    with SerialTransport("/dev/ttyUSB0") as link:
        board = Client(link)
        board.identify()
        board.load_image("models/pretrained/shakespeare.img")
        board.reset()
        for result in board.run(prompt_ids): ...
        for result in board.generate(token, 100): ...     # TOKEN frames, per-step cycles
        for chunk in board.stream(token, 100_000): ...    # one byte per token
"""

import collections
import math
import numbers
import random
import struct
import sys
import time
from pathlib import Path

from spikestream.memory_map import CoreFitError, Mem, image_writes, settings_writes
from spikestream.protocol import (DONE_FORMAT, END, GENERATE_FORMAT, IDENTIFY_FORMAT, MAGIC,
                         MAX_PAYLOAD, MAX_READ, MAX_RUN, NACK_OP, PROTOCOL_VERSION,
                         READ_HEADER, STATUS_FORMAT, STREAM_BODY, STREAM_END_BODY,
                         STREAM_START_BODY, TAG_FORMAT, TOKEN_FORMAT, WRITE_HEADER, Cmd,
                         FrameDecoder, Identity, LinkCounters, LinkStatus, TokenResult, crc16,
                         frame, max_write_words, pack_words, parse_response, request,
                         stream_token_bytes, unpack_stream, unpack_words, word_bytes)
from spikestream.image import Image, image_bytes, image_tag, parse_image, read_image_bytes

from .errors import (BoardMismatch, CommandFailed, HostError, ImageDoesNotFit, NoResponse,
                     TransportError)

__all__ = ["Client", "StreamChunk", "image_tag", "check_timeout", "IDEMPOTENT", "FIRST_CHUNK",
           "REQUEST_SECONDS", "FINISH_SECONDS"]

IDEMPOTENT = frozenset({Cmd.IDENTIFY, Cmd.WRITE, Cmd.READ, Cmd.TAG, Cmd.STATUS, Cmd.RESET})
"""Requests that may be sent twice with the same effect as once."""

_GENERATE_MAX = (1 << 16) - 1      # GENERATE's count is a u16
_STREAM_MAX = (1 << 32) - 1        # STREAM's count is a u32

FIRST_CHUNK = 8
"""Timesteps in the first RUN, GENERATE or STREAM request of a client, before it has
measured the board's speed."""

REQUEST_SECONDS = 0.25
"""How long the client aims for each RUN, GENERATE or STREAM request to take on the board."""

FINISH_SECONDS = 1.0
"""Most seconds the client waits for the request in flight when a stream stops early."""

_GROWTH = 8                         # a chunk is at most this many times the one before

_TOKEN_SIZE = struct.calcsize(TOKEN_FORMAT)
_DONE_SIZE = struct.calcsize(DONE_FORMAT)
_IDENTIFY_SIZE = struct.calcsize(IDENTIFY_FORMAT)
_STATUS_SIZE = struct.calcsize(STATUS_FORMAT)

_PARTIAL = {Cmd.RUN: Cmd.TOKEN, Cmd.GENERATE: Cmd.TOKEN, Cmd.STREAM: Cmd.STREAM_START}
"""The response op that comes before a request's final response, where one does."""

StreamChunk = collections.namedtuple("StreamChunk", "index tokens cycles spikes")
StreamChunk.__doc__ = """One STREAM request's checked answer: ``index`` of its first timestep
(counted over the whole :meth:`Client.stream`), the sampled ``tokens`` (a list), and the
sums of its timesteps' ``cycles`` and ``spikes``."""

_WHY = {
    LinkStatus.BAD_CRC: "the request arrived damaged (CRC)",
    LinkStatus.BAD_FRAME: "the request arrived damaged (framing)",
    LinkStatus.TOO_LONG: "the request is longer than the board accepts",
    LinkStatus.TOO_SHORT: "the request is too short",
    LinkStatus.BAD_OPCODE: "the board does not know this request",
    LinkStatus.BAD_LENGTH: "the request's body has the wrong length",
    LinkStatus.BAD_MEMORY: "no such memory, or it is read only",
    LinkStatus.OUT_OF_RANGE: "lane, address, count or value outside the core",
    LinkStatus.BAD_TOKEN: "a token outside the loaded network's vocabulary, or no network "
                          "the board can run",
}


def _name(cmd):
    return Cmd(cmd).name if cmd in set(Cmd) else f"opcode {cmd:#04x}"


def _status_name(status):
    return status.name if isinstance(status, LinkStatus) else f"status {status}"


def _stderr(line):
    print(line, file=sys.stderr, flush=True)


def check_timeout(value, what="timeout"):
    """``value`` as a float number of seconds: finite and positive, else ``ValueError``
    (one line). A NaN or infinite timeout would wait for ever."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive, finite number of seconds, not {value!r}")
    return value


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Client:
    """Protocol client for one board.

    Parameters
    ----------
    transport : sw.transport.Transport
        An open transport.
    timeout : float, optional
        Seconds to wait for each response frame (default: the transport's
        ``response_timeout``); finite and positive (``ValueError`` otherwise).
    retries : int
        Extra attempts for a request after a NACK or (idempotent requests) a timeout.
    progress : bool
        Show a progress bar while loading an image.
    log : callable
        Called with one-line notes (default: print to stderr).
    request_seconds : float
        How long each RUN or GENERATE request should keep the board busy (see the module
        docstring): the longest a caller waits for the board after stopping a stream.

    Attributes
    ----------
    vocab_size : int or None
        Tokens of the loaded network (set by :meth:`load_image`): a sampled token at or
        above it is a :class:`~sw.errors.BoardMismatch`. Before an image is loaded the
        board's ``max_vocab`` bounds tokens.
    """

    def __init__(self, transport, *, timeout=None, retries=3, progress=True, log=_stderr,
                 request_seconds=REQUEST_SECONDS):
        self.transport = transport
        self.timeout = check_timeout(transport.response_timeout if timeout is None
                                     else timeout)
        if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) \
                or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        self.retries = int(retries)
        self.request_seconds = check_timeout(request_seconds, "request_seconds")
        self.progress = progress
        self.log = log
        self.identity = None
        self.config = None
        self.vocab_size = None
        # A random first number keeps late frames of an earlier session from matching.
        self._seq = random.randrange(256)
        self._decoder = FrameDecoder(min_length=3)
        self._frames = []
        self._rx = bytearray()      # bytes received, not yet decoded or taken raw
        self._inflight = None       # (cmd, seq) of a request whose final answer is due
        self._rate = None           # timesteps per second measured on the board
        self._chunk = FIRST_CHUNK   # the last chunk size chosen
        self.retried = 0            # requests re-sent (for tests and reports)

    # --- frames -----------------------------------------------------------------------------

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _next_frame(self, deadline):
        """The next received frame as ``(decode status, payload)``, or ``None`` at the
        deadline. Bytes are decoded up to the ``END`` that closes the frame and no further,
        so that what follows a ``STREAM_START`` frame stays for :meth:`_read_raw`."""
        while not self._frames:
            if self._rx:
                end = self._rx.find(END)
                upto = len(self._rx) if end < 0 else end + 1
                self._frames += self._decoder.feed(self._rx[:upto])
                del self._rx[:upto]
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.transport.read(4096, timeout=left)
            if data:
                self._rx += data
        return self._frames.pop(0)

    def _read_raw(self, nbytes, timeout):
        """Exactly ``nbytes`` raw bytes from the link (a STREAM's tokens), waiting at most
        ``timeout`` s for each read; returns ``(data, first, last)``, the times the first
        and the last of them arrived. Raises :class:`~sw.errors.NoResponse` if the board
        falls silent first."""
        out = bytearray(self._rx[:nbytes])
        del self._rx[:nbytes]
        first = last = time.monotonic()
        while len(out) < nbytes:
            data = self.transport.read(min(nbytes - len(out), 1 << 16), timeout=timeout)
            if not data:
                raise NoResponse(f"{self.transport.description} stopped answering during "
                                 f"STREAM: {len(out)} of its {nbytes} token bytes came, then "
                                 f"nothing for {timeout:g} s")
            last = time.monotonic()
            if not out:
                first = last
            need = nbytes - len(out)
            out += data[:need]
            self._rx += data[need:]
        return bytes(out), first, last

    def drain(self, quiet=0.05, limit=FINISH_SECONDS):
        """Throw away whatever the board sends until it has been quiet for ``quiet`` s, or
        for at most ``limit`` s in all (a board that never stops talking)."""
        self._frames.clear()
        self._rx.clear()
        end = time.monotonic() + limit
        while time.monotonic() < end and self.transport.read(
                4096, timeout=min(quiet, max(0.0, end - time.monotonic()))):
            pass
        self._decoder = FrameDecoder(min_length=3)

    def finish(self, timeout=FINISH_SECONDS):
        """Wait at most ``timeout`` s for the final answer of the request in flight (a
        stream stopped early, a request interrupted by Ctrl-C), throwing its frames away, so
        that the board is answerable for the next request. Returns ``True`` if nothing is in
        flight any more, ``False`` if the board was still busy at the deadline."""
        if self._inflight is None:
            return True
        cmd, seq = self._inflight
        deadline = time.monotonic() + timeout
        try:
            while True:
                f = self._next_frame(deadline)
                if f is None:
                    return False
                decoded, payload = f
                if decoded != LinkStatus.OK:
                    continue
                op, rseq, status, _ = parse_response(payload)
                if rseq == seq and (op == cmd or (op == Cmd.TOKEN
                                                  and status != LinkStatus.OK)):
                    return True
        finally:
            self._inflight = None

    def _send(self, cmd, body):
        seq = self._next_seq()
        self.transport.write(frame(request(cmd, seq, body)))
        return seq

    def _exchange(self, cmd, body=b"", *, stream=False, timeout=None):
        """Send a request and yield its response frames ``(op, status, body)`` (with
        ``stream``, TOKEN frames too for RUN and GENERATE, the ``STREAM_START`` frame for
        STREAM), retrying as the class docstring says; the last frame yielded is the final
        response. The wait for the next frame starts again when the caller resumes."""
        name = _name(cmd)
        timeout = self.timeout if timeout is None else timeout
        idempotent = cmd in IDEMPOTENT
        grace = min(timeout, max(0.5, self.transport.response_timeout / 20))
        why = "no answer"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self._inflight = None
            seq = self._send(cmd, body)
            self._inflight = (cmd, seq)
            deadline = time.monotonic() + timeout
            started = False
            nacked = None
            while True:
                f = self._next_frame(deadline)
                if f is None:
                    if started:
                        self._inflight = None
                        raise NoResponse(f"{self.transport.description} stopped answering "
                                         f"during {name} (no frame for {timeout:g} s)")
                    if nacked is not None:
                        why = f"NACK {_status_name(nacked)}"
                        break                    # the NACK was ours: nothing ran, resend
                    why = f"no answer within {timeout:g} s"
                    if idempotent:
                        break
                    self._inflight = None
                    raise NoResponse(f"no answer to {name} from "
                                     f"{self.transport.description} within {timeout:g} s")
                decoded, payload = f
                if decoded != LinkStatus.OK:
                    # A response damaged on the way back: it may have been ours.
                    if started or not idempotent:
                        self._inflight = None
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
                partial = _PARTIAL.get(cmd, Cmd.TOKEN)
                if rseq != seq or op not in (cmd, partial):
                    continue                     # a late answer to an earlier attempt
                if op == partial and not stream:
                    continue
                started = True
                if op == cmd:
                    self._inflight = None
                    yield op, status, rbody
                    return
                yield op, status, rbody
                deadline = time.monotonic() + timeout
        self._inflight = None
        if cmd == Cmd.IDENTIFY and why.startswith("no answer"):
            raise NoResponse(f"no answer from {self.transport.description}: is the board "
                             "powered, and programmed with the spikestream bitstream "
                             "(python -m hw.build --program)?")
        raise NoResponse(f"{name} failed after {self.retries + 1} attempts "
                         f"({why}) on {self.transport.description}")

    def _request(self, cmd, body=b"", *, size=None, timeout=None):
        """Send a request that has one response; returns its body (status OK), which must
        be ``size`` bytes long if ``size`` is given."""
        for op, status, rbody in self._exchange(cmd, body, timeout=timeout):
            pass
        self._check_status(cmd, status)
        if size is not None and len(rbody) != size:
            raise self._mismatch(f"answered {_name(cmd)} with {len(rbody)} bytes, not "
                                 f"{size}")
        return rbody

    def _mismatch(self, what):
        return BoardMismatch(f"{self.transport.description} {what}: a faulty board or "
                             "bitstream?")

    @staticmethod
    def _check_status(cmd, status, extra=""):
        if status != LinkStatus.OK:
            why = _WHY.get(status, "unknown status")
            raise CommandFailed(f"the board refused {_name(cmd)}: {_status_name(status)} "
                                f"({why}){extra}",
                                status=status, command=cmd)

    # --- requests ---------------------------------------------------------------------------

    def identify(self):
        """Ask the board what it is; returns its :class:`~spikestream.protocol.Identity`.

        Raises :class:`~sw.errors.BoardMismatch` for a device that is not a spikestream SoC,
        speaks another protocol version, or claims a core that cannot be built.
        """
        body = self._request(Cmd.IDENTIFY)
        if len(body) != _IDENTIFY_SIZE or body[:4] != MAGIC:
            raise BoardMismatch(f"{self.transport.description} answers, but not as a "
                                f"spikestream SoC (wrong bitstream?)")
        ident = Identity(struct.unpack(IDENTIFY_FORMAT, body))
        if ident.version != PROTOCOL_VERSION:
            raise BoardMismatch(f"the board speaks protocol version {ident.version}, this "
                                f"host version {PROTOCOL_VERSION}: rebuild the bitstream "
                                f"or update the host so that they match")
        try:
            config = ident.core_config()
            if config.data_bits != ident.data_bits:
                raise ValueError(f"{ident.data_bits}-bit words, where its core has "
                                 f"{config.data_bits}")
            if ident.max_payload < MAX_PAYLOAD:
                raise ValueError(f"requests of at most {ident.max_payload} bytes, where the "
                                 f"protocol has {MAX_PAYLOAD}")
        except (ValueError, TypeError, ArithmeticError) as e:
            raise self._mismatch(f"claims an impossible configuration "
                                 f"({_first_line(e)})") from None
        self.identity = ident
        self.config = config
        return ident

    def _need_config(self):
        if self.config is None:
            self.identify()
        return self.config

    def write(self, mem, lane, addr, words):
        """Write ``words`` to consecutive addresses from ``addr`` (split into requests of
        at most :func:`~spikestream.protocol.max_write_words` words; a ``CORE`` register a request
        each, as the protocol requires)."""
        config = self._need_config()
        nbytes = word_bytes(config)
        most = 1 if mem == Mem.CORE else max_write_words(config)
        words = list(words)
        for k in range(0, len(words), most):
            chunk = words[k:k + most]
            self._request(Cmd.WRITE, struct.pack(WRITE_HEADER, int(mem), lane, addr + k,
                                                 len(chunk)) + pack_words(chunk, nbytes),
                          size=0)

    def write_all(self, writes, *, desc=None):
        """Send a list of :class:`~spikestream.memory_map.Write`, merging runs of consecutive
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
            body = self._request(Cmd.READ, struct.pack(READ_HEADER, int(mem), lane, addr + k, n),
                                 size=n * nbytes)
            out += unpack_words(body, nbytes)
        return out

    def reset(self):
        """Clear the core's neuron state and spike history (RESET)."""
        self._request(Cmd.RESET, size=0)

    def set_tag(self, tag):
        """Name the loaded image (TAG); 0 means "no image"."""
        self._request(Cmd.TAG, struct.pack(TAG_FORMAT, tag), size=0)

    def status(self):
        """The board's :class:`~spikestream.protocol.LinkCounters` (STATUS)."""
        return LinkCounters(struct.unpack(STATUS_FORMAT,
                                          self._request(Cmd.STATUS, size=_STATUS_SIZE)))

    def settings(self, temperature_word=None, seed=None):
        """Set the sampler's temperature word and/or seed its random source."""
        self.write_all(settings_writes(temperature_word, seed))

    # --- timesteps --------------------------------------------------------------------------

    def _next_chunk(self, most, left):
        """Timesteps to ask for in the next RUN/GENERATE/STREAM: about
        :attr:`request_seconds` of the board's measured speed, growing at most
        :data:`_GROWTH` times a request."""
        if self._rate is not None:
            self._chunk = max(1, min(int(self._rate * self.request_seconds),
                                     self._chunk * _GROWTH))
        return max(1, min(self._chunk, most, left))

    def _measured(self, steps, streamed, seconds):
        """Learn the board's speed from a request of ``steps`` timesteps that took
        ``seconds`` in all, its TOKEN frames arriving over ``streamed`` seconds. The frames'
        pace is the board's; the time to the first frame is the link's and the request's
        (a tenth of a second on the simulated board), which no chunk size makes shorter,
        so one timestep alone says nothing. Where nothing was measured yet and the pace
        cannot be seen (a STREAM's few bytes arrive in one read), the request's total time
        gives a speed that is too low, from which the next chunks grow. A request that took
        far too long in all (frames that arrive in bursts hide the pace) sets the speed from
        its total time."""
        rate = self._rate
        if steps >= 2 and streamed > 0:
            rate = (steps - 1) / streamed
        elif rate is None and seconds > 0:
            rate = steps / seconds
        if seconds > 4 * self.request_seconds:
            rate = min(math.inf if rate is None else rate, steps / seconds)
        self._rate = rate

    def _token_limit(self):
        if self.vocab_size is not None:
            return self.vocab_size
        return self.config.max_vocab if self.config is not None else 1 << 16

    def _steps(self, cmd, body, first_index, asked):
        """Send one RUN/GENERATE of ``asked`` timesteps; yields its checked
        :class:`~spikestream.protocol.TokenResult` (indices from ``first_index``)."""
        name = _name(cmd)
        limit = self._token_limit()
        done = None
        count = 0
        ended = False
        t0 = first = last = time.monotonic()
        try:
            for op, status, rbody in self._exchange(cmd, body, stream=True):
                if op != Cmd.TOKEN:
                    done = (status, rbody)
                    continue
                last = time.monotonic()
                if not count:
                    first = last
                if status != LinkStatus.OK or len(rbody) != _TOKEN_SIZE:
                    raise self._mismatch(f"sent a TOKEN frame of {len(rbody)} bytes with "
                                         f"status {_status_name(status)} during {name}")
                index, token, cycles, spikes = struct.unpack(TOKEN_FORMAT, rbody)
                if count >= asked:
                    raise self._mismatch(f"sent more than the {asked} TOKEN frames {name} "
                                         "asked for")
                if index != count:
                    raise self._mismatch(f"sent TOKEN frame {index} where {count} was due "
                                         f"during {name}")
                if token >= limit:
                    raise self._mismatch(f"sampled token {token}, outside the vocabulary of "
                                         f"{limit} tokens")
                count += 1
                yield TokenResult((first_index + index, token, cycles, spikes))
            ended = True
        except HostError:
            self._inflight = None       # a broken answer: nothing more to wait for
            raise
        finally:
            if not ended:
                # The caller stopped early (or Ctrl-C): let the board finish the chunk, so
                # that the next request is not answered by this one's frames.
                self.finish(min(self.timeout, FINISH_SECONDS))
        status, rbody = done
        ran = count
        if status in (LinkStatus.OK, LinkStatus.BAD_TOKEN):
            if len(rbody) != _DONE_SIZE:
                raise self._mismatch(f"ended {name} with a {len(rbody)}-byte body, not "
                                     f"{_DONE_SIZE}")
            (ran,) = struct.unpack(DONE_FORMAT, rbody)
            if ran != count or (status == LinkStatus.OK) != (count == asked):
                raise self._mismatch(f"ended {name} ({_status_name(status)}) after {ran} "
                                     f"timesteps, having sent {count} TOKEN frames of the "
                                     f"{asked} asked for")
        if status == LinkStatus.OK:
            self._measured(count, last - first, time.monotonic() - t0)
        self._check_status(cmd, status, f" after {first_index + ran} timesteps")

    def run(self, tokens):
        """Feed ``tokens`` (ints), one timestep each; yields a
        :class:`~spikestream.protocol.TokenResult` per timestep as its frame arrives (indices count
        from 0 over all of ``tokens``). Sent in RUN requests sized as the module docstring
        says."""
        tokens = [int(t) for t in tokens]
        bad = [t for t in tokens if not 0 <= t < 1 << 16]
        if bad:
            raise ValueError(f"token {bad[0]} is not a 16-bit token id")
        k = 0
        while k < len(tokens):
            chunk = tokens[k:k + self._next_chunk(MAX_RUN, len(tokens) - k)]
            yield from self._steps(Cmd.RUN, struct.pack(f"<{len(chunk)}H", *chunk), k,
                                   len(chunk))
            k += len(chunk)

    def generate(self, token, n):
        """Feed ``token``, then each sampled token back, ``n`` timesteps; yields each
        :class:`~spikestream.protocol.TokenResult` (its ``token`` is the sampled one) as it arrives.
        Sent in GENERATE requests sized as the module docstring says (19 bytes a token on
        the line; :meth:`stream` generates the same at one byte a token, with sums of cycles
        and spikes per request instead of each timestep's)."""
        token, n = int(token), int(n)
        if not 0 <= token < 1 << 16:
            raise ValueError(f"token {token} is not a 16-bit token id")
        done = 0
        while done < n:
            count = self._next_chunk(_GENERATE_MAX, n - done)
            for r in self._steps(Cmd.GENERATE, struct.pack(GENERATE_FORMAT, token, count),
                                 done, count):
                token = r.token
                yield r
            done += count

    def stream(self, token, n):
        """Feed ``token``, then each sampled token back, ``n`` timesteps, as :meth:`generate`
        does, with STREAM requests (one byte per token for vocabularies up to 256; sized as
        the module docstring says). Yields a :class:`StreamChunk` per request once its final
        frame has checked it: its tokens, and the sums of its cycles and spikes.

        Raises :class:`~sw.errors.TransportError` for a stream damaged on the line (a byte
        lost, added or changed), :class:`~sw.errors.BoardMismatch` for an answer that is
        not the one asked for, :class:`~sw.errors.NoResponse` for a board that falls silent,
        and :class:`~sw.errors.CommandFailed` for a refused request (``BAD_TOKEN`` for a
        first token outside the vocabulary).
        """
        token, n = int(token), int(n)
        if not 0 <= token < 1 << 16:
            raise ValueError(f"token {token} is not a 16-bit token id")
        self._need_config()
        done = 0
        while done < n:
            count = self._next_chunk(_STREAM_MAX, n - done)
            chunk = self._stream_chunk(token, count, done)
            token = chunk.tokens[-1]
            yield chunk
            done += count

    def _stream_chunk(self, first, count, index):
        """Send one STREAM of ``count`` timesteps from ``first``; returns its checked
        :class:`StreamChunk` (``index`` its first timestep's)."""
        nbytes = stream_token_bytes(self.config)
        want = count * nbytes
        where = self.transport.description
        t0 = time.monotonic()
        exchange = self._exchange(Cmd.STREAM, STREAM_BODY.pack(first=first, count=count),
                                  stream=True)
        ended = False
        try:
            op, status, rbody = next(exchange)
            if op == Cmd.STREAM:
                # The final frame at once: a refusal (BAD_TOKEN: a first token outside the
                # vocabulary), or a board that skipped its stream.
                ended = True
                if status == LinkStatus.OK:
                    raise self._mismatch(f"ended STREAM (OK) without sending its "
                                         f"{count} tokens")
                if status == LinkStatus.BAD_TOKEN:
                    end = self._stream_end(rbody)
                    if end.steps != 0:
                        raise self._mismatch(f"ended STREAM (BAD_TOKEN) after {end.steps} "
                                             "timesteps, having sent no token")
                self._check_status(Cmd.STREAM, status, f" after {index} timesteps")
            if status != LinkStatus.OK or len(rbody) != STREAM_START_BODY.size:
                raise self._mismatch(f"sent a STREAM_START frame of {len(rbody)} bytes with "
                                     f"status {_status_name(status)}")
            start = STREAM_START_BODY.unpack_from(rbody)
            if (start.count, start.token_bytes) != (count, nbytes):
                raise self._mismatch(f"announced {start.count} tokens of {start.token_bytes} "
                                     f"bytes for a STREAM of {count} tokens of {nbytes}")
            raw, first_at, last_at = self._read_raw(want, self.timeout)
            got = self._next_frame(time.monotonic() + self.timeout)
            self._inflight = None
            ended = True
            if got is None:
                raise NoResponse(f"{where} stopped answering during STREAM: no final frame "
                                 f"within {self.timeout:g} s after its {want} token bytes")
            decoded, payload = got
            if decoded != LinkStatus.OK:
                raise TransportError(f"the STREAM from {where} arrived corrupted: a damaged "
                                     f"frame ({decoded.name}) where the final frame was due "
                                     f"after {want} token bytes (a byte added on the line?)")
            op, rseq, status, rbody = parse_response(payload)
            if (op, rseq) != (Cmd.STREAM, self._seq):
                raise TransportError(f"the STREAM from {where} arrived corrupted: a frame "
                                     f"{_name(op)} (seq {rseq}) where its final frame was due")
            if status != LinkStatus.OK:
                raise self._mismatch(f"ended STREAM with {_status_name(status)} after sending "
                                     f"its {count} tokens")
            end = self._stream_end(rbody)
            if crc16(raw) != end.crc:
                raise TransportError(f"the STREAM from {where} arrived corrupted: the CRC of "
                                     f"its {want} token bytes is {crc16(raw):#06x}, the board's "
                                     f"{end.crc:#06x} (a byte lost, added or changed on the "
                                     "line)")
            if end.steps != count:
                raise self._mismatch(f"ended STREAM (OK) after {end.steps} timesteps, having "
                                     f"sent the {count} tokens asked for")
            tokens = list(raw) if nbytes == 1 else unpack_stream(raw, nbytes)
            top = max(tokens)
            if top >= self._token_limit():
                raise self._mismatch(f"sampled token {top}, outside the vocabulary of "
                                     f"{self._token_limit()} tokens")
        except HostError:
            self._inflight = None       # a broken answer: nothing more to wait for
            raise
        finally:
            exchange.close()
            if not ended:
                # Interrupted (Ctrl-C): let the board finish the chunk, so that the next
                # request is not answered by this one's bytes.
                self.finish(min(self.timeout, FINISH_SECONDS))
        self._measured(count, last_at - first_at, time.monotonic() - t0)
        return StreamChunk(index, tokens, end.cycles, end.spikes)

    def _stream_end(self, body):
        """The final STREAM body, checked for its size."""
        if len(body) != STREAM_END_BODY.size:
            raise self._mismatch(f"ended STREAM with a {len(body)}-byte body, not "
                                 f"{STREAM_END_BODY.size}")
        return STREAM_END_BODY.unpack_from(body)

    # --- images -----------------------------------------------------------------------------

    def load_image(self, image, *, tag=None, force=False):
        """Load a network image (a path, or an :class:`~spikestream.image.Image`) into the board.

        The image's tag (:func:`image_tag` of its file) is compared with the board's first:
        if the board already holds it, nothing is sent. An image laid out for another lane
        count is laid out again for the board's lanes (one note). An image that does not fit
        the board's core raises :class:`~sw.errors.ImageDoesNotFit` before anything is
        written; an image file that cannot be read or is not an image raises
        :class:`~spikestream.image.ImageError` (:func:`~spikestream.image.read_image_bytes`: regular
        files of a bounded size only). Sets :attr:`vocab_size`. Returns ``True`` if the
        image was sent, ``False`` if it was already there.
        """
        if isinstance(image, (str, Path)):
            data = read_image_bytes(image)
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
        # Without a readout a STEP's token is 0 (sampled from nothing).
        self.vocab_size = max(1, image.net.vocab_size)
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
