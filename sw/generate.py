"""Generate text on a board, streamed: ``python -m sw.generate --prompt "ROMEO:"``.

Finds the board (a ULX3S's USB serial port, or ``--port``), checks that it runs the
spikestream SoC of this protocol version, loads the network image unless the board already
holds it, sets the sampler's temperature and seed, feeds the prompt (RUN) and then lets the
board generate with STREAM requests (one byte per token on the link;
:meth:`sw.client.Client.stream`), printing each request's characters once its final frame
has checked them (a few times a second). The text is exactly what
``python -m models.generate`` prints for the same image, prompt, seed and temperature; a
stream damaged on the line is one error line, never text.

Without a board it runs the simulated SoC (``--backend sim``: the RTL in Verilator, bridged
to a pseudo-terminal) or the golden model behind the same protocol (``--backend golden``).

Ctrl-C stops within about a second on every backend: the client keeps each request to the
board short (:mod:`sw.client`), waits at most a second for the one in flight, and the
command ends with the one line ``interrupted`` (exit status 130), leaving the board
answerable. Generated characters that could drive a terminal (control characters other
than newline and tab, and other unprintable ones) are printed escaped, as ``\\x1b``; the
``--json`` line holds the text as generated. A long prompt shows a progress bar on stderr
while it is fed.
"""

import json
import math
import sys
import time

from tqdm import tqdm

from spikestream.memory_map import CoreFitError, image_writes
from spikestream.cli import CommandParser, add_sampling_arguments
from spikestream.cmdline import run
from models.data import Vocab
from models.generate import PROMPT_PROGRESS, encode_prompt
from spikestream.image import Image, ImageError, parse_image, read_image_bytes
from spikestream.sampler import temperature_word

from .board import board_config
from .client import FINISH_SECONDS, Client, image_tag
from .errors import HostError, ImageDoesNotFit
from .transport import (DEFAULT_BAUD, GoldenTransport, SerialTransport, SimTransport,
                        find_board_ports, ULX3S_USB_IDS)

__all__ = ["generate_tokens", "open_transport", "printable", "argument_parser", "main"]


def _note(line):
    print(line, file=sys.stderr, flush=True)


def printable(text):
    """``text`` safe for a terminal: every character that is not printable (escape
    sequences' ``ESC``, other control characters, unassigned or separator code points),
    except newline and tab, written as Python writes it in a string literal (``\\x1b``)."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def generate_tokens(client, prompt, n):
    """Feed ``prompt`` (token ids) and generate ``n`` tokens (the caller resets first).

    Yields ``(tokens, cycles, steps)``: the generated tokens (a list) that ``steps``
    timesteps of ``cycles`` cycles in all sampled. First one ``([], cycles, 1)`` per prompt
    timestep but the last, then ``([token], cycles, 1)`` for the last prompt timestep (its
    sampled token is the first generated), then one item per STREAM request of the rest
    (with ``n`` = 0, one ``([], cycles, 1)`` for every prompt timestep). Timestep counts
    match :meth:`models.golden.GoldenCore.generate`: ``len(prompt) + n - 1`` (the last
    sampled token is never fed back).
    """
    results = list(client.run(prompt)) if n == 0 else None
    if results is not None:
        for r in results:
            yield [], r.cycles, 1
        return
    last = None
    for r in client.run(prompt):
        if last is not None:
            yield [], last.cycles, 1
        last = r
    yield [last.token], last.cycles, 1
    if n > 1:
        for chunk in client.stream(last.token, n - 1):
            yield chunk.tokens, chunk.cycles, len(chunk.tokens)


def open_transport(args, image, tag):
    """The transport that ``args`` ask for (or find); returns it unopened."""
    if args.port:
        return SerialTransport(args.port, args.baud)
    backend = args.backend
    if backend == "serial" or backend is None:
        ports = find_board_ports()
        if ports:
            if backend is None:
                _note(f"using the ULX3S on {ports[0]}")
            return SerialTransport(ports[0], args.baud)
        ids = ", ".join(f"{v:04x}:{p:04x}" for v, p in ULX3S_USB_IDS)
        if backend == "serial":
            raise HostError(f"no ULX3S found (no USB serial device {ids}); name the port "
                            "with --port")
        _note(f"no board found (no USB serial device {ids}): using the simulated board "
              "(--backend golden is much faster)")
        backend = "sim"
    if backend == "golden":
        return GoldenTransport()
    config = board_config()
    if image.lanes != config.lanes:
        image = Image(net=image.net, lanes=config.lanes)
    try:
        init = image_writes(image, config)
    except CoreFitError as e:
        raise ImageDoesNotFit(str(e)) from None
    return SimTransport(config, init=init, tag=tag, progress=_note)


def _check_args(args):
    """One ``error:`` line (``SystemExit``) for a value the parser let through."""
    if args.tokens < 0:
        raise SystemExit(f"error: --tokens must not be negative, not {args.tokens}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise SystemExit(f"error: --temperature must be a finite number >= 0, not "
                         f"{args.temperature}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise SystemExit(f"error: --timeout must be a positive, finite number of seconds, "
                         f"not {args.timeout}")
    if args.baud <= 0:
        raise SystemExit(f"error: --baud must be positive, not {args.baud}")


def argument_parser(prog="python -m sw.generate"):
    """The command line of ``python -m sw.generate`` (``spikestream generate``); argument
    errors are one line (``error: ...``), like every other error here."""
    ap = CommandParser(prog=prog, description="Generate text, streamed, on a board, the "
                                              "simulated SoC or the golden model behind the "
                                              "board's protocol.")
    add_sampling_arguments(ap)
    ap.add_argument("--port", help="the board's serial port (default: look for a ULX3S)")
    ap.add_argument("--backend", choices=("serial", "sim", "golden"),
                    help="serial: a board; sim: the SoC in RTL simulation; golden: the "
                         "golden model behind the protocol (default: a board if one is "
                         "found, else sim)")
    ap.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                    help="the serial link's baud rate (the SoC's)")
    ap.add_argument("--timeout", type=float, metavar="SECONDS",
                    help="seconds to wait for each answer (default: 2 for a board, 120 for "
                         "the simulation)")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON: backend, tokens, text, rates")
    return ap


def main(argv=None, prog="python -m sw.generate"):
    """Run the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in its help
    and errors (``spikestream generate`` when run from the console script)."""
    ap = argument_parser(prog)
    args = ap.parse_args(argv)
    if args.port and args.backend not in (None, "serial"):
        ap.error("--port goes with the serial backend")
    _check_args(args)

    try:
        data = read_image_bytes(args.image)
    except ImageError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        img = parse_image(data)
        vocab = Vocab(img.net.vocab)
    except (ImageError, ValueError) as e:
        raise SystemExit(f"error: {args.image}: {e}") from None
    prompt = encode_prompt(vocab, args.prompt)
    tag = image_tag(data)
    scale = float(img.net.populations[img.net.readout].scale[0])
    try:
        temp_word = temperature_word(args.temperature, scale)
    except ValueError as e:
        raise SystemExit(f"error: --temperature: {e}") from None

    def show(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        transport = open_transport(args, img, tag)
        with transport:
            client = Client(transport, timeout=args.timeout)
            stream = bar = None
            try:
                ident = client.identify()
                client.load_image(img, tag=tag)
                client.reset()
                client.settings(temp_word, args.seed)
                # A long prompt's progress bar first, then the prompt, so that clearing the
                # bar does not clear the prompt's last line on a terminal.
                if len(prompt) > PROMPT_PROGRESS:
                    bar = tqdm(total=len(prompt), desc="prompt", unit="char", file=sys.stderr,
                               leave=False, mininterval=0.5)
                else:
                    show(args.prompt)
                text, cycles, steps = [], 0, 0
                t0 = time.perf_counter()
                stream = generate_tokens(client, prompt, args.tokens)
                for tokens, chunk_cycles, chunk_steps in stream:
                    cycles += chunk_cycles
                    steps += chunk_steps
                    if bar is not None and (tokens or steps == len(prompt)):
                        bar.close()
                        bar = None
                        show(args.prompt)
                    if not tokens:
                        if bar is not None:
                            bar.update(1)
                        continue
                    chars = [vocab.chars[t] for t in tokens]
                    text += chars
                    show(printable("".join(chars)))
                dt = time.perf_counter() - t0
            except KeyboardInterrupt:
                # Let the board end the request in flight (at most about a second), so
                # that it is answerable once this command has gone.
                try:
                    if stream is not None:
                        stream.close()
                    client.finish(FINISH_SECONDS)
                except HostError:
                    pass
                raise
            finally:
                if bar is not None:
                    bar.close()
    except HostError as e:
        sys.stdout.flush()
        raise SystemExit(f"error: {e}") from None
    print()
    rate = args.tokens / dt if dt > 0 else 0.0
    per_token = cycles / steps if steps else 0.0
    _note(f"[{transport.name}: {args.tokens} tokens in {dt:.2f} s, {rate:.1f} tokens/s; "
          f"board cycles/token {per_token:.0f} at {ident.lanes} lanes, "
          f"{ident.clock_hz / 1e6:g} MHz clock]")
    if args.json:
        print(json.dumps({
            "backend": transport.name, "device": transport.description,
            "prompt": args.prompt, "tokens": args.tokens, "text": "".join(text),
            "seed": args.seed, "temperature": args.temperature, "seconds": dt,
            "tokens_per_second": rate, "timesteps": steps, "cycles_per_token": per_token,
            "lanes": ident.lanes, "clock_hz": ident.clock_hz, "image_tag": tag,
        }))


if __name__ == "__main__":
    run(main)
