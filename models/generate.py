"""Generate text with the golden model: ``python -m models.generate --prompt "ROMEO:"``
(``spikestream golden``).

Runs the bit-exact integer model of the core on an image (default: the shipped one), so
the text is exactly what the board and the RTL simulation produce for the same image,
prompt, seed and temperature.
"""

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from spikestream.cli import CommandParser, add_sampling_arguments
from spikestream.cmdline import run
from .data import Vocab
from spikestream.files import FileProblem, atomic_write, check_output
from .golden import GoldenCore
from spikestream.image import ImageError, load_image
from spikestream.sampler import temperature_word

__all__ = ["PROMPT_PROGRESS", "write_raster", "encode_prompt", "argument_parser", "main"]

PROMPT_PROGRESS = 2000
"""Prompts of more characters than this show a progress bar while they are fed."""


def write_raster(spikes, net, text, path):
    """Spike raster PNG: one panel per spiking population, time along x (one char a step)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    pops = [i for i, p in enumerate(net.populations) if i != net.readout]
    fig, axes = plt.subplots(len(pops), 1, figsize=(12, 5 * len(pops)), squeeze=False)
    for ax, i in zip(axes[:, 0], pops):
        m = torch.stack([s[i][0] for s in spikes]).T.numpy()
        ax.imshow(m, aspect="auto", cmap="Greys", interpolation="nearest", origin="lower")
        ax.set_ylabel(f"{net.populations[i].name} neuron")
        ax.set_xlim(-0.5, len(spikes) - 0.5)
        ax.set_title(f"{net.populations[i].name}: firing rate {m.mean():.3f}")
    axes[-1, 0].set_xlabel("timestep (character)")
    if len(text) <= 120:
        axes[-1, 0].set_xticks(range(len(spikes)), [repr(c)[1:-1] for c in text[:len(spikes)]],
                               fontsize=6)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)


def encode_prompt(vocab, text):
    """``text`` as token ids of ``vocab``; a command-line error (``SystemExit``) if a
    character is not in the vocabulary or the prompt is empty."""
    try:
        prompt = vocab.encode(text)
    except ValueError as e:
        raise SystemExit(f"error: prompt: {e}") from None
    if not prompt:
        raise SystemExit("error: the prompt is empty")
    return prompt


def argument_parser(prog="python -m models.generate"):
    """The command line of ``python -m models.generate`` (``spikestream golden``)."""
    ap = CommandParser(prog=prog, description="Generate text with the golden model (the "
                                              "bit-exact integer model of the core), in process.")
    add_sampling_arguments(ap)
    ap.add_argument("--raster", metavar="PNG", help="also write a spike raster of the run")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON: text, tokens, seconds, cycles per step")
    return ap


def main(argv=None, prog="python -m models.generate"):
    """Run the command on ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in its help
    and errors (``spikestream golden`` when run from the console script)."""
    args = argument_parser(prog).parse_args(argv)
    if args.tokens < 0:
        raise SystemExit(f"error: --tokens must not be negative, not {args.tokens}")
    if args.raster:
        if Path(args.raster).suffix.lower() != ".png":
            raise SystemExit(f"error: --raster {args.raster}: name a .png file")
        try:
            check_output(args.raster, [args.image], "raster")
        except FileProblem as e:
            raise SystemExit(f"error: {e}") from None
    try:
        img = load_image(args.image)
    except ImageError as e:
        raise SystemExit(f"error: {e}") from None
    vocab = Vocab(img.net.vocab)
    prompt = encode_prompt(vocab, args.prompt)
    scale = float(img.net.populations[img.net.readout].scale[0])
    try:
        temp_word = temperature_word(args.temperature, scale)
    except ValueError as e:
        raise SystemExit(f"error: --temperature: {e}") from None
    core = GoldenCore(img.net, img.lanes)
    core.reset()
    core.seed(args.seed)
    core.set_temperature_word(temp_word)
    t0 = time.perf_counter()
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    r, cycles, raster, text = None, 0, [], []
    for t in tqdm(prompt, desc="prompt", unit="char", file=sys.stderr, leave=False,
                  disable=len(prompt) <= PROMPT_PROGRESS, mininterval=0.5):
        r = core.step([t])
        cycles += int(r.cycles[0])
        if args.raster:
            raster.append(r)
    for k in range(args.tokens):
        tok = int(r.token[0])
        text.append(vocab.chars[tok])
        sys.stdout.write(text[-1])
        sys.stdout.flush()
        if k + 1 < args.tokens:
            r = core.step([tok])
            cycles += int(r.cycles[0])
            if args.raster:
                raster.append(r)
    dt = time.perf_counter() - t0
    steps = len(prompt) + max(args.tokens - 1, 0)
    print()
    if args.raster:
        write_raster([x.spikes for x in raster], img.net, args.prompt + "".join(
            vocab.chars[int(x.token[0])] for x in raster[len(prompt) - 1:]), args.raster)
    print(f"[golden model: {args.tokens} tokens in {dt:.2f} s, {steps / dt:.0f} steps/s; "
          f"core cycles/step {cycles / steps:.0f} at {img.lanes} lanes]", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "prompt": args.prompt, "tokens": args.tokens,
            "text": "".join(text), "seed": args.seed, "temperature": args.temperature,
            "seconds": dt, "timesteps": steps, "cycles_per_step": cycles / steps,
            "lanes": img.lanes, "image": args.image}))


if __name__ == "__main__":
    run(main)
