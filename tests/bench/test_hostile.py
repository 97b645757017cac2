"""bench.hostile: its verdicts, its reproducers, and its quick subset against the project."""

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import hostile as H
from spikestream.image import load_image

REPO = Path(__file__).resolve().parents[2]


def _verdict(tmp_path, code, expect="error", limit=10, interrupt=None, after_interrupt=10.0):
    plan = H.Plan(argv=[], expect=expect, limit=limit, interrupt=interrupt)
    out = H.execute([sys.executable, "-c", code], tmp_path, limit, interrupt=interrupt,
                    after_interrupt=after_interrupt)
    return H.classify(plan, out), out


@pytest.mark.parametrize("code, expect, want", [
    ("import sys; sys.exit('error: bad input')", "error", "clear_error"),
    ("import sys; print('x', file=sys.stderr); sys.exit('error: bad input')", "either",
     "clear_error"),
    ("print('fine')", "ok", "correct"),
    ("print('fine')", "either", "correct"),
    ("raise ValueError('boom')", "error", "traceback"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "error", "crash"),
    ("import sys; sys.exit(7)", "error", "crash"),
    ("print('done')", "error", "silent_wrong"),
    ("import sys; sys.exit('something went wrong')", "error", "silent_wrong"),
    ("import sys; sys.exit('error: refused')", "ok", "silent_wrong"),
    ("import argparse; ap = argparse.ArgumentParser(prog='python -m x'); "
     "ap.add_argument('--n', type=int); ap.parse_args(['--n', 'many'])", "error", "clear_error"),
    # argparse refusing an option the bench passes: the case no longer tests what it says
    ("import argparse; argparse.ArgumentParser(prog='python -m x').parse_args(['--gone'])",
     "error", "silent_wrong"),
])
def test_verdicts(tmp_path, code, expect, want):
    (verdict, why), _ = _verdict(tmp_path, code, expect)
    assert verdict == want, why


def test_hang_kills_the_whole_process_group(tmp_path):
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "open('child', 'w').write(str(p.pid))\n"
            "time.sleep(60)\n")
    (verdict, _), out = _verdict(tmp_path, code, limit=2)
    assert verdict == "hang" and out.timed_out and out.seconds < 10
    child = int((tmp_path / "child").read_text())
    for _ in range(100):            # SIGKILL is sent; give the kernel a moment
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid):
    """``pid`` runs (a zombie awaiting its reaper does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_WAITS = ("import sys, time\n"
          "print('go', flush=True)\n"
          "try:\n"
          "    time.sleep(60)\n"
          "except KeyboardInterrupt:\n"
          "    time.sleep({delay})\n"
          "    sys.exit('interrupted')\n")


def _go(out, err):
    return "go" in out


def test_ctrl_c_stopped_at_once_is_a_clear_error(tmp_path):
    (verdict, why), out = _verdict(tmp_path, _WAITS.format(delay=0), interrupt=_go)
    assert verdict == "clear_error", why
    assert out.interrupted_at is not None and out.stop_delay < H.INTERRUPT_GRACE


def test_ctrl_c_stopped_slowly_is_a_hang(tmp_path):
    (verdict, why), out = _verdict(tmp_path, _WAITS.format(delay=3), interrupt=_go)
    assert verdict == "hang" and "to stop after Ctrl-C" in why


def test_ctrl_c_ignored_is_a_hang(tmp_path):
    code = ("import signal, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('go', flush=True)\n"
            "time.sleep(60)\n")
    (verdict, why), out = _verdict(tmp_path, code, interrupt=_go, after_interrupt=1.0)
    assert verdict == "hang" and out.timed_out and out.seconds < 10


def test_ctrl_c_with_default_handler_is_a_traceback(tmp_path):
    code = "import time\nprint('go', flush=True)\ntime.sleep(60)\n"
    (verdict, _), _ = _verdict(tmp_path, code, interrupt=_go)
    assert verdict == "traceback"


def test_commands_get_ctrl_c_when_the_bench_ignores_it():
    """A bench started with SIGINT ignored (a background job of a shell without job
    control) still gives its commands a terminal's Ctrl-C: without interruptible() they
    would inherit the ignored signal, and every signal case would hang."""
    probe = ("import signal; "
             "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    code = ("import signal, subprocess, sys\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "run = lambda: subprocess.run([sys.executable, '-c', %r], capture_output=True,\n"
            "                             text=True).stdout.strip()\n"
            "before = run()\n"
            "from bench import hostile\n"
            "hostile.interruptible()\n"
            "print(before, run())\n") % probe
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_code_execution_outranks_a_clear_error(tmp_path):
    plan = H.Plan(argv=[])
    out = H.execute([sys.executable, "-c", "import sys; sys.exit('error: no')"], tmp_path, 10)
    assert H.classify(plan, out)[0] == "clear_error"
    verdict, why = H.classify(plan, out, ["code executed from a pickle"])
    assert verdict == "silent_wrong" and "code executed" in why


def test_last_line_skips_progress_bar_segments():
    assert H._last_line("a\rprogress 10%\r          \rerror: x\n\n") == "error: x"


def test_image_packer_reproduces_the_shipped_image(v1_image):
    old = v1_image                                       # a version-1 file
    assert H.pack_image(*H.split_image(old), version=1) == old
    data = H.current_image()
    manifest, body = H.split_image(data)
    assert H.pack_image(manifest, body) == data
    manifest["meta"]["note"] = "changed"
    changed = H.pack_image(manifest, body)
    assert changed != data and H.split_image(changed)[0]["meta"]["note"] == "changed"


def test_zero_synapse_image_is_well_formed(tmp_path):
    """The huge-population case is a valid image (only large), not a malformed one."""
    path = tmp_path / "small.img"
    path.write_bytes(H.zero_synapse_image(40))
    img = load_image(path)
    assert [p.size for p in img.net.populations] == [40, 40, len(img.net.vocab)]
    assert img.net.nonzero_synapses == 0 and img.lanes == 2


def test_evil_checkpoint_runs_code_only_when_unpickled_unsafely(tmp_path):
    ctx = H.Context(bench=None, tmp=tmp_path)
    path = H.write_evil_checkpoint(ctx, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not ctx.marker.exists()
    torch.load(path, weights_only=False)        # what the reproducer guards against
    assert ctx.marker.exists()


def test_case_list_is_long_unique_and_its_ci_subset_covers_every_group():
    cases = H.all_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) and len(cases) >= 70
    groups = {c.group for c in cases}
    assert {"checkpoint", "image", "text", "args", "signal", "board"} <= groups
    quick = [c for c in cases if c.quick]
    assert 15 <= len(quick) <= 35
    assert {c.group for c in quick} >= groups - {"board"}


def test_quick_subset_ends_in_clear_errors_and_correct_results():
    """The suite's CI subset: no traceback, hang, crash or silent wrong result."""
    r = subprocess.run([sys.executable, "-m", "bench.hostile", "--quick", "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=1200)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    failures = "\n".join(f"{f['case']}: {f['verdict']} ({f['why']}): {f['last_line']}"
                         for f in summary["failures"])
    assert summary["cases"] >= 15
    assert {v: summary[v] for v in H.FAILING} == dict.fromkeys(H.FAILING, 0), failures
    assert summary["clear_error"] + summary["correct"] == summary["cases"]
    assert r.returncode == 0
