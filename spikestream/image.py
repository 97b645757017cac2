"""The network image: one versioned, checksummed file that the core loads.

Layout (all integers little-endian; see docs/image-format.md)::

    offset  size  field
    0       8     magic  b"SPKIMG\\0\\1"
    8       2     version (IMAGE_VERSION)
    10      2     header size (32)
    12      4     manifest length M (bytes of UTF-8 JSON)
    16      8     body length N (bytes of raw arrays)
    24      4     CRC-32 (zlib) of manifest + body
    28      4     reserved, 0
    32      M     manifest: lanes, vocabulary, populations, projections, number formats,
                  metadata, and for every array its dtype, shape and offset in the body
    32+M    N     body: the arrays, each 8-byte aligned

The body holds what the core's memories hold: per population the neuron parameters, per
lane the row pointers ``(start, length)`` and the synapse words ``(target address, weight)``
of the compressed rows (spikestream/network.py, LaneLayout), a block of rows per projection
(the host merges those of one source and delay as it loads them: network.core_layout).
:func:`load_image` checks everything and raises :class:`ImageError` with one clear line.
"""

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from . import formats
from .files import FileProblem, atomic_write_bytes, read_regular
from .formats import NeuronKind, ResetMode
from .network import (INPUT, MAX_NEURONS_PER_LANE, InputSpec, Network, NetworkError,
                      Population, Projection, check_vocab, input_index, lane_layout)

__all__ = ["IMAGE_MAGIC", "IMAGE_VERSION", "READABLE_VERSIONS", "MAX_IMAGE_BYTES", "MAX_MANIFEST_BYTES",
           "MAX_MANIFEST_DEPTH", "ImageError", "Image",
           "save_image", "load_image", "read_image_bytes", "image_bytes", "parse_image", "image_tag"]

IMAGE_MAGIC = b"SPKIMG\x00\x01"
IMAGE_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Versions :func:`parse_image` reads: 1 (token input, delays 0/1, the four version-1 kinds
with their own reset modes) loads as the same network; 2 adds spike inputs, an optional
readout, delays up to 255, reset modes, multi-level spikes and output populations."""
MAX_IMAGE_BYTES = 64 << 20
"""Largest image file read (64 MiB): over 100 times the block RAM of the largest ULX3S
(208 DP16KD = 468 KiB), so every image a board can hold fits, and no file can make a
reader allocate more than this before its header is checked."""
MAX_MANIFEST_BYTES = 1 << 20
"""Largest manifest (1 MiB; the shipped model's is 6 KiB): bounds what the JSON parser
builds, and with it the number of populations, projections, lanes and tokens."""
MAX_MANIFEST_DEPTH = 32
"""Deepest nesting of lists and objects in a manifest (the format itself needs 4)."""
_HEADER = struct.Struct("<8sHHIQII")
_FORMATS = {"weight_bits": formats.WEIGHT_BITS, "acc_bits": formats.ACC_BITS,
            "state_bits": formats.STATE_BITS, "decay_frac_bits": formats.DECAY_FRAC_BITS}
_POP_ARRAYS = {"alpha": "<u2", "theta": "<i2", "rho": "<u2", "jump": "<i2", "bias": "<i2",
               "scale": "<f8", "perm": "<u4"}
_LANE_ARRAYS = {"ptr_start": "<u4", "ptr_len": "<u4", "syn_addr": "<u2", "syn_weight": "<i1"}
_MANIFEST_KEYS = {1: ("lanes", "vocab", "readout", "formats", "populations", "projections",
                      "arrays", "meta"),
                  2: ("lanes", "vocab", "readout", "inputs", "formats", "populations",
                      "projections", "arrays", "meta")}
_POP_KEYS = {1: ("name", "kind", "size", "base"),
             2: ("name", "kind", "size", "base", "reset", "level_bits", "output")}


class ImageError(ValueError):
    """The file is not a valid network image; the message says why, in one line."""


@dataclass(eq=False)
class Image:
    """A network and the number of lanes it was laid out for."""
    net: Network
    lanes: int


def image_bytes(net, lanes, meta=None):
    """Serialise ``net`` laid out over ``lanes`` lanes; returns the file's bytes."""
    net.check()
    if not all(isinstance(t, str) for t in net.vocab):
        raise NetworkError("an image's vocabulary must be characters, not token ids")
    lay = lane_layout(net, lanes)
    arrays, body, offset = {}, [], 0

    def put(name, values, dtype):
        nonlocal offset
        a = np.ascontiguousarray(np.asarray(values).astype(dtype))
        pad = (-offset) % 8
        body.append(b"\0" * pad)
        offset += pad
        arrays[name] = {"dtype": dtype, "shape": list(a.shape), "offset": offset}
        body.append(a.tobytes())
        offset += a.nbytes

    for i, p in enumerate(net.populations):
        for k, dt in _POP_ARRAYS.items():
            put(f"pop{i}.{k}", getattr(p, k), dt)
    for lane in range(lanes):
        for k, dt in _LANE_ARRAYS.items():
            put(f"lane{lane}.{k}", getattr(lay, k)[lane], dt)
    manifest = {
        "lanes": lanes,
        "vocab": list(net.vocab),
        "readout": None if net.readout is None else int(net.readout),
        "inputs": [{"name": spec.name, "size": int(spec.size)} for spec in net.inputs],
        "formats": _FORMATS,
        "populations": [{"name": p.name, "kind": p.kind.name, "size": p.size,
                         "base": lay.pop_base[i], "reset": p.reset.name,
                         "level_bits": int(p.level_bits), "output": bool(p.output)}
                        for i, p in enumerate(net.populations)],
        "projections": [{"src": pr.src, "dst": pr.dst, "delay": pr.delay,
                         "ptr_base": lay.ptr_base[j]} for j, pr in enumerate(net.projections)],
        "arrays": arrays,
        "meta": {**net.meta, **(meta or {})},
    }
    mbytes = json.dumps(manifest, separators=(",", ":")).encode()
    bbytes = b"".join(body)
    crc = zlib.crc32(mbytes + bbytes)
    return _HEADER.pack(IMAGE_MAGIC, IMAGE_VERSION, _HEADER.size, len(mbytes), len(bbytes),
                        crc, 0) + mbytes + bbytes


def image_tag(data):
    """The tag that names an image on a board: the CRC-32 of its file's bytes (never 0,
    which means "no image")."""
    return zlib.crc32(bytes(data)) or 1


def save_image(net, lanes, path, meta=None):
    """Write ``net`` for ``lanes`` lanes to ``path`` (atomically); returns the number of
    bytes."""
    data = image_bytes(net, lanes, meta)
    atomic_write_bytes(path, data)
    return len(data)


def read_image_bytes(path):
    """The bytes of the image file ``path``: a regular file of at most
    :data:`MAX_IMAGE_BYTES`, else :class:`ImageError` (one line)."""
    try:
        return read_regular(path, MAX_IMAGE_BYTES, "image file")
    except FileProblem as e:
        raise ImageError(str(e)) from None


def load_image(path):
    """Read and check an image file; returns an :class:`Image`."""
    data = read_image_bytes(path)
    try:
        return parse_image(data)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None


def parse_image(data):
    """Check and decode the bytes of an image; returns an :class:`Image`.

    Every size the file declares is checked against the limits and against the bytes
    actually present before anything of that size is allocated, and the synapses are
    decoded sparsely: memory grows with the file, never with what its header claims.
    """
    data = memoryview(data).cast("B")
    if len(data) < _HEADER.size:
        if bytes(data[:8]) != IMAGE_MAGIC[:len(data[:8])]:
            raise ImageError("not a spikestream network image (bad magic)")
        raise ImageError(f"truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, version, hsize, mlen, blen, crc, reserved = _HEADER.unpack_from(data)
    if magic != IMAGE_MAGIC:
        raise ImageError("not a spikestream network image (bad magic)")
    if version not in READABLE_VERSIONS:
        raise ImageError(f"image format version {version}; this spikestream reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))} (recompile the model with "
                         "spikestream compile)")
    if hsize != _HEADER.size:
        raise ImageError(f"header size {hsize}, expected {_HEADER.size}")
    if reserved != 0:
        raise ImageError(f"reserved header word is {reserved:#x}, must be 0")
    expected = _HEADER.size + mlen + blen
    if len(data) < expected:
        raise ImageError(f"truncated: {len(data)} bytes, the header promises {expected}")
    if len(data) > expected:
        raise ImageError(f"{len(data) - expected} unexpected bytes after the end of the image")
    if mlen > MAX_MANIFEST_BYTES:
        raise ImageError(f"manifest of {mlen} bytes; an image's manifest may have at most "
                         f"{MAX_MANIFEST_BYTES}")
    payload = data[_HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise ImageError("corrupted: checksum mismatch")
    try:
        return _decode(_read_manifest(bytes(payload[:mlen])), payload[mlen:], version)
    except ImageError:
        raise
    except NetworkError as e:
        raise ImageError(f"inconsistent network: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
        # A last line of defence: every case known is refused above with its own message.
        raise ImageError(f"inconsistent image: {type(e).__name__}: {e}") from None


def _bad(problem):
    return ImageError(f"inconsistent image: {problem}")


def _show(x, limit=40):
    """``x`` for a one-line message: short, with control characters escaped."""
    if isinstance(x, str) and x.isascii() and x.isprintable() and 0 < len(x) <= limit:
        return x
    r = repr(x)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _quote(x, limit=40):
    """``repr(x)`` shortened for a one-line message (control characters escaped)."""
    r = repr(x)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _read_manifest(raw):
    """The manifest's JSON object, refused (one line) if it is not JSON or is nested more
    than :data:`MAX_MANIFEST_DEPTH` levels deep."""
    try:
        m = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _bad(f"UnicodeDecodeError: {e}") from None
    except RecursionError:
        raise _bad(f"the manifest is nested more than {MAX_MANIFEST_DEPTH} levels deep") from None
    except ValueError as e:         # JSONDecodeError, or an integer of too many digits
        raise _bad(f"{type(e).__name__}: {e}") from None
    stack = [(m, 1)]
    while stack:
        x, depth = stack.pop()
        if depth > MAX_MANIFEST_DEPTH:
            raise _bad(f"the manifest is nested more than {MAX_MANIFEST_DEPTH} levels deep")
        items = x.values() if isinstance(x, dict) else x
        stack.extend((v, depth + 1) for v in items if isinstance(v, (dict, list)))
    if not isinstance(m, dict):
        raise _bad(f"the manifest is a JSON {type(m).__name__}, not an object")
    return m


_KIND_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "an object",
               bool: "true or false"}


def _field(obj, key, kind, where="", optional=False):
    """``obj[key]``, refused unless it is of JSON type ``kind`` (``int`` excludes ``true``)."""
    path = f"{where}.{key}" if where else key
    if key not in obj:
        if optional:
            return None
        raise _bad(f"{path} is missing")
    v = obj[key]
    if type(v) is not kind:
        raise _bad(f"{path} must be {_KIND_NAMES[kind]}, not {_quote(v)}")
    return v


def _no_other_keys(obj, keys, where):
    extra = sorted(set(obj) - set(keys))
    if extra:
        raise _bad(f"{where or 'the manifest'} has an unknown key {_show(extra[0])}")


def _decode(m, body, version):
    # 1. The manifest's structure and every declared number, before any allocation.
    _no_other_keys(m, _MANIFEST_KEYS[version], "")
    lanes = _field(m, "lanes", int)
    vocab = _field(m, "vocab", list)
    if version >= 2 and m.get("readout", 0) is None:
        readout = None
    else:
        readout = _field(m, "readout", int)
    inputs = []
    if version >= 2:
        for k, d in enumerate(_field(m, "inputs", list)):
            where = f"inputs[{k}]"
            if type(d) is not dict:
                raise _bad(f"{where} must be an object, not {_quote(d)}")
            _no_other_keys(d, ("name", "size"), where)
            inputs.append(InputSpec(_field(d, "name", str, where), _field(d, "size", int, where)))
            if inputs[-1].size < 1:
                raise ImageError(f"spike input {k}: size {inputs[-1].size} is not positive")
    fmts = _field(m, "formats", dict)
    pds = _field(m, "populations", list)
    jds = _field(m, "projections", list)
    ads = _field(m, "arrays", dict)
    meta = _field(m, "meta", dict, optional=True) or {}
    if fmts != _FORMATS:
        raise ImageError(f"number formats {_show(fmts, 200)} differ from this core's {_FORMATS}")
    if lanes < 1:
        raise ImageError(f"lanes must be at least 1, not {lanes}")
    for i, t in enumerate(vocab):
        if type(t) is not str:
            raise NetworkError(f"vocabulary entry {i} is {_show(t)} ({type(t).__name__}), "
                               "not a string")
    pops = []
    for i, pd in enumerate(pds):
        where = f"populations[{i}]"
        if type(pd) is not dict:
            raise _bad(f"{where} must be an object, not {_quote(pd)}")
        _no_other_keys(pd, _POP_KEYS[version], where)
        name = _field(pd, "name", str, where)
        kind = _field(pd, "kind", str, where)
        kinds = [k.name for k in NeuronKind if version >= 2 or k <= NeuronKind.READOUT]
        if kind not in kinds:
            raise _bad(f"population {i} ({_quote(name)}): unknown neuron kind {_quote(kind)}, "
                       f"not one of {', '.join(kinds)}")
        mode = {}
        if version >= 2:
            reset = _field(pd, "reset", str, where)
            if reset not in ResetMode.__members__:
                raise _bad(f"population {i} ({_quote(name)}): unknown reset mode "
                           f"{_quote(reset)}, not one of {', '.join(ResetMode.__members__)}")
            mode = {"reset": ResetMode[reset],
                    "level_bits": _field(pd, "level_bits", int, where),
                    "output": _field(pd, "output", bool, where)}
        pops.append((name, NeuronKind[kind], _field(pd, "size", int, where),
                     _field(pd, "base", int, where), mode))
    projs = []
    for j, jd in enumerate(jds):
        where = f"projections[{j}]"
        if type(jd) is not dict:
            raise _bad(f"{where} must be an object, not {_quote(jd)}")
        _no_other_keys(jd, ("src", "dst", "delay", "ptr_base"), where)
        src, dst, delay, ptr = (_field(jd, k, int, where)
                                for k in ("src", "dst", "delay", "ptr_base"))
        source_ok = (src == INPUT or 0 <= src < len(pops)
                     or (src <= -2 and input_index(src) < len(inputs)))
        if not source_ok or not 0 <= dst < len(pops):
            raise ImageError(f"projection {j}: source {src} or target {dst} is not a population "
                             "or input")
        projs.append((src, dst, delay, ptr))
    if version == 1 or vocab:
        # Tokens of a token input are single characters; without one, class labels.
        check_vocab(vocab, labels=not any(src == INPUT for src, *_ in projs))

    # 2. The array table: exactly the arrays of the format, each inside the body. The lane
    # count is bounded by the table's length before any per-lane name is made.
    if 4 * lanes > len(ads):
        raise _bad(f"{lanes} lanes need {4 * lanes} lane arrays; the manifest lists "
                   f"{len(ads)} arrays")
    want = {f"pop{i}.{k}": dt for i in range(len(pops)) for k, dt in _POP_ARRAYS.items()}
    want.update({f"lane{l}.{k}": dt for l in range(lanes) for k, dt in _LANE_ARRAYS.items()})
    length = {}
    for name, dtype in want.items():
        if name not in ads:
            raise _bad(f"array {name} is missing")
        d, where = ads[name], f"arrays.{name}"
        if type(d) is not dict:
            raise _bad(f"{where} must be an object, not {_quote(d)}")
        _no_other_keys(d, ("dtype", "shape", "offset"), where)
        got = _field(d, "dtype", str, where)
        if got != dtype:
            raise ImageError(f"array {name} has dtype {_show(got)}, expected {dtype}")
        shape, offset = _field(d, "shape", list, where), _field(d, "offset", int, where)
        if len(shape) != 1 or type(shape[0]) is not int or shape[0] < 0:
            raise _bad(f"array {name} has shape {_show(shape)}, not [length]")
        if offset < 0 or offset + shape[0] * np.dtype(dtype).itemsize > len(body):
            raise ImageError(f"array {name} lies outside the body")
        length[name] = shape[0]
    for name in ads:
        if name not in want:
            raise _bad(f"array {_show(name)} is not one of the image's arrays")

    # 3. Sizes and the layout they imply, against what is stored.
    pop_base, base = [], 0
    for i, (name, kind, size, pbase, _) in enumerate(pops):
        for k in _POP_ARRAYS:
            if length[f"pop{i}.{k}"] != size:
                raise ImageError(f"population {_quote(name)}: {length[f'pop{i}.{k}']} neurons "
                                 f"stored, header says {size}")
        if pbase != base:
            raise ImageError(f"population {_quote(name)}: base {pbase} disagrees with the "
                             f"layout ({base})")
        pop_base.append(base)
        base += -(-size // lanes)
    if base > MAX_NEURONS_PER_LANE:
        raise NetworkError(f"{base} neurons per lane with {lanes} lanes; a lane addresses at "
                           f"most {MAX_NEURONS_PER_LANE}")
    source_size = lambda s: (len(vocab) if s == INPUT else
                             inputs[input_index(s)].size if s < 0 else pops[s][2])
    ptr_base = [0]
    for src, *_ in projs:
        ptr_base.append(ptr_base[-1] + source_size(src))
    n_ptr = ptr_base[-1]
    for lane in range(lanes):
        for k in ("ptr_start", "ptr_len"):
            if length[f"lane{lane}.{k}"] != n_ptr:
                raise ImageError(f"lane {lane}: {length[f'lane{lane}.{k}']} row pointers, "
                                 f"expected {n_ptr}")
        if length[f"lane{lane}.syn_addr"] != length[f"lane{lane}.syn_weight"]:
            raise ImageError(f"lane {lane}: synapse address and weight arrays differ in length")
    for j, (*_, ptr) in enumerate(projs):
        if ptr != ptr_base[j]:
            raise ImageError(f"projection {j}: ptr_base {ptr} disagrees with the layout "
                             f"({ptr_base[j]})")

    # 4. The arrays: every one is now known to lie in the body with the size the layout needs.
    def get(name):
        d = ads[name]
        return np.frombuffer(body, want[name], d["shape"][0], d["offset"])

    populations = [Population(name=name, kind=kind, **mode, **{
        k: get(f"pop{i}.{k}").astype(np.float64 if k == "scale" else np.int64)
        for k in _POP_ARRAYS}) for i, (name, kind, size, _, mode) in enumerate(pops)]
    synapses = _decode_synapses(lanes, get, ptr_base, pop_base, projs,
                                [p.size for p in populations])
    projections = []
    for j, (src, dst, delay, _) in enumerate(projs):
        rows, cols, values = synapses[j]
        projections.append(Projection.from_synapses(
            src, dst, delay, (source_size(src), populations[dst].size), rows, cols, values))
    net = Network(vocab=vocab, populations=populations, projections=projections,
                  readout=readout, meta=dict(meta), inputs=inputs).check()
    # The stored rows must be exactly the canonical layout of the decoded network: no
    # duplicate, overlapping, zero-weight or stray synapses can hide in the file.
    lay = lane_layout(net, lanes)
    for lane in range(lanes):
        for k in _LANE_ARRAYS:
            if not np.array_equal(getattr(lay, k)[lane], get(f"lane{lane}.{k}")):
                raise ImageError(f"lane {lane}: {k} is not the canonical layout of its synapses")
    return Image(net=net, lanes=lanes)


def _decode_synapses(lanes, get, ptr_base, pop_base, projs, sizes):
    """Per projection, ``(rows, cols, values)`` of the synapses the lanes' rows hold,
    row-major; the rows are checked to be in canonical form on the way (so that the words
    of a lane are exactly its rows, each once), which bounds everything by the words stored.
    """
    ptr_base = np.array(ptr_base, np.int64)
    dst_of = np.array([p[1] for p in projs], np.int64)
    base_of = np.array(pop_base, np.int64)[dst_of] if len(projs) else np.zeros(0, np.int64)
    size_of = np.array(sizes, np.int64)[dst_of] if len(projs) else np.zeros(0, np.int64)
    # Each synapse gets the key (row pointer, target) = entry * width + target; a lane's
    # words are stored in key order, so sorting the lanes' keys is a merge.
    width = max(sizes, default=1)
    keys, weights = [], []
    for lane in range(lanes):
        start = get(f"lane{lane}.ptr_start").astype(np.int64)
        length = get(f"lane{lane}.ptr_len").astype(np.int64)
        addr = get(f"lane{lane}.syn_addr")
        weight = get(f"lane{lane}.syn_weight")
        if np.any(start + length > len(addr)):
            raise ImageError(f"lane {lane}: a row pointer reaches past the lane's "
                             f"{len(addr)} synapses")
        # Canonical rows follow one another with no gap or overlap: each starts where the
        # previous one ends. Then the words are exactly the rows' words, once each.
        ends = np.cumsum(length)
        if not np.array_equal(start, ends - length):
            raise ImageError(f"lane {lane}: ptr_start is not the canonical layout of its "
                             "synapses")
        if (ends[-1] if len(ends) else 0) != len(addr):
            raise ImageError(f"lane {lane}: syn_addr is not the canonical layout of its "
                             "synapses (it holds words no row points to)")
        del start, ends
        entry = np.repeat(np.arange(len(length)), length)        # row pointer of each word
        del length
        proj = np.searchsorted(ptr_base, entry, side="right") - 1
        target = (addr - base_of[proj]) * lanes + lane
        outside = (target < 0) | (target >= size_of[proj])
        if outside.any():
            raise ImageError(f"lane {lane}: projection {int(proj[np.argmax(outside)])} "
                             "targets an address outside its population")
        del proj, outside
        if np.any((entry[1:] == entry[:-1]) & (addr[1:] <= addr[:-1])):
            raise ImageError(f"lane {lane}: syn_addr is not the canonical layout of its "
                             "synapses (a row's targets must ascend, each once)")
        if np.any(weight == 0):
            raise ImageError(f"lane {lane}: syn_weight is not the canonical layout of its "
                             "synapses (a stored weight is 0)")
        keys.append(entry * width + target)
        weights.append(weight)
        del entry, target
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    del keys
    order = np.argsort(key, kind="stable")
    key = key[order]
    weight = (np.concatenate(weights) if weights else np.zeros(0, np.int8))[order]
    del order, weights
    cut = np.searchsorted(key, ptr_base * width)
    out = []
    for j in range(len(projs)):
        k = key[cut[j]:cut[j + 1]]
        out.append((k // width - ptr_base[j], k % width, weight[cut[j]:cut[j + 1]]))
    return out
