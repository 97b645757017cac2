"""Generate text with the golden model: ``python -m models.generate --prompt "ROMEO:"``.

Runs the bit-exact integer model of the core on an image (default: the shipped one), so
the text is exactly what the board and the RTL simulation produce for the same image,
prompt, seed and temperature.
"""

import argparse
import sys
import time

from .data import Vocab
from .evaluate import SHIPPED_IMAGE
from .golden import GoldenCore
from .image import ImageError, load_image
from .sampler import temperature_word

__all__ = ["write_raster", "main"]


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
    fig.savefig(path, dpi=110)
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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m models.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--tokens", type=int, default=200, help="characters to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.8, help="0 picks the most likely")
    ap.add_argument("--image", default=str(SHIPPED_IMAGE))
    ap.add_argument("--raster", metavar="PNG", help="also write a spike raster of the run")
    args = ap.parse_args(argv)
    try:
        img = load_image(args.image)
    except ImageError as e:
        raise SystemExit(f"error: {e}") from None
    vocab = Vocab(img.net.vocab)
    prompt = encode_prompt(vocab, args.prompt)
    if args.tokens < 0 or args.temperature < 0:
        raise SystemExit("error: --tokens and --temperature must not be negative")
    core = GoldenCore(img.net, img.lanes)
    scale = float(img.net.populations[img.net.readout].scale[0])
    core.reset()
    core.seed(args.seed)
    core.set_temperature_word(temperature_word(args.temperature, scale))
    t0 = time.perf_counter()
    sys.stdout.write(args.prompt)
    r, cycles, raster = None, 0, []
    for t in prompt:
        r = core.step([t])
        cycles += int(r.cycles[0])
        raster.append(r)
    for k in range(args.tokens):
        tok = int(r.token[0])
        sys.stdout.write(vocab.chars[tok])
        sys.stdout.flush()
        if k + 1 < args.tokens:
            r = core.step([tok])
            cycles += int(r.cycles[0])
            raster.append(r)
    dt = time.perf_counter() - t0
    steps = len(prompt) + max(args.tokens - 1, 0)
    print()
    if args.raster:
        write_raster([x.spikes for x in raster], img.net, args.prompt + "".join(
            vocab.chars[int(x.token[0])] for x in raster[len(prompt) - 1:]), args.raster)
    print(f"[golden model: {args.tokens} tokens in {dt:.2f} s, {steps / dt:.0f} steps/s; "
          f"core cycles/step {cycles / steps:.0f} at {img.lanes} lanes]", file=sys.stderr)


if __name__ == "__main__":
    main()
