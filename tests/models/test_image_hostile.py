"""Hostile images: every declared size is checked before anything of that size is allocated,
synapses are decoded sparsely, and every malformed manifest is one clear line.

Each case is a reproducer from issue 14. Memory is measured with :mod:`tracemalloc` (NumPy
reports its buffers to it), so the bounds below hold on any machine; they are far below what
the cases claim (gigabytes to exabytes) and far above what the loader needs.
"""

import json
import os
import re
import struct
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest

from spikestream.board import SHIPPED_IMAGE
from spikestream.formats import NeuronKind
from spikestream.image import (MAX_IMAGE_BYTES, MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH, ImageError,
                          image_bytes, load_image, parse_image)
from spikestream.network import INPUT, Network, NetworkError, Projection, make_population

_HEADER = struct.Struct("<8sHHIQII")    # restated on purpose: the tests pin the layout
MiB = 1 << 20


def _unpack(data):
    """(header fields, manifest dict, writable body) of an image."""
    magic, version, hsize, mlen, blen, crc, reserved = _HEADER.unpack_from(data)
    return ((magic, version, hsize, reserved), json.loads(data[32:32 + mlen]),
            bytearray(data[32 + mlen:]))


def _pack(header, manifest, body):
    """An image of the parts, with true lengths and a correct CRC (so only the loader's
    checks can refuse it)."""
    magic, version, hsize, reserved = header
    m = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    body = bytes(body)
    return _HEADER.pack(magic, version, hsize, len(m), len(body), zlib.crc32(m + body),
                        reserved) + m + body


def _refused(data, problem, *, peak_mib=8, seconds=2.0):
    """Assert that ``parse_image(data)`` raises one line naming ``problem``, within
    ``seconds`` and ``peak_mib`` MiB of allocations; returns the message."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ImageError, match=re.escape(problem)) as e:
            parse_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert "\n" not in str(e.value) and "\r" not in str(e.value)
    assert peak < peak_mib * MiB, f"{peak / MiB:.1f} MiB allocated to refuse the image"
    assert elapsed < seconds, f"{elapsed:.1f} s to refuse the image"
    return str(e.value)


def _small_net(vocab=("a", "b", "c")):
    hidden = make_population("hidden", NeuronKind.LIF, 5, theta=40)
    readout = make_population("readout", NeuronKind.READOUT, len(vocab), theta=0)
    w_in = np.arange(len(vocab) * 5).reshape(len(vocab), 5) % 7 - 3
    w_out = np.arange(5 * len(vocab)).reshape(5, len(vocab)) % 5 - 2
    return Network(vocab=list(vocab), populations=[hidden, readout], readout=1, projections=[
        Projection(INPUT, 0, 0, w_in), Projection(0, 0, 1, np.eye(5, dtype=np.int64) * 3),
        Projection(0, 1, 0, w_out)]).check()


@pytest.fixture
def parts():
    """(header, manifest, body) of a 4-lane image of a small network."""
    return _unpack(image_bytes(_small_net(), 4))


def claims_32_gib(size=32000):
    """The issue's reproducer: a valid image of about 2.4 MB whose four projections between
    two 32,000-neuron populations hold one synapse each, but whose dense weights would take
    4 x 32,000 x 32,000 x 8 bytes = 30.5 GiB."""
    vocab = [chr(c) for c in range(ord("!"), ord("!") + 65)]
    pops = [make_population("a", NeuronKind.LIF, size), make_population("b", NeuronKind.LIF, size),
            make_population("readout", NeuronKind.READOUT, len(vocab), theta=0)]

    def one(src, dst, delay, n_src, n_dst):
        return Projection.from_synapses(src, dst, delay, (n_src, n_dst), [n_src - 1],
                                        [n_dst - 1], [5])
    return Network(vocab=vocab, populations=pops, readout=2, projections=[
        one(0, 0, 1, size, size), one(1, 0, 1, size, size), one(0, 1, 0, size, size),
        one(1, 1, 1, size, size), one(INPUT, 2, 0, len(vocab), len(vocab))]).check()


# --- valid images that claim far more than they hold ------------------------------------------

def test_the_32_gib_image_loads_in_memory_proportional_to_its_synapses():
    net = claims_32_gib()
    dense = sum(pr.shape[0] * pr.shape[1] * 8 for pr in net.projections)
    data = image_bytes(net, 1)
    assert len(data) < 2.5e6 and dense > 30 * (1 << 30)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        img = parse_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the file, its neurons and row pointers, as int64: a few times the file, nothing more
    assert peak < 8 * len(data), f"{peak / MiB:.1f} MiB to load a {len(data) / MiB:.1f} MiB image"
    assert time.perf_counter() - t0 < 5
    assert img.net.nonzero_synapses == 5
    assert all(pr.is_sparse for pr in img.net.projections)
    assert [pr.synapses()[0].tolist() for pr in img.net.projections] == [[31999]] * 4 + [[64]]
    assert image_bytes(img.net, 1) == data


def test_a_large_sparse_image_round_trips_sparsely():
    # 200,000 synapses among 60,000 neurons over 8 lanes: dense, 14 GiB
    rng = np.random.default_rng(3)
    n, nnz = 30000, 200_000
    pops = [make_population("h", NeuronKind.LIF, n), make_population("g", NeuronKind.ALIF, n),
            make_population("readout", NeuronKind.READOUT, 3, theta=0)]
    flat = rng.permutation(np.unique(rng.integers(0, n * n, 2 * nnz))[:nnz])
    w = rng.integers(1, 128, nnz) * rng.choice([-1, 1], nnz)
    net = Network(vocab=["a", "b", "c"], populations=pops, readout=2, projections=[
        Projection.from_synapses(INPUT, 0, 0, (3, n), [0, 1, 2], [5, 6, 7], [1, 2, 3]),
        Projection.from_synapses(0, 1, 0, (n, n), flat // n, flat % n, w),
        Projection.from_synapses(1, 2, 0, (n, 3), [9], [2], [-4])]).check()
    data = image_bytes(net, 8)
    tracemalloc.start()
    try:
        img = parse_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB, f"{peak / MiB:.1f} MiB"
    rows, cols, values = img.net.projections[1].synapses()
    order = np.lexsort((flat % n, flat // n))
    np.testing.assert_array_equal(rows, (flat // n)[order])
    np.testing.assert_array_equal(cols, (flat % n)[order])
    np.testing.assert_array_equal(values, w[order])
    assert image_bytes(img.net, 8) == data


def test_the_shipped_image_round_trips_and_loads_sparsely():
    # Written again (whatever version the file is), it round-trips.
    img = parse_image(SHIPPED_IMAGE.read_bytes())
    data = image_bytes(img.net, img.lanes)
    img = parse_image(data)
    assert all(pr.is_sparse for pr in img.net.projections)
    assert image_bytes(img.net, img.lanes) == data
    # reading .weights gives the dense matrix, and the same image again
    dense = [pr.weights for pr in img.net.projections]
    assert all(w.dtype == np.int64 and not pr.is_sparse
               for w, pr in zip(dense, img.net.projections))
    assert image_bytes(img.net, img.lanes) == data


# --- declared sizes that the file cannot hold --------------------------------------------------

def test_a_manifest_over_the_limit_is_refused_before_it_is_parsed():
    manifest = b"[" * (MAX_MANIFEST_BYTES + 1)
    _refused(_pack((b"SPKIMG\x00\x01", 1, 32, 0), manifest, b""),
             f"manifest of {MAX_MANIFEST_BYTES + 1} bytes; an image's manifest may have at "
             f"most {MAX_MANIFEST_BYTES}", peak_mib=4)


@pytest.mark.parametrize("lanes", [10**6, 10**12, 2**200])
def test_a_huge_lane_count_is_refused_before_any_lane_is_made(parts, lanes):
    header, m, body = parts
    m["lanes"] = lanes
    _refused(_pack(header, m, body), f"{lanes} lanes need {4 * lanes} lane arrays")


@pytest.mark.parametrize("size", [10**6, 10**9, 2**64])
def test_a_huge_population_is_refused_against_the_body(parts, size):
    header, m, body = parts
    m["populations"][0]["size"] = size
    for k in ("alpha", "theta", "rho", "jump", "bias", "scale", "perm"):
        m["arrays"][f"pop0.{k}"]["shape"] = [size]
    _refused(_pack(header, m, body), "array pop0.alpha lies outside the body")


@pytest.mark.parametrize("shape", [[2**62], [2**64 + 5], [10**30]])
def test_a_huge_array_shape_is_refused(parts, shape):
    header, m, body = parts
    m["arrays"]["lane2.syn_addr"]["shape"] = shape
    _refused(_pack(header, m, body), "array lane2.syn_addr lies outside the body")


def _lane_array(m, body, name):
    d = m["arrays"][name]
    return np.frombuffer(body, d["dtype"], d["shape"][0], d["offset"])


def test_row_lengths_that_sum_past_the_words_are_refused(parts):
    # Every row claims all of the lane's words: expanding the rows would take
    # rows x words entries, so the rows are checked to follow one another first.
    header, m, body = parts
    start, length = _lane_array(m, body, "lane0.ptr_start"), _lane_array(m, body, "lane0.ptr_len")
    words = m["arrays"]["lane0.syn_addr"]["shape"][0]
    start[:], length[:] = 0, words
    _refused(_pack(header, m, body), "lane 0: ptr_start is not the canonical layout")


def test_row_lengths_near_two_to_the_32_are_refused(parts):
    header, m, body = parts
    _lane_array(m, body, "lane1.ptr_len")[:] = 0xFFFFFFFF
    _refused(_pack(header, m, body), "lane 1: a row pointer reaches past the lane's")


@pytest.mark.parametrize("layout", ["ptr_base", "base"])
def test_a_layout_offset_that_disagrees_is_refused(parts, layout):
    header, m, body = parts
    if layout == "ptr_base":
        m["projections"][1]["ptr_base"] = 10**15
        problem = "projection 1: ptr_base 1000000000000000 disagrees with the layout (3)"
    else:
        m["populations"][1]["base"] = -1
        problem = "population 'readout': base -1 disagrees with the layout (2)"
    _refused(_pack(header, m, body), problem)


def test_an_integer_of_too_many_digits_is_refused(parts):
    header, m, body = parts
    raw = json.dumps(m).replace('"lanes": 4', '"lanes": ' + "9" * 5000).encode()
    _refused(_pack(header, raw, body), "inconsistent image: ValueError")


# --- manifests nested too deeply, or of the wrong shape ------------------------------------------

@pytest.mark.parametrize("depth", [MAX_MANIFEST_DEPTH + 1, 5000, 200_000])
def test_a_deeply_nested_manifest_is_refused(parts, depth):
    header, m, body = parts
    del m["meta"]
    raw = json.dumps(m).encode()[:-1] + b', "meta": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
    _refused(_pack(header, raw, body), f"inconsistent image: the manifest is nested more than "
                                       f"{MAX_MANIFEST_DEPTH} levels deep", peak_mib=64)


def test_nesting_up_to_the_limit_is_accepted(parts):
    header, m, body = parts
    inner = []
    for _ in range(MAX_MANIFEST_DEPTH - 3):     # manifest > meta > x > lists
        inner = [inner]
    m["meta"] = {"x": inner}
    assert parse_image(_pack(header, m, body)).net.meta == {"x": inner}


def _set(m, path, value):
    holder = m
    for key in path[:-1]:
        holder = holder[key]
    if value is _DELETE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value


_DELETE = object()


@pytest.mark.parametrize("path, value, problem", [
    (("lanes",), True, "lanes must be an integer, not True"),
    (("lanes",), 4.0, "lanes must be an integer, not 4.0"),
    (("lanes",), None, "lanes must be an integer, not None"),
    (("readout",), "1", "readout must be an integer, not '1'"),
    (("vocab",), "abc", "vocab must be a list, not 'abc'"),
    (("vocab",), {"a": 0}, "vocab must be a list, not {'a': 0}"),
    (("formats",), [8, 24], "formats must be an object, not [8, 24]"),
    (("populations",), {"0": 1}, "populations must be a list"),
    (("populations", 0), 7, "populations[0] must be an object, not 7"),
    (("populations", 0, "name"), 3, "populations[0].name must be a string, not 3"),
    (("populations", 0, "kind"), 1, "populations[0].kind must be a string, not 1"),
    (("populations", 0, "size"), "5", "populations[0].size must be an integer, not '5'"),
    (("populations", 0, "size"), 5.0, "populations[0].size must be an integer, not 5.0"),
    (("populations", 1, "base"), None, "populations[1].base must be an integer, not None"),
    (("populations", 0, "extra"), 1, "populations[0] has an unknown key extra"),
    (("projections",), None, "projections must be a list, not None"),
    (("projections", 2), [0, 1], "projections[2] must be an object, not [0, 1]"),
    (("projections", 0, "src"), "x", "projections[0].src must be an integer, not 'x'"),
    (("projections", 1, "delay"), True, "projections[1].delay must be an integer, not True"),
    (("projections", 1, "ptr_base"), 0.5, "projections[1].ptr_base must be an integer"),
    (("arrays",), [], "arrays must be an object, not []"),
    (("arrays", "pop0.alpha"), "x", "arrays.pop0.alpha must be an object, not 'x'"),
    (("arrays", "pop0.alpha", "dtype"), 2, "arrays.pop0.alpha.dtype must be a string, not 2"),
    (("arrays", "pop0.alpha", "dtype"), "\x1b[2J", "array pop0.alpha has dtype '\\x1b[2J', "
                                                   "expected <u2"),
    (("arrays", "pop0.alpha", "shape"), 5, "arrays.pop0.alpha.shape must be a list, not 5"),
    (("arrays", "pop0.alpha", "shape"), [5, 1], "array pop0.alpha has shape [5, 1], not [length]"),
    (("arrays", "pop0.alpha", "shape"), ["5"], "array pop0.alpha has shape ['5'], not [length]"),
    (("arrays", "pop0.alpha", "shape"), [-1], "array pop0.alpha has shape [-1], not [length]"),
    (("arrays", "pop0.alpha", "offset"), "0", "arrays.pop0.alpha.offset must be an integer"),
    (("arrays", "pop0.alpha", "offset"), 1.5, "arrays.pop0.alpha.offset must be an integer"),
    (("arrays", "pop0.alpha", "align"), 8, "arrays.pop0.alpha has an unknown key align"),
    (("arrays", "pop9.alpha"), {"dtype": "<u2", "shape": [0], "offset": 0},
     "array pop9.alpha is not one of the image's arrays"),
    (("meta",), [], "meta must be an object, not []"),
    (("meta",), "x", "meta must be an object, not 'x'"),
    (("checkpoint",), "../x.pt", "the manifest has an unknown key checkpoint"),
])
def test_a_field_of_the_wrong_type_is_one_line(parts, path, value, problem):
    header, m, body = parts
    _set(m, path, value)
    msg = _refused(_pack(header, m, body), problem)
    assert msg.startswith("inconsistent image: ") or msg.startswith("array ")


def test_a_long_wrong_value_is_shortened_in_the_message(parts):
    header, m, body = parts
    m["lanes"] = "x" * 100_000
    msg = _refused(_pack(header, m, body), "lanes must be an integer, not 'xxx")
    assert len(msg) < 120


# --- vocabulary entries: one printable character each ----------------------------------------

@pytest.mark.parametrize("entry, problem", [
    (5, "vocabulary entry 1 is 5 (int), not a string"),
    (None, "vocabulary entry 1 is None (NoneType), not a string"),
    (["b"], "vocabulary entry 1 is ['b'] (list), not a string"),
    ({"b": 1}, "vocabulary entry 1 is {'b': 1} (dict), not a string"),
    ("bb", "vocabulary entry 1 is 'bb' (str), not a one-character string"),
    ("", "vocabulary entry 1 is '' (str), not a one-character string"),
    ("\x1b[31m", "vocabulary entry 1 is '\\x1b[31m' (str), not a one-character string"),
    ("\x1b", "vocabulary entry 1 is '\\x1b' (U+001B), not a printable character"),
    ("\x00", "vocabulary entry 1 is '\\x00' (U+0000), not a printable character"),
    ("\r", "vocabulary entry 1 is '\\r' (U+000D), not a printable character"),
    ("\x7f", "vocabulary entry 1 is '\\x7f' (U+007F), not a printable character"),
    ("\x9b", "vocabulary entry 1 is '\\x9b' (U+009B), not a printable character"),
    ("\u202e", "vocabulary entry 1 is '\\u202e' (U+202E), not a printable character"),
    ("\ud800", "vocabulary entry 1 is '\\ud800' (U+D800), not a printable character"),
    ("a", "vocabulary has repeated tokens: 'a' is token 0 and token 1"),
])
def test_a_bad_vocabulary_entry_is_refused(parts, entry, problem):
    header, m, body = parts
    m["vocab"][1] = entry
    msg = _refused(_pack(header, m, body), problem)
    assert msg.startswith("inconsistent network: ")
    if isinstance(entry, str) and len(entry) == 1 and entry != "a":
        with pytest.raises(NetworkError, match=re.escape(problem)):
            _small_net(vocab=("a", entry, "c"))         # Network.check: compile refuses it too


@pytest.mark.parametrize("entry", ["\n", "\t", " ", "\u00e9", '"', "\\", "\u4e2d", "\u0301"])
def test_printable_characters_newline_and_tab_are_valid_tokens(entry):
    net = _small_net(vocab=("a", entry, "c"))
    assert parse_image(image_bytes(net, 2)).net.vocab == ["a", entry, "c"]


def test_the_shipped_vocabulary_is_valid():
    vocab = load_image(SHIPPED_IMAGE).net.vocab
    assert "\n" in vocab and " " in vocab and len(vocab) == 65


def test_token_ids_are_a_vocabulary_for_the_golden_model_but_not_for_an_image():
    net = _small_net()
    net.vocab = [0, 1, 2]           # as rebuilt from a board's memories
    net.check()
    with pytest.raises(NetworkError, match="an image's vocabulary must be characters"):
        image_bytes(net, 2)
    net.vocab = [0, 2, 1]
    with pytest.raises(NetworkError, match="vocabulary entry 0 is 0 \\(int\\)"):
        net.check()


def test_a_population_name_with_an_escape_sequence_is_refused(parts):
    header, m, body = parts
    m["populations"][0]["name"] = "\x1b]0;pwned\x07"
    _refused(_pack(header, m, body), "inconsistent network: population 0: its name "
                                     "'\\x1b]0;pwned\\x07' is not a printable string")


# --- files that are not regular or too large ----------------------------------------------------

def _within(seconds, fn):
    """Run ``fn`` in a thread; fail if it takes longer than ``seconds``. Returns its
    exception (or None)."""
    out = []

    def run():
        try:
            fn()
            out.append(None)
        except BaseException as e:         # noqa: BLE001 - handed to the test
            out.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    return out[0]


def test_dev_zero_is_refused_at_once():
    e = _within(5, lambda: load_image("/dev/zero"))
    assert isinstance(e, ImageError) and "/dev/zero: not a regular file" in str(e)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "image.img"
    os.mkfifo(fifo)
    e = _within(5, lambda: load_image(fifo))
    assert isinstance(e, ImageError) and "not a regular file" in str(e)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)        # sparse: no disk used
    tracemalloc.start()
    try:
        e = _within(5, lambda: load_image(big))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(e, ImageError) and "larger than the 64.0 MiB" in str(e)
    assert peak < MiB
