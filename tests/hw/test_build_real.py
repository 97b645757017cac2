"""One real bitstream: ``python -m hw.build`` for a ULX3S-85F with one small lane.

Yosys, nextpnr-ecp5 and ecppack (YoWASP) really run: about a minute and a half on a free
core (plus about 45 s per tool the first time YoWASP compiles it). The SoC is built if this
checkout has it, else the bare core behind its probe.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw.build import TOOLS
from spikestream.capacity import SOC_BRAM
from spikestream.memory_map import CoreConfig

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    any(shutil.which(os.environ.get(var) or tool) is None for var, tool in TOOLS.items()),
    reason="YoWASP tools not installed")

SMALL = {"neurons_per_lane": 64, "syn_depth": 1024, "ptr_depth": 1024, "spike_depth": 256,
         "max_vocab": 128}


def test_real_build_85f_one_lane(tmp_path):
    top = "soc"
    argv = [sys.executable, "-m", "hw.build", "--board", "ulx3s", "--fpga", "85f",
            "--lanes", "1", "--clock", "50", "--no-image", "--top", top, "--json",
            "--build-dir", str(tmp_path)]
    for key, value in SMALL.items():
        argv += ["--set", f"{key}={value}"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Progress: every stage named with its elapsed time.
    for stage in ("elaborate:", "yosys:", "nextpnr:", "ecppack:"):
        assert stage in proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])

    assert (r["board"], r["device"], r["lanes"], r["design"]) == ("ulx3s", "LFE5U-85F", 1, top)
    assert r["config"] == {**r["config"], **SMALL}
    # 50 MHz: this test proves the flow; whether the core makes 100 MHz is bench.fmax's
    # question (BENCHMARKS.md).
    assert r["target_mhz"] == 50.0 and r["pll"] == [1, 2, 12]
    assert r["timing_met"] and 50 <= r["fmax_mhz"] < 400, r.get("critical_path")
    assert 1000 < r["lut4"] < 0.2 * r["lut4_available"]
    assert 500 < r["ff"] < 0.2 * r["ff_available"]
    assert r["lut4_available"] == r["ff_available"] == 83640
    assert (r["dp16kd_available"], r["mult18_available"]) == (208, 156)
    # Two multipliers in the lane's neuron, one in the sampler.
    assert r["mult18"] == 3
    # The capacity model counts SOC_BRAM blocks outside the lanes (noise table, frame
    # buffer); the probe has only the noise table.
    assert r["dp16kd"] == r["dp16kd_estimated"] - (SOC_BRAM - 1 if top == "probe" else 0)
    assert (r["neurons"], r["synapses"]) == (64, 1024)

    # The lane's own block RAMs were pinned to distinct sites (hw.build's Yosys script names
    # the same cells that synthesis made)
    from hw.build import lane_blocks
    netlist = json.loads((tmp_path / "top.json").read_text())
    cells = {name: c for mod in netlist["modules"].values()
             for name, c in mod["cells"].items() if c["type"] == "DP16KD"}
    # (the accumulator and spike queue, which Yosys maps, are left where the placer likes).
    pinned = {n.split(".lanes.lane0.")[1]: c["attributes"]["BEL"] for n, c in cells.items()
              if ".lanes.lane0." in n and "BEL" in c["attributes"]}
    assert sorted(pinned) == sorted(lane_blocks(CoreConfig(lanes=1, **SMALL), ()))
    assert len(set(pinned.values())) == len(pinned)
    # So were its two multipliers (the Yosys selection by name finds exactly those cells),
    # side by side; the sampler's is left to the placer.
    mults = {n: c["attributes"].get("BEL") for mod in netlist["modules"].values()
             for n, c in mod["cells"].items() if c["type"] == "MULT18X18D"}
    lane = sorted(bel for n, bel in mults.items() if ".lanes.lane0.neuron.s1_p" in n)
    assert len(lane) == 2 and all(lane) and lane[0] != lane[1], mults
    assert [bel for n, bel in mults.items() if ".sampler." in n] == [None]

    bit = Path(r["bitstream"])
    assert bit == tmp_path / "top.bit" and bit.exists()
    # Compressed (--compress) 85F bitstream: the uncompressed one is about 2.3 MB.
    assert 100_000 < bit.stat().st_size == r["bitstream_bytes"] < 2_500_000
    head = bit.read_bytes()[:64]
    assert head.startswith(b"\xff\x00Part: LFE5U-85F")    # ecppack's comment, then the
    assert b"\xff\xff\xbd\xb3" in head                    # ECP5 preamble
    assert json.loads((tmp_path / "result.json").read_text())["bitstream"] == str(bit)


def _dff_bits(il_text, script, tmp_path):
    """Flip-flop bits left after ``script`` and Yosys's generic optimisation of a design."""
    (tmp_path / "d.il").write_text(il_text)
    (tmp_path / "d.ys").write_text(f"read_rtlil d.il\n{script}\nsynth -flatten -run :fine\n"
                                   "techmap\nopt\nstat\n")
    yosys = os.environ.get("YOSYS") or TOOLS["YOSYS"]
    out = subprocess.run([yosys, "-q", "-l", "d.log", "d.ys"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    log = (tmp_path / "d.log").read_text()
    return sum(int(line.split()[0]) for line in log.splitlines()
               if line.split()[1:2] and "DFF" in line.split()[1])


def test_replicated_broadcast_survives_synthesis(tmp_path):
    # The broadcast tree's copies have the same inputs; without hw.build's keep script
    # Yosys folds them into one register per bit (the naive broadcast), with it every copy
    # stays. 8 bits to 4 outputs in 2 stages: 2 copies, then 4.
    from amaranth import Module, unsigned
    from amaranth.back import rtlil
    from amaranth.lib import data, wiring
    from amaranth.lib.wiring import In, Out
    from hw.build import yosys_replica_script
    from hw.core.broadcast import Broadcast

    class Top(wiring.Component):
        i: In(8)
        o: Out(data.ArrayLayout(8, 4))

        def elaborate(self, platform):
            m = Module()
            m.submodules.broadcast = b = Broadcast(unsigned(8), 4, 2)
            m.d.comb += [b.i.eq(self.i), self.o.eq(b.o)]
            return m

    il = rtlil.convert(Top(), name="top")
    assert _dff_bits(il, "", tmp_path) == 2 * 8
    assert _dff_bits(il, yosys_replica_script(("top.broadcast",)), tmp_path) == (2 + 4) * 8
    # ... and the default names the tree the SoC and the probe have.
    from fnmatch import fnmatch
    from hw.build import REPLICATED, make_design
    for top in ("soc", "probe"):
        modules = [line.split()[1][1:] for line in rtlil.convert(
            make_design(CoreConfig(lanes=2, **SMALL), top=top, clock_hz=50e6, baud=3_000_000),
            name="top").splitlines() if line.startswith("module ")]
        assert [m for m in modules if any(fnmatch(m, p) for p in REPLICATED)], top
