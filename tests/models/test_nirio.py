"""NIR import and export (models/nirio.py) against graphs and traces made by snnTorch and
Norse themselves (tests/fixtures/nir, made by make_fixtures.py there)."""

import json
import os
import time
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest

from models import nirio
from models.golden import GoldenCore
from models.nirio import (NirImportError, export_nir, fixture_report, graph_to_float,
                          network_to_float, quantise, read_graph, simulate_float, write_graph)
from spikestream.formats import NEURON_KIND_CUBA, NEURON_KIND_SPIKES, NeuronKind, ResetMode
from spikestream.image import load_image
from spikestream.network import Network, Projection, make_population, spike_input

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nir"
NAMES = ["norse_cubalif", "norse_lifbox", "norse_lifbox_subtract", "snntorch_leaky_subtract",
         "snntorch_leaky_zero", "snntorch_rleaky", "snntorch_synaptic"]


def fixture(name):
    nir_path, npz_path = FIXTURES / f"{name}.nir", FIXTURES / f"{name}.npz"
    with np.load(npz_path, allow_pickle=False) as z:
        trace = {k: z[k] for k in z.files}
    opts = dict(dt=float(trace["dt"]), reset=str(trace["reset"]),
                cuba_input=str(trace["cuba_input"]))
    return nir_path, npz_path, trace, opts


def one_line_error(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    for w in words:
        assert w in msg, msg
    return msg


def assert_same_network(a, b):
    assert [(s.name, s.size) for s in a.inputs] == [(s.name, s.size) for s in b.inputs]
    assert [p.name for p in a.populations] == [p.name for p in b.populations]
    for p, q in zip(a.populations, b.populations):
        assert (p.kind, p.reset, p.level_bits, bool(p.output)) == \
            (q.kind, q.reset, q.level_bits, bool(q.output)), p.name
        for k in p.PARAMS + ("perm",):
            assert np.array_equal(getattr(p, k), getattr(q, k)), (p.name, k)
    assert [(r.src, r.dst, r.delay) for r in a.projections] == \
        [(r.src, r.dst, r.delay) for r in b.projections]
    for r, s in zip(a.projections, b.projections):
        assert np.array_equal(r.weights, s.weights)


# --- the fixtures ---------------------------------------------------------------------------

def test_fixtures_are_there_and_small():
    assert sorted(p.stem for p in FIXTURES.glob("*.nir")) == NAMES
    for name in NAMES:
        for ext in (".nir", ".npz"):
            assert (FIXTURES / (name + ext)).stat().st_size < 200_000


@pytest.mark.parametrize("name", NAMES)
def test_fixture_float_exact_and_golden_explained(name):
    nir_path, npz_path, trace, _ = fixture(name)
    r = fixture_report(nir_path, npz_path, lanes=3)
    assert r["steps"] == len(trace["input"]) >= 50
    assert set(r["layers"]) == {k[7:] for k in trace if k.startswith("spikes/")}
    for layer, d in r["layers"].items():
        assert d["spikes"] > 0, layer
        # The float import reproduces the library's own spikes exactly.
        assert d["float_mismatches"] == 0, (layer, d)
        # Every integer mismatch is either quantisation (the float membrane within the
        # integer model's rounding of the threshold) or follows an earlier mismatch.
        assert d["unexplained"] == 0, (layer, d)
        assert d["golden_mismatches"] == d["within_bound"] + d["after_divergence"]
        assert d["within_one_step"] <= d["within_bound"]
    assert r["value_error"] < 1e-5 and r["mem_error"] < 1e-5


def test_fixture_node_types():
    types = {n: sorted(set(fixture_report(*fixture(n)[:2])["nodes"].values())) for n in NAMES}
    assert types["snntorch_rleaky"] == ["Affine", "Input", "LIF", "Output"]
    assert types["snntorch_synaptic"] == ["Affine", "CubaLIF", "Input", "Output"]
    assert types["norse_lifbox"] == ["Affine", "Input", "LI", "LIF", "Output"]
    assert types["norse_cubalif"] == ["Affine", "CubaLIF", "Input", "Output"]


def test_recurrent_fixture_has_a_delayed_self_projection():
    nir_path, _, _, opts = fixture("snntorch_rleaky")
    fnet = graph_to_float(read_graph(nir_path), **opts)
    rec = fnet.population("1.lif")
    assert sorted((pr.src, pr.delay) for pr in fnet.projections if pr.dst == rec) == \
        [(spike_input(0), 0), (rec, 1)]
    # The recurrent Affine's bias is a bias of the layer.
    assert np.any(fnet.populations[rec].bias != 0)


def test_cuba_bias_goes_through_a_constant_source():
    nir_path, _, _, opts = fixture("snntorch_synaptic")
    fnet = graph_to_float(read_graph(nir_path), **opts)
    assert fnet.populations[0].name == nirio.BIAS_POPULATION
    assert [pr.dst for pr in fnet.projections if pr.src == 0] == [1, 2]


@pytest.mark.parametrize("name, wrong", [
    ("snntorch_leaky_subtract", {"reset": "zero"}),          # NIR's own reset
    ("snntorch_leaky_subtract", {"reset": "subtract"}),      # reset, then decay
    ("norse_lifbox_subtract", {"reset": "subtract-next"}),
    ("norse_cubalif", {"cuba_input": "euler"}),               # what the file's w_in says
])
def test_the_options_the_file_lacks_matter(name, wrong):
    nir_path, _, trace, opts = fixture(name)
    fnet = graph_to_float(read_graph(nir_path), **dict(opts, **wrong))
    ft = simulate_float(fnet, [trace["input"]])
    bad = sum(int((ft.spikes[fnet.population(k[7:])] != trace[k]).sum())
              for k in trace if k.startswith("spikes/"))
    assert bad > 0


def test_dt_is_needed_for_snntorch_graphs():
    nir_path, _, _, _ = fixture("snntorch_leaky_zero")
    with pytest.raises(NirImportError) as e:
        graph_to_float(read_graph(nir_path))
    one_line_error(e, "'1'", "LIF", "--dt")


def test_report_catches_an_integer_model_that_computes_something_else(monkeypatch):
    nir_path, npz_path, _, _ = fixture("snntorch_leaky_zero")
    real = nirio._run_golden

    def late(net, inputs, lanes=1):       # a golden model whose first layer lags one step
        spikes, v = real(net, inputs, lanes)
        spikes[0] = np.concatenate([np.zeros_like(spikes[0][:1]), spikes[0][:-1]])
        return spikes, v

    monkeypatch.setattr(nirio, "_run_golden", late)
    assert fixture_report(nir_path, npz_path)["layers"]["1"]["unexplained"] > 0


# --- the float model is the integer model's schedule ---------------------------------------

def exact_network(seed):
    """A random integer network whose arithmetic is exact in float: scale 1, decays 0 or 1,
    reset to zero (so the float model, firing on v > theta - 1/2, is the integer one)."""
    rng = np.random.default_rng(seed)
    n_in = [int(rng.integers(3, 7)) for _ in range(int(rng.integers(1, 3)))]
    kinds = [NeuronKind.LIF, NeuronKind.IF, NeuronKind.CUBA_LIF, NeuronKind.READOUT,
             NeuronKind.CUBA_LI]
    pops, projs = [], []
    for i in range(int(rng.integers(2, 6))):
        kind = kinds[int(rng.integers(len(kinds)))]
        n = int(rng.integers(2, 8))
        pops.append(make_population(
            f"p{i}", kind, n, alpha=rng.choice([0, 256], n),
            rho=rng.choice([0, 256], n) if NEURON_KIND_CUBA[kind] else 0,
            theta=rng.integers(5, 60, n) if NEURON_KIND_SPIKES[kind] else 0,
            bias=rng.integers(-3, 4, n),
            reset=ResetMode.ZERO if NEURON_KIND_SPIKES[kind] else None, output=True))
    for dst in range(len(pops)):
        for src in [spike_input(k) for k in range(len(n_in))] + \
                [j for j, p in enumerate(pops) if p.spiking]:
            if rng.random() < 0.4:
                continue
            delay = int(rng.integers(0, 5))
            if src >= dst:
                delay = max(delay, 1)
            shape = (n_in[-2 - src] if src < 0 else pops[src].size, pops[dst].size)
            projs.append(Projection(src, dst, delay, rng.integers(-20, 21, shape)))
    projs.sort(key=lambda pr: pr.dst)
    return Network(vocab=[], populations=pops, projections=projs,
                   inputs=[(f"in{k}", n) for k, n in enumerate(n_in)]).check()


@pytest.mark.parametrize("seed", range(6))
def test_float_schedule_equals_golden_on_exact_networks(seed):
    net = exact_network(seed)
    rng = np.random.default_rng(100 + seed)
    T = 30
    xs = [(rng.random((T, s.size)) < 0.4).astype(np.int64) for s in net.inputs]
    fnet = network_to_float(net)
    for p in fnet.populations:
        p.theta = p.theta - 0.5
    ft = simulate_float(fnet, xs)
    core = GoldenCore(net, lanes=2)
    fired = 0
    for t in range(T):
        r = core.step(spikes=[x[t] for x in xs])
        for i, p in enumerate(net.populations):
            assert np.array_equal(r.values[i][0].numpy(), ft.spikes[i][t]), (t, p.name)
            assert np.array_equal(r.v[i][0].numpy(), np.where(ft.spikes[i][t] > 0, 0,
                                                               ft.v[i][t])), (t, p.name)
            fired += int(ft.spikes[i][t].sum())
    assert max(np.abs(v).max() for v in ft.v) < 30_000     # no saturation in the integers
    assert fired > 0


# --- small graphs: one node type each ----------------------------------------------------

def lif(n, tau, thr, r=None, v_leak=0.0):
    tau = np.full(n, float(tau))
    return nir.LIF(tau=tau, r=tau.copy() if r is None else np.full(n, float(r)),
                   v_leak=np.full(n, float(v_leak)), v_threshold=np.full(n, float(thr)),
                   v_reset=np.zeros(n))


def graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_delay_threshold_scale_and_integrator():
    x = np.zeros((12, 2))
    x[1, 0] = x[4, 1] = 1
    g = graph({"in": nir.Input(input_type={"input": np.array([2])}),
               "d": nir.Delay(delay=np.array([3.0, 0.0])),
               "w": nir.Linear(weight=np.array([[2.0, 0.0], [0.0, 3.0]])),
               "th": nir.Threshold(threshold=np.array([1.0, 2.5])),
               "s": nir.Scale(scale=np.array([0.5, -1.0])),
               "sum": nir.I(r=np.ones(2)),
               "o1": nir.Output(output_type={"output": np.array([2])}),
               "o2": nir.Output(output_type={"output": np.array([2])})},
              [("in", "d"), ("d", "w"), ("w", "th"), ("th", "o1"), ("in", "s"),
               ("s", "sum"), ("sum", "o2")])
    fnet = graph_to_float(g)
    ft = simulate_float(fnet, [x])
    want = np.zeros((12, 2))
    want[4, 0] = want[4, 1] = 1         # input 0 three steps late, input 1 at once
    assert np.array_equal(ft.outputs["o1"], want)
    assert np.array_equal(ft.outputs["o2"], np.cumsum(x * [0.5, -1.0], axis=0))
    th = fnet.population("th")
    assert fnet.populations[th].kind == NeuronKind.LIF
    assert sorted(pr.delay for pr in fnet.projections if pr.dst == th) == [0, 3]


def test_affine_bias_behind_a_delay_starts_late():
    g = graph({"in": nir.Input(input_type={"input": np.array([1])}),
               "d": nir.Delay(delay=np.array([2.0])),
               "a": nir.Affine(weight=np.array([[1.0]]), bias=np.array([0.5])),
               "li": nir.I(r=np.ones(1)), "out": nir.Output(output_type={"output": np.array([1])})},
              [("in", "a"), ("a", "d"), ("d", "li"), ("li", "out")])
    ft = simulate_float(graph_to_float(g), [np.zeros((5, 1))])
    assert ft.outputs["out"][:, 0].tolist() == [0, 0, 0.5, 1.0, 1.5]


def test_loop_without_delay_is_cut_at_the_first_node():
    n = 3
    g = graph({"in": nir.Input(input_type={"input": np.array([n])}),
               "a": lif(n, 4, 1.0), "b": lif(n, 4, 1.0),
               "ab": nir.Linear(weight=np.eye(n)), "ba": nir.Linear(weight=np.eye(n)),
               "out": nir.Output(output_type={"output": np.array([n])})},
              [("in", "a"), ("a", "ab"), ("ab", "b"), ("b", "ba"), ("ba", "a"), ("b", "out")])
    fnet = graph_to_float(g)
    assert [p.name for p in fnet.populations] == ["a", "b"]
    assert sorted((pr.src, pr.dst, pr.delay) for pr in fnet.projections) == \
        [(spike_input(0), 0, 0), (0, 1, 0), (1, 0, 1)]


def test_lif_discretisation():
    dt, tau, r, v_leak = 0.5, 4.0, 2.0, 0.4
    g = graph({"in": nir.Input(input_type={"input": np.array([1])}),
               "w": nir.Linear(weight=np.array([[3.0]])),
               "lif": lif(1, tau, 100.0, r=r, v_leak=v_leak),
               "out": nir.Output(output_type={"output": np.array([1])})},
              [("in", "w"), ("w", "lif"), ("lif", "out")])
    fnet = graph_to_float(g, dt=dt)
    p = fnet.populations[0]
    assert p.alpha[0] == 1 - dt / tau and p.bias[0] == dt * v_leak / tau
    assert fnet.projections[0].weights[0, 0] == 3.0 * dt * r / tau
    x = np.array([[1.0], [0.0], [1.0]])
    v, want = 0.0, []
    for t in range(3):          # forward Euler of tau dv/dt = (v_leak - v) + r I
        v = v + dt / tau * (v_leak - v + r * 3.0 * x[t, 0])
        want.append(v)
    assert np.allclose(simulate_float(fnet, [x]).v[0][:, 0], want, rtol=1e-15, atol=0)


# --- what has no spikestream form: one line naming the node ------------------------------

def unsupported_nodes():
    w1 = np.ones((2, 1, 3))
    return {
        "Conv1d": nir.Conv1d(input_shape=4, weight=w1, stride=1, padding=0, dilation=1,
                             groups=1, bias=np.zeros(2)),
        "Conv2d": nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1,
                             padding=0, dilation=1, groups=1, bias=np.zeros(2)),
        "SumPool2d": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                   padding=np.array([0, 0])),
        "AvgPool2d": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                   padding=np.array([0, 0])),
        "Flatten": nir.Flatten(input_type={"input": np.array([2, 2])}),
    }


@pytest.mark.parametrize("kind", ["Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten"])
def test_unsupported_node_types_name_the_node(kind, tmp_path):
    g = graph({"in": nir.Input(input_type={"input": np.array([4])}),
               "layer7": unsupported_nodes()[kind], "lif": lif(4, 2, 1.0),
               "out": nir.Output(output_type={"output": np.array([4])})},
              [("in", "layer7"), ("layer7", "lif"), ("lif", "out")])
    with pytest.raises(NirImportError) as e:
        graph_to_float(g)
    one_line_error(e, "'layer7'", kind)
    path = tmp_path / "g.nir"
    nir.write(path, g)
    with pytest.raises(NirImportError) as e:
        read_graph(path)
    one_line_error(e, str(path), "'layer7'", kind)


@pytest.mark.parametrize("case, words", [
    ("v_reset", ["'lif'", "v_reset"]),
    ("two_dim_input", ["'in'", "one-dimensional"]),
    ("li_feeds_a_layer", ["'li'", "only spikes"]),
    ("threshold_after_li", ["'li'", "(LI)", "'th'", "only spikes"]),
    ("fractional_delay", ["'d'", "Delay", "whole number"]),
    ("linear_loop", ["loop", "'a'", "'b'", "no neuron"]),
    ("missing_node", ["'ghost'", "not a node"]),
    ("size_mismatch", ["sizes do not match"]),
])
def test_graphs_without_a_spikestream_form(case, words):
    inp = nir.Input(input_type={"input": np.array([2])})
    out = nir.Output(output_type={"output": np.array([2])})
    nodes = {"in": inp, "lif": lif(2, 2, 1.0), "out": out}
    edges = [("in", "lif"), ("lif", "out")]
    if case == "v_reset":
        nodes["lif"].v_reset = np.array([0.0, 0.1])
    elif case == "two_dim_input":
        nodes["in"] = nir.Input(input_type={"input": np.array([2, 3])})
    elif case == "li_feeds_a_layer":
        nodes["li"] = nir.LI(tau=np.full(2, 2.0), r=np.ones(2), v_leak=np.zeros(2))
        edges = [("in", "li"), ("li", "lif"), ("lif", "out")]
    elif case == "threshold_after_li":
        nodes["li"] = nir.LI(tau=np.full(2, 2.0), r=np.ones(2), v_leak=np.zeros(2))
        nodes["th"] = nir.Threshold(threshold=np.ones(2))
        edges = [("in", "li"), ("li", "th"), ("th", "out")]
    elif case == "fractional_delay":
        nodes["d"] = nir.Delay(delay=np.array([1.5, 1.0]))
        edges = [("in", "d"), ("d", "lif"), ("lif", "out")]
    elif case == "linear_loop":
        nodes["a"] = nir.Linear(weight=np.eye(2))
        nodes["b"] = nir.Linear(weight=np.eye(2))
        edges = [("in", "a"), ("a", "b"), ("b", "a"), ("a", "lif"), ("lif", "out")]
    elif case == "missing_node":
        edges = [("in", "lif"), ("lif", "ghost")]
    elif case == "size_mismatch":
        nodes["w"] = nir.Linear(weight=np.ones((2, 3)))
        edges = [("in", "w"), ("w", "lif"), ("lif", "out")]
    with pytest.raises(NirImportError) as e:
        graph_to_float(graph(nodes, edges))
    one_line_error(e, *words)


def test_a_graph_too_big_to_expand_is_refused_before_it_is_built():
    n = 100_000         # a one-to-one Scale of 100,000 neurons: a 10^10-entry matrix
    g = graph({"in": nir.Input(input_type={"input": np.array([n])}),
               "s": nir.Scale(scale=np.ones(n)), "lif": lif(n, 2, 1.0),
               "out": nir.Output(output_type={"output": np.array([n])})},
              [("in", "s"), ("s", "lif"), ("lif", "out")])
    with pytest.raises(NirImportError) as e:
        graph_to_float(g)
    one_line_error(e, "'s'", "10000000000", "at most")


# --- hostile files --------------------------------------------------------------------------

def write_h5(path, build):
    with h5py.File(path, "w") as f:
        f.create_dataset("version", data="1.0.8", dtype=h5py.string_dtype())
        build(f.create_group("node"))
    return path


def node(group, name, kind, **arrays):
    g = group.create_group(name)
    g.create_dataset("type", data=kind, dtype=h5py.string_dtype())
    for k, v in arrays.items():
        g.create_dataset(k, data=v)
    return g


def small_graph(root, edges=(("in", "lif"), ("lif", "out")), **extra):
    root.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
    nodes = root.create_group("nodes")
    node(nodes, "in", "Input", shape=np.array([2]))
    node(nodes, "lif", "LIF", tau=np.full(2, 2.0), r=np.ones(2), v_leak=np.zeros(2),
         v_threshold=np.ones(2), v_reset=np.zeros(2))
    node(nodes, "out", "Output", shape=np.array([2]))
    for k, build in extra.items():
        build(nodes, k)
    root.create_dataset("edges", data=np.array(edges, dtype=object),
                        dtype=h5py.string_dtype())
    return nodes


def test_a_well_formed_hand_written_file_reads(tmp_path):
    g = read_graph(write_h5(tmp_path / "ok.nir", small_graph))
    fnet = graph_to_float(g)
    assert [p.name for p in fnet.populations] == ["lif"] and fnet.inputs == [("in", 2)]


def huge(nodes, name):
    g = node(nodes, name, "Linear")
    g.create_dataset("weight", shape=(200_000, 200_000), dtype="f8", chunks=(64, 64),
                     compression="gzip")


def deep(nodes, name):
    g = nodes
    for i in range(12):
        g = node(g, f"{name}{i}" if g is nodes else "sub", "NIRGraph").create_group("nodes")


@pytest.mark.parametrize("case, words", [
    ("not_hdf5", ["not a NIR graph", "not an HDF5 file"]),
    ("empty", ["not a NIR graph"]),
    ("no_graph", ["no 'node' group"]),
    ("huge_shape", ["nodes/w/weight", "declares 40000000000 values"]),
    ("missing_node", ["'ghost'", "not a node"]),
    ("linear_loop", ["loop", "no neuron"]),
    ("unknown_type", ["'odd'", "'Teleporter'", "not a NIR node type"]),
    ("type_not_text", ["'odd'", "type", "not text"]),
    ("weight_is_text", ["'w'", "weight", "not numbers"]),
    ("lif_shapes_disagree", ["'bad'", "LIF", "inconsistent"]),
    ("external_link", ["'elsewhere'", "link"]),
    ("external_data", ["'w'", "outside the file"]),
    ("too_deep", ["nested deeper"]),
])
def test_hostile_files_give_one_line(case, words, tmp_path):
    path = tmp_path / f"{case}.nir"
    if case == "not_hdf5":
        path.write_bytes(b"definitely not HDF5\n" * 50)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "no_graph":
        with h5py.File(path, "w") as f:
            f.create_dataset("version", data=1)
    elif case == "huge_shape":
        write_h5(path, lambda r: small_graph(r, w=huge))
        assert path.stat().st_size < 100_000
    elif case == "missing_node":
        write_h5(path, lambda r: small_graph(r, edges=(("in", "lif"), ("lif", "ghost"))))
    elif case == "linear_loop":
        lin = lambda nodes, k: node(nodes, k, "Linear", weight=np.eye(2))
        write_h5(path, lambda r: small_graph(
            r, edges=(("in", "a"), ("a", "b"), ("b", "a"), ("a", "lif"), ("lif", "out")),
            a=lin, b=lin))
    elif case == "unknown_type":
        write_h5(path, lambda r: small_graph(r, odd=lambda n, k: node(n, k, "Teleporter")))
    elif case == "type_not_text":
        write_h5(path, lambda r: small_graph(
            r, odd=lambda n, k: n.create_group(k).create_dataset("type", data=7)))
    elif case == "weight_is_text":
        def text_weight(nodes, k):
            g = node(nodes, k, "Linear")
            g.create_dataset("weight", data="1 2 3", dtype=h5py.string_dtype())
        write_h5(path, lambda r: small_graph(r, w=text_weight))
    elif case == "lif_shapes_disagree":
        write_h5(path, lambda r: small_graph(r, bad=lambda n, k: node(
            n, k, "LIF", tau=np.ones(3), r=np.ones(2), v_leak=np.zeros(2),
            v_threshold=np.ones(2))))
    elif case == "external_link":
        (tmp_path / "other.h5").write_bytes(b"")
        write_h5(path, lambda r: small_graph(r, elsewhere=lambda n, k: n.__setitem__(
            k, h5py.ExternalLink(str(tmp_path / "other.h5"), "/x"))))
    elif case == "external_data":
        raw = tmp_path / "raw.bin"
        raw.write_bytes(np.eye(2).tobytes())

        def outside(nodes, k):
            g = node(nodes, k, "Linear")
            g.create_dataset("weight", shape=(2, 2), dtype="f8", external=[(str(raw), 0, 32)])
        write_h5(path, lambda r: small_graph(r, w=outside))
    elif case == "too_deep":
        write_h5(path, lambda r: small_graph(r, sub=deep))
    with pytest.raises(NirImportError) as e:
        graph_to_float(read_graph(path))
    one_line_error(e, *words)


def test_a_file_on_which_the_hdf5_library_loops_is_stopped(monkeypatch):
    # Found by flipping bytes of norse_lifbox.nir: libhdf5 spins forever reading it (nir.read
    # and h5py alike); the reader's child process is stopped instead.
    monkeypatch.setattr(nirio, "READ_TIMEOUT", 3)
    t = time.monotonic()
    with pytest.raises(NirImportError) as e:
        read_graph(FIXTURES / "hostile" / "libhdf5_loops.nir")
    one_line_error(e, "libhdf5_loops.nir", "had not read the file after 3 s")
    assert time.monotonic() - t < 20


def test_a_folder_or_fifo_is_refused(tmp_path):
    with pytest.raises(NirImportError) as e:
        read_graph(tmp_path)
    one_line_error(e, "folder")
    fifo = tmp_path / "fifo.nir"
    os.mkfifo(fifo)
    with pytest.raises(NirImportError) as e:
        read_graph(fifo)
    one_line_error(e, "not a regular file")


# --- export -> import -----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_fixture_round_trip(name, tmp_path):
    nir_path, _, _, opts = fixture(name)
    net = quantise(graph_to_float(read_graph(nir_path), **opts))
    path = tmp_path / "back.nir"
    write_graph(export_nir(net), path)
    again = quantise(graph_to_float(read_graph(path)))     # dt, reset: from the file
    assert_same_network(net, again)


def random_network(seed):
    """A random general network NIR can express: every kind but ALIF, each reset mode,
    delays, recurrence, several inputs, any scales and neuron orders."""
    rng = np.random.default_rng(seed)
    n_in = [int(rng.integers(3, 9)) for _ in range(int(rng.integers(1, 3)))]
    kinds = [NeuronKind.LIF, NeuronKind.IF, NeuronKind.CUBA_LIF, NeuronKind.READOUT,
             NeuronKind.CUBA_LI]
    pops = []
    for i in range(int(rng.integers(2, 6))):
        kind = kinds[int(rng.integers(len(kinds)))]
        n = int(rng.integers(2, 10))
        spiking = NEURON_KIND_SPIKES[kind]
        alpha = 256 if kind == NeuronKind.IF or (kind == NeuronKind.READOUT
                                                 and rng.random() < 0.3) \
            else rng.integers(0, 256, n)
        pops.append(make_population(
            f"p{i}", kind, n, alpha=alpha, theta=rng.integers(1, 3000, n) if spiking else 0,
            rho=rng.integers(0, 256, n) if NEURON_KIND_CUBA[kind] else 0,
            bias=rng.integers(-300, 300, n), scale=rng.uniform(10, 900, n),
            perm=rng.permutation(n),
            reset=[ResetMode.ZERO, ResetMode.SUBTRACT, ResetMode.SUBTRACT_NEXT][
                int(rng.integers(3))] if spiking else None,
            output=bool(rng.random() < 0.5) or not spiking))
    projs = []
    for dst, p in enumerate(pops):
        for src in [spike_input(k) for k in range(len(n_in))] + \
                [j for j, q in enumerate(pops) if q.spiking]:
            if rng.random() < 0.5:
                continue
            delay = int(rng.integers(0, 4))
            if src >= dst:
                delay = max(delay, 1)
            shape = (n_in[-2 - src] if src < 0 else pops[src].size, p.size)
            projs.append(Projection(src, dst, delay,
                                    rng.integers(-127, 128, shape) * (rng.random(shape) < .6)))
        if p.alpha[0] == 256 and not p.cuba and not any(pr.dst == dst for pr in projs):
            p.bias[:] = 0       # a leak-free bias needs an incoming Affine to sit in
    return Network(vocab=[], populations=pops, projections=projs,
                   inputs=[(f"in{k}", n) for k, n in enumerate(n_in)]).check()


@pytest.mark.parametrize("seed", range(12))
def test_random_network_round_trip(seed, tmp_path):
    net = random_network(seed)
    path = tmp_path / "net.nir"
    write_graph(export_nir(net), path)
    assert_same_network(net, quantise(graph_to_float(read_graph(path))))


def test_export_refuses_what_nir_lacks():
    pop = make_population("a", NeuronKind.ALIF, 2, alpha=200, theta=10, rho=100, jump=5)
    net = Network(vocab=[], populations=[pop], projections=[
        Projection(spike_input(0), 0, 0, np.ones((2, 2), np.int64))], inputs=[("x", 2)])
    with pytest.raises(NirImportError) as e:
        export_nir(net)
    one_line_error(e, "'a'", "adaptive threshold")
    net.populations[0] = make_population("g", NeuronKind.LIF, 2, alpha=200, theta=10,
                                         level_bits=2, reset=ResetMode.ZERO)
    with pytest.raises(NirImportError) as e:
        export_nir(net)
    one_line_error(e, "'g'", "graded")


# --- the command ------------------------------------------------------------------------

def test_cli_import_then_export(tmp_path, capsys):
    nir_path, _, _, opts = fixture("snntorch_rleaky")
    img, back = tmp_path / "r.img", tmp_path / "back.nir"
    nirio.main(["import", str(nir_path), "-o", str(img), "--lanes", "3", "--dt", "1e-4",
                "--reset", "subtract-next", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["lanes"] == 3 and result["max_delay"] == 1
    image = load_image(img)
    assert image.lanes == 3
    assert_same_network(image.net, quantise(graph_to_float(read_graph(nir_path), **opts)))
    nirio.main(["export", str(img), "-o", str(back)])
    assert_same_network(image.net, quantise(graph_to_float(read_graph(back))))


@pytest.mark.parametrize("args, words", [
    (["import", "{bad}", "-o", "{out}", "--lanes", "2"], ["error: ", "not a NIR graph"]),
    (["import", "{fix}", "-o", "{out}", "--lanes", "2"], ["error: ", "--dt"]),
    (["import", "{fix}", "-o", "{out}", "--lanes", "0", "--dt", "1e-4"], ["error: ", "--lanes"]),
    (["import", "{fix}", "-o", "{out}", "--lanes", "2", "--dt", "-1"], ["error: ", "--dt"]),
    (["import", "{fix}", "-o", "{fix}", "--lanes", "2", "--dt", "1e-4"],
     ["error: ", "overwrite the input"]),
    (["import", "{fix}", "-o", "{out}", "--dt", "1e-4"], ["error: ", "--lanes"]),
    (["export", "{bad}", "-o", "{out}"], ["error: "]),
    (["export", "{img}", "-o", "{out}", "--dt", "1"], ["error: ", "--dt", "only for import"]),
])
def test_cli_errors_are_one_line(args, words, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 100)
    fill = dict(bad=str(bad), out=str(tmp_path / "o.img"), img=str(bad),
                fix=str(FIXTURES / "snntorch_leaky_zero.nir"))
    with pytest.raises(SystemExit) as e:
        nirio.main([a.format(**fill) for a in args])
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith("error: ")
    for w in words:
        assert w in msg, msg
    assert not (tmp_path / "o.img").exists()


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        nirio.main(["import", "x.nir", "--lanes", "2"])      # no -o
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    with pytest.raises(SystemExit) as e:
        nirio.main(["convert", "x.nir", "-o", "y"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
