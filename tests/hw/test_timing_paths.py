"""hw.timing_paths: every register that misses the clock, from nextpnr's detailed report."""

import json
import subprocess
import sys

import pytest

from hw.timing_paths import failing_endpoints, format_endpoints, register_name


def _net(driver, port, name, endpoints, sources=()):
    return {"driver": driver, "port": port, "net": name, "event": "posedge clk",
            "sources": list(sources),
            "endpoints": [{"cell": c, "port": p, "event": "posedge clk", "delay": [1.0, d]}
                          for c, p, d in endpoints]}


REPORT = {"detailed_net_timings": [
    _net("design.core.p_TRELLIS_FF_Q", "Q", "design.core.p[0]",
         [("design.core.upd_qbase_TRELLIS_FF_Q_3", "DI", 11.5),
          ("design.core.upd_qbase_TRELLIS_FF_Q_4", "DI", 10.4),
          ("design.core.j_TRELLIS_FF_Q", "CE", 9.0)], ["/x/hw/core/core.py:530"]),
    _net("design.link.engine.x_LUT4_Z", "F", "design.link.engine.x",
         [("design.link.engine.frames_ok_TRELLIS_FF_Q_12", "CE", 10.2),
          ("design.core.upd_qbase_TRELLIS_FF_Q_5", "DI", 12.25)],
         ["/share/lattice/cells_map_trellis.v:108", "/x/hw/link.py:1200"]),
]}


def test_register_names():
    assert register_name("design.link.engine.frames_ok_TRELLIS_FF_Q_12") == \
        "design.link.engine.frames_ok"
    assert register_name("design.core.rd15_TRELLIS_FF_Q") == "design.core.rd15"
    assert register_name("design.core.x_TRELLIS_FF_Q_9_DI_CCU2C_S1$CCU2_COMB1") == "design.core.x"
    assert register_name("design.core.lanes.lane0.acc.acc.0.0") == "design.core.lanes.lane0.acc.acc.0.0"


def test_failing_endpoints_grouped_by_register_worst_first():
    groups = failing_endpoints(REPORT, 10.0)
    assert [(g["register"], g["slack_ns"], g["endpoints"], g["port"]) for g in groups] == [
        ("design.core.upd_qbase", -2.25, 3, "DI"),
        ("design.link.engine.frames_ok", -0.2, 1, "CE")]
    # The worst bit's net and its Python lines (the cell library's left out).
    assert groups[0]["net"] == "design.link.engine.x"
    assert groups[0]["sources"] == ["/x/hw/link.py:1200"]
    assert failing_endpoints(REPORT, 12.5) == []
    assert len(failing_endpoints(REPORT, 5.0, limit=2)) == 2
    lines = format_endpoints(groups)
    assert len(lines) == 2 and "design.core.upd_qbase.DI" in lines[0] and "-2.25" in lines[0]


def test_a_report_without_details_is_refused(tmp_path):
    with pytest.raises(ValueError, match="detailed net timings"):
        failing_endpoints({"fmax": {}}, 10.0)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"fmax": {}}))
    proc = subprocess.run([sys.executable, "-m", "hw.timing_paths", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "detailed net timings" in proc.stderr and "Traceback" not in proc.stderr
    path.write_text(json.dumps(REPORT))
    proc = subprocess.run([sys.executable, "-m", "hw.timing_paths", str(path), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert [g["register"] for g in json.loads(proc.stdout)][0] == "design.core.upd_qbase"
    for bad in (["--period", "0"], ["--top", "0"]):
        proc = subprocess.run([sys.executable, "-m", "hw.timing_paths", str(path), *bad],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
    path.write_text("[1, 2]")
    proc = subprocess.run([sys.executable, "-m", "hw.timing_paths", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hw.timing_paths", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
