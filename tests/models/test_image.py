"""Tests for :mod:`spikestream.image` (and the parts of :mod:`spikestream.network` it rests on).

Every network is built from plain arrays through the public API with a seeded generator, so
each case is reproducible. Bad images are made from a good one: :func:`_unpack` splits it into
header fields, manifest and body, a case edits one thing, and :func:`_pack` puts it back
together with correct lengths and checksum, so that the image is wrong for exactly the reason
the case names and the loader has to find it by its checks, not by the CRC.
"""

import json
import re
import struct
import zlib

import numpy as np
import pytest


from spikestream.formats import (ACC_MAX, DECAY_ONE, STATE_MAX, STATE_MIN, WEIGHT_MAX, WEIGHT_MIN,
                            NeuronKind)
from spikestream.image import (IMAGE_MAGIC, IMAGE_VERSION, ImageError, image_bytes, load_image,
                          parse_image, save_image)
from spikestream.network import (INPUT, Network, NetworkError, Population, Projection,
                            lane_layout, make_population)

VOCAB = ["a", "b", " ", "\n", "\u00e9", '"', "\\"]
LANES = [1, 3, 4, 16]
_HEADER = struct.Struct("<8sHHIQII")   # restated on purpose: the tests pin the documented layout


def _population(rng, name, kind, size):
    """A population of ``kind`` with random parameters inside the core's ranges."""
    adaptive = kind == NeuronKind.ALIF
    bias = rng.integers(-500, 500, size)
    bias[0] = STATE_MIN
    return make_population(
        name, kind, size,
        alpha=DECAY_ONE if kind == NeuronKind.IF else rng.integers(0, DECAY_ONE + 1, size),
        theta=0 if kind == NeuronKind.READOUT else rng.integers(1, STATE_MAX + 1, size),
        rho=rng.integers(0, DECAY_ONE + 1, size) if adaptive else 0,
        jump=rng.integers(0, 1000, size) if adaptive else 0,
        bias=bias, scale=rng.uniform(0.5, 300.0, size), perm=rng.permutation(size))


def _weights(rng, rows, cols, density=0.3):
    """Random sparse int8 weights with at least one empty row."""
    w = rng.integers(WEIGHT_MIN, WEIGHT_MAX + 1, (rows, cols)).astype(np.int8)
    w[rng.random((rows, cols)) >= density] = 0
    w[rng.integers(rows)] = 0
    return w


def _network(rng, *, vocab=VOCAB, input_projections=True):
    """A small network with every neuron kind, both delays, recurrence and empty rows.

    Population ``lif`` (3 neurons) is smaller than 4 and 16 lanes; ``readout`` is as large
    as the vocabulary; projection ``readout -> lif`` holds no synapse at all.
    """
    pops = [_population(rng, "alif", NeuronKind.ALIF, 11),
            _population(rng, "lif", NeuronKind.LIF, 3),
            _population(rng, "if", NeuronKind.IF, 9),
            _population(rng, "readout", NeuronKind.READOUT, len(vocab))]
    wiring = [(INPUT, 0, 0), (0, 0, 1), (2, 0, 1), (0, 1, 0), (3, 1, 1), (1, 2, 0),
              (INPUT, 2, 0), (2, 3, 0), (1, 3, 0), (3, 3, 1)]
    size = lambda s: len(vocab) if s == INPUT else pops[s].size
    projs = []
    for src, dst, delay in wiring:
        if src == INPUT and not input_projections:
            continue
        w = _weights(rng, size(src), pops[dst].size)
        if (src, dst) == (3, 1):
            w[:] = 0
        projs.append(Projection(src=src, dst=dst, delay=delay, weights=w))
    projs[0].weights[-1, :2] = (WEIGHT_MIN, WEIGHT_MAX)
    return Network(vocab=list(vocab), populations=pops, projections=projs, readout=3,
                   meta={"model": {"layers": 2, "name": "test"}, "step": 7}).check()


def _assert_same_network(got, want, meta=None):
    """Assert that ``got`` holds exactly ``want`` (with ``meta`` merged into its metadata)."""
    assert got.vocab == want.vocab
    assert got.readout == want.readout
    assert got.meta == {**want.meta, **(meta or {})}
    assert [(p.name, p.kind) for p in got.populations] == \
           [(p.name, p.kind) for p in want.populations]
    for p, q in zip(got.populations, want.populations):
        for k in Population.PARAMS + ("scale", "perm"):
            np.testing.assert_array_equal(getattr(p, k), getattr(q, k), err_msg=f"{p.name}.{k}")
    assert [(pr.src, pr.dst, pr.delay) for pr in got.projections] == \
           [(pr.src, pr.dst, pr.delay) for pr in want.projections]
    for j, (a, b) in enumerate(zip(got.projections, want.projections)):
        np.testing.assert_array_equal(a.weights, b.weights, err_msg=f"projection {j}")


def _unpack(data):
    """Split an image into (header fields, manifest dict, writable body)."""
    magic, version, hsize, mlen, blen, crc, reserved = _HEADER.unpack_from(data)
    header = {"magic": magic, "version": version, "header_size": hsize, "reserved": reserved}
    start = _HEADER.size
    return header, json.loads(data[start:start + mlen]), bytearray(data[start + mlen:])


def _pack(header, manifest, body):
    """Join the parts of an image again, with true lengths and a correct CRC.

    ``manifest`` is a dict (written as JSON) or the raw bytes to store.
    """
    m = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    body = bytes(body)
    return _HEADER.pack(header["magic"], header["version"], header["header_size"], len(m),
                        len(body), zlib.crc32(m + body), header["reserved"]) + m + body


def _array(manifest, body, name):
    """Writable view of array ``name`` inside ``body``."""
    d = manifest["arrays"][name]
    return np.frombuffer(body, d["dtype"], int(np.prod(d["shape"])), d["offset"])


def _rejected(data, problem):
    """Assert that ``parse_image(data)`` raises ImageError naming ``problem``."""
    with pytest.raises(ImageError, match=re.escape(problem)):
        parse_image(data)


@pytest.fixture
def net():
    return _network(np.random.default_rng(1))


@pytest.fixture
def parts(net):
    """(network, header, manifest, body) of a 4-lane image of ``net``."""
    return (net, *_unpack(image_bytes(net, 4)))


# --- round trip --------------------------------------------------------------------------

@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("seed", [1, 2])
def test_round_trip_bytes(seed, lanes):
    net = _network(np.random.default_rng(seed))
    data = image_bytes(net, lanes, meta={"lanes_note": lanes, "step": 8})
    img = parse_image(data)
    assert img.lanes == lanes
    _assert_same_network(img.net, net, meta={"lanes_note": lanes, "step": 8})


@pytest.mark.parametrize("lanes", LANES)
def test_round_trip_file(tmp_path, lanes):
    net = _network(np.random.default_rng(lanes))
    path = tmp_path / "net.img"
    size = save_image(net, lanes, path)
    assert size == path.stat().st_size
    img = load_image(path)
    assert img.lanes == lanes
    _assert_same_network(img.net, net)
    assert load_image(str(path)).lanes == lanes


@pytest.mark.parametrize("lanes", LANES)
def test_bytes_are_deterministic(lanes):
    data = image_bytes(_network(np.random.default_rng(5)), lanes)
    assert image_bytes(_network(np.random.default_rng(5)), lanes) == data
    assert image_bytes(parse_image(data).net, lanes) == data


def test_round_trip_without_projections():
    pops = [make_population("readout", NeuronKind.READOUT, 2, theta=0)]
    net = Network(vocab=["x", "y"], populations=pops, projections=[], readout=0)
    img = parse_image(image_bytes(net, 4))
    _assert_same_network(img.net, net)


def test_meta_argument_overrides_network_meta(net):
    img = parse_image(image_bytes(net, 2, meta={"step": 99}))
    assert img.net.meta == {"model": {"layers": 2, "name": "test"}, "step": 99}
    assert net.meta["step"] == 7


def test_header_fields(net):
    data = image_bytes(net, 3)
    magic, version, hsize, mlen, blen, crc, reserved = _HEADER.unpack_from(data)
    assert (magic, version, hsize, reserved) == (IMAGE_MAGIC, IMAGE_VERSION, 32, 0)
    assert len(data) == 32 + mlen + blen
    assert crc == zlib.crc32(data[32:])
    m = json.loads(data[32:32 + mlen])
    assert m["lanes"] == 3 and m["vocab"] == VOCAB and m["readout"] == 3
    for name, d in m["arrays"].items():
        assert d["offset"] % 8 == 0, name


def test_bad_network_is_not_written(tmp_path, net):
    net.projections[0].weights = net.projections[0].weights.astype(np.int64) * 2
    with pytest.raises(NetworkError, match="weights outside"):
        save_image(net, 4, tmp_path / "bad.img")
    assert not (tmp_path / "bad.img").exists()


def test_zero_lanes_refused(net):
    with pytest.raises(NetworkError, match="lanes must be at least 1, not 0"):
        image_bytes(net, 0)


# --- lane layout -------------------------------------------------------------------------

@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 16])
def test_lane_layout_holds_every_synapse_once(lanes):
    net = _network(np.random.default_rng(10 + lanes))
    lay = lane_layout(net, lanes)
    per_lane = [-(-p.size // lanes) for p in net.populations]
    assert lay.pop_base == np.cumsum([0] + per_lane[:-1]).tolist()
    assert lay.neurons_per_lane == sum(per_lane)
    assert lay.ptr_entries == sum(net.source_size(pr.src) for pr in net.projections)
    used = [np.zeros(len(a), bool) for a in lay.syn_addr]
    for j, pr in enumerate(net.projections):
        w = pr.weights
        assert lay.seg_len[j].shape == (w.shape[0], lanes)
        assert lay.seg_len[j].sum() == pr.nonzero
        for k in range(w.shape[0]):
            for lane in range(lanes):
                entry = lay.ptr_base[j] + k
                start, count = lay.ptr_start[lane][entry], lay.ptr_len[lane][entry]
                assert count == lay.seg_len[j][k, lane]
                words = slice(start, start + count)
                # Lane `lane` owns targets t with t % lanes == lane; ascending, zeros left out.
                owned = [t for t in range(lane, w.shape[1], lanes) if w[k, t]]
                assert lay.syn_addr[lane][words].tolist() == \
                       [lay.pop_base[pr.dst] + t // lanes for t in owned]
                assert lay.syn_weight[lane][words].tolist() == [w[k, t] for t in owned]
                assert not used[lane][words].any(), "two rows share a synapse word"
                used[lane][words] = True
    assert all(u.all() for u in used), "a lane holds a synapse no row points to"
    assert sum(lay.synapses_per_lane()) == net.nonzero_synapses
    for lane in range(lanes):
        assert np.all(lay.syn_weight[lane] != 0)
        assert np.all(lay.syn_addr[lane] < lay.neurons_per_lane)


def test_lane_layout_of_small_population_leaves_lanes_empty():
    net = _network(np.random.default_rng(3))
    lay = lane_layout(net, 16)
    into_lif = [j for j, pr in enumerate(net.projections) if pr.dst == 1]
    assert into_lif and net.populations[1].size == 3
    for j in into_lif:
        assert not lay.seg_len[j][:, 3:].any()
        for lane in range(3, 16):
            assert not lay.ptr_len[lane][lay.ptr_base[j]:lay.ptr_base[j + 1]].any()


def test_lane_layout_refuses_zero_lanes(net):
    with pytest.raises(NetworkError, match="lanes must be at least 1"):
        lane_layout(net, 0)


# --- bad files ---------------------------------------------------------------------------

def test_empty_file():
    _rejected(b"", "truncated: 0 bytes, shorter than the 32-byte header")


@pytest.mark.parametrize("cut", [5, 8, 20, 31])
def test_truncated_header(net, cut):
    _rejected(image_bytes(net, 1)[:cut], f"truncated: {cut} bytes, shorter than the 32-byte")


@pytest.mark.parametrize("data", [
    np.random.default_rng(0).bytes(200),
    np.random.default_rng(0).bytes(10),
    b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(40),
    b"\x89PNG\r\n\x1a\n",
    b"SPKIMG\x00\x02" + bytes(40),
], ids=["random", "random-short", "png", "png-signature", "other-magic"])
def test_bad_magic(data):
    _rejected(data, "not a spikestream network image (bad magic)")


@pytest.mark.parametrize("version", [0, IMAGE_VERSION + 1, 0xFFFF])
def test_wrong_version(parts, version):
    _, header, m, body = parts
    _rejected(_pack({**header, "version": version}, m, body),
              f"image format version {version}; this spikestream reads versions 1, 2")


def test_version_1_image_loads_as_the_same_network(v1_image):
    """The image shipped before issue 18 is a version-1 file; written again it is version 2,
    and both decode to the same network (kinds keep their version-1 reset modes)."""
    data = v1_image
    assert _HEADER.unpack_from(data)[1] == 1
    old = parse_image(data)
    again = image_bytes(old.net, old.lanes)
    assert _HEADER.unpack_from(again)[1] == IMAGE_VERSION == 2
    new = parse_image(again)
    for p, q in zip(old.net.populations, new.net.populations):
        assert (p.kind, p.reset, p.level_bits, p.output) == (q.kind, q.reset, q.level_bits,
                                                              q.output)
        for k in p.PARAMS:
            assert np.array_equal(getattr(p, k), getattr(q, k))
    for p, q in zip(old.net.projections, new.net.projections):
        assert (p.src, p.dst, p.delay) == (q.src, q.dst, q.delay)
        assert all(np.array_equal(x, y) for x, y in zip(p.synapses(), q.synapses()))


def test_version_1_refuses_version_2_fields(parts):
    _, header, m, body = parts
    m = dict(m)
    m["populations"] = [dict(pd) for pd in m["populations"]]
    _rejected(_pack({**header, "version": 1}, m, body), "the manifest has an unknown key inputs")


def test_wrong_header_size(parts):
    _, header, m, body = parts
    _rejected(_pack({**header, "header_size": 40}, m, body), "header size 40, expected 32")


@pytest.mark.parametrize("end", [-1, -100, 72], ids=["last-byte", "in-body", "in-manifest"])
def test_truncated_body(net, end):
    data = image_bytes(net, 4)
    _rejected(data[:end], f"truncated: {len(data[:end])} bytes, the header promises {len(data)}")


def test_trailing_bytes(net):
    _rejected(image_bytes(net, 4) + b"\0\0\0", "3 unexpected bytes after the end of the image")


def test_every_flipped_payload_byte_is_caught(net):
    data = image_bytes(net, 3)
    missed = []
    for pos in range(32, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        try:
            parse_image(bytes(bad))
        except ImageError as e:
            if "corrupted: checksum mismatch" not in str(e):
                missed.append((pos, str(e)))
        else:
            missed.append((pos, "loaded"))
    assert missed == []


@pytest.mark.parametrize("pos", list(range(28)))
def test_flipped_header_byte_is_caught(net, pos):
    data = bytearray(image_bytes(net, 2))
    data[pos] ^= 0x10
    with pytest.raises(ImageError):
        parse_image(bytes(data))


def test_flipped_crc_field(net):
    data = bytearray(image_bytes(net, 2))
    data[24] ^= 0xFF
    _rejected(bytes(data), "corrupted: checksum mismatch")


# --- inconsistent images (checksum correct) ----------------------------------------------

def test_repacking_unchanged_parts_gives_the_same_image(net):
    data = image_bytes(net, 4)
    header, m, body = _unpack(data)
    assert _pack(header, json.dumps(m, separators=(",", ":")).encode(), body) == data
    _assert_same_network(parse_image(_pack(header, m, body)).net, net)


@pytest.mark.parametrize("manifest, problem", [
    (b"{not json", "inconsistent image: JSONDecodeError"),
    (b"\xff\xfe{}", "inconsistent image: UnicodeDecodeError"),
    (b"[1, 2]", "inconsistent image: the manifest is a JSON list, not an object"),
    (b'"lanes"', "inconsistent image: the manifest is a JSON str, not an object"),
    (b"", "inconsistent image: JSONDecodeError"),
])
def test_manifest_not_parseable(parts, manifest, problem):
    _, header, _, body = parts
    _rejected(_pack(header, manifest, body), problem)


@pytest.mark.parametrize("path, problem", [
    (("lanes",), "lanes"), (("vocab",), "vocab"), (("readout",), "readout"),
    (("formats",), "formats"), (("populations",), "populations"),
    (("projections",), "projections"), (("arrays",), "arrays"),
    (("populations", 1, "kind"), "populations[1].kind"),
    (("populations", 2, "name"), "populations[2].name"),
    (("projections", 0, "delay"), "projections[0].delay"),
    (("projections", 3, "src"), "projections[3].src"),
    (("arrays", "pop2.rho"), "array pop2.rho"),
    (("arrays", "lane3.syn_weight"), "array lane3.syn_weight"),
    (("arrays", "pop0.scale", "offset"), "arrays.pop0.scale.offset"),
])
def test_missing_key(parts, path, problem):
    _, header, m, body = parts
    holder = m
    for key in path[:-1]:
        holder = holder[key]
    del holder[path[-1]]
    _rejected(_pack(header, m, body), f"inconsistent image: {problem} is missing")


def test_missing_meta_is_allowed(parts):
    net, header, m, body = parts
    del m["meta"]
    assert parse_image(_pack(header, m, body)).net.meta == {}


@pytest.mark.parametrize("key, value", [("weight_bits", 4), ("acc_bits", 32),
                                        ("state_bits", 8), ("decay_frac_bits", 16)])
def test_wrong_number_format(parts, key, value):
    _, header, m, body = parts
    m["formats"][key] = value
    _rejected(_pack(header, m, body), "number formats")


def test_extra_number_format(parts):
    _, header, m, body = parts
    m["formats"]["gumbel_bits"] = 8
    _rejected(_pack(header, m, body), "differ from this core's")


@pytest.mark.parametrize("lanes", [0, -3])
def test_lanes_below_one(parts, lanes):
    _, header, m, body = parts
    m["lanes"] = lanes
    _rejected(_pack(header, m, body), f"lanes must be at least 1, not {lanes}")


def test_lanes_not_a_number(parts):
    _, header, m, body = parts
    m["lanes"] = "four"
    _rejected(_pack(header, m, body), "lanes must be an integer")


@pytest.mark.parametrize("lanes", [2, 3, 5])
def test_lanes_disagree_with_stored_layout(parts, lanes):
    # The addresses no longer fit the populations' lane slots; which check fires first
    # depends on the data, so only the error class is pinned here.
    _, header, m, body = parts
    m["lanes"] = lanes
    with pytest.raises(ImageError):
        parse_image(_pack(header, m, body))


@pytest.mark.parametrize("name", ["pop0.alpha", "pop3.scale", "lane0.ptr_start",
                                  "lane3.syn_weight"])
@pytest.mark.parametrize("offset", ["end", "negative", "huge"])
def test_array_outside_body(parts, name, offset):
    _, header, m, body = parts
    m["arrays"][name]["offset"] = {"end": len(body), "negative": -8, "huge": 1 << 40}[offset]
    _rejected(_pack(header, m, body), f"array {name} lies outside the body")


def test_array_shape_past_body(parts):
    _, header, m, body = parts
    m["arrays"]["lane3.syn_addr"]["shape"] = [len(body)]
    _rejected(_pack(header, m, body), "array lane3.syn_addr lies outside the body")


def test_array_wrong_dtype(parts):
    _, header, m, body = parts
    m["arrays"]["pop0.alpha"]["dtype"] = "<i2"
    _rejected(_pack(header, m, body), "array pop0.alpha has dtype <i2, expected <u2")


def test_population_size_disagrees(parts):
    _, header, m, body = parts
    m["populations"][2]["size"] += 1
    _rejected(_pack(header, m, body), "population 'if': 9 neurons stored, header says 10")


def test_unknown_neuron_kind(parts):
    _, header, m, body = parts
    m["populations"][0]["kind"] = "IZHIKEVICH"
    _rejected(_pack(header, m, body), "inconsistent image: population 0 ('alif'): unknown "
                                      "neuron kind 'IZHIKEVICH', not one of LIF, ALIF, IF, "
                                      "READOUT")


@pytest.mark.parametrize("field, value", [("src", 4), ("src", -2), ("dst", 4), ("dst", -1)])
def test_projection_endpoint_not_a_population(parts, field, value):
    _, header, m, body = parts
    m["projections"][2][field] = value
    _rejected(_pack(header, m, body), "projection 2: source")


def test_row_pointer_count_wrong(parts):
    # With input projections, a longer vocabulary means more row pointers than are stored.
    _, header, m, body = parts
    m["vocab"].append("z")
    _rejected(_pack(header, m, body), "row pointers, expected")


def test_address_and_weight_lengths_differ(parts):
    _, header, m, body = parts
    m["arrays"]["lane1.syn_weight"]["shape"][0] -= 1
    _rejected(_pack(header, m, body),
              "lane 1: synapse address and weight arrays differ in length")


def _row(m, body, lane, min_len):
    """Index of the first row pointer in ``lane`` whose row has at least ``min_len`` words."""
    return int(np.flatnonzero(_array(m, body, f"lane{lane}.ptr_len") >= min_len)[0])


def test_row_pointer_past_synapses(parts):
    _, header, m, body = parts
    e = _row(m, body, 2, 1)
    _array(m, body, "lane2.ptr_start")[e] = len(_array(m, body, "lane2.syn_addr"))
    _rejected(_pack(header, m, body), "lane 2: a row pointer reaches past the lane's")


def test_row_length_past_synapses(parts):
    _, header, m, body = parts
    _array(m, body, "lane0.ptr_len")[-1] = 1 << 20
    _rejected(_pack(header, m, body), "lane 0: a row pointer reaches past the lane's")


@pytest.mark.parametrize("addr", [0xFFFF, 500])
def test_synapse_address_beyond_population(parts, addr):
    _, header, m, body = parts
    _array(m, body, "lane1.syn_addr")[0] = addr
    _rejected(_pack(header, m, body), "lane 1: projection 0 targets an address outside its "
                                      "population")


def test_synapse_address_below_population(parts):
    net, header, m, body = parts
    lay = lane_layout(net, 4)
    j = next(j for j, pr in enumerate(net.projections) if pr.dst == 2 and pr.nonzero)
    lane = next(lane for lane in range(4) if lay.seg_len[j][:, lane].any())
    k = int(np.flatnonzero(lay.seg_len[j][:, lane])[0])
    word = lay.ptr_start[lane][lay.ptr_base[j] + k]
    _array(m, body, f"lane{lane}.syn_addr")[word] = lay.pop_base[2] - 1
    _rejected(_pack(header, m, body), f"lane {lane}: projection {j} targets an address outside")


def _append_word(m, body, lane, addr, weight):
    """Move ``lane``'s synapse arrays to the end of ``body`` with one more word; its index."""
    for name, value in (("syn_addr", addr), ("syn_weight", weight)):
        d = m["arrays"][f"lane{lane}.{name}"]
        words = bytes(_array(m, body, f"lane{lane}.{name}"))
        body += bytes((-len(body)) % 8)
        d["offset"] = len(body)
        body += words + np.array([value], d["dtype"]).tobytes()
        d["shape"][0] += 1
    return d["shape"][0] - 1


def _insert_word(m, body, lane, entry, addr, weight):
    """Put one more word at the start of row pointer ``entry`` of ``lane``, keeping the
    rows canonical (every later row starts one word later)."""
    start = _array(m, body, f"lane{lane}.ptr_start")
    pos = int(start[entry])
    start[entry + 1:] += 1
    _array(m, body, f"lane{lane}.ptr_len")[entry] += 1
    del start                                   # a view of body, which grows below
    for name, value in (("syn_addr", addr), ("syn_weight", weight)):
        d = m["arrays"][f"lane{lane}.{name}"]
        words = _array(m, body, f"lane{lane}.{name}")
        words = np.concatenate([words[:pos], np.array([value], d["dtype"]), words[pos:]])
        body += bytes((-len(body)) % 8)
        d["offset"] = len(body)
        body += words.tobytes()
        d["shape"][0] += 1


def test_synapse_into_empty_lane_slot(parts):
    # lif has 3 neurons, so lane 3 of 4 holds none: its address pop_base + 0 would be neuron 3.
    net, header, m, body = parts
    lay = lane_layout(net, 4)
    j = next(j for j, pr in enumerate(net.projections) if pr.dst == 1 and pr.nonzero)
    _insert_word(m, body, 3, lay.ptr_base[j], lay.pop_base[1], 5)
    _rejected(_pack(header, m, body), f"lane 3: projection {j} targets an address outside")


def test_duplicated_synapse(parts):
    _, header, m, body = parts
    e = _row(m, body, 0, 2)
    s = _array(m, body, "lane0.ptr_start")[e]
    addr = _array(m, body, "lane0.syn_addr")
    addr[s + 1] = addr[s]
    _rejected(_pack(header, m, body), "lane 0: syn_addr is not the canonical layout of its "
                                      "synapses (a row's targets must ascend, each once)")


def test_synapses_out_of_order(parts):
    # Same network, but two words of one row swapped: only the canonical rule catches it.
    _, header, m, body = parts
    e = _row(m, body, 0, 2)
    s = _array(m, body, "lane0.ptr_start")[e]
    for name in ("lane0.syn_addr", "lane0.syn_weight"):
        a = _array(m, body, name)
        a[s], a[s + 1] = a[s + 1], a[s]
    _rejected(_pack(header, m, body), "lane 0: syn_addr is not the canonical layout")


def test_rows_share_words(parts):
    # Two rows of one projection point at the same words.
    net, header, m, body = parts
    lay = lane_layout(net, 4)
    rows = lay.ptr_base[0] + np.flatnonzero(lay.seg_len[0][:, 0])
    start, length = _array(m, body, "lane0.ptr_start"), _array(m, body, "lane0.ptr_len")
    start[rows[1]], length[rows[1]] = start[rows[0]], length[rows[0]]
    _rejected(_pack(header, m, body), "lane 0: ptr_start is not the canonical layout")


def test_stray_synapse_word(parts):
    # A valid word that no row points to.
    _, header, m, body = parts
    _append_word(m, body, 0, 0, 5)
    _rejected(_pack(header, m, body), "lane 0: syn_addr is not the canonical layout")


def test_weight_stored_as_zero(parts):
    _, header, m, body = parts
    _array(m, body, "lane0.syn_weight")[0] = 0
    _rejected(_pack(header, m, body), "is not the canonical layout of its synapses")


def test_readout_size_differs_from_vocabulary():
    net = _network(np.random.default_rng(4), input_projections=False)
    header, m, body = _unpack(image_bytes(net, 4))
    m["vocab"].append("z")
    _rejected(_pack(header, m, body),
              "inconsistent network: readout population has 7 neurons but the vocabulary "
              "has 8 tokens")


def test_repeated_vocabulary_in_image(parts):
    _, header, m, body = parts
    m["vocab"][1] = m["vocab"][0]
    _rejected(_pack(header, m, body), "inconsistent network: vocabulary has repeated tokens: "
                                      "'a' is token 0 and token 1")


def test_readout_index_not_readout(parts):
    _, header, m, body = parts
    m["readout"] = 0
    _rejected(_pack(header, m, body), "readout population 'alif' is ALIF, which spikes")


@pytest.mark.parametrize("src, dst", [(0, 0), (2, 0), (3, 3)])
def test_delay_zero_projection_backwards(parts, src, dst):
    net, header, m, body = parts
    j = next(j for j, pr in enumerate(net.projections) if (pr.src, pr.dst) == (src, dst))
    m["projections"][j]["delay"] = 0
    _rejected(_pack(header, m, body), f"projection {j} ({src} -> {dst}): a delay-0 projection "
                                      "must come from an input or an earlier population")


def test_delay_beyond_the_format(parts):
    _, header, m, body = parts
    m["projections"][1]["delay"] = 256
    _rejected(_pack(header, m, body), "delay must be an integer 0..255, not 256")


@pytest.mark.parametrize("name, value, problem", [
    ("pop0.alpha", DECAY_ONE + 1, "population 'alif': alpha outside 0..256"),
    ("pop0.alpha", 0xFFFF, "population 'alif': alpha outside 0..256"),
    ("pop0.rho", DECAY_ONE + 1, "population 'alif': rho outside 0..256"),
    ("pop2.perm", 9, "population 'if': perm is not a permutation"),
])
def test_parameter_out_of_range(parts, name, value, problem):
    _, header, m, body = parts
    _array(m, body, name)[0] = value
    _rejected(_pack(header, m, body), f"inconsistent network: {problem}")


# --- loading from the file system ----------------------------------------------------------

def test_load_missing_path(tmp_path):
    path = tmp_path / "nothing.img"
    with pytest.raises(ImageError, match=re.escape(f"{path}: no such image file")):
        load_image(path)


def test_load_folder(tmp_path):
    with pytest.raises(ImageError, match=re.escape(f"{tmp_path}: is a folder, not an image")):
        load_image(tmp_path)


def test_load_names_the_file(tmp_path, net):
    path = tmp_path / "bad.img"
    path.write_bytes(image_bytes(net, 2)[:-1])
    with pytest.raises(ImageError, match=re.escape(f"{path}: truncated:")):
        load_image(path)


# --- Network.check -----------------------------------------------------------------------

def _small(vocab=("a", "b", "c"), hidden=None, w_in=None, w_out=None):
    """A valid two-population network, with parts replaced for the check cases."""
    hidden = hidden or make_population("hidden", NeuronKind.LIF, 4)
    readout = make_population("readout", NeuronKind.READOUT, 3, theta=0)
    w_in = np.ones((len(vocab), hidden.size), np.int8) if w_in is None else w_in
    w_out = np.ones((hidden.size, 3), np.int8) if w_out is None else w_out
    return Network(vocab=list(vocab), populations=[hidden, readout],
                   projections=[Projection(INPUT, 0, 0, w_in), Projection(0, 1, 0, w_out)],
                   readout=1)


def test_small_network_is_valid():
    assert _small().check() is not None


@pytest.mark.parametrize("value", [WEIGHT_MAX + 1, WEIGHT_MIN - 1, 1000])
def test_weight_outside_int8(value):
    w = np.ones((3, 4), np.int64)
    w[1, 2] = value
    with pytest.raises(NetworkError, match=re.escape("projection 0 (-1 -> 0): weights outside "
                                                     "-128..127")):
        _small(w_in=w).check()


def test_extreme_int8_weights_are_valid():
    w = np.full((3, 4), WEIGHT_MIN, np.int64)
    w[0] = WEIGHT_MAX
    _small(w_in=w).check()


def _fan_in_network(fan_in, bias=0, split=1):
    """``fan_in`` sources of weight 127 into one neuron (over ``split`` projections)."""
    wide = make_population("wide", NeuronKind.IF, fan_in // split, alpha=DECAY_ONE)
    one = make_population("one", NeuronKind.LIF, 1, bias=bias)
    readout = make_population("readout", NeuronKind.READOUT, 2, theta=0)
    projs = [Projection(0, 1, 0, np.full((wide.size, 1), WEIGHT_MAX, np.int8))
             for _ in range(split)]
    return Network(vocab=["a", "b"], populations=[wide, one, readout], projections=projs,
                   readout=2)


def test_accumulator_overflow_possible():
    with pytest.raises(NetworkError, match=re.escape(f"population 'one': a neuron's summed "
                                                     f"|weights| times spike values "
                                                     f"({70000 * WEIGHT_MAX}) could "
                                                     f"overflow the accumulator (max {ACC_MAX})")):
        _fan_in_network(70000).check()


def test_accumulator_overflow_summed_over_projections():
    with pytest.raises(NetworkError, match="could overflow the accumulator"):
        _fan_in_network(70000, split=2).check()


def test_accumulator_limit_is_exact():
    fan_in, rest = divmod(ACC_MAX, WEIGHT_MAX)      # 66052 * 127 + 3 == ACC_MAX
    _fan_in_network(fan_in, bias=rest).check()
    _fan_in_network(fan_in, bias=-rest).check()
    with pytest.raises(NetworkError, match=re.escape(f"({ACC_MAX + 1})")):
        _fan_in_network(fan_in, bias=rest + 1).check()


@pytest.mark.parametrize("perm", [[0, 0, 2, 3], [1, 2, 3, 4], [0, 1, 2, -1]])
def test_perm_not_a_permutation(perm):
    hidden = make_population("hidden", NeuronKind.LIF, 4, perm=perm)
    with pytest.raises(NetworkError, match="population 'hidden': perm is not a permutation"):
        _small(hidden=hidden).check()


@pytest.mark.parametrize("vocab, problem", [(("a", "b", "a"), "'a' is token 0 and token 2"),
                                            (("x", "x", "x"), "'x' is token 0 and token 1")])
def test_repeated_vocabulary(vocab, problem):
    with pytest.raises(NetworkError, match=re.escape(f"vocabulary has repeated tokens: {problem}")):
        _small(vocab=vocab).check()


def _edit(edit):
    net = _small()
    edit(net)
    return net


@pytest.mark.parametrize("edit, problem", [
    (lambda n: setattr(n, "vocab", []), "vocabulary is empty"),
    (lambda n: setattr(n, "readout", 2), "readout index 2 is not a population"),
    (lambda n: setattr(n, "readout", 0), "readout population 'hidden' is LIF, which spikes"),
    (lambda n: n.populations[1].alpha.__setitem__(0, DECAY_ONE + 1),
     "population 'readout': alpha outside 0..256"),
    (lambda n: n.populations[0].theta.__setitem__(0, STATE_MAX + 1),
     "population 'hidden': theta outside -32768..32767"),
    (lambda n: setattr(n.populations[0], "bias", np.zeros(3, np.int64)),
     "population 'hidden': bias has shape (3,), expected (4,)"),
    (lambda n: setattr(n.projections[1], "delay", -1), "delay must be an integer 0..255, not -1"),
    (lambda n: setattr(n.projections[1], "src", 1), "a delay-0 projection must come from"),
    (lambda n: setattr(n.projections[1], "src", 5), "no such source"),
    (lambda n: setattr(n.projections[1], "dst", 2), "no such target population"),
    (lambda n: n.projections.reverse(), "projections must be listed grouped by target "
                                        "population, in population order"),
    (lambda n: setattr(n.projections[0], "weights", np.ones((4, 4), np.int8)),
     "weights have shape (4, 4), expected (3, 4)"),
], ids=["empty-vocab", "readout-index", "readout-kind", "alpha", "theta", "shape", "delay",
        "delay0-backwards", "source", "target", "grouping", "weight-shape"])
def test_check_errors(edit, problem):
    with pytest.raises(NetworkError, match=re.escape(problem)):
        _edit(edit).check()


def test_readout_size_differs_in_memory():
    net = _small(vocab=("a", "b", "c", "d"))
    with pytest.raises(NetworkError, match="readout population has 3 neurons but the "
                                           "vocabulary has 4 tokens"):
        net.check()


# --- defects found in review, now fixed ----------------------------------------------------

def test_addresses_beyond_16_bits_are_refused_or_kept():
    readout = make_population("readout", NeuronKind.READOUT, 2, theta=0)
    big = make_population("big", NeuronKind.LIF, 70000)
    w_in = np.zeros((2, 70000), np.int8)
    w_in[0, 65541] = 5
    net = Network(vocab=["a", "b"], populations=[readout, big],
                  projections=[Projection(1, 0, 1, np.ones((70000, 2), np.int8)),
                               Projection(INPUT, 1, 0, w_in)],
                  readout=0).check()
    try:
        data = image_bytes(net, 1)
    except (NetworkError, ImageError):
        return
    np.testing.assert_array_equal(parse_image(data).net.projections[1].weights, w_in)


def test_non_integer_weights_are_refused():
    w = np.ones((3, 4))
    w[0, 1] = 1.7
    with pytest.raises(NetworkError):
        _small(w_in=w).check()


def test_nonzero_reserved_word_is_refused(parts):
    _, header, m, body = parts
    with pytest.raises(ImageError):
        parse_image(_pack({**header, "reserved": 1}, m, body))


# --- sparse projections --------------------------------------------------------------------

def test_a_projection_built_dense_keeps_its_array():
    w = np.zeros((3, 4), np.int8)
    pr = Projection(INPUT, 0, 0, w)
    assert pr.weights is w and not pr.is_sparse and pr.shape == (3, 4) and pr.nonzero == 0
    w[1, 2] = -5                                # editing the array edits the projection
    assert pr.nonzero == 1
    assert [a.tolist() for a in pr.synapses()] == [[1], [2], [-5]]
    pr.weights = np.ones((3, 4), np.int64)
    assert pr.nonzero == 12 and pr.dtype == np.int64


def test_from_synapses_sorts_drops_zeros_and_refuses_duplicates():
    pr = Projection.from_synapses(0, 1, 1, (3, 5), [2, 0, 1, 0], [1, 4, 0, 2], [7, -3, 0, 9])
    assert pr.is_sparse and pr.shape == (3, 5) and pr.nonzero == 3
    assert [a.tolist() for a in pr.synapses()] == [[0, 0, 2], [2, 4, 1], [9, -3, 7]]
    assert "sparse" in repr(pr)
    with pytest.raises(NetworkError, match=re.escape("synapse (0, 2) appears twice")):
        Projection.from_synapses(0, 1, 1, (3, 5), [0, 1, 0], [2, 2, 2], [1, 1, 1])
    with pytest.raises(NetworkError, match="outside the projection's shape"):
        Projection.from_synapses(0, 1, 1, (3, 5), [3], [0], [1])
    with pytest.raises(NetworkError, match="outside the projection's shape"):
        Projection.from_synapses(0, 1, 1, (3, 5), [0], [-1], [1])
    with pytest.raises(NetworkError, match="must be integers"):
        Projection.from_synapses(0, 1, 1, (3, 5), [0], [1], [1.5])
    with pytest.raises(NetworkError, match="one length"):
        Projection.from_synapses(0, 1, 1, (3, 5), [0, 1], [1], [1])


def test_reading_weights_of_a_sparse_projection_makes_it_dense():
    pr = Projection.from_synapses(INPUT, 0, 0, (2, 3), [0, 1], [2, 0], [4, -4])
    w = pr.weights
    assert w.dtype == np.int64 and w.tolist() == [[0, 0, 4], [-4, 0, 0]]
    assert not pr.is_sparse and pr.weights is w
    w[0, 0] = 1
    assert pr.nonzero == 3


@pytest.mark.parametrize("lanes", [1, 3, 4, 16])
def test_sparse_and_dense_networks_lay_out_and_save_alike(lanes):
    net = _network(np.random.default_rng(20 + lanes))
    sparse = Network(vocab=net.vocab, populations=net.populations, readout=net.readout,
                     meta=net.meta, projections=[
                         Projection.from_synapses(pr.src, pr.dst, pr.delay, pr.shape,
                                                  *np.nonzero(pr.weights),
                                                  pr.weights[np.nonzero(pr.weights)])
                         for pr in net.projections]).check()
    assert all(pr.is_sparse for pr in sparse.projections)
    assert image_bytes(sparse, lanes) == image_bytes(net, lanes)
    a, b = lane_layout(sparse, lanes), lane_layout(net, lanes)
    for k in ("ptr_start", "ptr_len", "syn_addr", "syn_weight", "seg_len"):
        for x, y in zip(getattr(a, k), getattr(b, k)):
            assert x.dtype == y.dtype == np.int64 and np.array_equal(x, y), k
    assert all(pr.is_sparse for pr in sparse.projections)     # nothing made them dense


def test_a_loaded_network_is_sparse_and_checked_as_such(parts):
    net, header, m, body = parts
    img = parse_image(_pack(header, m, body))
    assert all(pr.is_sparse for pr in img.net.projections)
    assert img.net.nonzero_synapses == net.nonzero_synapses
    # a weight out of range in a sparse projection is refused like a dense one
    pr = img.net.projections[0]
    rows, cols, values = pr.synapses()
    img.net.projections[0] = Projection.from_synapses(pr.src, pr.dst, pr.delay, pr.shape, rows,
                                                      cols, values.astype(np.int64) * 300)
    with pytest.raises(NetworkError, match="weights outside -128..127"):
        img.net.check()


def test_a_dense_uint64_weight_does_not_wrap_into_range():
    w = np.zeros((3, 4), np.uint64)
    w[0, 0] = np.uint64(2 ** 64 - 1)            # -1 if it were cast to int64 first
    with pytest.raises(NetworkError, match="weights outside"):
        _small(w_in=w).check()
