"""spikestream.capacity against Yosys: the block RAMs it predicts for a lane are the ones that
synth_ecp5 maps, with the build's LUT RAM steering applied (hw.build.yosys_memory_script).

Each case runs Yosys (YoWASP) on one lane up to its memory mapping: a few seconds.
"""

import re
import shutil
import subprocess

import pytest
from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.back import rtlil

from boards import ulx3s
from hw.build import TOOLS, yosys_memory_script
from hw.core.lane import Lane
from hw.core.layouts import lane_port_layout
from spikestream.memory_map import CoreConfig
from spikestream.capacity import core_plan, lutram_memories

YOSYS = TOOLS["YOSYS"]
pytestmark = pytest.mark.skipif(shutil.which(YOSYS) is None, reason=f"{YOSYS} not installed")


class _LaneTop(Elaboratable):
    """One lane with its bus registered from inputs and its outputs registered."""

    def __init__(self, config, lutram):
        self.config = config
        self.lutram = lutram
        self.bus = Signal(lane_port_layout(config), name="bus_in")
        self.o = Signal(config.data_bits + 2 + config.rows_bits, name="o")

    def elaborate(self, platform):
        m = Module()
        m.submodules.lane = lane = Lane(self.config, 0, lutram=self.lutram)
        bus = Signal.like(self.bus, name="bus_r")
        m.d.sync += [bus.eq(self.bus),
                     self.o.eq(Cat(lane.gather.valid, lane.gather.payload, lane.done,
                                   lane.spikes))]
        m.d.comb += lane.bus.eq(bus)
        return m


def mapped_cells(config, budget, tmp_path):
    top = _LaneTop(config, lutram_memories(config, budget))     # as hw.build makes it
    (tmp_path / "lane.il").write_text(
        rtlil.convert(top, name="top", ports=[top.bus.as_value(), top.o]))
    script = (f"read_rtlil lane.il\n{yosys_memory_script(config, budget)}\n"
              "synth_ecp5 -top top -run :map_ffram\nflatten\nstat\n")
    (tmp_path / "lane.ys").write_text(script)
    subprocess.run([YOSYS, "-q", "-l", "lane.log", "lane.ys"], cwd=tmp_path, check=True,
                   capture_output=True)
    stat = (tmp_path / "lane.log").read_text().rsplit("Printing statistics", 1)[-1]
    stat = stat.split("=== design hierarchy ===")[0]
    count = lambda cell: sum(int(n) for n in re.findall(rf"^\s+(\d+)\s+{cell}\s*$", stat, re.M))
    return count("DP16KD"), count("TRELLIS_DPR16X4")


@pytest.mark.parametrize("config, budget", [
    (ulx3s.core_config("85f"), ulx3s.lane_budget("85f", 16)),   # state in block RAM
    (ulx3s.core_config("85f"), None),                           # all small ones LUT RAM
    (ulx3s.core_config("45f", 4), ulx3s.lane_budget("45f", 4)),  # parameters in block RAM
    (CoreConfig(lanes=1, neurons_per_lane=64, syn_depth=1024, ptr_depth=1024,
                spike_depth=256), None),                        # the CI build's lane
    # 8,192 synapse words of 13 bits: 7 DP16KD as one memory (2 x 8192 shape) but 8 as the
    # lane's eight banks of 1,024 words (each its own block), which is how it is built.
    (ulx3s.core_config("85f").replace(neurons_per_lane=32, syn_depth=8192),
     ulx3s.lane_budget("85f", 16)),
], ids=["85f-16", "85f-16-all", "45f-4", "ci", "85f-banks"])
def test_lane_block_rams_match_yosys(config, budget, tmp_path):
    plan = core_plan(config, budget)
    dp16kd, dpr = mapped_cells(config, budget, tmp_path)
    assert dp16kd == plan.blocks_per_lane, plan.summary()
    # The segment queue (16 x row and spike value) is LUT RAM as well, outside the plan.
    skid = -(-(config.segment_layout().bits + config.q_bits) // 4)
    assert dpr == plan.dpr16x4_per_lane + skid
