"""hw.build without running the tools: arguments, capacity refusals, report parsing."""

import json
import signal
import sys
import time
from types import SimpleNamespace

import pytest

from boards import ulx3s
from hw import build as hwb
from spikestream.memory_map import CoreConfig
from spikestream.capacity import core_plan, lutram_memories
from spikestream.image import load_image

SHIPPED = "models/pretrained/shakespeare.img"


def run(capsys, *argv):
    """``python -m hw.build ARGV`` in process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        hwb.main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_unknown_board_lists_known(capsys):
    status, _, err = run(capsys, "--board", "arty")
    assert status == hwb.EXIT_USAGE
    assert "unknown board 'arty'; known boards: ulx3s" in err


def test_unknown_device_lists_known(capsys):
    status, _, err = run(capsys, "--board", "ulx3s", "--fpga", "17f")
    assert status == hwb.EXIT_USAGE
    assert "known sizes: 12f, 25f, 45f, 85f" in err


def test_fpga_and_pnr_seed_reach_the_build(capsys, monkeypatch):
    # --fpga is the FPGA size and --pnr-seed nextpnr's seed; no --device, no bare --seed.
    calls = []

    def fake_build(**kwargs):
        calls.append(kwargs)
        raise hwb.BuildError("stopped here", hwb.EXIT_TOOL)

    monkeypatch.setattr(hwb, "build", fake_build)
    status, _, err = run(capsys, "--fpga", "85f", "--pnr-seed", "7", "--lanes", "1",
                         "--no-image", "--top", "probe")
    assert status == hwb.EXIT_TOOL and err == "error: stopped here\n"
    assert calls[0]["device"] == "85f" and calls[0]["seed"] == 7
    for old in ("--device", "--seed"):
        status, _, err = run(capsys, old, "1")
        assert status == 2 and err.startswith("error: unrecognized arguments") \
            and err.count("\n") == 1


def test_sigterm_handler_is_given_back(capsys):
    """main() turns a SIGTERM into SystemExit only while it runs (so that a build's tool is
    killed too); the caller's handler is back afterwards, however it ended."""
    mine = lambda signum, frame: None
    before = signal.signal(signal.SIGTERM, mine)
    try:
        status, _, _ = run(capsys, "--lanes", "0")
        assert status == hwb.EXIT_USAGE and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_bad_lanes_and_clock(capsys):
    status, _, err = run(capsys, "--lanes", "0")
    assert status == hwb.EXIT_USAGE and "--lanes must be at least 1" in err
    status, _, err = run(capsys, "--clock", "900", "--top", "probe", "--lanes", "1",
                         "--fpga", "12f", "--no-image")
    assert status == hwb.EXIT_USAGE and "3.125 to 400.0 MHz" in err


def test_missing_image_is_a_clear_error(capsys, tmp_path):
    status, _, err = run(capsys, "--image", str(tmp_path / "nothing.img"))
    assert status == hwb.EXIT_USAGE and "cannot read image" in err


@pytest.mark.parametrize("argv, words", [
    (("--clock", "nan"), "--clock must be a number"), (("--clock", "inf"), "--clock must be"),
    (("--image", "/dev/zero"), "not a regular file"),
    (("--build-dir", "README.md", "--no-image"), "is a file, not a folder")])
def test_hostile_arguments_are_one_line_errors(capsys, argv, words):
    # /dev/zero was read until memory ran out; a file as --build-dir ended in a traceback.
    status, _, err = run(capsys, *argv)
    assert status == hwb.EXIT_USAGE and words in err
    assert err.count("\n") == 1 and err.startswith("error: ")


def test_refuses_too_many_lanes_fast(capsys):
    t0 = time.monotonic()
    status, _, err = run(capsys, "--lanes", "64")
    assert time.monotonic() - t0 < 10
    assert status == hwb.EXIT_FIT
    assert "64 lanes do not fit the LFE5U-85F" in err and "323 DP16KD" in err


def test_refuses_an_image_too_large_fast(capsys):
    # The 45F's default core (8 lanes of 128 neurons and 6144 synapse words) is too small
    # for the shipped model (re-laid out for 8 lanes: 145 neurons and up to 14551 synapse words
    # in the fullest lane).
    t0 = time.monotonic()
    status, _, err = run(capsys, "--fpga", "45f")
    assert time.monotonic() - t0 < 10
    assert status == hwb.EXIT_FIT
    assert "neurons per lane: needs 145, the core has 128 (17 too many)" in err
    assert "synapse words per lane (the fullest lane): needs 14551, the core has 6144" in err


def test_relayout_is_named(capsys):
    status, _, err = run(capsys, "--fpga", "45f", "--lanes", "4")
    assert status == hwb.EXIT_FIT
    assert "laid out for 16 lanes and was checked as laid out for 4" in err


def test_refuses_on_small_devices(capsys):
    status, _, err = run(capsys, "--fpga", "12f")
    assert status == hwb.EXIT_FIT
    assert "image does not fit the core" in err and "neurons per lane" in err


def test_check_fit_passes_the_default_85f():
    config = ulx3s.core_config("85f")
    plan = hwb.check_fit(config, ulx3s.device("85f"), load_image(SHIPPED))
    assert plan.blocks <= 208


def test_check_fit_names_every_shortfall():
    config = CoreConfig(lanes=8, neurons_per_lane=64, syn_depth=1024, ptr_depth=1024,
                        spike_depth=512)
    with pytest.raises(hwb.FitError) as e:
        hwb.check_fit(config, ulx3s.device("85f"), load_image(SHIPPED))
    msg = str(e.value)
    for what in ("neurons per lane: needs 145, the core has 64 (81 too many)",
                 "row pointers per lane (one a row, and the last row's end): needs 1411",
                 "spike buffer entries"):
        assert what in msg


def test_memory_script_names_the_lutram_memories():
    config = ulx3s.core_config("85f")
    budget = ulx3s.lane_budget("85f", 16)
    script = hwb.yosys_memory_script(config, budget)
    # 12 blocks per lane: 7 synapse + 3 pointer + 1 spike buffer + 1 left, which the
    # state takes; the parameters (2 blocks), accumulator and spike queue go to LUT RAM.
    assert budget == 12
    assert lutram_memories(config, budget) == ("param", "acc", "queue")
    for name in ("param", "acc", "queue"):
        assert f'setattr -set ram_style "distributed" */m:{name}' in script
    for name in ("state", "syn", "ptr", "sbuf"):
        assert f'setattr -set ram_style "block" */m:{name}' in script
    # Without a budget, every small memory goes to LUT RAM.
    assert lutram_memories(config) == ("param", "state", "acc", "queue")


def _pins(script, kind="EBR"):
    """(site, row, lane, cell) of each ``kind`` pin of a floorplan script."""
    import re
    pins = [re.fullmatch(r'setattr -set BEL "(X\d+/Y(\d+)/(EBR|MULT18_)\d)" top/c:design\.'
                         r'core\.lanes\.lane(\d+)\.(\S+)( top/t:MULT18X18D %i)?', line)
            for line in script.splitlines()]
    assert all(pins)
    return [(site, row, lane, cell) for site, row, k, lane, cell, _ in (p.groups() for p in pins)
            if k == kind]


def test_floorplan_pins_each_lanes_blocks_together():
    config = ulx3s.core_config("85f")
    lut = lutram_memories(config, ulx3s.lane_budget("85f", 16))
    blocks = hwb.lane_blocks(config, lut)
    # The lane's primitives in data-flow order; its plan's 12 blocks.
    assert blocks == ["sbuf.block0", "ptr_b0.block0", "ptr_b1.block0",
                      *(f"syn_b{k}.block0" for k in range(8)), "state.block0"]
    assert len(blocks) == core_plan(config, 12).blocks_per_lane
    pins = _pins(hwb.yosys_floorplan_script(config, "85f", lut))
    assert len(pins) == 16 * 12
    assert len({site for site, *_ in pins}) == len(pins)           # one block a site
    sites = {site for row in ulx3s.ebr_rows("85f") for site in row}
    assert len(sites) == 208 and {site for site, *_ in pins} <= sites
    for lane in range(16):                                        # a lane stays in one row
        mine = [(row, block) for _, row, k, block in pins if int(k) == lane]
        assert len({row for row, _ in mine}) == 1
        assert [block for _, block in mine] == blocks


def test_floorplan_puts_each_lanes_multipliers_side_by_side_near_its_blocks():
    config = ulx3s.core_config("85f")
    lut = lutram_memories(config, ulx3s.lane_budget("85f", 16))
    script = hwb.yosys_floorplan_script(config, "85f", lut)
    mults, blocks = _pins(script, "MULT18_"), _pins(script)
    assert len(mults) == 16 * 2 and len({site for site, *_ in mults}) == 32
    assert {site for site, *_ in mults} <= set(ulx3s.mult18_sites("85f"))
    assert len(ulx3s.mult18_sites("85f")) == 156

    def xy(site):
        return tuple(int(v[1:]) for v in site.split("/")[:2])

    for lane in range(16):
        mine = [(xy(site), cell) for site, _, k, cell in mults if int(k) == lane]
        assert [cell for _, cell in mine] == ["neuron.s1_pv_*", "neuron.s1_pa_*"]
        (x0, y0), (x1, y1) = (p for p, _ in mine)
        assert y0 == y1 and abs(x0 - x1) <= 5                      # side by side
        ebr = [xy(site) for site, _, k, _ in blocks if int(k) == lane]
        assert min(x for x, _ in ebr) <= x0 <= max(x for x, _ in ebr) + 6
        # The nearest row of multipliers (10, 34, 58) to the lane's row of blocks.
        assert abs(y0 - ebr[0][1]) == min(abs(y - ebr[0][1]) for y in (10, 34, 58))


def test_floorplan_spans_rows_for_big_lanes_and_skips_unmapped_sizes():
    config = ulx3s.core_config("85f", 2)
    lut = lutram_memories(config, ulx3s.lane_budget("85f", 2))
    pins = _pins(hwb.yosys_floorplan_script(config, "85f", lut))
    assert len(pins) == 2 * len(hwb.lane_blocks(config, lut)) > 2 * 52
    assert len({site for site, *_ in pins}) == len(pins)
    assert hwb.yosys_floorplan_script(ulx3s.core_config("12f"), "12f", ()) == ""


# A trimmed nextpnr-ecp5 0.11 --report of a one-lane build, and its log's Fmax lines.
REPORT = {
    "utilization": {
        "DP16KD": {"available": 208, "used": 3},
        "EHXPLLL": {"available": 4, "used": 1},
        "MULT18X18D": {"available": 156, "used": 3},
        "TRELLIS_COMB": {"available": 83640, "used": 4519},
        "TRELLIS_FF": {"available": 83640, "used": 3079},
        "TRELLIS_RAMW": {"available": 10455, "used": 221},
    },
    "fmax": {"$glbnet$design.clk": {"achieved": 117.89672088623047, "constraint": 100}},
    "critical_paths": [
        {"from": "<async>", "to": "posedge $glbnet$design.clk",
         "path": [{"delay": 1.0, "type": "routing", "from": {"cell": "rx"},
                   "to": {"cell": "sync"}}]},
        {"from": "posedge $glbnet$design.clk", "to": "posedge $glbnet$design.clk",
         "path": [
             {"delay": 0.525, "type": "clk-to-q",
              "from": {"cell": "core.lanes.o[0].op_FF"}, "to": {"cell": "core.lanes.o[0].op_FF"}},
             {"delay": 0.872, "type": "routing", "net": "n1",
              "sources": ["/work/main/hw/core/broadcast.py:44"],
              "from": {"cell": "core.lanes.o[0].op_FF"}, "to": {"cell": "lane0.mux_LUT4"}},
             {"delay": 0.236, "type": "logic",
              "from": {"cell": "lane0.mux_LUT4"}, "to": {"cell": "lane0.mux_LUT4"}},
             {"delay": 0.725, "type": "routing", "net": "n2",
              "sources": ["/share/lattice/cells_map_trellis.v:108.23-108.24"],
              "from": {"cell": "lane0.mux_LUT4"}, "to": {"cell": "lane0.param_raw_FF"}},
             {"delay": 0.0, "type": "setup",
              "from": {"cell": "lane0.param_raw_FF"}, "to": {"cell": "lane0.param_raw_FF"}},
         ]},
    ],
}

LOG = """\
Info: Max frequency for clock '$glbnet$design.clk': 109.11 MHz (PASS at 100.00 MHz)
Info: Routing..
Info: Max frequency for clock '$glbnet$design.clk': 97.90 MHz (FAIL at 100.00 MHz)
"""


def test_parse_report():
    r = hwb.parse_report(REPORT)
    assert r["lut4"] == (4519, 83640) and r["ff"] == (3079, 83640)
    assert r["dp16kd"] == (3, 208) and r["mult18"] == (3, 156) and r["lutram"] == (221, 10455)
    assert r["fmax"] == {"$glbnet$design.clk": (117.89672088623047, 100.0)}


def test_parse_log_takes_the_last_report():
    assert hwb.parse_log(LOG) == {"$glbnet$design.clk": (97.9, 100.0, False)}


def test_critical_path_of_the_core_clock():
    cp = hwb.critical_path(REPORT, "$glbnet$design.clk")
    assert cp["from"] == "core.lanes.o[0].op_FF" and cp["to"] == "lane0.param_raw_FF"
    assert cp["logic_levels"] == 1
    assert cp["routing_ns"] == pytest.approx(1.597) and cp["total_ns"] == pytest.approx(2.358)
    assert cp["sources"] == ["/work/main/hw/core/broadcast.py:44"]
    assert hwb.critical_path({}, "x") is None


def test_summary_and_json_fields():
    result = {
        "board": "ulx3s", "device": "LFE5U-85F", "lanes": 1, "design": "probe",
        "neurons": 64, "synapses": 1024, "fmax_mhz": 97.9, "target_mhz": 100.0,
        "timing_met": False, "lut4": 4519, "lut4_available": 83640, "ff": 3079,
        "ff_available": 83640, "dp16kd": 3, "dp16kd_available": 208, "dp16kd_estimated": 3,
        "mult18": 3, "mult18_available": 156, "bitstream": "build/x/top.bit",
        "bitstream_bytes": 360052, "build_seconds": 66.0,
        "stage_seconds": {"synth": 9.0, "pnr": 54.0}, "build_dir": "build/x",
        "critical_path": hwb.critical_path(REPORT, "$glbnet$design.clk"),
        "router": "router2", "nextpnr_options": ["--tmg-ripup"],
    }
    text = hwb.summary(result)
    assert "nextpnr: router2 --tmg-ripup" in text
    assert "Fmax after routing: 97.9 MHz, target 100.0 MHz: timing FAILED" in text
    assert "LUT4 4519/83640 (5%)" in text and "DP16KD 3/208 (1%)" in text
    assert "critical path: core.lanes.o[0].op_FF -> lane0.param_raw_FF" in text
    assert "hw/core/broadcast.py:44" in text
    # A placement-only build (--nextpnr-option=--no-route) says its Fmax is an estimate and
    # that it has no bitstream.
    placed = dict(result, routed=False, bitstream=None, bitstream_bytes=0, critical_path=None)
    text = hwb.summary(placed)
    assert "Fmax estimated after placement: 97.9 MHz" in text
    assert "no bitstream (not routed), placed in 1:06" in text and "top.bit" not in text


def test_program_needs_a_routed_build(capsys):
    status, _, err = run(capsys, "--program", "--nextpnr-option=--no-route")
    assert status == hwb.EXIT_USAGE and "--program needs a routed build" in err


def test_program_without_openfpgaloader_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    monkeypatch.setattr(hwb.shutil, "which", lambda name: None)
    with pytest.raises(hwb.BuildError) as e:
        hwb.program_board(tmp_path / "top.bit", hwb._Progress(quiet=True))
    assert e.value.status == hwb.EXIT_PROGRAM
    assert "openFPGALoader not found" in str(e.value)
    assert "apt-get install openfpgaloader" in str(e.value)


def test_bad_set_is_a_usage_error(capsys):
    status, _, err = run(capsys, "--set", "syn_depth=lots")
    assert status == hwb.EXIT_USAGE and "expected FIELD=N" in err
    status, _, err = run(capsys, "--set", "colour=3")
    assert status == hwb.EXIT_USAGE and "neurons_per_lane" in err


def test_overused_cells_from_the_log(tmp_path):
    log = tmp_path / "nextpnr.log"
    log.write_text("Info: Device utilisation:\n"
                   "Info: \t          TRELLIS_IO:      14/    365     3%\n"
                   "Info: \t              DP16KD:     193/    208    92%\n"
                   "Info: \t        TRELLIS_COMB:   90211/  83640   107%\n"
                   "ERROR: Unable to place cell 'x', no BELs remaining\n")
    assert hwb.overused(log) == [("TRELLIS_COMB", 90211, 83640)]
    assert hwb.overused(tmp_path / "missing.log") == []


def test_clock_constraint_follows_the_netlist(tmp_path):
    # Amaranth named the constraint after an alias that Yosys dropped; the PLL's CLKOP net
    # is known by two other names: the shallower one is taken.
    netlist = {"modules": {"top": {
        "cells": {"pll.pll": {"type": "EHXPLLL", "connections": {"CLKOP": [18], "CLKI": [2]}},
                  "ff": {"type": "TRELLIS_FF", "connections": {"CLK": [18]}}},
        "netnames": {"design.core.lanes.lane4.clk": {"hide_name": 0, "bits": [18]},
                     "design.clk": {"hide_name": 0, "bits": [18]},
                     "$auto$x": {"hide_name": 1, "bits": [18]},
                     "clk25_0__io": {"hide_name": 0, "bits": [2]}}}}}
    (tmp_path / "top.json").write_text(json.dumps(netlist))
    (tmp_path / "top.lpf").write_text('LOCATE COMP "x" SITE "G2";\n'
                                      'FREQUENCY NET "design.core.sampler.clk" 103125000.0 HZ;\n'
                                      'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;\n')
    assert hwb.pin_clock_constraint(tmp_path, 103125000.0) == "design.clk"
    lpf = (tmp_path / "top.lpf").read_text()
    assert 'FREQUENCY NET "design.clk" 103125000.0 HZ;' in lpf
    assert "sampler" not in lpf and 'FREQUENCY PORT "clk25_0__io"' in lpf


def test_baked_image_elaborates_with_the_hosts_tag():
    # A small random network baked into a one-lane SoC on the board (elaboration only).
    import numpy as np
    from spikestream.formats import NeuronKind
    from spikestream.image import image_bytes, parse_image
    from sim.netgen import random_network
    from sw.client import image_tag as host_tag

    net = random_network(np.random.default_rng(3), [NeuronKind.LIF, NeuronKind.ALIF])
    data = image_bytes(net, 2)
    image = parse_image(data)                      # laid out for 2 lanes, baked for 1
    config = CoreConfig(lanes=1, neurons_per_lane=64, syn_depth=1024, ptr_depth=1024,
                        spike_depth=256, max_vocab=128)
    hwb.check_fit(config, ulx3s.device("85f"), image)
    tag = hwb.image_tag(image, data)
    assert tag == host_tag(data) != 0
    pll = ulx3s.pll_config(100)
    design = hwb.make_design(config, top="soc", clock_hz=pll.f_out_hz, baud=3_000_000,
                             image=image, tag=tag)
    plan = ulx3s.platform("85f").prepare(ulx3s.Top(design, pll), name="top",
                                         script_after_read=hwb.yosys_memory_script(config))
    il = plan.files["top.il"]
    assert "EHXPLLL" in il
    assert f"32'{tag:032b}" in il                   # the link's tag register comes up set


def test_nextpnr_options_are_passed_on(monkeypatch, tmp_path):
    # --nextpnr-option reaches nextpnr-ecp5's command line after the build's own options.
    calls = []
    monkeypatch.setattr(hwb, "run_tool", lambda stage, argv, *a, **k: calls.append(argv) or 1.0)
    platform = SimpleNamespace(package="BG381", speed=6)
    hwb._run_nextpnr(lambda tool: tool, SimpleNamespace(nextpnr="--85k"), platform, 3,
                     "router2", tmp_path, None, ["--tmg-ripup"])
    argv = calls[0]
    assert argv[0] == "NEXTPNR_ECP5" and "--85k" in argv
    assert argv[argv.index("--seed") + 1] == "3" and argv[-1] == "--tmg-ripup"
    assert argv[argv.index("--package") + 1] == "CABGA381"
    args = hwb.argument_parser().parse_args(
        ["--nextpnr-option=--tmg-ripup", "--nextpnr-option=--placer-heap-timingweight=20"])
    assert args.nextpnr_option == ["--tmg-ripup", "--placer-heap-timingweight=20"]


def test_a_tool_past_its_limit_is_stopped(tmp_path):
    # The limit counts from the first line that matches, not from the start.
    argv = [sys.executable, "-u", "-c",
            "import time; print('placing'); time.sleep(2); print('Info: Running router2...');"
            " time.sleep(60)"]
    t0 = time.monotonic()
    with pytest.raises(hwb.ToolTimeout, match="stopped after") as exc:
        hwb.run_tool("nextpnr", argv, tmp_path, tmp_path / "log", hwb._Progress(quiet=True),
                     limit=(hwb._ROUTING_STARTS, 1.0))
    assert 3.0 <= exc.value.elapsed < 20 and time.monotonic() - t0 < 20
    assert "Running router2" in (tmp_path / "log").read_text()
    # Without a matching line there is no limit.
    argv = [sys.executable, "-c", "import time; print('placing'); time.sleep(2)"]
    assert hwb.run_tool("nextpnr", argv, tmp_path, tmp_path / "log",
                        hwb._Progress(quiet=True), limit=(hwb._ROUTING_STARTS, 0.5)) >= 2


def test_routing_that_does_not_finish_with_ripup_is_redone_without(monkeypatch, tmp_path):
    calls = []

    def fake(env_tool, dev, platform, seed, router, build_dir, progress, options, limit=None):
        calls.append((list(options), limit))
        (build_dir / "nextpnr.log").write_text(" ".join(options))
        if "--tmg-ripup" in options:
            raise hwb.ToolTimeout("stopped", 1200.0)
        return 400.0

    monkeypatch.setattr(hwb, "_run_nextpnr", fake)
    args = (None, None, None, 1, "router2", tmp_path, hwb._Progress(quiet=True))
    seconds, options, ripup = hwb._place_and_route(*args, ["--placer-heap-beta=0.8"], 20)
    assert calls == [(["--tmg-ripup", "--placer-heap-beta=0.8"], 1200),
                     (["--placer-heap-beta=0.8"], None)]
    assert (seconds, options, ripup) == (1600.0, ["--placer-heap-beta=0.8"], False)
    # The stopped run's log is kept beside the second's.
    assert (tmp_path / "ripup-nextpnr.log").read_text().startswith("--tmg-ripup")
    assert (tmp_path / "nextpnr.log").read_text() == "--placer-heap-beta=0.8"
    # 0 minutes: without it at once; placement only: never.
    for opts, minutes in (([], 0), (["--no-route"], 20)):
        calls.clear()
        assert hwb._place_and_route(*args, opts, minutes) == (400.0, opts, False)
        assert calls == [(opts, None)]
    # It finishes in time: kept.
    monkeypatch.setattr(hwb, "_run_nextpnr", lambda *a, **k: calls.append(a[7]) or 900.0)
    assert hwb._place_and_route(*args, [], 20) == (900.0, ["--tmg-ripup"], True)


def test_bad_ripup_minutes(capsys):
    for value in ("-1", "nan"):
        status, _, err = run(capsys, "--ripup-minutes", value, "--no-image")
        assert status == hwb.EXIT_USAGE and "--ripup-minutes must be 0 or more" in err
        assert err.count("\n") == 1


def test_a_tool_that_dies_without_an_error_line_is_one_build_error(tmp_path):
    # A tool killed by a signal prints no "error" line: the build used to slice its deque of
    # last lines and end in a TypeError traceback instead of a BuildError.
    argv = [sys.executable, "-c", "import os, signal; print('working'); "
            "os.kill(os.getpid(), signal.SIGTERM)"]
    with pytest.raises(hwb.BuildError, match="failed .exit status -15.*\n.*working"):
        hwb.run_tool("nextpnr", argv, tmp_path, tmp_path / "log", hwb._Progress(quiet=True))
