"""``spikestream run``: any image on spike inputs or tokens, outputs to a .npz."""

import pickle
import re

import numpy as np
import pytest
import torch

from models.golden import GoldenCore
from spikestream.board import SHIPPED_IMAGE
from spikestream.image import Image, load_image, save_image
from sim.netgen import example_network as general_net
from sw import run as sw_run

@pytest.fixture
def files(tmp_path):
    img = tmp_path / "net.img"
    save_image(general_net(), 3, img)
    x = (np.random.default_rng(2).random((30, 12)) < 0.3).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    return img, tmp_path / "x.npy", x

def test_run_writes_every_output_in_source_order(files, tmp_path, capsys):
    img, xpath, x = files
    sw_run.main([str(img), "--inputs", str(xpath), "-o", str(tmp_path / "y.npz"), "--json"])
    out = capsys.readouterr().out
    assert '"steps": 30' in out and "readout argmax after the last step" in out
    y = np.load(tmp_path / "y.npz")
    assert sorted(y.files) == ["cycles", "readout/ro", "spikes/c", "spikes/g", "spikes/h",
                               "tokens"]
    # The same run by hand on the golden model, un-permuted with perm.
    image = load_image(img)
    net = image.net
    core = GoldenCore(net, 3)
    for t in range(30):
        r = core.step(spikes=[torch.from_numpy(x[t, :8]).long(),
                              torch.from_numpy(x[t, 8:]).long()])
        for i, p in enumerate(net.populations[:3]):
            src = np.zeros(p.size, np.int64)
            src[p.perm] = r.values[i][0].numpy()
            assert np.array_equal(y[f"spikes/{p.name}"][t], src), (t, p.name)
        assert np.array_equal(y["readout/ro"][t], r.v[3][0].numpy())
        assert y["tokens"][t] == int(r.logits[0].argmax()) and y["cycles"][t] == int(r.cycles[0])
    assert y["spikes/g"].max() > 1          # multi-level spikes reached the file
    assert y["spikes/h"].any() and y["spikes/c"].any()

def test_one_output_also_gives_spikes_or_values(tmp_path):
    net = general_net()
    for p in net.populations:
        p.output = False
    net.populations[3].output = True
    save_image(net, 2, tmp_path / "one.img")
    np.save(tmp_path / "x.npy", np.ones((5, 12), np.uint8))
    sw_run.main([str(tmp_path / "one.img"), "--inputs", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npz")])
    y = np.load(tmp_path / "y.npz")
    assert np.array_equal(y["values"], y["readout/ro"] / 4.0)

def test_tokens_on_the_shipped_lm_match_the_golden_model(tmp_path):
    image = load_image(SHIPPED_IMAGE)
    sw_run.main([str(SHIPPED_IMAGE), "--text", "ROMEO:", "-o", str(tmp_path / "y.npz")])
    y = np.load(tmp_path / "y.npz")
    core = GoldenCore(image.net, image.lanes)
    ids = [image.net.vocab.index(c) for c in "ROMEO:"]
    want = [int(core.step([t]).token[0]) for t in ids]
    assert y["tokens"].tolist() == want
    assert y["readout/readout"].shape == (6, len(image.net.vocab))

@pytest.mark.parametrize("make, problem", [
    (lambda: np.ones((30, 11), np.uint8), r"shape \(30, 11\); the network's spike inputs "
                                          r"need \[T, 12\] \(a: 8, b: 4\)"),
    (lambda: np.full((30, 12), 2, np.uint8), "spikes must be 0 or 1"),
    (lambda: np.array([[None] * 12] * 3, dtype=object), "not a NumPy .npy array"),
    (lambda: np.ones((0, 12), np.uint8), "0 timesteps; a run takes 1 to"),
    (lambda: np.array([["a"] * 12]), "is not numbers"),
])
def test_bad_inputs_get_one_line(files, tmp_path, make, problem):
    img, _, _ = files
    bad = tmp_path / "bad.npy"
    a = make()
    np.save(bad, a, allow_pickle=a.dtype == object)
    with pytest.raises(SystemExit) as e:
        sw_run.main([str(img), "--inputs", str(bad), "-o", str(tmp_path / "y.npz")])
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)
    assert re.search(problem, str(e.value)), str(e.value)
    assert not (tmp_path / "y.npz").exists()

def test_a_pickle_is_never_loaded(files, tmp_path):
    img, _, _ = files
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    bad = tmp_path / "evil.npy"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(SystemExit, match="error: .*not a NumPy .npy array"):
        sw_run.main([str(img), "--inputs", str(bad), "-o", str(tmp_path / "y.npz")])
    assert not marker.exists()

def test_the_output_never_overwrites_an_input(files):
    img, xpath, _ = files
    before = xpath.read_bytes()
    with pytest.raises(SystemExit, match="would overwrite the input"):
        sw_run.main([str(img), "--inputs", str(xpath), "-o", str(xpath)])
    assert xpath.read_bytes() == before

def test_missing_inputs_and_wrong_kinds(files, tmp_path):
    img, xpath, _ = files
    out = str(tmp_path / "y.npz")
    with pytest.raises(SystemExit, match="has spike inputs: give them"):
        sw_run.main([str(img), "-o", out])
    with pytest.raises(SystemExit, match="has no token input"):
        sw_run.main([str(img), "--inputs", str(xpath), "--text", "ab", "-o", out])
    with pytest.raises(SystemExit, match="not in the vocabulary"):
        sw_run.main([str(SHIPPED_IMAGE), "--text", "\x1b[2J", "-o", out])

def test_the_host_procedure_on_the_golden_board_equals_the_golden_model(tmp_path):
    """run_board through the protocol (spike inputs written, outputs read back from QUEUE,
    SPIKES and STATE words) against the golden board gives run_golden's arrays."""
    from spikestream.memory_map import CoreConfig
    from sw.client import Client
    from sw.transport import GoldenTransport
    net = general_net(3)
    image = Image(net=net, lanes=3)
    config = CoreConfig.for_image(image)
    x = (np.random.default_rng(4).random((25, 12)) < 0.35).astype(np.int64)
    spikes = sw_run.read_spikes(x, net)
    want = sw_run.output_arrays(net, sw_run.run_golden(image, None, spikes))
    with GoldenTransport(config) as transport:
        client = Client(transport, progress=False)
        client.identify()
        got = sw_run.output_arrays(net, sw_run.run_board(client, image, None, spikes))
    assert sorted(got) == sorted(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
