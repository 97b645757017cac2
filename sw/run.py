"""Run any network image on input spikes or tokens: ``spikestream run IMAGE --inputs X.npy``.

The inputs are a ``[T, n_inputs]`` array of 0/1 spikes (``.npy``: the network's spike
inputs side by side, in their order) and/or the tokens of a network with a token input
(``--tokens`` ``.npy`` of ``T`` ids, or ``--text``). Every timestep's outputs go to one
``.npz`` (``--out``):

``spikes/<population>``
    ``[T, size]`` spike values (0/1; ``0 .. 2**K - 1`` for multi-level neurons) of every
    output population that spikes, in the source model's neuron order;
``readout/<population>``
    ``[T, size]`` membranes (integers) of every non-spiking output population and of the
    readout;
``tokens``, ``cycles``
    ``[T]``: the token sampled after each timestep (0 without a readout; at temperature 0
    the argmax of the readout, so the last one classifies the input) and the core's cycles;
``spikes`` or ``values``
    for a network with exactly one output population (an imported NIR graph's ``Output``):
    its spikes, or its membranes in the float units of the source model (``v / scale``).

The arrays are the same on every backend: ``golden`` (the golden model, in process),
``sim`` (the RTL in Verilator behind the link, :mod:`sw.transport`) and ``serial`` (a board).
"""

import io
import json
import sys

import numpy as np
import torch

from models.golden import GoldenCore
from spikestream.cli import CommandParser
from spikestream.cmdline import run
from spikestream.files import FileProblem, atomic_write_bytes, check_output, read_regular
from spikestream.image import Image, ImageError, image_tag, load_image, read_image_bytes
from spikestream.memory_map import CoreFitError, Mem, image_writes, input_writes, read_outputs
from spikestream.network import pop_bases
from spikestream.sampler import temperature_word

from .board import board_config
from .client import Client
from .errors import HostError, ImageDoesNotFit
from .transport import SerialTransport, SimTransport, find_board_ports

__all__ = ["MAX_STEPS", "MAX_INPUT_BYTES", "RunError", "read_spikes", "read_tokens",
           "run_golden", "run_board", "board_transport", "output_arrays", "save_outputs",
           "argument_parser", "main"]

MAX_STEPS = 1 << 20
"""Most timesteps one run takes (a million)."""
MAX_INPUT_BYTES = 256 << 20
"""Largest ``.npy`` input read."""


class RunError(ValueError):
    """Inputs that do not fit the network, or an unreadable input file (one line)."""


def _load_npy(path):
    try:
        data = read_regular(path, MAX_INPUT_BYTES, "input array")
    except FileProblem as e:
        raise RunError(str(e)) from None
    try:
        # allow_pickle=False: an object array would need unpickling, which could run code.
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise RunError(f"{path}: not a NumPy .npy array ({e})") from None
    if not isinstance(a, np.ndarray):
        raise RunError(f"{path}: holds several arrays (.npz); give one .npy array")
    return a


def read_spikes(x, net, where="inputs"):
    """``x`` (an array, or the path of a ``.npy``) checked as ``[T, n_inputs]`` 0/1 spikes
    for ``net``'s spike inputs; returns one int64 array per spike input, ``[T, size]``."""
    if not isinstance(x, np.ndarray):
        where, x = str(x), _load_npy(x)
    n_in = sum(spec.size for spec in net.inputs)
    if not net.inputs:
        raise RunError(f"{where}: the network has no spike inputs")
    if x.ndim != 2 or x.shape[1] != n_in:
        raise RunError(f"{where}: shape {x.shape}; the network's spike inputs need "
                       f"[T, {n_in}] ({', '.join(f'{s.name}: {s.size}' for s in net.inputs)})")
    if not 1 <= x.shape[0] <= MAX_STEPS:
        raise RunError(f"{where}: {x.shape[0]} timesteps; a run takes 1 to {MAX_STEPS}")
    if x.dtype.kind not in "biuf":
        raise RunError(f"{where}: dtype {x.dtype} is not numbers")
    if not np.isin(x, (0, 1)).all():
        raise RunError(f"{where}: spikes must be 0 or 1")
    x = x.astype(np.int64)
    cuts = np.cumsum([spec.size for spec in net.inputs])[:-1]
    return np.split(x, cuts, axis=1)


def read_tokens(x, net, where="tokens"):
    """``x`` (token ids, a string of vocabulary characters, or the path of a ``.npy`` of
    ids) checked against ``net``'s vocabulary; returns int64 ``[T]``."""
    if not net.has_token_input:
        raise RunError(f"{where}: the network has no token input")
    if isinstance(x, str):
        index = {t: i for i, t in enumerate(net.vocab)}
        missing = sorted({c for c in x if c not in index})
        if missing:
            raise RunError(f"{where}: {len(missing)} characters are not in the vocabulary "
                           f"(first {missing[0]!r})")
        x = np.array([index[c] for c in x], np.int64)
    elif not isinstance(x, np.ndarray):
        where, x = str(x), _load_npy(x)
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype.kind not in "iu":
        raise RunError(f"{where}: tokens must be a one-dimensional integer array, not "
                       f"{x.dtype} {x.shape}")
    if not 1 <= len(x) <= MAX_STEPS:
        raise RunError(f"{where}: {len(x)} timesteps; a run takes 1 to {MAX_STEPS}")
    if x.min() < 0 or x.max() >= net.vocab_size:
        raise RunError(f"{where}: tokens must be 0..{net.vocab_size - 1}")
    return x.astype(np.int64)


def _steps(net, tokens, spikes):
    steps = {len(a) for a in ([tokens] if tokens is not None else []) + list(spikes or [])}
    if net.has_token_input and tokens is None:
        raise RunError("the network has a token input: give tokens (--tokens or --text)")
    if net.inputs and spikes is None:
        raise RunError("the network has spike inputs: give them (--inputs X.npy)")
    if not steps:
        raise RunError("the network has no inputs: give the number of timesteps (--steps)")
    if len(steps) != 1:
        raise RunError(f"tokens and spikes disagree on the number of timesteps: "
                       f"{sorted(steps)}")
    return steps.pop()


def _empty_results(net, T):
    """Zeroed per-step arrays: spike values and membranes per population, tokens, cycles."""
    return ([np.zeros((T, p.size), np.int64) for p in net.populations],
            [np.zeros((T, p.size), np.int64) for p in net.populations],
            np.zeros(T, np.int64), np.zeros(T, np.int64))


def _results(values, v, tokens, cycles):
    return {"values": values, "v": v, "tokens": tokens, "cycles": cycles}


def run_golden(image, tokens=None, spikes=None, *, steps=None, temperature=0.0, seed=0,
               progress=None):
    """Run ``image`` on the golden model from a reset: ``tokens`` (int ``[T]``) and/or
    ``spikes`` (per spike input, 0/1 ``[T, size]``; see :func:`read_spikes`). A network with
    no inputs at all runs ``steps`` timesteps. Returns the raw per-step results as a dict of
    arrays in core neuron order: ``values`` / ``v`` (lists per population, ``[T, size]``),
    ``tokens`` and ``cycles`` (``[T]``); :func:`output_arrays` names them for a file."""
    net = image.net
    T = steps if not (net.has_token_input or net.inputs) else _steps(net, tokens, spikes)
    core = GoldenCore(net, image.lanes)
    core.seed(seed)
    core.set_temperature_word(_temperature_word(net, temperature))
    values, v, out_tokens, cycles = _empty_results(net, T)
    for t in range(T):
        r = core.step(None if tokens is None else [int(tokens[t])],
                      None if spikes is None else [torch.from_numpy(x[t]) for x in spikes])
        for i in range(len(net.populations)):
            values[i][t] = r.values[i][0].numpy()
            v[i][t] = r.v[i][0].numpy()
        out_tokens[t], cycles[t] = int(r.token[0]), int(r.cycles[0])
        if progress is not None:
            progress(t + 1, T)
    return _results(values, v, out_tokens, cycles)


def run_board(client, image, tokens=None, spikes=None, *, steps=None, temperature=0.0, seed=0,
              progress=None):
    """:func:`run_golden` on a board (or the simulated SoC) through ``client``
    (:class:`sw.client.Client`, identified): loads ``image`` unless the board holds it,
    resets, and per timestep writes the spike inputs, STEPs and reads every output
    population and the readout back (spikestream.memory_map, "Per timestep"). Returns the
    same dict; populations that are neither outputs nor the readout read as zeros."""
    net = image.net
    T = steps if not (net.has_token_input or net.inputs) else _steps(net, tokens, spikes)
    client.load_image(image)
    config = client.config
    if image.lanes != config.lanes:
        image = Image(net=net, lanes=config.lanes)
    client.reset()
    client.settings(_temperature_word(net, temperature), seed)
    values, v, out_tokens, cycles = _empty_results(net, T)
    state = config.layout(Mem.STATE)
    base = pop_bases(net, image.lanes)[0]
    L = image.lanes

    def read(request):
        return client.read(request.mem, request.lane, request.addr, request.count)

    for t in range(T):
        if net.inputs:
            client.write_all(input_writes(image, config, [x[t] for x in spikes]))
        (r,) = list(client.run([0 if tokens is None else int(tokens[t])]))
        out_tokens[t], cycles[t] = r.token, r.cycles
        outs = read_outputs(read, image, config)
        for p, (ids, q) in outs.spikes.items():
            values[p][t, ids] = q
        for p, m in outs.membranes.items():
            v[p][t] = m
        ro = net.readout
        if ro is not None and ro not in outs.membranes:
            size = net.populations[ro].size
            for lane in range(min(L, size)):
                words = client.read(Mem.STATE, lane, base[ro], len(range(lane, size, L)))
                v[ro][t, lane::L] = [state.unpack(w)["v"] for w in words]
        if progress is not None:
            progress(t + 1, T)
    return _results(values, v, out_tokens, cycles)


def _temperature_word(net, temperature):
    if net.readout is None:
        return 0
    return temperature_word(temperature, float(net.populations[net.readout].scale[0]))


def output_arrays(net, raw):
    """The ``.npz`` arrays (module docstring) of a run's raw results ``raw`` (as
    :func:`run_golden` returns them; every backend returns the same)."""
    out = {}
    reported = [i for i, p in enumerate(net.populations) if p.output]
    if net.readout is not None and net.readout not in reported:
        reported.append(net.readout)
    for i in reported:
        p = net.populations[i]
        order = np.argsort(p.perm)          # source neuron k is core neuron order[k]
        if p.spiking:
            out[f"spikes/{p.name}"] = raw["values"][i][:, order].astype(np.uint8)
        else:
            out[f"readout/{p.name}"] = raw["v"][i][:, order].astype(np.int32)
    outputs = net.outputs
    if len(outputs) == 1:
        p = net.populations[outputs[0]]
        order = np.argsort(p.perm)
        if p.spiking:
            out["spikes"] = raw["values"][outputs[0]][:, order].astype(np.uint8)
        else:
            out["values"] = raw["v"][outputs[0]][:, order] / p.scale[order]
    out["tokens"] = np.asarray(raw["tokens"], np.int64)
    out["cycles"] = np.asarray(raw["cycles"], np.int64)
    return out


def save_outputs(path, arrays):
    """Write ``arrays`` to the ``.npz`` ``path`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def argument_parser(prog="python -m sw.run"):
    ap = CommandParser(prog=prog, description="Run a network image on input spikes and/or "
                                              "tokens and save every timestep's outputs.")
    ap.add_argument("image", help="the network image")
    ap.add_argument("--inputs", metavar="X.npy",
                    help="[T, n_inputs] 0/1 spikes of the network's spike inputs, side by side")
    ap.add_argument("--tokens", metavar="T.npy", help="token ids [T] for a token input")
    ap.add_argument("--text", help="the token input's characters (instead of --tokens)")
    ap.add_argument("--steps", type=int, metavar="T",
                    help="timesteps to run a network that has no inputs")
    ap.add_argument("--backend", choices=("golden", "sim", "serial"), default="golden",
                    help="where to run it: the golden model in process, the simulated SoC "
                         "(Verilator) or a board")
    ap.add_argument("--port", help="the board's serial port (--backend serial; default: look "
                                   "for a ULX3S)")
    ap.add_argument("--out", "-o", required=True, metavar="Y.npz", help="where to write outputs")
    ap.add_argument("--temperature", type=float, default=0.0, metavar="T",
                    help="sampling temperature of the readout; 0 picks the argmax (classifies)")
    ap.add_argument("--seed", type=int, default=0, metavar="N", help="the sampler's seed")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON")
    return ap


def _run(args):
    try:
        image = load_image(args.image)
    except ImageError as e:
        raise SystemExit(f"error: {e}") from None
    net = image.net
    try:
        check_output(args.out, inputs=(args.image, args.inputs, args.tokens), what="output")
    except FileProblem as e:
        raise SystemExit(f"error: {e}") from None
    if args.tokens and args.text is not None:
        raise SystemExit("error: give the tokens once: --tokens or --text")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise SystemExit(f"error: --steps must be 1..{MAX_STEPS}, not {args.steps}")
    try:
        spikes = read_spikes(args.inputs, net) if args.inputs else None
        tokens = None
        if args.tokens or args.text is not None:
            tokens = read_tokens(args.text if args.text is not None else args.tokens, net,
                                 "--text" if args.text is not None else "tokens")
        if not (net.has_token_input or net.inputs) and args.steps is None:
            raise RunError("the network has no inputs: give the number of timesteps (--steps)")
        _temperature_word(net, args.temperature)
        if args.backend == "golden":
            raw = run_golden(image, tokens, spikes, steps=args.steps,
                             temperature=args.temperature, seed=args.seed)
        else:
            raw = _on_board(args, image, tokens, spikes)
    except (RunError, ValueError, HostError, CoreFitError) as e:
        raise SystemExit(f"error: {e}") from None
    arrays = output_arrays(net, raw)
    save_outputs(args.out, arrays)
    T = len(arrays["cycles"])
    summary = {"backend": args.backend, "image": str(args.image), "steps": T,
               "out": str(args.out),
               "spikes": {k[len("spikes/"):]: int(np.count_nonzero(v))
                          for k, v in arrays.items() if k.startswith("spikes/")},
               "cycles": int(arrays["cycles"].sum())}
    if net.readout is not None:
        last = int(arrays["tokens"][-1])
        summary["class"] = net.vocab[last]
    print(f"{T} timesteps on {args.backend}: "
          + ", ".join(f"{k} {n} spikes" for k, n in summary["spikes"].items())
          + (f"; readout argmax after the last step: {summary['class']!r}"
             if "class" in summary else "")
          + f"; outputs in {args.out}")
    if args.json:
        print(json.dumps(summary))


def board_transport(backend, port, image, image_path):
    """The transport of ``backend`` (``"serial"``: the board on ``port``, or the one found;
    ``"sim"``: the simulated SoC with ``image`` (read from ``image_path``) already loaded,
    laid out for the board's lanes)."""
    if backend == "serial":
        ports = [port] if port else find_board_ports()
        if not ports:
            raise RunError("no ULX3S found; name the port with --port")
        return SerialTransport(ports[0])
    config = board_config()
    laid = Image(net=image.net, lanes=config.lanes)
    try:
        init = image_writes(laid, config)
    except CoreFitError as e:
        raise ImageDoesNotFit(str(e)) from None
    return SimTransport(config, init=init, tag=image_tag(read_image_bytes(image_path)),
                        progress=lambda line: print(line, file=sys.stderr))


def _on_board(args, image, tokens, spikes):
    with board_transport(args.backend, args.port, image, args.image) as transport:
        client = Client(transport)
        client.identify()
        return run_board(client, image, tokens, spikes, steps=args.steps,
                         temperature=args.temperature, seed=args.seed)


def main(argv=None, prog="python -m sw.run"):
    args = argument_parser(prog).parse_args(argv)
    _run(args)


if __name__ == "__main__":
    run(main)
