"""spikestream.memory_map: pure Python, word packing, fitting an image, the writes that load it, the
history of delays (sources' kept timesteps), the per-step input writes and output reads, and
the timing the core runs to."""

import subprocess
import sys

import numpy as np
import pytest

from spikestream.timing import core_timing
from spikestream.memory_map import (CoreConfig, CoreFitError, CoreReg, Field, Mem, Outputs, Read,
                                    WordLayout, Write, history_layout, image_writes,
                                    input_writes, read_outputs, settings_writes)
from spikestream.formats import NeuronKind, ResetMode
from spikestream.timing import DEFAULT_TIMING
from spikestream.image import Image, image_bytes, parse_image
from spikestream.network import (INPUT, Network, Projection, core_layout, lane_layout,
                                 make_population, spike_input)


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
    lay = core_layout(net, 3)
    assert config.neurons_per_lane >= lay.neurons_per_lane
    writes = image_writes(image, config)
    by_mem = {m: [w for w in writes if w.mem == m] for m in Mem}
    assert len(by_mem[Mem.PARAM]) == sum(p.size for p in net.populations)
    assert len(by_mem[Mem.PTR]) == 3 * (lay.ptr_entries + 1)       # and each lane's end
    assert len(by_mem[Mem.SYN]) == sum(lay.synapses_per_lane())
    assert len(by_mem[Mem.POP]) == 2 and len(by_mem[Mem.PROJ]) == 3
    assert {w.addr: w.data for w in by_mem[Mem.CORE]} == {
        CoreReg.POPS: 2, CoreReg.PROJS: 3, CoreReg.READOUT: 1, CoreReg.VOCAB: 4,
        CoreReg.SAMPLE: 1, CoreReg.TOKENS: 1, CoreReg.INPUTS: 0}
    proj = config.layout(Mem.PROJ).unpack(by_mem[Mem.PROJ][0].data)
    assert proj == {"src": 0, "token": 1, "dst": 0, "delay": 0, "slot": 0, "first": 0,
                    "last": 0, "ptr_base": 0}
    # h keeps 2 timesteps (its delay-1 self projection), which reads the entry before.
    proj = config.layout(Mem.PROJ).unpack(by_mem[Mem.PROJ][1].data)
    assert (proj["src"], proj["token"], proj["delay"], proj["slot"], proj["first"],
            proj["last"]) == (0, 0, 1, 1, 0, 1)
    src = {w.addr: config.layout(Mem.SRC).unpack(w.data) for w in by_mem[Mem.SRC]}
    assert src == {0: {"keep": 1, "first": 0, "last": 1, "base": 0, "stride": 4, "size": 0},
                   1: {"keep": 0, "first": 0, "last": 0, "base": 0, "stride": 0, "size": 0}}
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
                       max_projs=1, max_vocab=2, spike_depth=16)
    with pytest.raises(CoreFitError) as e:
        small.check_image(image)
    msg = str(e.value)
    lay = lane_layout(net, 2)
    assert f"neurons per lane: needs {lay.neurons_per_lane}, the core has 8 " \
           f"({lay.neurons_per_lane - 8} too many)" in msg
    for what in ("synapse words per lane", "row pointers per lane", "populations: needs 2",
                 "route groups (projections of one source and delay): needs 3",
                 "vocabulary tokens: needs 4",
                 "spike buffer entries (the largest source population or input stride): "
                 "needs 40"):
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


def _general_net():
    """Token and two spike inputs, delays up to 5, an output that nothing reads, a graded
    population, no readout."""
    rng = np.random.default_rng(3)
    w = lambda shape: rng.integers(1, 9, shape)
    pops = [make_population("a", NeuronKind.LIF, 7, alpha=200, theta=40, bias=3),
            make_population("b", NeuronKind.IF, 5, alpha=256, theta=9, level_bits=3,
                            reset=ResetMode.SUBTRACT, output=True),
            make_population("c", NeuronKind.READOUT, 3, alpha=100, output=True)]
    projs = [Projection(INPUT, 0, 2, w((4, 7))), Projection(spike_input(1), 0, 0, w((6, 7))),
             Projection(0, 0, 5, w((7, 7))), Projection(spike_input(0), 1, 3, w((2, 5))),
             Projection(0, 1, 0, w((7, 5))), Projection(1, 2, 0, w((5, 3)))]
    return Network(vocab=list("abcd"), populations=pops, projections=projs,
                   inputs=[("left", 2), ("right", 6)]).check()


def test_history_layout_and_the_words_that_load_it():
    net = _general_net()
    hist = history_layout(net, 2)
    # a keeps 6 timesteps (delay 5), b 1 (an output nothing reads), c none (non-spiking),
    # the inputs 4 (delay 3) and 1; populations first, then the inputs.
    assert hist.slots == {0: 6, 1: 1, spike_input(0): 4, spike_input(1): 1}
    assert hist.first == {0: 0, 1: 6, spike_input(0): 7, spike_input(1): 11}
    assert hist.base == {0: 0, 1: 24, spike_input(0): 0, spike_input(1): 8}
    assert hist.stride == {0: 4, 1: 3, spike_input(0): 2, spike_input(1): 6}
    assert (hist.entries, hist.queue_words, hist.input_words) == (12, 27, 14)
    assert history_layout(net, 2, input_ids=4).stride[spike_input(1)] == 4
    image = Image(net=net, lanes=2)
    config = CoreConfig.for_image(image)
    assert (config.max_delay, config.max_level_bits, config.max_inputs) == (5, 3, 2)
    writes = image_writes(image, config)
    src = {w.addr: config.layout(Mem.SRC).unpack(w.data) for w in writes if w.mem == Mem.SRC}
    assert src[config.max_pops + 0] == {"keep": 1, "first": 7, "last": 10, "base": 0,
                                        "stride": 2, "size": 2}
    assert src[2]["keep"] == 0
    projs = [config.layout(Mem.PROJ).unpack(w.data) for w in writes if w.mem == Mem.PROJ]
    # Each reads d entries before its source's current one (first, when written).
    assert [(p["slot"], p["first"], p["last"]) for p in projs] == [
        (0, 0, 0), (11, 11, 11), (1, 0, 5), (8, 7, 10), (0, 0, 5), (6, 6, 6)]
    regs = {w.addr: w.data for w in writes if w.mem == Mem.CORE}
    assert (regs[CoreReg.SAMPLE], regs[CoreReg.TOKENS], regs[CoreReg.INPUTS]) == (0, 1, 2)


def test_check_image_names_the_general_limits():
    image = Image(net=_general_net(), lanes=2)
    small = CoreConfig.for_image(image).replace(max_delay=4, queue_depth=20, max_regions=11,
                                                max_inputs=1, input_depth=13,
                                                max_level_bits=2)
    with pytest.raises(CoreFitError) as e:
        small.check_image(image)
    msg = str(e.value)
    assert "\n" not in msg
    for what in ("projection delay (timesteps): needs 5, the core has 4",
                 "spike queue words per lane (kept timesteps x rows, all populations): "
                 "needs 27, the core has 20",
                 "spike table entries (kept timesteps, all sources): needs 12, the core has 11",
                 "spike inputs: needs 2, the core has 1",
                 "input id words (kept timesteps x stride, all spike inputs): needs 14, "
                 "the core has 13",
                 "spike value bits (level_bits): needs 3, the core has 2"):
        assert what in msg
    # Fewer ids kept per timestep: the input memory needed shrinks with them.
    assert CoreConfig.for_image(image).replace(input_ids=4, input_depth=12).fits(image)


def test_input_writes():
    image = Image(net=_general_net(), lanes=2)
    config = CoreConfig.for_image(image)
    at = lambda k, i: (k << config.input_bits) + i
    writes = input_writes(image, config, [np.array([1, 1]), [0, 1, 0, 0, 1, 1]])
    assert writes == [Write(Mem.INPUT, 0, at(0, 0), 0), Write(Mem.INPUT, 0, at(0, 1), 1),
                      Write(Mem.INCOUNT, 0, 0, 2), Write(Mem.INPUT, 0, at(1, 0), 1),
                      Write(Mem.INPUT, 0, at(1, 1), 4), Write(Mem.INPUT, 0, at(1, 2), 5),
                      Write(Mem.INCOUNT, 0, 1, 3)]
    assert input_writes(image, config, [None, None]) == [Write(Mem.INCOUNT, 0, 0, 0),
                                                         Write(Mem.INCOUNT, 0, 1, 0)]
    for bad, match in (([None], "2 spike inputs, 1 spike vectors"),
                       ([[1, 1, 1], None], "'left': expected a 0/1 vector of 2"),
                       ([[2, 0], None], "'left'"),
                       ([[0.5, 0], None], "'left'")):
        with pytest.raises(ValueError, match=match):
            input_writes(image, config, bad)
    narrow = config.replace(input_ids=2)
    with pytest.raises(ValueError, match="'right': 3 spikes in one timestep, the core keeps "
                                         "at most 2"):
        input_writes(image, narrow, [None, [0, 1, 0, 0, 1, 1]])


def test_output_reads_decode_what_the_core_holds():
    # A core's words after a STEP in which b (an output) spiked 2 at 0, 1 at 3, 7 at 4,
    # and c's membranes are -5, 6, 7: the reads ask for exactly those words.
    image = Image(net=_general_net(), lanes=2)
    config = CoreConfig.for_image(image)
    queue, state = config.layout(Mem.QUEUE), config.layout(Mem.STATE)
    lay = lane_layout(image.net, 2)
    words = {(Mem.SPIKES, 0, (1 << config.spike_bits) + k): x
             for k, x in enumerate([0, 2, 3, 25])}                # bounds 0, 2, 3; qbase 25
    words.update({(Mem.QUEUE, 0, 25): queue.pack(row=0, q=2),     # neuron 0
                  (Mem.QUEUE, 0, 26): queue.pack(row=2, q=7),     # neuron 4
                  (Mem.QUEUE, 1, 25): queue.pack(row=1, q=1)})    # neuron 3
    for n, v in enumerate([-5, 6, 7]):
        words[Mem.STATE, n % 2, lay.pop_base[2] + n // 2] = state.pack(v=v, a=0, s=0)
    asked = []

    def read(request):
        asked.append(request)
        return [words[request.mem, request.lane, request.addr + k] for k in range(request.count)]

    out = read_outputs(read, image, config)
    assert [x.tolist() for x in out.spikes[1]] == [[0, 3, 4], [2, 1, 7]]
    assert out.membranes[2].tolist() == [-5, 6, 7]
    assert out == Outputs(spikes={1: (np.array([0, 3, 4]), np.array([2, 1, 7]))},
                          membranes={2: np.array([-5, 6, 7])})
    assert asked == [Read(Mem.SPIKES, 0, 1 << config.spike_bits, 4),
                     Read(Mem.QUEUE, 0, 25, 2), Read(Mem.QUEUE, 1, 25, 1),
                     Read(Mem.STATE, 0, lay.pop_base[2], 2),
                     Read(Mem.STATE, 1, lay.pop_base[2], 1)]
