"""spikestream.memory_map: pure Python, word packing, fitting an image, the writes that load it, and
the timing the core runs to."""

import subprocess
import sys

import numpy as np
import pytest

from spikestream.timing import core_timing
from spikestream.memory_map import (CoreConfig, CoreFitError, CoreReg, Mem, WordLayout, Field,
                           image_writes, settings_writes)
from spikestream.formats import NeuronKind
from spikestream.timing import DEFAULT_TIMING
from spikestream.image import Image, image_bytes, parse_image
from spikestream.network import INPUT, Network, Projection, lane_layout, make_population


def _net(hidden=10, vocab=4):
    rng = np.random.default_rng(0)
    h = make_population("h", NeuronKind.ALIF, hidden, alpha=200, theta=50, rho=250, jump=7,
                        bias=rng.integers(-5, 5, hidden))
    ro = make_population("ro", NeuronKind.READOUT, vocab, alpha=128)
    w = lambda shape: rng.integers(-9, 9, shape) * (rng.random(shape) < 0.5)
    return Network(vocab=list("abcdefgh"[:vocab]), populations=[h, ro], readout=1, projections=[
        Projection(INPUT, 0, 0, w((vocab, hidden))), Projection(0, 0, 1, w((hidden, hidden))),
        Projection(0, 1, 0, w((hidden, vocab)))]).check()


def test_pure_python():
    code = ("import sys, spikestream.memory_map; "
            "sys.exit(any(m.split('.')[0] == 'amaranth' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_pack_unpack():
    layout = WordLayout(Field("a", 3), Field("b", 5, True), Field("c", 1))
    assert layout.bits == 9
    word = layout.pack(a=5, b=-3, c=1)
    assert word == 5 | ((-3 & 31) << 3) | (1 << 8)
    assert layout.unpack(word) == {"a": 5, "b": -3, "c": 1}
    with pytest.raises(ValueError, match="b = 16 does not fit 5 signed bits"):
        layout.pack(a=0, b=16, c=0)
    with pytest.raises(ValueError):
        layout.pack(a=0, b=0)


def test_for_image_fits_and_loads_everything():
    net = _net()
    image = parse_image(image_bytes(net, 3))
    config = CoreConfig.for_image(image)
    assert config.lanes == 3 and config.stages == 2
    lay = lane_layout(net, 3)
    assert config.neurons_per_lane >= lay.neurons_per_lane
    writes = image_writes(image, config)
    by_mem = {m: [w for w in writes if w.mem == m] for m in Mem}
    assert len(by_mem[Mem.PARAM]) == sum(p.size for p in net.populations)
    assert len(by_mem[Mem.PTR]) == 3 * lay.ptr_entries
    assert len(by_mem[Mem.SYN]) == sum(lay.synapses_per_lane())
    assert len(by_mem[Mem.POP]) == 2 and len(by_mem[Mem.PROJ]) == 3
    assert {w.addr: w.data for w in by_mem[Mem.CORE]} == {
        CoreReg.POPS: 2, CoreReg.PROJS: 3, CoreReg.READOUT: 1, CoreReg.VOCAB: 4}
    proj = config.layout(Mem.PROJ).unpack(by_mem[Mem.PROJ][0].data)
    assert proj == {"src": 0, "input": 1, "dst": 0, "delay": 0, "ptr_base": 0}
    for w in writes:
        assert 0 <= w.addr < config.depth(w.mem)
        assert 0 <= w.data < 1 << config.layout(w.mem).bits
    assert settings_writes(temperature_word=7, seed=0)[0].addr == CoreReg.TEMPERATURE
    with pytest.raises(ValueError):
        settings_writes(temperature_word=1 << 16)


def test_check_image_names_every_shortfall():
    net = _net(hidden=40)
    image = Image(net=net, lanes=2)
    small = CoreConfig(lanes=2, neurons_per_lane=8, syn_depth=16, ptr_depth=16, max_pops=1,
                       max_projs=2, max_vocab=2, spike_depth=16)
    with pytest.raises(CoreFitError) as e:
        small.check_image(image)
    msg = str(e.value)
    lay = lane_layout(net, 2)
    assert f"neurons per lane: needs {lay.neurons_per_lane}, the core has 8 " \
           f"({lay.neurons_per_lane - 8} too many)" in msg
    for what in ("synapse words per lane", "row pointers per lane", "populations: needs 2",
                 "projections: needs 3", "vocabulary tokens: needs 4",
                 "spike buffer entries (the largest source population): needs 40"):
        assert what in msg
    with pytest.raises(CoreFitError, match="laid out for 2 lanes, the core has 4"):
        CoreConfig(lanes=4).check_image(image)
    assert not small.fits(image) and CoreConfig.for_image(image).fits(image)


def test_config_checks():
    with pytest.raises(ValueError, match="stages"):
        CoreConfig(lanes=17, stages=2)
    with pytest.raises(ValueError, match="positive integer"):
        CoreConfig(neurons_per_lane=0)


def test_default_timing_is_the_default_core():
    assert core_timing(CoreConfig().stages) == DEFAULT_TIMING
