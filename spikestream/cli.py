"""The ``spikestream`` command: one entry point for every command of the flow.

``spikestream COMMAND [ARGS ...]`` runs one of :data:`COMMANDS` (``spikestream --help``
lists them, ``spikestream COMMAND --help`` shows a command's flags); each is also a
``python -m`` program of its own (``python -m models.train`` is ``spikestream train``).

:data:`COMMANDS` is a lazy dispatch table: it names each command's module as a string and
:func:`main` imports only the chosen one (:func:`importlib.import_module`), then hands it
the rest of the command line. The commands live on the upper floors (``models``, ``sw``,
``hw``) and load torch or Amaranth; importing them all here would make ``spikestream
--help`` take seconds. It is not a way round an import circle: this module imports
nothing of the project but :mod:`spikestream.cmdline`, and the commands import from it
(:class:`CommandParser`), never the reverse.

The flags mean one thing in every command: ``--fpga`` is the FPGA size (``85f``),
``--torch-device`` the torch device, ``--seed`` the sampler's seed (other seeds are
spelled out: ``--pnr-seed``; training's is ``--set seed=N``), ``--image PATH`` a network
image and ``--checkpoint PATH`` a float checkpoint wherever a command reads one, and
``--json`` ends the output with one line holding one JSON object of the results.
"""

import argparse
import importlib
import sys
from collections import namedtuple

from . import __version__
from .board import SHIPPED_IMAGE
from .cmdline import run

__all__ = ["Command", "COMMANDS", "HelpFormatter", "CommandParser", "add_sampling_arguments",
           "argument_parser", "main"]

Command = namedtuple("Command", "module summary")
"""One subcommand: the module whose ``main(argv, prog=...)`` runs it, and one line of help."""

COMMANDS = {
    "train": Command("models.train", "train a spiking character LM (resumable checkpoints)"),
    "compile": Command("models.compile", "compile a checkpoint into a network image that "
                                         "fits an FPGA"),
    "evaluate": Command("models.evaluate", "validation loss, activity and cycles per token "
                                           "of an image or a checkpoint"),
    "generate": Command("sw.generate", "generate text on a board, the simulated SoC or the "
                                       "golden model behind the protocol"),
    "golden": Command("models.generate", "generate text with the golden model in process "
                                         "(and draw a spike raster)"),
    "run": Command("sw.run", "run any image on input spikes or tokens; every timestep's "
                             "outputs to a .npz"),
    "classify": Command("sw.classify", "classify sentences (MR polarity) with a TextCNN image "
                                       "on any backend"),
    "nir": Command("models.nirio", "import a NIR graph (snnTorch, Norse, ...) into an image, "
                                   "or export an image to NIR"),
    "build": Command("hw.build", "build (and program) a bitstream of the SoC for a board"),
}
"""Subcommand -> :class:`Command`; modules are imported only when their command runs."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default after its help, unless the default is empty (``None``,
    ``False``, ``[]``) or the help already says what it is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, []) or "default" in text:
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """The argument parser of every command: defaults in the help (:class:`HelpFormatter`)
    and a bad argument reported as one line, ``error: ... (see PROG --help)``, exit 2."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_sampling_arguments(ap):
    """The flags of every command that generates text (``generate``, ``golden``): the
    prompt, how many tokens, the sampler's temperature and seed, and the image."""
    ap.add_argument("--prompt", default="ROMEO:", help="text fed before generating")
    ap.add_argument("--tokens", type=int, default=200, metavar="N",
                    help="characters to generate")
    ap.add_argument("--temperature", type=float, default=0.8, metavar="T",
                    help="sampling temperature; 0 picks the most likely")
    ap.add_argument("--seed", type=int, default=0, metavar="N", help="the sampler's seed")
    ap.add_argument("--image", default=str(SHIPPED_IMAGE), metavar="PATH",
                    help="network image (default: the shipped model)")
    return ap


def argument_parser(prog="spikestream"):
    """The top-level parser: ``COMMAND`` (one of :data:`COMMANDS`) and its arguments."""
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
    ap = CommandParser(
        prog=prog, usage="%(prog)s [-h] [--version] COMMAND [ARGS ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Spiking language models on a small FPGA: training, compiler, golden "
                    "model, gateware and host.",
        epilog=f"commands:\n{listing}\n\nRun '{prog} COMMAND --help' for a command's flags.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("command", choices=COMMANDS, metavar="COMMAND",
                    help="the command to run (below), followed by its own arguments")
    return ap


def main(argv=None):
    """Run ``spikestream COMMAND ARGS``: import the command's module and call its
    ``main(ARGS, prog="spikestream COMMAND")``. Returns ``None`` (the console script
    passes the return value to ``sys.exit``); a command's exit status is its
    ``SystemExit``, Ctrl-C ends it as :func:`spikestream.cmdline.run` says."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argument_parser()
    if argv and argv[0].startswith("-"):
        ap.parse_args(argv[:1])         # --help and --version exit; other options are errors
    if not argv:
        ap.error("name a command: " + ", ".join(COMMANDS))
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        ap.error(f"unknown command {name!r}; the commands are: " + ", ".join(COMMANDS))
    module = importlib.import_module(COMMANDS[name].module)
    run(lambda: module.main(rest, prog=f"spikestream {name}"))


if __name__ == "__main__":
    main()
