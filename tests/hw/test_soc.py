# amaranth: UnusedElaboratable=no
"""hw.soc in amaranth.sim at its pins: a request bit-banged into ``rx`` at 4 clocks per bit
is answered on ``tx``; the LEDs say what happened. (The whole-SoC behaviour is tested in
cocotb: tests/sim/test_soc_cocotb.py.)

(The first line silences UnusedElaboratable: a SoC whose constructor refuses its divisor is
never elaborated, on purpose.)
"""

import pytest
from amaranth.sim import Simulator

from spikestream import protocol as P
from spikestream.memory_map import CoreConfig
from hw.soc import LED, SoC
from hw.uart import FRAME_BITS
from sim.link_host import parse_responses

CONFIG = CoreConfig(lanes=2, neurons_per_lane=16, syn_depth=64, ptr_depth=32, max_pops=4,
                    max_projs=8, max_vocab=8, spike_depth=16)
CLOCK_HZ, BAUD = 400_000, 100_000          # 4 clocks per bit


def run_soc(soc, wire):
    """Send ``wire`` on ``rx``; return what came back on ``tx`` and the LEDs at the end."""
    divisor = soc.divisor
    got = bytearray()
    leds = []

    async def host(ctx):
        for byte in wire:
            for bit in [0, *((byte >> n) & 1 for n in range(8)), 1]:
                ctx.set(soc.rx, bit)
                await ctx.tick().repeat(divisor)
        # The answer is at most a few dozen bytes; wait for the line to stay idle.
        quiet = 0
        while quiet < 3 * FRAME_BITS * divisor:
            await ctx.tick()
            busy = ctx.get(soc.leds) >> LED.BUSY & 1
            quiet = quiet + 1 if ctx.get(soc.tx) and not busy else 0
        leds.append(ctx.get(soc.leds))

    async def line(ctx):
        # A UART receiver model: find the start bit's falling edge, sample each bit in its
        # middle.
        countdown, bits = None, []
        async for _, _, tx in ctx.tick().sample(soc.tx):
            if countdown is None:
                if tx == 0:
                    countdown, bits = divisor // 2, []
                continue
            countdown -= 1
            if countdown == 0:
                bits.append(tx)
                countdown = divisor
                if len(bits) == 10:
                    assert bits[0] == 0 and bits[9] == 1, f"start/stop bits {bits}"
                    got.append(sum(b << n for n, b in enumerate(bits[1:9])))
                    countdown = None

    sim = Simulator(soc)
    sim.add_clock(1 / CLOCK_HZ)
    sim.add_testbench(host)
    sim.add_process(line)
    sim.run()
    return bytes(got), leds[0]


def test_identify_at_the_pins():
    soc = SoC(CONFIG, clock_hz=CLOCK_HZ, baud=BAUD, tag=0x1234)
    wire, leds = run_soc(soc, P.frame(P.request(P.Cmd.IDENTIFY, 9)))
    assert parse_responses(wire) == [(P.Cmd.IDENTIFY, 9, P.LinkStatus.OK,
                                      P.identity_of(CONFIG, CLOCK_HZ, BAUD, 0x1234))]
    assert leds >> LED.IMAGE & 1 and not leds >> LED.FRAME_ERROR & 1
    assert leds >> LED.TX & 1 and leds >> LED.RX & 1
    assert not leds >> LED.CORE_ERROR & 1 and not leds >> LED.CORE_BUSY & 1


def test_bad_frame_lights_error_led():
    soc = SoC(CONFIG, clock_hz=CLOCK_HZ, baud=BAUD)
    wire, leds = run_soc(soc, P.frame(P.request(P.Cmd.IDENTIFY, 9))[:-2] + b"\x00\xc0")
    assert parse_responses(wire) == [(P.NACK_OP, 0, P.LinkStatus.BAD_CRC, b"")]
    assert leds >> LED.FRAME_ERROR & 1 and not leds >> LED.IMAGE & 1


def test_divisor_checked():
    with pytest.raises(ValueError, match="at least 4"):
        SoC(CONFIG, clock_hz=1_000_000, baud=300_000)
