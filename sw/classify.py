"""Classify sentences with a TextCNN image: ``spikestream classify IMAGE --text "..."``.

The image carries what the host needs (models.textcnn: the word list, the embedding codes
and how they are coded into spikes, in its metadata, checked before use). Each sentence is
tokenised as the model was trained (Kim's ``clean_str``), streamed one word per timestep
(or ``T`` sub-steps per word) from a reset, and the class is the readout's argmax after the
last step, computed on the core; the readout per class is printed beside it. ``--backend``
is ``golden`` (the golden model in process), ``sim`` (the simulated SoC) or ``serial`` (a
board), as for ``spikestream run``; every backend gives the same class and readout.
"""

import json

import numpy as np

from models.mr import MRDataError, read_sentences, tokenize
from models.textcnn import TextMetaError, encode_sentence, golden_run, read_text_meta
from spikestream.cli import CommandParser
from spikestream.cmdline import run
from spikestream.image import ImageError, load_image
from spikestream.memory_map import CoreFitError

from .client import Client
from .errors import HostError
from .run import RunError, board_transport, read_spikes, run_board

__all__ = ["MAX_TEXT_CHARS", "classify_golden", "classify_board", "argument_parser", "main"]

MAX_TEXT_CHARS = 1 << 16
"""Longest ``--text`` read (a sentence longer than :data:`models.mr.MAX_WORDS` words is cut
there anyway)."""


def _result(net, sentence, words, known, decision, readout):
    labels = list(net.vocab)
    return {"text": sentence, "words": len(words), "unknown_words": len(words) - known,
            "class": labels[int(decision)],
            "readout": {labels[c]: int(readout[c]) for c in range(len(labels))}}


def _encode(tm, sentence):
    words = tokenize(sentence)
    ids = tm.vocab.encode(words)
    return words, ids, sum(1 for i in ids if i)


def classify_golden(image, tm, sentences):
    """Classify ``sentences`` (strings) on the golden model; a list of result dicts
    (``class``, ``readout`` per class, word counts)."""
    enc = [_encode(tm, s) for s in sentences]
    g = golden_run(image, tm, [ids for _, ids, _ in enc])
    return [_result(image.net, s, w, k, g["decision"][i], g["readout"][i])
            for i, (s, (w, _, k)) in enumerate(zip(sentences, enc))]


def classify_board(client, image, tm, sentences):
    """Classify ``sentences`` on a board (or the simulated SoC) through ``client``
    (:class:`sw.client.Client`, identified), each from a reset (:func:`sw.run.run_board`)."""
    net = image.net
    order = np.argsort(net.populations[net.readout].perm)
    out = []
    for s in sentences:
        words, ids, known = _encode(tm, s)
        spikes = read_spikes(encode_sentence(tm, ids).astype(np.int64), net, "sentence")
        raw = run_board(client, image, None, spikes)
        readout = raw["v"][net.readout][-1][order]
        out.append(_result(net, s, words, known, raw["tokens"][-1], readout))
    return out


def argument_parser(prog="python -m sw.classify"):
    """The command line of ``spikestream classify``."""
    ap = CommandParser(prog=prog, description="Classify sentences with a TextCNN image (MR "
                                              "polarity) on the golden model, the simulated "
                                              "SoC or a board.")
    ap.add_argument("image", help="a TextCNN network image (models/pretrained/mr-*.img)")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="one sentence")
    what.add_argument("--data", metavar="FILE", help="a file of sentences, one a line (Latin-1)")
    ap.add_argument("--backend", choices=("golden", "sim", "serial"), default="golden",
                    help="where to run it: the golden model in process, the simulated SoC "
                         "(Verilator) or a board")
    ap.add_argument("--port", help="the board's serial port (--backend serial; default: look "
                                   "for a ULX3S)")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON")
    return ap


def _on_board(args, image, tm, sentences):
    with board_transport(args.backend, args.port, image, args.image) as transport:
        client = Client(transport)
        client.identify()
        return classify_board(client, image, tm, sentences)


def main(argv=None, prog="python -m sw.classify"):
    """Run ``spikestream classify`` on ``argv``."""
    args = argument_parser(prog).parse_args(argv)
    try:
        image = load_image(args.image)
        tm = read_text_meta(image.net)
        if args.text is not None:
            if len(args.text) > MAX_TEXT_CHARS:
                raise RunError(f"--text: {len(args.text):,} characters; at most "
                               f"{MAX_TEXT_CHARS:,}")
            if not tokenize(args.text):
                raise RunError("--text holds no words")
            sentences = [args.text]
        else:
            sentences = read_sentences(args.data, "sentence file")
        if args.backend == "golden":
            results = classify_golden(image, tm, sentences)
        else:
            results = _on_board(args, image, tm, sentences)
    except (ImageError, TextMetaError, MRDataError, RunError, HostError, CoreFitError,
            ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    for r in results:
        shown = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
        readout = ", ".join(f"{k} {v}" for k, v in r["readout"].items())
        print(f"{r['class']:<8}  readout: {readout}  ({r['words']} words, "
              f"{r['unknown_words']} unknown)  {shown!r}")
    if len(results) > 1:
        counts = {c: sum(r["class"] == c for r in results) for c in image.net.vocab}
        print(f"{len(results)} sentences on {args.backend}: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.json:
        print(json.dumps({"backend": args.backend, "image": str(args.image),
                          "results": results}))
    return results


if __name__ == "__main__":
    run(main)
