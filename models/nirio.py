"""NIR import and export: graphs of the Neuromorphic Intermediate Representation to and
from spikestream networks, and the float simulation that checks them.

``spikestream nir import GRAPH.nir -o NET.img --lanes N [--dt DT] [--reset MODE]
[--cuba-input GAIN] [--json]`` and ``spikestream nir export NET.img -o GRAPH.nir [--json]``
(``python -m models.nirio``). NIR writes no timestep and no reset mechanism; ``--dt`` and
``--reset`` give them.

The import runs in three steps, each usable on its own:

1. :func:`read_graph` reads a ``.nir`` file (HDF5) defensively: a bounded read of a regular
   file, the HDF5 library in a child process with a time limit, every array's declared size
   checked before it is read, only the node types NIR defines, one line naming the node for
   anything else.
2. :func:`graph_to_float` turns a ``nir.NIRGraph`` (read from a file or made in memory by a
   library's exporter) into a :class:`FloatNetwork`: populations with float parameters and
   projections with float weights and integer delays, discretised as docs/nir.md says
   (forward Euler with step ``dt``). :func:`simulate_float` runs it with the golden model's
   schedule in float64; it reproduces the libraries' own traces exactly (the fixtures in
   tests/fixtures/nir).
3. :func:`quantise` gives the integer :class:`spikestream.network.Network` (a scale per
   neuron: weights of at most 127, thresholds within 16 bits, decays to 8 fractional bits).

:func:`export_nir` goes the other way, from an integer network (or a float one) to a
``nir.NIRGraph`` in float units; import of its output gives the same integer network back.
:func:`fixture_report` compares the float and the integer (golden) simulation of a fixture
with the library's trace.
"""

import io
import json
import math
import numbers
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch

from spikestream.board import DEFAULT_FPGA
from spikestream.capacity import memory_plan
from spikestream.cli import CommandParser
from spikestream.cmdline import run
from spikestream.ecp5 import ulx3s_device
from spikestream.files import FileProblem, atomic_write_bytes, check_output, read_regular
from spikestream.formats import (ACC_MAX, DECAY_ONE, MAX_DELAY, NEURON_KIND_CUBA,
                                 NEURON_KIND_SPIKES, STATE_BITS, STATE_MAX, WEIGHT_MAX,
                                 NeuronKind, ResetMode)
from spikestream.image import ImageError, load_image, save_image
from spikestream.network import (INPUT, Network, NetworkError, PopulationMode, Projection,
                                 input_index, make_population, spike_input)
from .compile import MAX_LANES
from .golden import GoldenCore

__all__ = ["NirImportError", "FloatPopulation", "FloatProjection", "FloatNetwork", "FloatTrace",
           "RESET_MODES", "CUBA_INPUTS", "MAX_NIR_BYTES", "MAX_NIR_ELEMENTS", "MAX_NIR_NODES",
           "READ_TIMEOUT", "BIAS_POPULATION",
           "read_graph", "graph_to_float", "simulate_float", "quantise", "network_to_float",
           "export_nir", "write_graph", "quantisation_bound", "fixture_report", "fixture_reports",
           "report_table", "argument_parser", "main"]

MAX_NIR_BYTES = 64 << 20
"""Largest ``.nir`` file read."""
MAX_NIR_ELEMENTS = 1 << 22
"""Most array elements (weights, parameters, edges) a graph may hold in all; a file that
declares more is refused before anything is read."""
MAX_NIR_NODES = 4096
"""Most nodes (subgraphs' included) a graph may hold."""
MAX_NIR_DEPTH = 8
"""Deepest nesting of subgraphs."""
MAX_NAME_CHARS = 128
"""Longest node name."""

RESET_MODES = {"zero": ResetMode.ZERO, "subtract": ResetMode.SUBTRACT,
               "subtract-next": ResetMode.SUBTRACT_NEXT}
"""The ``--reset`` choices (NIR's own is ``zero``: ``v -> v_reset``, with ``v_reset = 0``)."""
RESET_NAMES = {v: k for k, v in RESET_MODES.items()}
CUBA_INPUTS = ("euler", "jump")
"""How input enters a CubaLIF/CubaLI's synaptic current: ``euler`` (NIR's equation, forward
Euler: gain ``dt * w_in / tau_syn``) or ``jump`` (gain ``w_in``: the current jumps by the
input, as Norse's ``LIFCell`` does although its exporter writes ``w_in = 1``)."""

THRESHOLD_CAP = 1 << (STATE_BITS - 4)
"""Largest integer threshold, bias or jump :func:`quantise` gives: keeps the membrane's range
at 8 thresholds or more (as models.compile does)."""

BIAS_POPULATION = "_bias"
"""Name of the one-neuron population that spikes every timestep, made where a constant
input cannot be a bias: into a synaptic current, or behind a delay."""

# NIR node types: what their fields are (the file's datasets), and which ones are neurons.
_FIELDS = {
    "Input": ("shape",), "Output": ("shape",),
    "Affine": ("weight", "bias"), "Linear": ("weight",), "Scale": ("scale",),
    "Delay": ("delay",), "Threshold": ("threshold",),
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "IF": ("r", "v_threshold", "v_reset"),
    "LI": ("tau", "r", "v_leak"), "I": ("r",),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
}
_OPTIONAL = {"v_reset", "w_in"}
_NEURONS = ("LIF", "IF", "LI", "I", "CubaLIF", "CubaLI", "Threshold")
_LINEAR = ("Affine", "Linear", "Scale", "Delay")
_OTHER_NIR = ("Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten")
"""Node types NIR defines that spikestream cannot run."""
_NIR_CLASSES = {"Input": nir.Input, "Output": nir.Output, "Affine": nir.Affine,
                "Linear": nir.Linear, "Scale": nir.Scale, "Delay": nir.Delay,
                "Threshold": nir.Threshold, "LIF": nir.LIF, "IF": nir.IF, "LI": nir.LI,
                "I": nir.I, "CubaLIF": nir.CubaLIF, "CubaLI": nir.CubaLI}
_IDENTITY = "Identity"      # a subgraph's own Input/Output once flattened


class NirImportError(ValueError):
    """A NIR graph cannot be read or has no spikestream equivalent; one line says why."""


def _show(name):
    """A node name fit for a one-line message."""
    r = repr(name)
    return r if len(r) <= 50 else r[:47] + "..."


def _text(x):
    """``x`` as a str if it is text (str, UTF-8 bytes, or a 0-d array of one), else None."""
    if isinstance(x, np.ndarray) and x.shape == ():
        x = x[()]
    if isinstance(x, bytes):
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return x if isinstance(x, str) else None


def _type_name(node):
    return "I (Integrator)" if type(node) is nir.I else type(node).__name__


# --- the float network ------------------------------------------------------------------

@dataclass(eq=False)
class FloatPopulation(PopulationMode):
    """A population in float units: the integer model's parameters before quantisation.

    ``alpha``, ``rho`` are decay factors in ``[0, 1]``; ``theta``, ``jump``, ``bias`` are in
    the source model's units (float64 ``[size]``). ``node`` is the NIR node type it was made
    from (``""`` for one the import added). ``scale`` and ``perm`` (``None``: let
    :func:`quantise` choose) are an integer network's, carried through an export so that the
    import gives the same integers back.
    """
    name: str
    kind: NeuronKind
    alpha: np.ndarray
    theta: np.ndarray
    rho: np.ndarray
    jump: np.ndarray
    bias: np.ndarray
    reset: ResetMode
    level_bits: int = 1
    output: bool = False
    node: str = ""
    scale: np.ndarray = None
    perm: np.ndarray = None



@dataclass(eq=False)
class FloatProjection:
    """Float weights ``[src size, dst size]`` from ``src`` (a population index or
    ``spike_input(k)``) to population ``dst``, delivered ``delay`` timesteps late."""
    src: int
    dst: int
    delay: int
    weights: np.ndarray


@dataclass(eq=False)
class FloatNetwork:
    """A network in float units, scheduled as the integer one (docs/general-networks.md):
    populations in list order, projections grouped by target. ``inputs`` are the spike
    inputs ``(name, size)``; ``outputs`` the graph's outputs ``(name, population index)``."""
    populations: list
    projections: list
    inputs: list
    outputs: list
    dt: float = 1.0
    meta: dict = field(default_factory=dict)

    def source_size(self, src):
        return self.inputs[input_index(src)][1] if src < 0 else self.populations[src].size

    def source_max_value(self, src):
        return 1 if src < 0 else self.populations[src].max_value

    def population(self, name):
        """The index of the population called ``name``."""
        for i, p in enumerate(self.populations):
            if p.name == name:
                return i
        raise KeyError(name)


@dataclass(eq=False)
class FloatTrace:
    """What :func:`simulate_float` computed, per population (float64 ``[T, size]``):
    ``spikes`` (values ``q``; zeros for a non-spiking kind), ``v`` the membrane compared with
    the threshold (before any reset), ``thr`` that threshold, ``a`` the adaptation or
    synaptic current after the step; ``outputs`` per graph output (name): its spikes, or its
    membranes if it does not spike."""
    spikes: list
    v: list
    thr: list
    a: list
    outputs: dict


# --- reading a .nir file ----------------------------------------------------------------

class _Budget:
    """Counts array elements (made by the import) against a limit."""

    def __init__(self, limit, what):
        self.limit, self.left, self.what = limit, limit, what

    def take(self, n, where):
        if n > self.left:
            raise NirImportError(f"{where} declares {n} values; {self.what} at most "
                                 f"{self.limit} in all")
        self.left -= n


READ_TIMEOUT = 60
"""Seconds the HDF5 reader may take on one file (a legal graph of the largest size takes
about one)."""
_MAX_HDF5_MEMBERS = 4 * MAX_NIR_NODES * 16
_MAX_HDF5_DEPTH = 2 * MAX_NIR_DEPTH + 4

# The HDF5 reader, run in a child process: libhdf5 can loop forever (or crash) on a damaged
# file, and only a process can be stopped in the middle of a C call. It imports nothing but
# h5py and numpy, walks the file's groups (hard links only; data inside the file only),
# checks each array's declared size and type against the budget before reading it, and
# writes the tree as JSON plus the numeric arrays as an .npz (no pickle) to stdout. Errors:
# one line on stderr, exit status 3.
_HDF5_READER = r"""
import io, json, sys
import h5py
import numpy as np

limit, max_members, max_depth = (int(a) for a in sys.argv[1:4])
left, members, arrays = [limit], [0], []


class Bad(Exception):
    pass


def take(n, where):
    if n > left[0]:
        raise Bad(f"{where!r} declares {n} values; a graph holds at most {limit} in all")
    left[0] -= n


def text(x):
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def dataset(item, where):
    if item.external or item.is_virtual:
        return {"kind": "outside"}
    shape, dtype = item.shape, item.dtype
    if shape is None:
        return {"kind": "empty"}
    n = 1
    for k in shape:
        n *= int(k)
    if h5py.check_string_dtype(dtype) is not None or dtype.kind == "S":
        take(n, where)
        value = item[()]
        try:
            if np.ndim(value) == 0:
                v = text(value.item() if isinstance(value, np.ndarray) else value)
                chars = len(v)
            else:
                v = [text(x) for x in np.asarray(value, dtype=object).reshape(-1)]
                chars = sum(len(x) for x in v)
        except UnicodeDecodeError:
            return {"kind": "badtext"}
        take(chars // 8, where)
        return {"kind": "text", "shape": [int(k) for k in shape], "value": v}
    if dtype.kind not in "biuf":
        return {"kind": "other", "dtype": str(dtype)[:40]}
    take(n * max(1, -(-dtype.itemsize // 8)), where)
    arrays.append(np.asarray(item[()], dtype=np.float64))
    return {"kind": "numbers", "index": len(arrays) - 1}


def walk(group, where, depth):
    if depth > max_depth:
        raise Bad(f"groups nested deeper than {max_depth}")
    out = {}
    for key in group.keys():
        members[0] += 1
        if members[0] > max_members:
            raise Bad(f"more than {max_members} groups and arrays")
        name = f"{where}/{key}"
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            out[key] = {"kind": "link", "link": type(link).__name__}
            continue
        item = group[key]
        if isinstance(item, h5py.Group):
            out[key] = {"kind": "group", "members": walk(item, name, depth + 1)}
        elif isinstance(item, h5py.Dataset):
            out[key] = dataset(item, name)
        else:
            out[key] = {"kind": "other"}
    return out


try:
    data = sys.stdin.buffer.read()
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except Exception:
        raise Bad("not a NIR graph (not an HDF5 file)") from None
    with f:
        tree = walk(f, "", 0)
except Bad as e:
    print(e, file=sys.stderr)
    sys.exit(3)
except Exception as e:
    line = (str(e).strip().splitlines() or [""])[0][:200]
    print(f"damaged HDF5 file ({type(e).__name__}: {line})", file=sys.stderr)
    sys.exit(3)
buf = io.BytesIO()
np.savez(buf, *arrays)
manifest = json.dumps(tree).encode()
sys.stdout.buffer.write(len(manifest).to_bytes(8, "little") + manifest + buf.getvalue())
"""


def _read_tree(path, data):
    """The groups and arrays of the HDF5 file whose bytes are ``data``, read by
    :data:`_HDF5_READER` in a child process: ``(tree, arrays)``."""
    try:
        r = subprocess.run([sys.executable, "-I", "-c", _HDF5_READER, str(MAX_NIR_ELEMENTS),
                            str(_MAX_HDF5_MEMBERS), str(_MAX_HDF5_DEPTH)],
                           input=data, capture_output=True, timeout=READ_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NirImportError(f"{path}: the HDF5 library had not read the file after "
                             f"{READ_TIMEOUT} s (a damaged file?)") from None
    except OSError as e:
        raise NirImportError(f"{path}: cannot start the HDF5 reader ({e.strerror})") from None
    if r.returncode != 0:
        lines = r.stderr.decode("utf-8", "replace").strip().splitlines()
        if r.returncode < 0:
            why = f"damaged HDF5 file (the HDF5 library crashed: signal {-r.returncode})"
        else:
            why = " ".join(lines[-1].split())[:300] if lines else \
                f"the HDF5 reader failed (exit status {r.returncode})"
        raise NirImportError(f"{path}: {why}")
    out = r.stdout
    try:
        n = int.from_bytes(out[:8], "little")
        tree = json.loads(out[8:8 + n])
        with np.load(io.BytesIO(out[8 + n:]), allow_pickle=False) as z:
            arrays = [z[f"arr_{i}"] for i in range(len(z.files))]
    except (ValueError, KeyError, OSError, EOFError):
        raise NirImportError(f"{path}: the HDF5 reader's answer is malformed") from None
    return tree, arrays


class _Tree:
    """One group of the file as the reader saw it: ``members`` (name -> entry)."""

    def __init__(self, members, arrays, where):
        self.members, self.arrays, self.where = members, arrays, where

    def get(self, key):
        """The entry ``key`` (``None`` if absent): a :class:`_Tree` for a group, else the
        reader's dict; links and data outside the file are refused."""
        e = self.members.get(key)
        if e is None:
            return None
        if e["kind"] == "link":
            raise NirImportError(f"{self.where}: {key!r} is a link ({e['link']}); a NIR graph "
                                 "is one self-contained file")
        if e["kind"] == "outside":
            raise NirImportError(f"{self.where}: {key!r} keeps its data outside the file")
        if e["kind"] == "group":
            return _Tree(e["members"], self.arrays, self.where)
        return e

    def numbers(self, key):
        """Dataset ``key`` as a float64 array."""
        e = self.get(key)
        if not isinstance(e, dict) or e["kind"] not in ("numbers", "text", "other",
                                                        "badtext"):
            raise NirImportError(f"{self.where}: {key!r} is missing or not an array")
        if e["kind"] != "numbers":
            what = e.get("dtype", "text")
            raise NirImportError(f"{self.where}: {key!r} is {what}, not numbers")
        return self.arrays[e["index"]]

    def text(self, key):
        """Dataset ``key`` as a str (one string) or a list of str with its shape."""
        e = self.get(key)
        if not isinstance(e, dict) or e["kind"] not in ("numbers", "text", "other",
                                                        "badtext"):
            raise NirImportError(f"{self.where}: {key!r} is missing or not an array")
        if e["kind"] == "badtext":
            raise NirImportError(f"{self.where}: {key!r} is not UTF-8 text")
        if e["kind"] != "text":
            raise NirImportError(f"{self.where}: {key!r} is not text")
        return e["value"], e["shape"]


def _check_name(name, where):
    if not isinstance(name, str) or not name or not name.isprintable() \
            or len(name) > MAX_NAME_CHARS:
        raise NirImportError(f"{where}: node name {_show(name)} is not a printable string of "
                             f"1 to {MAX_NAME_CHARS} characters")
    return name


def _read_node(group, where, depth, count):
    """A NIR node from the :class:`_Tree` of one node's group."""
    count[0] += 1
    if count[0] > MAX_NIR_NODES:
        raise NirImportError(f"the graph has more than {MAX_NIR_NODES} nodes")
    if not isinstance(group, _Tree):
        raise NirImportError(f"{where}: not a node (an HDF5 group)")
    group.where = where
    kind, shape = group.text("type")
    if shape:
        raise NirImportError(f"{where}: its type is not one string")
    meta = _read_meta(group, where)
    if kind == "NIRGraph":
        if depth >= MAX_NIR_DEPTH:
            raise NirImportError(f"{where}: subgraphs nested deeper than {MAX_NIR_DEPTH}")
        nodes_group = group.get("nodes")
        if not isinstance(nodes_group, _Tree):
            raise NirImportError(f"{where}: a NIRGraph without nodes")
        nodes = {}
        for k in nodes_group.members:
            _check_name(k, where)
            nodes[k] = _read_node(nodes_group.get(k), f"node {_show(k)}" if depth == 0
                                  else f"{where}.{k}", depth + 1, count)
        e = group.get("edges")
        if e is None or (isinstance(e, dict) and e["kind"] == "numbers"
                         and group.arrays[e["index"]].size == 0):
            edges = []                  # nir.write stores an empty list as numbers
        else:
            value, shape = group.text("edges")
            if len(shape) != 2 or shape[1] != 2:
                raise NirImportError(f"{where}: edges have shape {tuple(shape)}, not (n, 2)")
            edges = list(zip(value[0::2], value[1::2]))
        graph = _graph(nodes, edges, where)
        graph.metadata = meta
        return graph
    if kind in _OTHER_NIR:
        raise NirImportError(f"{where} is a {kind} node, which spikestream does not support "
                             "(supported: " + ", ".join(_SUPPORTED) + ")")
    if kind not in _FIELDS:
        raise NirImportError(f"{where} has type {_show(kind)}, which is not a NIR node type")
    values = {}
    for f in _FIELDS[kind]:
        if f in _OPTIONAL and group.get(f) is None:
            continue
        values[f] = group.numbers(f)
    try:
        if kind in ("Input", "Output"):
            shape = values["shape"].astype(np.int64)
            key = "input" if kind == "Input" else "output"
            node = _NIR_CLASSES[kind](**{f"{key}_type": {key: shape}})
        else:
            node = _NIR_CLASSES[kind](**values)
    except (AssertionError, ValueError, TypeError, KeyError) as e:
        raise NirImportError(f"{where} ({kind}): inconsistent parameters "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    node.metadata = meta
    return node


_META_KEYS = ("spikestream_reset", "spikestream_order", "spikestream_scale", "spikestream_perm")


def _read_meta(group, where):
    """The node metadata spikestream writes (``spikestream_reset``, ``_order``, ``_scale``,
    ``_perm``); anything else in the metadata is ignored."""
    meta = {}
    m = group.get("metadata")
    if isinstance(m, _Tree):
        m.where = where
        for key in _META_KEYS:
            if m.get(key) is not None:
                meta[key] = m.text(key)[0] if key == "spikestream_reset" else m.numbers(key)
    return meta


def _graph(nodes, edges, where="the graph"):
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    except (AssertionError, ValueError, TypeError, KeyError) as e:
        raise NirImportError(f"{where}: not a valid graph "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None


_SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Delay", "Threshold", "LIF", "IF",
              "LI", "I", "CubaLIF", "CubaLI", "NIRGraph")


def read_graph(path):
    """Read the ``.nir`` file ``path`` into a ``nir.NIRGraph``; :class:`NirImportError` (one
    line) if it is not a NIR graph spikestream can read.

    Unlike ``nir.read`` it never allocates what the file merely declares, and a damaged file
    can neither hang nor crash it: the file is read once (a regular file of at most
    :data:`MAX_NIR_BYTES`), the HDF5 library runs in a child process stopped after
    :data:`READ_TIMEOUT` seconds, every array's size is checked against
    :data:`MAX_NIR_ELEMENTS` before it is read, links to other files and data kept outside
    the file are refused, and a node of a type spikestream cannot run is named at once.
    """
    try:
        data = read_regular(path, MAX_NIR_BYTES, "NIR graph")
    except FileProblem as e:
        raise NirImportError(str(e)) from None
    tree, arrays = _read_tree(path, data)
    root = _Tree(tree, arrays, "the file").get("node")
    if not isinstance(root, _Tree):
        raise NirImportError(f"{path}: an HDF5 file without a NIR graph (no 'node' group)")
    try:
        graph = _read_node(root, "the graph", 0, [0])
    except NirImportError as e:
        raise NirImportError(f"{path}: {e}") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NirImportError(f"{path}: holds a single {type(graph).__name__} node, not a "
                             "graph")
    return graph


# --- graph -> float network ---------------------------------------------------------------

def _flatten(graph, prefix="", depth=0):
    """``(nodes, edges)`` of ``graph`` with every subgraph's nodes inlined as
    ``<subgraph>.<node>``; a subgraph's own Input and Output become identity nodes."""
    if depth > MAX_NIR_DEPTH:
        raise NirImportError(f"subgraphs nested deeper than {MAX_NIR_DEPTH}")
    if not isinstance(graph.nodes, dict) or not isinstance(graph.edges, (list, tuple)):
        raise NirImportError(f"{prefix or 'the graph'}: nodes must be a dict and edges a list")
    nodes, edges, ends = {}, [], {}
    for name, node in graph.nodes.items():
        full = prefix + _check_name(name, f"graph {prefix[:-1]!r}" if prefix else "the graph")
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _flatten(node, full + ".", depth + 1)
            ins = [k for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            outs = [k for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise NirImportError(f"subgraph {_show(full)} has {len(ins)} Input and "
                                     f"{len(outs)} Output nodes; spikestream inlines "
                                     "subgraphs with one of each")
            ends[full] = (f"{full}.{ins[0]}", f"{full}.{outs[0]}")
            for k, n in sub_nodes.items():
                if k in nodes:
                    raise NirImportError(f"two nodes are named {_show(k)} once subgraphs are "
                                         "inlined")
                nodes[k] = n
            edges += sub_edges
        else:
            if full in nodes:
                raise NirImportError(f"two nodes are named {_show(full)} once subgraphs are "
                                     "inlined")
            nodes[full] = (_IDENTITY, node) if prefix and isinstance(node, (nir.Input,
                                                                             nir.Output)) \
                else node
    seen = set()
    for e in graph.edges:
        if not (isinstance(e, (tuple, list)) and len(e) == 2
                and all(isinstance(x, str) for x in e)):
            raise NirImportError(f"edge {_show(e)} is not a pair of node names")
        a, b = (prefix + x for x in e)
        for x in (a, b):
            if x not in nodes and x not in ends:
                raise NirImportError(f"edge ({_show(e[0])}, {_show(e[1])}) names "
                                     f"{_show(x[len(prefix):])}, which is not a node")
        if (a, b) in seen:
            raise NirImportError(f"edge ({_show(e[0])}, {_show(e[1])}) appears twice")
        seen.add((a, b))
        edges.append((ends[a][1] if a in ends else a, ends[b][0] if b in ends else b))
    return nodes, edges


def _vector(node, name, attr, size=None):
    """Parameter ``attr`` of ``node`` as float64 ``[size]`` (finite; a scalar is broadcast)."""
    x = getattr(node, attr, None)
    where = f"node {_show(name)} ({_type_name(node)})"
    if x is None:
        raise NirImportError(f"{where}: no {attr}")
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise NirImportError(f"{where}: {attr} is not numbers") from None
    if a.ndim == 0 and size is not None:
        a = np.full(size, float(a))
    if a.ndim != 1:
        raise NirImportError(f"{where}: {attr} has shape {a.shape}; spikestream takes one "
                             "value per neuron of a one-dimensional layer")
    if size is not None and len(a) != size:
        raise NirImportError(f"{where}: {attr} has {len(a)} values, expected {size}")
    if not np.all(np.isfinite(a)):
        raise NirImportError(f"{where}: {attr} is not finite")
    return a


def _shape_size(node, name, key):
    types = node.input_type if key == "input" else node.output_type
    shape = (types or {}).get(key)
    if shape is None:
        return None
    shape = np.asarray(shape).reshape(-1)
    if len(shape) > 1 and np.all(shape[:-1] == 1):
        shape = shape[-1:]          # a batch dimension of 1, as Norse's exporter writes
    if len(shape) != 1 or shape[0] < 1 or shape[0] > MAX_NIR_ELEMENTS:
        raise NirImportError(f"node {_show(name)} ({type(node).__name__}) has shape "
                             f"{tuple(int(s) for s in shape[:8])}; spikestream takes "
                             "one-dimensional layers")
    return int(shape[0])


def _matrix(node, name):
    try:
        w = np.array(node.weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise NirImportError(f"node {_show(name)} ({type(node).__name__}): weight is not "
                             "numbers") from None
    if w.ndim != 2 or min(w.shape) < 1:
        raise NirImportError(f"node {_show(name)} ({type(node).__name__}): weight has shape "
                             f"{w.shape}; spikestream takes a matrix [out, in]")
    if not np.all(np.isfinite(w)):
        raise NirImportError(f"node {_show(name)} ({type(node).__name__}): weight is not "
                             "finite")
    return w


def _steps(delay, dt, name):
    s = delay / dt
    r = np.rint(s)
    if np.any(np.abs(s - r) > 1e-6 * np.maximum(1, np.abs(s))) or np.any(r < 0) \
            or np.any(r > MAX_DELAY):
        bad = float(delay[np.argmax(np.abs(s - r) + (r < 0) + (r > MAX_DELAY))])
        raise NirImportError(f"node {_show(name)} (Delay): delay {bad:g} is not a whole number "
                             f"0..{MAX_DELAY} of steps of dt = {dt:g}")
    return r.astype(np.int64)


class _Signal:
    """A node's output as a sum of source spikes and constants: ``terms[(source, delay)]`` is
    a matrix ``[source size, n]`` (``None``: the identity, never built unless needed);
    ``const[delay]`` a vector ``[n]`` (a constant that starts ``delay`` timesteps late).
    Matrices are never edited in place once made."""

    def __init__(self, n, budget):
        self.n, self.terms, self.const, self.budget = n, {}, {}, budget

    def dense(self, m, where):
        """``m`` as an array (the identity built, within the import's budget)."""
        if m is not None:
            return m
        self.budget.take(self.n * self.n, where)
        return np.eye(self.n)

    def add(self, other, where):
        if other.n != self.n:
            raise NirImportError(f"{where}: sizes do not match ({other.n} values into "
                                 f"{self.n})")
        for k, m in other.terms.items():
            if k in self.terms:
                self.terms[k] = self.dense(self.terms[k], where) + self.dense(m, where)
            else:
                self.terms[k] = m
        for d, c in other.const.items():
            self.const[d] = self.const.get(d, 0) + c
        return self


class _Importer:
    """The state of one :func:`graph_to_float`."""

    def __init__(self, graph, dt, reset, cuba_input):
        if not isinstance(graph, nir.NIRGraph):
            raise NirImportError(f"not a NIR graph but {type(graph).__name__}")
        if not (isinstance(dt, numbers.Real) and math.isfinite(dt) and dt > 0):
            raise NirImportError(f"dt must be a positive number, not {dt!r}")
        if reset is not None and reset not in RESET_MODES:
            raise NirImportError(f"reset must be one of {', '.join(RESET_MODES)}, not "
                                 f"{reset!r}")
        if cuba_input not in CUBA_INPUTS:
            raise NirImportError(f"cuba_input must be one of {', '.join(CUBA_INPUTS)}, not "
                                 f"{cuba_input!r}")
        self.dt, self.reset, self.cuba_input = float(dt), reset, cuba_input
        self.budget = _Budget(4 * MAX_NIR_ELEMENTS, "the import builds")
        self.nodes, self.edges = _flatten(graph)
        self.position = {k: i for i, k in enumerate(self.nodes)}
        self.preds = {k: [] for k in self.nodes}
        self.succs = {k: [] for k in self.nodes}
        for a, b in self.edges:
            self.preds[b].append(a)
            self.succs[a].append(b)

    def type_of(self, name):
        node = self.nodes[name]
        if isinstance(node, tuple):
            return _IDENTITY
        t = type(node).__name__
        if t in _OTHER_NIR:
            raise NirImportError(f"node {_show(name)} is a {t} node, which spikestream does "
                                 "not support (supported: " + ", ".join(_SUPPORTED) + ")")
        if t not in _NIR_CLASSES:
            raise NirImportError(f"node {_show(name)} has type {t}, which spikestream does not "
                                 "support")
        return t

    # Sizes and neuron parameters.

    def neuron(self, name):
        """``(kind, size, params)`` of a neuron node, discretised with ``dt``: ``params``
        holds float64 vectors ``alpha, theta, rho, bias, gain`` and the reset mode."""
        node, t, dt = self.nodes[name], self.type_of(name), self.dt
        where = f"node {_show(name)} ({_type_name(node)})"
        vec = lambda attr, size=None: _vector(node, name, attr, size)
        if t == "Threshold":
            theta = vec("threshold")
            n = len(theta)
            return NeuronKind.LIF, n, dict(alpha=np.zeros(n), theta=theta, rho=np.zeros(n),
                                           bias=np.zeros(n), gain=np.ones(n),
                                           reset=ResetMode.ZERO)
        r = vec("r")
        n = len(r)
        one, zero = np.ones(n), np.zeros(n)
        p = dict(alpha=one, theta=zero, rho=zero.copy(), bias=zero.copy(), gain=dt * r)
        if t in ("LIF", "LI"):
            tau = vec("tau", n)
            p["alpha"] = self._decay(tau, where, "tau")
            p["gain"] = dt * r / tau
            p["bias"] = dt * vec("v_leak", n) / tau
        if t in ("CubaLIF", "CubaLI"):
            tau_mem, tau_syn = vec("tau_mem", n), vec("tau_syn", n)
            p["alpha"] = self._decay(tau_mem, where, "tau_mem")
            p["rho"] = self._decay(tau_syn, where, "tau_syn")
            w_in = vec("w_in", n) if getattr(node, "w_in", None) is not None else one
            syn_gain = dt * w_in / tau_syn if self.cuba_input == "euler" else w_in
            # The current is kept in membrane units: a = (dt r / tau_mem) * I_syn.
            p["gain"] = syn_gain * dt * r / tau_mem
            p["bias"] = dt * vec("v_leak", n) / tau_mem
        spiking = t in ("LIF", "IF", "CubaLIF")
        if spiking:
            p["theta"] = vec("v_threshold", n)
            if getattr(node, "v_reset", None) is not None and np.any(vec("v_reset", n) != 0):
                raise NirImportError(f"{where}: v_reset is not 0; spikestream resets to 0 or "
                                     "by subtraction")
            p["reset"] = self._reset_mode(node)
        else:
            p["reset"] = ResetMode.NONE
        kind = {"LIF": NeuronKind.LIF, "IF": NeuronKind.IF, "LI": NeuronKind.READOUT,
                "I": NeuronKind.READOUT, "CubaLIF": NeuronKind.CUBA_LIF,
                "CubaLI": NeuronKind.CUBA_LI}[t]
        return kind, n, p

    def _decay(self, tau, where, attr):
        if np.any(tau <= 0):
            raise NirImportError(f"{where}: {attr} must be positive")
        ratio = self.dt / tau
        if np.any(ratio > 1):
            worst = float(ratio.max())
            raise NirImportError(f"{where}: dt / {attr} = {worst:.6g} > 1 with dt = "
                                 f"{self.dt:g}: give the step the graph was made for with "
                                 "--dt (snnTorch writes tau for dt = 1e-4)")
        return 1.0 - ratio

    def _reset_mode(self, node):
        if self.reset is not None:
            return RESET_MODES[self.reset]
        written = _text((getattr(node, "metadata", None) or {}).get("spikestream_reset"))
        return RESET_MODES.get(written, ResetMode.ZERO)

    def size_out(self, name):
        """How many values node ``name`` sends."""
        t = self.type_of(name)
        node = self.nodes[name]
        if t in _NEURONS:
            return self.neuron(name)[1]
        if t in ("Affine", "Linear"):
            return _matrix(node, name).shape[0]
        if t == "Scale":
            return len(_vector(node, name, "scale"))
        if t == "Delay":
            return len(_vector(node, name, "delay"))
        if t == "Input":
            n = _shape_size(node, name, "input")
            if n is None:
                raise NirImportError(f"Input node {_show(name)} has no shape")
            return n
        if t == _IDENTITY:
            inner = node[1]
            n = _shape_size(inner, name, "input" if isinstance(inner, nir.Input) else "output")
            return n if n is not None else self._size_from_preds(name)
        raise NirImportError(f"node {_show(name)} ({t}) sends nothing")

    def _size_from_preds(self, name):
        if not self.preds[name]:
            raise NirImportError(f"node {_show(name)} has no input and no shape")
        return self.size_out(self.preds[name][0])

    # Signals through the linear nodes.

    def signals(self):
        """The output :class:`_Signal` of every linear node, computed in an order where each
        node's inputs come first; a loop of linear nodes alone is refused."""
        linear = [k for k in self.nodes if self.type_of(k) in _LINEAR + (_IDENTITY,)]
        is_linear = set(linear)
        waiting = {k: sum(1 for p in self.preds[k] if p in is_linear) for k in linear}
        ready = [k for k in linear if waiting[k] == 0]
        order = []
        while ready:
            k = ready.pop()
            order.append(k)
            for s in self.succs[k]:
                if s in is_linear:
                    waiting[s] -= 1
                    if waiting[s] == 0:
                        ready.append(s)
        if len(order) < len(linear):
            stuck = sorted((k for k in linear if waiting[k] > 0), key=self.position.get)
            raise NirImportError("a loop of " + ", ".join(_show(k) for k in stuck[:6])
                                 + (" ..." if len(stuck) > 6 else "")
                                 + " passes through no neuron node: it cannot be computed "
                                 "(a loop needs a neuron in it)")
        self.out = {}
        for k in order:
            self.out[k] = self._apply(k, self.input_signal(k))

    def source_signal(self, name):
        """The output of node ``name`` as a :class:`_Signal`."""
        if name in self.out:
            return self.out[name]
        t = self.type_of(name)
        if t == "Output":
            raise NirImportError(f"Output node {_show(name)} feeds another node")
        sig = _Signal(self.size_out(name), self.budget)
        sig.terms[(name, 0)] = None
        return sig

    def input_signal(self, name):
        """The sum of what node ``name``'s inputs send it."""
        sig = _Signal(self._size_in(name), self.budget)
        for p in self.preds[name]:
            sig.add(self.source_signal(p), f"edge ({_show(p)}, {_show(name)})")
        return sig

    def _size_in(self, name):
        t, node = self.type_of(name), self.nodes[name]
        if t in ("Affine", "Linear"):
            return _matrix(node, name).shape[1]
        if t == "Output":
            n = _shape_size(node, name, "output")
            return n if n is not None else self._size_from_preds(name)
        if t == "Input":
            raise NirImportError(f"Input node {_show(name)} has an incoming edge")
        return self.size_out(name)

    def _apply(self, name, sig):
        t, node = self.type_of(name), self.nodes[name]
        where = f"node {_show(name)} ({t})"
        out = _Signal(self.size_out(name), self.budget)
        if t == _IDENTITY:
            return out.add(sig, where)
        if out.n != sig.n and t != "Affine" and t != "Linear":
            raise NirImportError(f"{where}: sizes do not match ({sig.n} values into {out.n})")
        if t in ("Affine", "Linear"):
            w = _matrix(node, name)
            for k, m in sig.terms.items():
                self.budget.take(w.shape[0] * (w.shape[1] if m is None else len(m)), where)
                out.terms[k] = w.T.copy() if m is None else m @ w.T
            out.const = {d: w @ c for d, c in sig.const.items()}
            if t == "Affine":
                b = _vector(node, name, "bias", w.shape[0])
                out.const[0] = out.const.get(0, 0) + b
            return out
        if t == "Scale":
            s = _vector(node, name, "scale")
            out.terms = {k: sig.dense(m, where) * s for k, m in sig.terms.items()}
            out.const = {d: c * s for d, c in sig.const.items()}
            return out
        steps = _steps(_vector(node, name, "delay"), self.dt, name)
        for v in np.unique(steps):
            mask = steps == v
            for (src, d), m in sig.terms.items():
                key = (src, d + int(v))
                if key[1] > MAX_DELAY:
                    raise NirImportError(f"{where}: delays add up to more than {MAX_DELAY} "
                                         "steps")
                part = m if mask.all() else np.where(mask, sig.dense(m, where), 0.0)
                out.terms[key] = out.dense(out.terms[key], where) + out.dense(part, where) \
                    if key in out.terms else part
            for d, c in sig.const.items():
                out.const[d + int(v)] = out.const.get(d + int(v), 0) + np.where(mask, c, 0.0)
        return out

    # The populations.

    def build(self):
        self.signals()
        inputs, pops, input_of = [], [], {}
        for k in self.nodes:
            if self.type_of(k) == "Input":
                input_of[k] = len(inputs)
                inputs.append((k, self.size_out(k)))
        if not inputs:
            raise NirImportError("the graph has no Input node")
        # Neuron nodes, then an added readout for each Output that is not a neuron's own.
        specs = {}      # population name -> (kind, params, signal, node type)
        for k in self.nodes:
            t = self.type_of(k)
            if t in _NEURONS:
                kind, n, p = self.neuron(k)
                specs[k] = (kind, p, self.input_signal(k), t)
        output_pop = {}
        for k in self.nodes:
            if self.type_of(k) != "Output":
                continue
            if self.succs[k]:
                raise NirImportError(f"Output node {_show(k)} feeds another node")
            sig = self.input_signal(k)
            own = None
            if len(sig.terms) == 1 and not sig.const:
                (src, d), m = next(iter(sig.terms.items()))
                if d == 0 and src in specs and (m is None or (
                        m.shape[0] == m.shape[1] and np.array_equal(m, np.eye(len(m))))):
                    own = src
            if own is None:
                if k in specs:
                    raise NirImportError(f"two nodes are named {_show(k)}")
                n = sig.n
                specs[k] = (NeuronKind.READOUT,
                            dict(alpha=np.zeros(n), theta=np.zeros(n), rho=np.zeros(n),
                                 bias=np.zeros(n), gain=np.ones(n), reset=ResetMode.NONE),
                            sig, "")
                own = k
            output_pop[k] = own
        # Projections and constants into each population.
        projs, need_bias = [], False
        biases = {}
        for k, (kind, p, sig, t) in specs.items():
            gain = p["gain"]
            bias = p["bias"].copy()
            for (src, d), m in sig.terms.items():
                if src in input_of:
                    s = spike_input(input_of[src])
                elif src in specs and NEURON_KIND_SPIKES[specs[src][0]]:
                    s = src
                else:
                    raise NirImportError(f"node {_show(src)} ({_type_name(self.nodes[src])}) "
                                         f"feeds {_show(k)}, but only spikes travel between "
                                         "layers: a non-spiking node can only be an output")
                projs.append([s, k, d, sig.dense(m, f"node {_show(k)}") * gain])
            for d, c in sig.const.items():
                c = np.broadcast_to(c, (sig.n,)) * gain
                if not np.any(c):
                    continue
                if d == 0 and not NEURON_KIND_CUBA[kind]:
                    bias += c
                else:
                    projs.append([BIAS_POPULATION, k, d, c[None, :].copy()])
                    need_bias = True
            biases[k] = bias
        if need_bias:
            if BIAS_POPULATION in specs or BIAS_POPULATION in self.nodes:
                raise NirImportError(f"a node is named {BIAS_POPULATION!r}, the name of the "
                                     "constant source the import adds")
            one = np.ones(1)
            specs = {BIAS_POPULATION: (NeuronKind.LIF,
                                       dict(alpha=0 * one, theta=0.5 * one, rho=0 * one,
                                            reset=ResetMode.ZERO), None, ""), **specs}
            biases[BIAS_POPULATION] = one.copy()
        names = self._order(specs, projs)
        index = {k: i for i, k in enumerate(names)}
        for k in names:
            kind, p, _, t = specs[k]
            scale, perm = self._layout(k, len(p["alpha"]))
            pops.append(FloatPopulation(
                name=k, kind=kind, alpha=p["alpha"], theta=p["theta"], rho=p["rho"],
                jump=np.zeros(len(p["alpha"])), bias=biases[k], reset=p["reset"],
                output=k in output_pop.values(), node=t, scale=scale, perm=perm))
        projections = []
        for s, k, d, m in projs:
            src = s if isinstance(s, numbers.Integral) else index[s]
            dst = index[k]
            if d == 0 and src >= dst:
                d = 1           # the edge closes a loop: the previous timestep's spikes
            projections.append(FloatProjection(src, dst, d, m))
        projections.sort(key=lambda pr: pr.dst)         # stable: graph order within a target
        merged = {}
        for pr in projections:
            key = (pr.src, pr.dst, pr.delay)
            if key in merged:
                merged[key].weights = merged[key].weights + pr.weights
            else:
                merged[key] = pr
        outputs = [(k, index[v]) for k, v in output_pop.items()]
        return FloatNetwork(populations=pops, projections=list(merged.values()), inputs=inputs,
                            outputs=outputs, dt=self.dt)

    def _layout(self, name, n):
        """The ``spikestream_scale`` and ``spikestream_perm`` an export wrote on node
        ``name`` (``None`` where absent)."""
        node = self.nodes.get(name)
        meta = getattr(node, "metadata", None) if not isinstance(node, tuple) else None
        if not isinstance(meta, dict):
            return None, None
        where = f"node {_show(name)}"
        scale = perm = None
        if meta.get("spikestream_scale") is not None:
            try:
                scale = np.array(meta["spikestream_scale"], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                scale = None
            if scale is None or scale.shape != (n,) or not np.all(np.isfinite(scale)) \
                    or not np.all(scale > 0):
                raise NirImportError(f"{where}: spikestream_scale is not {n} positive numbers")
        if meta.get("spikestream_perm") is not None:
            try:
                perm = np.array(meta["spikestream_perm"], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                perm = None
            if perm is None or perm.shape != (n,) \
                    or not np.array_equal(np.sort(perm), np.arange(n)):
                raise NirImportError(f"{where}: spikestream_perm is not a permutation of "
                                     f"0..{n - 1}")
            perm = perm.astype(np.int64)
        return scale, perm

    def _order(self, specs, projs):
        """Population order: every delay-0 projection from an earlier population (Kahn's
        algorithm, ties by the ``spikestream_order`` metadata, then graph order); where a
        loop leaves no population ready, the first remaining one goes next and the loop's
        edges into it become delay 1."""
        def key(k):
            if k == BIAS_POPULATION:
                return (-math.inf, -1)
            node = self.nodes.get(k)
            order = (getattr(node, "metadata", None) or {}).get("spikestream_order") \
                if node is not None and not isinstance(node, tuple) else None
            try:
                order = float(np.asarray(order).reshape(-1)[0]) if order is not None \
                    else math.inf
            except (TypeError, ValueError, IndexError):
                order = math.inf
            return (order, self.position.get(k, len(self.position)))
        deps = {k: set() for k in specs}
        for s, k, d, _ in projs:
            if d == 0 and not isinstance(s, numbers.Integral):
                deps[k].add(s)
        placed, order = set(), []
        remaining = sorted(specs, key=key)
        while remaining:
            pick = next((k for k in remaining if deps[k] <= placed), remaining[0])
            order.append(pick)
            placed.add(pick)
            remaining.remove(pick)
        return order


def graph_to_float(graph, dt=1.0, reset=None, cuba_input="euler"):
    """The :class:`FloatNetwork` of ``graph`` (a ``nir.NIRGraph``), discretised with step
    ``dt`` (forward Euler; NIR writes no ``dt``).

    ``reset`` (``"zero"``, ``"subtract"``, ``"subtract-next"``; NIR writes none) is the
    reset of every LIF, IF and CubaLIF node; ``None`` takes the mode spikestream's exporter
    wrote in a node's metadata, else NIR's ``zero``. ``cuba_input`` is
    :data:`CUBA_INPUTS`. Raises :class:`NirImportError` (one line, naming the node) for
    anything without a spikestream equivalent. docs/nir.md has the mapping.
    """
    return _Importer(graph, dt, reset, cuba_input).build()


# --- the float simulation -----------------------------------------------------------------

def _input_arrays(fnet, inputs):
    """``inputs`` (one ``[T, size]`` 0/1 array per spike input, or one array for a network
    with one input) as float64 arrays; ``ValueError`` if they do not fit."""
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        inputs = [inputs]
    inputs = [np.asarray(x, dtype=np.float64) for x in inputs]
    if len(inputs) != len(fnet.inputs):
        raise ValueError(f"the network has {len(fnet.inputs)} spike inputs; {len(inputs)} "
                         "arrays given")
    T = None
    for (name, size), x in zip(fnet.inputs, inputs):
        if x.ndim != 2 or x.shape[1] != size:
            raise ValueError(f"spike input {name!r}: shape {x.shape}, expected [T, {size}]")
        if T is not None and len(x) != T:
            raise ValueError("the spike inputs have different numbers of timesteps")
        T = len(x)
        if x.size and not np.all((x == 0) | (x == 1)):
            raise ValueError(f"spike input {name!r}: spikes must be 0 or 1")
    return inputs, T or 0


def simulate_float(fnet, inputs):
    """Run ``fnet`` in float64 over ``inputs`` (see :func:`_input_arrays`) from the reset
    state; returns a :class:`FloatTrace`.

    The schedule and the update are the integer model's (docs/general-networks.md) without
    rounding or saturation, firing on ``v > threshold`` (strictly, as NIR and the libraries
    do): for graded neurons ``q = min(2**K - 1, floor(v / threshold))`` when ``v >
    threshold``.
    """
    xs, T = _input_arrays(fnet, inputs)
    pops = fnet.populations
    q = [np.zeros((T, p.size)) for p in pops]
    vs = [np.zeros((T, p.size)) for p in pops]
    thrs = [np.zeros((T, p.size)) for p in pops]
    As = [np.zeros((T, p.size)) for p in pops]
    v = [np.zeros(p.size) for p in pops]
    a = [np.zeros(p.size) for p in pops]
    s = [np.zeros(p.size, dtype=bool) for p in pops]
    incoming = [[pr for pr in fnet.projections if pr.dst == i] for i in range(len(pops))]
    for t in range(T):
        for i, p in enumerate(pops):
            acc = np.zeros(p.size)
            for pr in incoming[i]:
                if t - pr.delay < 0:
                    continue
                src = xs[input_index(pr.src)] if pr.src < 0 else q[pr.src]
                acc += src[t - pr.delay] @ pr.weights
            if p.cuba:
                a1 = p.rho * a[i] + acc
                cur = a1 + p.bias
                thr = p.theta
            else:
                a1 = a[i]
                cur = acc + p.bias
                thr = p.theta + a[i]
            v1 = p.alpha * v[i] + cur
            if p.reset == ResetMode.SUBTRACT_NEXT:
                v1 = v1 - np.where(s[i], thr, 0.0)
            vs[i][t], thrs[i][t] = v1, thr
            if not p.spiking:
                v[i], a[i] = v1, a1
                As[i][t] = a1
                continue
            fire = v1 > thr
            if p.level_bits == 1:
                qi = fire.astype(np.float64)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    qi = np.where(fire, np.minimum(p.max_value, np.floor(v1 / thr)), 0.0)
                qi = np.maximum(qi, fire)
            if p.reset == ResetMode.ZERO:
                v[i] = np.where(fire, 0.0, v1)
            elif p.reset == ResetMode.SUBTRACT:
                v[i] = v1 - qi * thr
            else:
                v[i] = v1
            a[i] = a1 if p.cuba else p.rho * a[i] + np.where(fire, p.jump, 0.0)
            s[i] = fire
            q[i][t], As[i][t] = qi, a[i]
    outputs = {name: (q[i] if pops[i].spiking else vs[i]) for name, i in fnet.outputs}
    return FloatTrace(spikes=q, v=vs, thr=thrs, a=As, outputs=outputs)


# --- quantisation ---------------------------------------------------------------------------

def _round(x):
    return np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)


def quantise(fnet, max_threshold=THRESHOLD_CAP):
    """The integer :class:`Network` of ``fnet``.

    Each neuron gets a scale ``s``: the one its population carries (``FloatPopulation.
    scale``, from an export) if every integer then fits, else the largest such that its
    incoming weights round to at most ``WEIGHT_MAX``, its threshold, bias and jump to at
    most ``max_threshold`` and its summed ``|weights| * spike value + |bias|`` to at most
    ``ACC_MAX``. ``alpha``/``rho`` are rounded to ``1/DECAY_ONE``. A population's ``perm``
    (if it carries one) orders its core neurons. Raises :class:`NetworkError` if the result
    cannot run (``Network.check``).
    """
    wmax = [np.zeros(p.size) for p in fnet.populations]
    wsum = [np.zeros(p.size) for p in fnet.populations]
    for pr in fnet.projections:
        w = np.abs(np.asarray(pr.weights, dtype=np.float64))
        if w.size:
            wmax[pr.dst] = np.maximum(wmax[pr.dst], w.max(axis=0))
            wsum[pr.dst] = wsum[pr.dst] + fnet.source_max_value(pr.src) * w.sum(axis=0)
    scales = []
    for i, p in enumerate(fnet.populations):
        big = np.abs(p.bias)
        if p.spiking:
            big = np.maximum(big, np.maximum(np.abs(p.theta), np.abs(p.jump)))
        s = p.scale
        if s is not None:
            s = np.asarray(s, dtype=np.float64)
            fits = (np.all(np.rint(wmax[i] * s) <= WEIGHT_MAX)
                    and np.all(np.rint(big * s) <= STATE_MAX)
                    and np.all(np.rint(wsum[i] * s) + np.rint(np.abs(p.bias) * s) <= ACC_MAX))
            if fits:
                scales.append(s)
                continue
        with np.errstate(divide="ignore", over="ignore"):
            s = np.minimum(WEIGHT_MAX / wmax[i], max_threshold / big)
            s = np.minimum(s, (ACC_MAX - max_threshold) / (wsum[i] + np.abs(p.bias)))
        scales.append(np.where(np.isfinite(s) & (s > 0), s, 1.0))
    perms = [np.arange(p.size) if p.perm is None else np.asarray(p.perm, dtype=np.int64)
             for p in fnet.populations]
    pops = []
    for p, s, o in zip(fnet.populations, scales, perms):
        pops.append(make_population(
            p.name, p.kind, p.size, alpha=_round(p.alpha[o] * DECAY_ONE),
            theta=_round(p.theta[o] * s[o]) if p.spiking else 0,
            rho=_round(p.rho[o] * DECAY_ONE), jump=_round(p.jump[o] * s[o]) if p.spiking else 0,
            bias=_round(p.bias[o] * s[o]), scale=s[o], perm=o, reset=p.reset,
            level_bits=p.level_bits, output=bool(p.output)))
    projs = []
    for pr in fnet.projections:
        w = np.asarray(pr.weights, dtype=np.float64) * scales[pr.dst][None, :]
        if pr.src >= 0:
            w = w[perms[pr.src]]
        projs.append(Projection(pr.src, pr.dst, int(pr.delay), _round(w[:, perms[pr.dst]])))
    meta = {"source": "nir", "dt": fnet.dt,
            "nir_outputs": [[name, int(i)] for name, i in fnet.outputs]}
    net = Network(vocab=[], populations=pops, projections=projs, readout=None, meta=meta,
                  inputs=[(name, int(size)) for name, size in fnet.inputs])
    return net.check()


# --- export -----------------------------------------------------------------------------

def network_to_float(net):
    """The :class:`FloatNetwork` an integer network stands for: weights, thresholds, biases
    and jumps divided by each target neuron's scale, decays by ``DECAY_ONE``, neurons in
    the source model's order (``perm`` undone, and kept with the scales in each population
    for :func:`export_nir`). A token input becomes a spike input named ``tokens`` (one-hot).
    """
    net.check()
    pops, inverse = [], []
    for p in net.populations:
        inv = np.empty(p.size, dtype=np.int64)
        inv[np.asarray(p.perm)] = np.arange(p.size)      # source neuron j is core neuron inv[j]
        inverse.append(inv)
        s = np.asarray(p.scale, dtype=np.float64)[inv]
        if not np.all(np.isfinite(s) & (s > 0)):
            raise NetworkError(f"population {p.name!r}: scales must be positive")
        get = lambda k: np.asarray(getattr(p, k), dtype=np.float64)[inv]
        pops.append(FloatPopulation(
            name=p.name, kind=p.kind, alpha=get("alpha") / DECAY_ONE, theta=get("theta") / s,
            rho=get("rho") / DECAY_ONE, jump=get("jump") / s, bias=get("bias") / s,
            reset=p.reset, level_bits=p.level_bits, output=bool(p.output), scale=s,
            perm=np.asarray(p.perm, dtype=np.int64).copy()))
    inputs = [(spec.name, spec.size) for spec in net.inputs]
    token = None
    if net.has_token_input:
        token = spike_input(len(inputs))
        inputs.append(("tokens", net.vocab_size))
    projs = []
    for pr in net.projections:
        w = np.asarray(pr.weights, dtype=np.float64)
        if pr.src >= 0:
            w = w[inverse[pr.src]]
        w = w[:, inverse[pr.dst]] / np.asarray(net.populations[pr.dst].scale,
                                                dtype=np.float64)[inverse[pr.dst]][None, :]
        projs.append(FloatProjection(token if pr.src == INPUT else pr.src, pr.dst,
                                     int(pr.delay), w))
    outputs = [(f"{net.populations[i].name}", i) for i in net.outputs]
    if net.readout is not None and net.readout not in net.outputs:
        outputs.append((net.populations[net.readout].name, net.readout))
    meta = net.meta if isinstance(net.meta, dict) else {}
    dt = meta.get("dt", 1.0)
    return FloatNetwork(populations=pops, projections=projs, inputs=inputs, outputs=outputs,
                        dt=float(dt) if isinstance(dt, (int, float)) and dt > 0 else 1.0)


def _export_neuron(p, order):
    """The NIR node of a float population (``dt = 1``: time constants in timesteps)."""
    where = f"population {p.name!r} ({p.kind.name})"
    meta = {"spikestream_order": np.int64(order)}
    if p.spiking:
        meta["spikestream_reset"] = RESET_NAMES[p.reset]
    if p.scale is not None:
        meta["spikestream_scale"] = np.asarray(p.scale, dtype=np.float64)
    if p.perm is not None:
        meta["spikestream_perm"] = np.asarray(p.perm, dtype=np.int64)
    if p.kind == NeuronKind.ALIF or (p.spiking and not p.cuba and np.any(p.jump != 0)):
        raise NirImportError(f"{where}: an adaptive threshold has no NIR node")
    if p.level_bits != 1:
        raise NirImportError(f"{where}: graded spikes ({p.level_bits} bits) have no NIR node")
    full = np.all(p.alpha == 1)
    if not full and np.any(p.alpha == 1):
        raise NirImportError(f"{where}: mixes neurons with and without leak; NIR needs one "
                             "node type per layer")
    with np.errstate(divide="ignore"):
        tau = 1.0 / (1.0 - p.alpha)
    zero = np.zeros(p.size)
    if p.cuba:
        if full or np.any(p.rho == 1):
            raise NirImportError(f"{where}: a CubaLIF/CubaLI without leak has no NIR time "
                                 "constant")
        tau_syn = 1.0 / (1.0 - p.rho)
        args = dict(tau_syn=tau_syn, tau_mem=tau, r=tau, v_leak=p.bias * tau, w_in=tau_syn)
        if p.spiking:
            return nir.CubaLIF(v_threshold=p.theta, v_reset=zero, metadata=meta, **args)
        return nir.CubaLI(metadata=meta, **args)
    if p.spiking:
        if full:
            return nir.IF(r=np.ones(p.size), v_threshold=p.theta, v_reset=zero, metadata=meta)
        return nir.LIF(tau=tau, r=tau, v_leak=p.bias * tau, v_threshold=p.theta, v_reset=zero,
                       metadata=meta)
    if full:
        return nir.I(r=np.ones(p.size), metadata=meta)
    return nir.LI(tau=tau, r=tau, v_leak=p.bias * tau, metadata=meta)


def export_nir(net):
    """The ``nir.NIRGraph`` of ``net`` (an integer :class:`Network` or a
    :class:`FloatNetwork`), in float units with ``dt = 1`` (time constants in timesteps).

    Each population is a neuron node named as the population, each spike input an Input
    node, each projection an ``Affine``/``Linear`` (behind a ``Delay`` node if delayed), each
    output population feeds an Output node. The bias of a leak-free population (IF,
    Integrator) goes into its first incoming Affine; every other bias is ``v_leak``. Each
    neuron node's metadata keeps what NIR has no field for: the reset mode
    (``spikestream_reset``), the population order (``spikestream_order``), the scales
    (``spikestream_scale``) and the core's neuron order (``spikestream_perm``);
    :func:`graph_to_float` and :func:`quantise` read them back, so that importing the graph
    gives the same integer network (for a network fed by spike inputs, without a token
    input or a readout, which NIR has no place for). Raises :class:`NirImportError` for
    what NIR cannot express (ALIF, graded spikes).
    """
    fnet = net if isinstance(net, FloatNetwork) else network_to_float(net)
    taken = set()

    def unique(name):
        base, k = name.replace("/", "_"), 1
        name = base
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    nodes, edges = {}, []
    in_names = [unique(name) for name, _ in fnet.inputs]
    for name, (_, size) in zip(in_names, fnet.inputs):
        nodes[name] = nir.Input(input_type={"input": np.array([size])})
    pop_names = [unique(p.name) for p in fnet.populations]
    for i, (name, p) in enumerate(zip(pop_names, fnet.populations)):
        nodes[name] = _export_neuron(p, i)
    bias_done = set()
    for j, pr in enumerate(fnet.projections):
        p = fnet.populations[pr.dst]
        src = in_names[input_index(pr.src)] if pr.src < 0 else pop_names[pr.src]
        dst = pop_names[pr.dst]
        w = np.asarray(pr.weights, dtype=np.float64).T
        if pr.delay:
            dname = unique(f"{dst}.delay{j}")
            nodes[dname] = nir.Delay(delay=np.full(w.shape[1], float(pr.delay)))
            edges.append((src, dname))
            src = dname
        lname = unique(f"{dst}.w{j}")
        if p.alpha.size and np.all(p.alpha == 1) and not p.cuba and pr.dst not in bias_done:
            nodes[lname] = nir.Affine(weight=w, bias=p.bias.copy())
            bias_done.add(pr.dst)
        else:
            nodes[lname] = nir.Linear(weight=w)
        edges += [(src, lname), (lname, dst)]
    for i, p in enumerate(fnet.populations):
        if np.all(p.alpha == 1) and not p.cuba and np.any(p.bias) and i not in bias_done:
            raise NirImportError(f"population {p.name!r}: a bias without leak and without "
                                 "incoming synapses has no NIR form")
    for name, i in fnet.outputs:
        oname = unique(f"{name}.out" if name in taken else name)
        nodes[oname] = nir.Output(output_type={"output": np.array([fnet.populations[i].size])})
        edges.append((pop_names[i], oname))
    return _graph(nodes, edges, "the exported graph")


def write_graph(graph, path):
    """Write ``graph`` to ``path`` as a ``.nir`` file, atomically."""
    buf = io.BytesIO()
    nir.write(buf, graph)
    atomic_write_bytes(path, buf.getvalue())
    return len(buf.getvalue())


# --- fixtures: float and golden against a library's trace ---------------------------------

def _run_golden(net, inputs, lanes=1):
    """Per population, the golden model's spike values ``[T, size]`` in the source model's
    neuron order, and the membranes (int64)."""
    core = GoldenCore(net, lanes)
    T = len(inputs[0]) if inputs else 0
    spikes = [np.zeros((T, p.size), dtype=np.int64) for p in net.populations]
    vs = [np.zeros((T, p.size), dtype=np.int64) for p in net.populations]
    for t in range(T):
        r = core.step(spikes=[torch.as_tensor(x[t][None, :]) for x in inputs])
        values = getattr(r, "values", None) or r.spikes
        for i, p in enumerate(net.populations):
            order = np.argsort(p.perm)
            spikes[i][t] = np.asarray(values[i][0], dtype=np.int64)[order]
            vs[i][t] = np.asarray(r.v[i][0], dtype=np.int64)[order]
    return spikes, vs


def quantisation_bound(fnet, net, trace, inputs):
    """Per population, a bound ``[T, size]`` on how far the integer membrane (in units of
    each neuron's scale: LSBs) can lie from ``scale`` times the float one at each timestep,
    while every spike both models have seen agrees.

    It adds up exactly what quantisation changes: the weight rounding of this timestep's
    input (``sum x (w_int - s w)``), half an LSB for each rounding of a decay product, the
    decays' own rounding times the state, the bias and (for subtraction) the threshold
    rounding, each carried through the decays; a reset to zero clears it. ``net`` is
    :func:`quantise` ``(fnet)`` (same populations and projections, ``perm`` the identity);
    ``trace`` is :func:`simulate_float` ``(fnet, inputs)``. A neuron whose float membrane is
    farther than this (plus one LSB for the threshold) from its threshold fires in both
    models alike unless an earlier spike already differed.
    """
    xs, T = _input_arrays(fnet, inputs)
    pops = fnet.populations
    bounds = []
    for i, (fp, ip) in enumerate(zip(pops, net.populations)):
        s = np.asarray(ip.scale, dtype=np.float64)
        aq, rq = ip.alpha / DECAY_ONE, ip.rho / DECAY_ONE
        da, dr = np.abs(aq - fp.alpha), np.abs(rq - fp.rho)
        db = np.abs(ip.bias - s * fp.bias)
        dth = np.abs(ip.theta - s * fp.theta) if fp.spiking else np.zeros(fp.size)
        err_in = np.zeros((T, fp.size))
        for pr_f, pr_i in zip(fnet.projections, net.projections):
            if pr_f.dst != i:
                continue
            dw = np.asarray(pr_i.weights, dtype=np.float64) - s[None, :] * pr_f.weights
            src = xs[input_index(pr_f.src)] if pr_f.src < 0 else trace.spikes[pr_f.src]
            d = pr_f.delay
            if d < T:
                err_in[d:] += src[:T - d] @ dw
        err_in = np.abs(err_in)
        bound = np.zeros((T, fp.size))
        D, A = np.zeros(fp.size), np.zeros(fp.size)
        v_prev, a_prev, s_prev = np.zeros(fp.size), np.zeros(fp.size), np.zeros(fp.size, bool)
        for t in range(T):
            if fp.cuba:
                A = rq * A + dr * np.abs(s * a_prev) + 0.5 + err_in[t]
                cur = A + db
            else:
                cur = err_in[t] + db
            D1 = aq * D + da * np.abs(s * v_prev) + 0.5 + cur
            if fp.reset == ResetMode.SUBTRACT_NEXT:
                D1 = D1 + np.where(s_prev, dth, 0.0)
            bound[t] = D1
            q = trace.spikes[i][t] > 0
            v1 = trace.v[i][t]
            if fp.reset == ResetMode.ZERO:
                D, v_prev = np.where(q, 0.0, D1), np.where(q, 0.0, v1)
            elif fp.reset == ResetMode.SUBTRACT:
                D = D1 + trace.spikes[i][t] * dth
                v_prev = v1 - trace.spikes[i][t] * trace.thr[i][t]
            else:
                D, v_prev = D1, v1
            a_prev, s_prev = trace.a[i][t], q
        bounds.append(bound + dth + 1.0)
    return bounds


def fixture_report(nir_path, npz_path, lanes=1):
    """Compare the import of a fixture (``NAME.nir`` and the library's ``NAME.npz``, as
    tests/fixtures/nir/make_fixtures.py writes them) with the library's own traces.

    Returns a dict: ``nodes`` (node name -> NIR type), ``options`` (``dt``, ``reset``,
    ``cuba_input``), ``steps``, and per layer of the trace (``spikes/<node>``):

    * ``neurons``, ``spikes`` (the library's count);
    * ``float_mismatches``: neuron-steps where :func:`simulate_float` differs from the
      library;
    * ``golden_mismatches``: where the integer golden model (:func:`quantise`, ``lanes``
      lanes) differs from the library, split into ``within_one_step`` (the float membrane
      within one LSB, ``1 / scale``, of the threshold), ``within_bound`` (within
      :func:`quantisation_bound` of it: the integer model may round either way; includes
      the former), ``after_divergence`` (the rest that come after an earlier mismatch of the
      same neuron or of a layer feeding it, whose spikes then differed) and ``unexplained``
      (the rest: 0 unless the integer model computes something else than the float one);

    and ``value_error`` / ``mem_error``: the largest float difference from the library's
    output values and reported membranes; ``golden_value_error`` the largest difference of
    the integer model's output values (membrane / scale) from the library's.
    """
    with np.load(npz_path, allow_pickle=False) as z:
        trace = {k: z[k] for k in z.files}
    opts = {"dt": float(trace["dt"]), "reset": str(trace["reset"]),
            "cuba_input": str(trace["cuba_input"])}
    graph = read_graph(nir_path)
    flat, _ = _flatten(graph)
    fnet = graph_to_float(graph, **opts)
    x = trace["input"].astype(np.float64)
    ft = simulate_float(fnet, [x])
    net = quantise(fnet)
    gs, gv = _run_golden(net, [x.astype(np.int64)], lanes)
    bounds = quantisation_bound(fnet, net, ft, [x])
    diverged = [g != f for g, f in zip(gs, ft.spikes)]     # golden vs float, per layer
    source_scale = [np.asarray(p.scale, dtype=np.float64)[np.argsort(p.perm)]
                    for p in net.populations]
    layers = {}
    for key in sorted(k for k in trace if k.startswith("spikes/")):
        name = key[7:]
        i = fnet.population(name)
        lib = trace[key].astype(np.float64)
        bad = gs[i] != lib
        scale = source_scale[i]
        margin = np.abs(ft.v[i] - ft.thr[i]) * scale[None, :]       # in LSBs
        one_step = margin <= 1.0
        in_bound = margin <= bounds[i]
        # After divergence: this neuron differed before, or a layer feeding it differed at
        # a timestep whose spikes had reached it.
        upstream = np.zeros(len(lib), dtype=bool)
        for pr in fnet.projections:
            if pr.dst == i and pr.src >= 0:
                m = diverged[pr.src].any(axis=1)
                if m.any():
                    upstream[min(len(m), int(np.argmax(m)) + pr.delay):] = True
        own_before = np.cumsum(bad, axis=0) - bad > 0
        after = bad & ~in_bound & (own_before | upstream[:, None])
        layers[name] = {
            "neurons": int(lib.shape[1]), "spikes": int(lib.sum()),
            "float_mismatches": int((ft.spikes[i] != lib).sum()),
            "golden_mismatches": int(bad.sum()),
            "within_one_step": int((bad & one_step).sum()),
            "within_bound": int((bad & in_bound).sum()),
            "after_divergence": int(after.sum()),
            "unexplained": int((bad & ~in_bound & ~after).sum())}
    value_error = max((float(np.abs(ft.outputs[k[7:]] - trace[k]).max())
                       for k in trace if k.startswith("values/")), default=0.0)
    outputs = dict(fnet.outputs)
    golden_value_error = max(
        (float(np.abs(gv[outputs[k[7:]]] / source_scale[outputs[k[7:]]][None, :]
                      - trace[k]).max()) for k in trace if k.startswith("values/")),
        default=0.0)
    mem_error = max((float(np.abs(ft.v[fnet.population(k[4:])] - trace[k]).max())
                     for k in trace if k.startswith("mem/")), default=0.0)
    return {"fixture": Path(nir_path).stem,
            "nodes": {k: (n[1].__class__.__name__ + " (in subgraph)" if isinstance(n, tuple)
                          else type(n).__name__) for k, n in flat.items()},
            "options": opts, "steps": int(len(x)), "layers": layers,
            "value_error": value_error, "golden_value_error": golden_value_error,
            "mem_error": mem_error}


def fixture_reports(folder, lanes=1):
    """:func:`fixture_report` of every ``NAME.nir`` with a ``NAME.npz`` beside it in
    ``folder``, in name order."""
    folder = Path(folder)
    return [fixture_report(p, p.with_suffix(".npz"), lanes)
            for p in sorted(folder.glob("*.nir")) if p.with_suffix(".npz").is_file()]


def report_table(reports):
    """The Markdown table of :func:`fixture_report` results (one row per layer)."""
    rows = ["| fixture | layer (node type) | neurons | spikes | float mismatches | golden "
            "mismatches | within one step | within bound | after divergence | unexplained |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in reports:
        for k, (layer, d) in enumerate(r["layers"].items()):
            rows.append(f"| {r['fixture'] if k == 0 else ''} | {layer} ({r['nodes'][layer]}) | "
                        + " | ".join(str(d[c]) for c in (
                            "neurons", "spikes", "float_mismatches", "golden_mismatches",
                            "within_one_step", "within_bound", "after_divergence",
                            "unexplained")) + " |")
    return "\n".join(rows)


# --- the command --------------------------------------------------------------------------

def argument_parser(prog="spikestream nir"):
    """``PROG import GRAPH.nir -o IMAGE --lanes N [--dt DT] [--reset MODE] [--cuba-input
    GAIN]`` and ``PROG export IMAGE -o GRAPH.nir``."""
    ap = CommandParser(prog=prog, description="Import a NIR graph (snnTorch, Norse, Rockpool, "
                       "Sinabs, Lava ...) as a network image, or export an image as a NIR "
                       "graph. NIR writes no timestep and no reset mechanism: give them with "
                       "--dt and --reset. docs/nir.md has the mapping.")
    ap.add_argument("action", choices=("import", "export"),
                    help="import: a .nir graph -> an image; export: an image -> a .nir graph")
    ap.add_argument("source", metavar="SOURCE",
                    help="the .nir graph to import, or the image to export")
    ap.add_argument("-o", "--output", required=True, metavar="PATH",
                    help="the image (import) or .nir graph (export) to write")
    ap.add_argument("--lanes", type=int, metavar="N",
                    help="import: lanes to lay the network out for (required)")
    ap.add_argument("--dt", type=float, metavar="DT",
                    help="import: the timestep the graph's time constants and delays are "
                         "measured in (default 1; snnTorch's exporter assumes 1e-4)")
    ap.add_argument("--reset", choices=list(RESET_MODES),
                    help="import: the reset of LIF/IF/CubaLIF nodes (default: what "
                         "spikestream's exporter wrote, else NIR's zero; snnTorch's "
                         "subtract is subtract-next)")
    ap.add_argument("--cuba-input", choices=CUBA_INPUTS,
                    help="import: the input gain of a CubaLIF's synaptic current (default "
                         "euler: NIR's dt * w_in / tau_syn; jump: w_in, as Norse's LIFCell)")
    ap.add_argument("--json", action="store_true",
                    help="end with one line of JSON holding the results")
    return ap


IMPORT_ONLY = ("lanes", "dt", "reset", "cuba_input")


def _import(args):
    if args.lanes is None:
        raise SystemExit("error: import needs --lanes N")
    if not 1 <= args.lanes <= MAX_LANES:
        raise SystemExit(f"error: --lanes must be in 1..{MAX_LANES}, not {args.lanes}")
    dt = 1.0 if args.dt is None else args.dt
    if not (math.isfinite(dt) and dt > 0):
        raise SystemExit(f"error: --dt must be a positive number, not {args.dt}")
    device = ulx3s_device(DEFAULT_FPGA)
    try:
        check_output(args.output, [args.source], "image")
        graph = read_graph(args.source)
        fnet = graph_to_float(graph, dt=dt, reset=args.reset,
                              cuba_input=args.cuba_input or "euler")
        net = quantise(fnet)
        net.check_lanes(args.lanes)
        plan = memory_plan(net, args.lanes)
        if plan.blocks > device.dp16kd:
            raise NetworkError(f"the image needs about {plan.blocks} block RAMs with "
                               f"{args.lanes} lanes but the {device.part} has "
                               f"{device.dp16kd}")
        size = save_image(net, args.lanes, args.output)
    except (NirImportError, NetworkError, FileProblem, ValueError, OSError) as e:
        raise SystemExit(f"error: {_one_line(e)}") from None
    kinds = ", ".join(f"{p.name} {p.kind.name} x{p.size}" for p in net.populations)
    print(f"network: {kinds}; {net.nonzero_synapses} synapses, delays up to {net.max_delay}")
    print(f"wrote {args.output} ({size} bytes, {args.lanes} lanes)")
    if args.json:
        print(json.dumps({
            "image": str(args.output), "bytes": size, "lanes": args.lanes,
            "populations": [{"name": p.name, "kind": p.kind.name, "size": p.size,
                             "reset": p.reset.name, "output": bool(p.output)}
                            for p in net.populations],
            "inputs": [[s.name, s.size] for s in net.inputs],
            "synapses": net.nonzero_synapses, "max_delay": net.max_delay,
            "block_rams": plan.blocks}))


def _export(args):
    given = [f"--{k.replace('_', '-')}" for k in IMPORT_ONLY if getattr(args, k) is not None]
    if given:
        raise SystemExit(f"error: {', '.join(given)}: only for import")
    try:
        check_output(args.output, [args.source], "NIR graph")
        image = load_image(args.source)
        graph = export_nir(image.net)
        size = write_graph(graph, args.output)
    except (NirImportError, NetworkError, ImageError, FileProblem, ValueError, OSError) as e:
        raise SystemExit(f"error: {_one_line(e)}") from None
    print(f"wrote {args.output} ({size} bytes, {len(graph.nodes)} nodes)")
    if args.json:
        print(json.dumps({"graph": str(args.output), "bytes": size,
                          "nodes": {k: type(n).__name__ for k, n in graph.nodes.items()}}))


def _one_line(e):
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def main(argv=None, prog="python -m models.nirio"):
    """Run ``import`` or ``export`` on ``argv`` (default ``sys.argv[1:]``); ``prog`` names
    the command in its help and errors (``spikestream nir`` from the console script)."""
    args = argument_parser(prog).parse_args(argv)
    (_import if args.action == "import" else _export)(args)


if __name__ == "__main__":
    run(main)
