"""Generate text on a board, streamed: ``python -m sw.generate --prompt "ROMEO:"``.

Finds the board (a ULX3S's USB serial port, or ``--port``), checks that it runs the
spikestream SoC of this protocol version, loads the network image unless the board already
holds it, sets the sampler's temperature and seed, feeds the prompt and then lets the board
generate, printing each character as its frame arrives. The text is exactly what
``python -m models.generate`` prints for the same image, prompt, seed and temperature.

Without a board it runs the simulated SoC (``--backend sim``: the RTL in Verilator, bridged
to a pseudo-terminal) or the golden model behind the same protocol (``--backend golden``).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from hw.memory_map import CoreFitError, image_writes
from models.data import Vocab
from models.generate import encode_prompt
from models.image import Image, ImageError, parse_image
from models.sampler import temperature_word

from .board import SHIPPED_IMAGE, board_config
from .client import Client, image_tag
from .errors import HostError, ImageDoesNotFit
from .transport import (DEFAULT_BAUD, GoldenTransport, SerialTransport, SimTransport,
                        find_board_ports, ULX3S_USB_IDS)

__all__ = ["generate_tokens", "open_transport", "main"]


def _note(line):
    print(line, file=sys.stderr, flush=True)


def generate_tokens(client, prompt, n):
    """Feed ``prompt`` (token ids) and generate ``n`` tokens (the caller resets first).

    Yields ``(token, TokenResult or None)``: first one ``(None, r)`` per prompt timestep but
    the last, then one ``(token, r)`` per generated token, where ``r`` is the timestep whose
    sampled token it is. Timestep counts match :meth:`models.golden.GoldenCore.generate`:
    ``len(prompt) + n - 1`` (the last sampled token is never fed back).
    """
    results = list(client.run(prompt)) if n == 0 else None
    if results is not None:
        for r in results:
            yield None, r
        return
    last = None
    for r in client.run(prompt):
        if last is not None:
            yield None, last
        last = r
    yield last.token, last
    if n > 1:
        for r in client.generate(last.token, n - 1):
            yield r.token, r


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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sw.generate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--tokens", type=int, default=200, help="characters to generate")
    ap.add_argument("--temperature", type=float, default=0.8, help="0 picks the most likely")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image", default=str(SHIPPED_IMAGE),
                    help="network image (default: the shipped model)")
    ap.add_argument("--port", help="the board's serial port (default: look for a ULX3S)")
    ap.add_argument("--backend", choices=("serial", "sim", "golden"),
                    help="serial: a board; sim: the SoC in RTL simulation; golden: the "
                         "golden model behind the protocol (default: a board if one is "
                         "found, else sim)")
    ap.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    ap.add_argument("--timeout", type=float,
                    help="seconds to wait for each answer (default: 2 for a board, 120 for "
                         "the simulation)")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON: backend, tokens, text, rates")
    args = ap.parse_args(argv)
    if args.port and args.backend not in (None, "serial"):
        ap.error("--port goes with the serial backend")
    if args.tokens < 0 or args.temperature < 0:
        raise SystemExit("error: --tokens and --temperature must not be negative")

    try:
        data = Path(args.image).read_bytes()
        img = parse_image(data)
    except FileNotFoundError:
        raise SystemExit(f"error: {args.image}: no such image file") from None
    except IsADirectoryError:
        raise SystemExit(f"error: {args.image}: is a folder, not an image file") from None
    except ImageError as e:
        raise SystemExit(f"error: {args.image}: {e}") from None
    vocab = Vocab(img.net.vocab)
    prompt = encode_prompt(vocab, args.prompt)
    tag = image_tag(data)
    scale = float(img.net.populations[img.net.readout].scale[0])

    try:
        transport = open_transport(args, img, tag)
        with transport:
            client = Client(transport, timeout=args.timeout)
            ident = client.identify()
            client.load_image(img, tag=tag)
            client.reset()
            client.settings(temperature_word(args.temperature, scale), args.seed)
            sys.stdout.write(args.prompt)
            sys.stdout.flush()
            text, cycles, steps = [], 0, 0
            t0 = time.perf_counter()
            for token, r in generate_tokens(client, prompt, args.tokens):
                cycles += r.cycles
                steps += 1
                if token is not None:
                    text.append(vocab.chars[token])
                    sys.stdout.write(text[-1])
                    sys.stdout.flush()
            dt = time.perf_counter() - t0
    except HostError as e:
        sys.stdout.flush()
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        sys.stdout.flush()
        raise SystemExit("\ninterrupted") from None
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
    main()
