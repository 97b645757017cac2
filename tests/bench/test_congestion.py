"""bench.congestion: router2's heatmaps (in nextpnr's CSV format) summarised, bad ones
refused with one line."""

import json

import pytest

from bench import congestion


def _write(tmp_path, n, grid, nets):
    # nextpnr writes one line per tile column, each value followed by a comma.
    (tmp_path / f"hm_congestion_by_coordinate_{n}.csv").write_text(
        "".join("".join(f"{v}," for v in col) + "\n" for col in grid))
    (tmp_path / f"hm_congestion_by_net_{n}.csv").write_text(
        "".join(f"{name},{v}\n" for name, v in nets))


def test_summary_of_the_last_iteration(tmp_path, capsys):
    quiet = [[0] * 9 for _ in range(9)]
    hot = [row[:] for row in quiet]
    hot[4][4], hot[4][5], hot[0][0] = 6, 2, 2         # centre third: 8 of 10
    _write(tmp_path, 3, quiet, [("design.core.x", 1)])
    _write(tmp_path, 12, hot, [("design.core.lanes.lane3.neuron.s1_a[2]", 3),
                               ("design.core.lanes.lane7.neuron.s2_b", 2),
                               ("design.core.wq_src_LUT4_C_7_Z[0]", 4), ("pll.locked", 1)])
    png = tmp_path / "c.png"
    assert congestion.main([str(tmp_path), "--json", "--png", str(png)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["iteration"] == 12 and result["overused"] == 10
    assert result["centre_share"] == 8 / 10              # a ratio of counts: exact
    assert result["modules"] == [{"module": "design.core.lanes", "overuse": 5},
                                 {"module": "design.core", "overuse": 4},
                                 {"module": "pll", "overuse": 1}]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert congestion.main([str(tmp_path), "--iteration", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["overused"] == 0


@pytest.mark.parametrize("case, message", [
    ("missing", "no such build folder"),
    ("empty", "no router2 heatmaps"),
    ("ragged", "not a rectangle"),
    ("text", "not a line of integers"),
    ("net", "not a 'net,count' line"),
    ("iteration", "no heatmaps of iteration 9"),
])
def test_bad_heatmaps_get_one_line(tmp_path, capsys, case, message):
    folder = tmp_path / "build"
    if case != "missing":
        folder.mkdir()
    args = [str(folder)]
    if case == "ragged":
        _write(folder, 1, [[1, 2], [3]], [])
    elif case == "text":
        _write(folder, 1, [[1, "x"]], [])
    elif case == "net":
        _write(folder, 1, [[1]], [("design.a", 1)])
        (folder / "hm_congestion_by_net_1.csv").write_text("no comma here\n")
    elif case == "iteration":
        _write(folder, 1, [[1]], [])
        args += ["--iteration", "9"]
    assert congestion.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
