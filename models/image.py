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

The body holds exactly what the core's memories hold: per population the neuron
parameters, per lane the row pointers ``(start, length)`` and the synapse words
``(target address, weight)`` of the compressed rows (models/network.py, LaneLayout).
:func:`load_image` checks everything and raises :class:`ImageError` with one clear line.
"""

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import formats
from .network import (INPUT, Network, NetworkError, Population, Projection, lane_layout)

__all__ = ["IMAGE_MAGIC", "IMAGE_VERSION", "ImageError", "Image", "save_image", "load_image",
           "image_bytes", "parse_image"]

IMAGE_MAGIC = b"SPKIMG\x00\x01"
IMAGE_VERSION = 1
_HEADER = struct.Struct("<8sHHIQII")
_FORMATS = {"weight_bits": formats.WEIGHT_BITS, "acc_bits": formats.ACC_BITS,
            "state_bits": formats.STATE_BITS, "decay_frac_bits": formats.DECAY_FRAC_BITS}
_POP_ARRAYS = {"alpha": "<u2", "theta": "<i2", "rho": "<u2", "jump": "<i2", "bias": "<i2",
               "scale": "<f8", "perm": "<u4"}
_LANE_ARRAYS = {"ptr_start": "<u4", "ptr_len": "<u4", "syn_addr": "<u2", "syn_weight": "<i1"}


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
        "readout": net.readout,
        "formats": _FORMATS,
        "populations": [{"name": p.name, "kind": p.kind.name, "size": p.size,
                         "base": lay.pop_base[i]} for i, p in enumerate(net.populations)],
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


def save_image(net, lanes, path, meta=None):
    """Write ``net`` for ``lanes`` lanes to ``path``; returns the number of bytes."""
    data = image_bytes(net, lanes, meta)
    Path(path).write_bytes(data)
    return len(data)


def load_image(path):
    """Read and check an image file; returns an :class:`Image`."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file") from None
    try:
        return parse_image(data)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None


def parse_image(data):
    """Check and decode the bytes of an image; returns an :class:`Image`."""
    if len(data) < _HEADER.size:
        if data[:len(IMAGE_MAGIC)] != IMAGE_MAGIC[:len(data[:8])]:
            raise ImageError("not a spikestream network image (bad magic)")
        raise ImageError(f"truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, version, hsize, mlen, blen, crc, reserved = _HEADER.unpack_from(data)
    if magic != IMAGE_MAGIC:
        raise ImageError("not a spikestream network image (bad magic)")
    if version != IMAGE_VERSION:
        raise ImageError(f"image format version {version}; this spikestream reads version "
                         f"{IMAGE_VERSION} (recompile the model with models.compile)")
    if hsize != _HEADER.size:
        raise ImageError(f"header size {hsize}, expected {_HEADER.size}")
    if reserved != 0:
        raise ImageError(f"reserved header word is {reserved:#x}, must be 0")
    expected = _HEADER.size + mlen + blen
    if len(data) < expected:
        raise ImageError(f"truncated: {len(data)} bytes, the header promises {expected}")
    if len(data) > expected:
        raise ImageError(f"{len(data) - expected} unexpected bytes after the end of the image")
    payload = data[_HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise ImageError("corrupted: checksum mismatch")
    try:
        m = json.loads(payload[:mlen].decode())
        return _decode(m, payload[mlen:])
    except ImageError:
        raise
    except NetworkError as e:
        raise ImageError(f"inconsistent network: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ImageError(f"inconsistent image: {type(e).__name__}: {e}") from None


def _decode(m, body):
    if m["formats"] != _FORMATS:
        raise ImageError(f"number formats {m['formats']} differ from this core's {_FORMATS}")
    for key in ("lanes", "readout"):
        if type(m[key]) is not int:
            raise ImageError(f"{key} must be an integer, not {m[key]!r}")
    lanes = m["lanes"]
    if lanes < 1:
        raise ImageError(f"lanes must be at least 1, not {lanes}")

    def get(name, dtype):
        d = m["arrays"][name]
        if d["dtype"] != dtype:
            raise ImageError(f"array {name} has dtype {d['dtype']}, expected {dtype}")
        n = int(np.prod(d["shape"])) * np.dtype(dtype).itemsize
        if d["offset"] < 0 or d["offset"] + n > len(body):
            raise ImageError(f"array {name} lies outside the body")
        return np.frombuffer(body, dtype, int(np.prod(d["shape"])), d["offset"]).reshape(d["shape"])

    pops = []
    for i, pd in enumerate(m["populations"]):
        kw = {k: get(f"pop{i}.{k}", dt).astype(np.float64 if k == "scale" else np.int64)
              for k, dt in _POP_ARRAYS.items()}
        pop = Population(name=pd["name"], kind=formats.NeuronKind[pd["kind"]], **kw)
        if pop.size != pd["size"]:
            raise ImageError(f"population {pd['name']!r}: {pop.size} neurons stored, "
                             f"header says {pd['size']}")
        pops.append(pop)
    vocab = list(m["vocab"])
    pop_base, base = [], 0
    for p in pops:
        pop_base.append(base)
        base += -(-p.size // lanes)
    sizes = lambda s: len(vocab) if s == INPUT else pops[s].size
    projs, ptr_base = [], [0]
    for j, pd in enumerate(m["projections"]):
        src, dst = int(pd["src"]), int(pd["dst"])
        if not (src == INPUT or 0 <= src < len(pops)) or not 0 <= dst < len(pops):
            raise ImageError(f"projection {j}: source {src} or target {dst} is not a population")
        projs.append(Projection(src=src, dst=dst, delay=int(pd["delay"]),
                                weights=np.zeros((sizes(src), pops[dst].size), np.int64)))
        ptr_base.append(ptr_base[-1] + sizes(src))
    for lane in range(lanes):
        start = get(f"lane{lane}.ptr_start", "<u4").astype(np.int64)
        length = get(f"lane{lane}.ptr_len", "<u4").astype(np.int64)
        addr = get(f"lane{lane}.syn_addr", "<u2").astype(np.int64)
        weight = get(f"lane{lane}.syn_weight", "<i1").astype(np.int64)
        if len(start) != ptr_base[-1] or len(length) != ptr_base[-1]:
            raise ImageError(f"lane {lane}: {len(start)} row pointers, expected {ptr_base[-1]}")
        if len(addr) != len(weight):
            raise ImageError(f"lane {lane}: synapse address and weight arrays differ in length")
        if np.any(start + length > len(addr)):
            raise ImageError(f"lane {lane}: a row pointer reaches past the lane's "
                             f"{len(addr)} synapses")
        entry = np.repeat(np.arange(len(length)), length)          # pointer entry of each word
        first = np.repeat(np.cumsum(length) - length, length)
        word = np.repeat(start, length) + np.arange(len(entry)) - first
        proj = np.searchsorted(ptr_base, entry, side="right") - 1
        for j, pr in enumerate(projs):
            sel = proj == j
            k = entry[sel] - ptr_base[j]
            a = addr[word[sel]] - pop_base[pr.dst]
            n = a * lanes + lane
            if np.any(a < 0) or np.any(n >= pops[pr.dst].size):
                raise ImageError(f"lane {lane}: projection {j} targets an address outside "
                                 "its population")
            pr.weights[k, n] = weight[word[sel]]
    net = Network(vocab=vocab, populations=pops, projections=projs, readout=int(m["readout"]),
                  meta=dict(m.get("meta", {})))
    net.check()
    for i, pd in enumerate(m["populations"]):
        if pd["base"] != pop_base[i] or type(pd["size"]) is not int:
            raise ImageError(f"population {pd['name']!r}: base {pd['base']!r} or size "
                             f"{pd['size']!r} disagrees with the layout")
    for j, pd in enumerate(m["projections"]):
        if pd["ptr_base"] != ptr_base[j] or type(pd["delay"]) is not int:
            raise ImageError(f"projection {j}: ptr_base {pd['ptr_base']!r} or delay "
                             f"{pd['delay']!r} disagrees with the layout")
    # The stored rows must be exactly the canonical layout of the decoded network: no
    # duplicate, overlapping, zero-weight or stray synapses can hide in the file.
    lay = lane_layout(net, lanes)
    for lane in range(lanes):
        for k in _LANE_ARRAYS:
            if not np.array_equal(getattr(lay, k)[lane], get(f"lane{lane}.{k}", _LANE_ARRAYS[k])):
                raise ImageError(f"lane {lane}: {k} is not the canonical layout of its synapses")
    return Image(net=net, lanes=lanes)
