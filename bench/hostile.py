"""Hostile inputs: bad files, arguments, signals and boards against the real commands.

    python -m bench.hostile [--quick] [--json] [--write] [-k TEXT] [--exclude TEXT] [--list]
                            [--jobs N]

Generates malformed checkpoints, network images, text files, arguments, Ctrl-Cs and
misbehaving boards, and runs each case as a real subprocess of a project command
(``python -m models.train``, ``models.compile``, ``models.evaluate``, ``models.generate``,
``sw.generate`` and ``hw.build``, the last only with arguments it must refuse before any
tool runs). Every case runs in its own process group, in a temporary folder of its own
(removed afterwards, whatever happens), with a time limit and with its address space capped
at :data:`MEMORY_CAP` so that a runaway allocation fails instead of taking the machine
down. Each case ends in exactly one verdict:

``clear_error``
    exit status != 0, the last non-empty stderr line starts with ``error:`` (``interrupted``
    after a Ctrl-C; argparse's ``PROG: error:`` counts too), no traceback anywhere, and the
    case expected an error;
``correct``
    exit status 0 and every output check of the case passes;
``traceback``
    ``Traceback (most recent call last)`` in stdout or stderr;
``hang``
    still running at the time limit (the process group is killed), or taking more than
    :data:`INTERRUPT_GRACE` seconds to end after the case's Ctrl-C;
``crash``
    killed by a signal (other than the SIGINT the case sent itself), or an exit status
    other than 0, 1, 2 and 130 (and hw.build's documented 3, 4, 5);
``silent_wrong``
    exit status 0 where an error (or an explicit warning) was expected, an output check that
    failed (an input overwritten, code run from a pickle, a checkpoint that no longer loads,
    work done before a refusal, a temporary file left behind), a failure whose last line
    is not one clear error line, or argparse refusing the bench's own options (the command
    changed, and the case would pass without testing anything).

Groups: ``checkpoint`` (a pickle that runs code, truncated, random, wrong keys, empty, a
folder, /dev/zero, a FIFO, lying configs and NaN weights, through compile, evaluate and a
training resume), ``image`` (truncated, bad magic or version, flipped bytes, manifests that
lie with a correct CRC, deep nesting, bad vocabularies, checkpoint links out of the image's
folder, a valid image too large to decode densely, special files), ``text`` (training and
evaluation text that is not UTF-8, short, foreign, or not a file; vocabularies the board
cannot hold), ``args``, ``signal`` (Ctrl-C) and ``board``. ``--quick`` is a representative
subset for CI (about two minutes on two cores).

The cases that need a board use ``python -m sw.pty_board`` (the golden board behind a
pseudo-terminal) and ``python -m sw.fake_board --mode MODE`` (boards that misbehave on
purpose); each prints its device path on its first line of output.

The last line of ``--json`` output is one JSON object: ``cases`` and the count of every
verdict, plus ``failures`` (case, verdict, why, last stderr line). The exit status is 1 if
any case ends as ``traceback``, ``hang``, ``crash`` or ``silent_wrong``.
"""

import argparse
import concurrent.futures
import copy
import dataclasses
import hashlib
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from hw.build import EXIT_FIT, EXIT_PROGRAM, EXIT_TIMING, EXIT_TOOL, EXIT_USAGE
from models.compile import SHIPPED_CHECKPOINT
from models.data import DEFAULT_TEXT as SHIPPED_TEXT
from spikestream.board import SHIPPED_IMAGE
from spikestream.cmdline import INTERRUPTED, interruptible
from spikestream.image import IMAGE_MAGIC, IMAGE_VERSION, image_bytes, load_image
from sw.fake_board import MODES as FAKE_BOARD_MODES

from ._report import update_section

__all__ = ["VERDICTS", "Outcome", "Plan", "Case", "execute", "classify", "split_image",
           "pack_image", "all_cases", "run_cases", "summarise", "main"]

REPO = Path(__file__).resolve().parent.parent
TITLE = "Hostile inputs"

VERDICTS = ("clear_error", "correct", "traceback", "hang", "crash", "silent_wrong")
FAILING = ("traceback", "hang", "crash", "silent_wrong")

MEMORY_CAP = 4 << 30
"""Address-space limit of every case (``RLIMIT_AS``, 4 GiB): a command that tries to
allocate what a file merely claims fails at once instead of exhausting the machine."""
INTERRUPT_GRACE = 3.0
"""Seconds a command may take to stop after Ctrl-C (models.train saves its checkpoint first:
2.0 s once, on two cores busy with the test suite twice over and a bitstream build)."""
AFTER_INTERRUPT = 10.0
"""Seconds after Ctrl-C at which a command still running is killed (and counted a hang)."""
FAST = 40.0
"""Time limit of a case that should end in seconds (startup included, on a busy machine)."""
EXIT_CODES = frozenset({0, 1, 2, INTERRUPTED})
HW_BUILD_EXIT_CODES = EXIT_CODES | {EXIT_TIMING, EXIT_USAGE, EXIT_FIT, EXIT_TOOL, EXIT_PROGRAM}

_TRACEBACK = "Traceback (most recent call last)"
_ERROR_LINE = re.compile(r"^(?:[\w.\- ]+: )?error: \S")      # also argparse's "PROG: error: "
_INTERRUPTED_LINE = re.compile(r"^(?:error: )?interrupted\b")
_BENCH_ARGUMENTS_REFUSED = re.compile(
    r": error: (unrecognized arguments|the following arguments are required|argument [-\w/]+: "
    r"(expected one argument|not allowed with|ignored explicit))")
"""argparse refusing the bench's own command line: the command's options changed, and the
case no longer tests what it says."""
_FLOAT_LINE = re.compile(r"^float\s*:\s*\d", re.M)
_PROGRESS = re.compile(r"\d+%|\d+/\d+")
_HEADER = struct.Struct("<8sHHIQII")
"""The image header as docs/image-format.md lays it out; written out here on purpose, so
that the bench can write headers the loader must refuse (:func:`split_image` is checked
against the shipped image before any image case runs)."""


class BenchError(Exception):
    """The bench itself cannot go on (a fixture could not be made); one line."""


# --- running one command -----------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """What one subprocess did.

    ``returncode`` is negative for a signal (as in :mod:`subprocess`); ``timed_out`` is set
    when the bench killed it; ``interrupted_at`` is the time (from the start) of the case's
    Ctrl-C and ``stop_delay`` how long the process took to end after it; ``peak_rss`` is its
    peak resident memory in bytes (``wait4``: the process and the children it waited for).
    """
    argv: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    interrupted_at: float = None
    stop_delay: float = None
    peak_rss: int = 0
    note: str = ""

    @property
    def last_line(self):
        """The last non-empty line of stderr (progress bars' ``\\r`` segments split off)."""
        return _last_line(self.stderr)


def _last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def child_env():
    """The environment of every case: this repository importable from any folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def execute(cmd, cwd, limit, *, interrupt=None, after_interrupt=AFTER_INTERRUPT, env=None,
            logs=None):
    """Run ``cmd`` (a full argument list) in ``cwd`` as the leader of a new process group.

    ``interrupt``, if given, is called with ``(stdout, stderr)`` so far about ten times a
    second; when it returns true, SIGINT goes to the process group (as a terminal's Ctrl-C
    does). The group is killed (SIGKILL) ``limit`` seconds after the start, or
    ``after_interrupt`` seconds after the SIGINT; whatever of the group is left when the
    leader ends is killed too. Returns an :class:`Outcome`.
    """
    cwd = Path(cwd)
    logs = Path(logs) if logs else cwd
    out_path, err_path = logs / ".hostile-stdout", logs / ".hostile-stderr"
    with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or child_env(), stdin=subprocess.DEVNULL,
                                stdout=fo, stderr=fe, start_new_session=True)
    read = lambda p: p.read_bytes().decode("utf-8", "replace")
    sent = stopped = None
    timed_out = False
    next_look = 0.0
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.monotonic()
            if pid:
                stopped = now
                break
            if interrupt and sent is None and now >= next_look:
                next_look = now + 0.1
                if interrupt(read(out_path), read(err_path)):
                    _killpg(proc.pid, signal.SIGINT)
                    sent = time.monotonic()
            deadline = t0 + limit if sent is None else sent + after_interrupt
            if now > deadline:
                timed_out = True
                _killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                stopped = time.monotonic()
                break
            time.sleep(0.02)
    except BaseException:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    _killpg(proc.pid, signal.SIGKILL)               # anything the command left running
    outcome = Outcome(argv=list(cmd), returncode=proc.returncode, stdout=read(out_path),
                      stderr=read(err_path), seconds=stopped - t0, timed_out=timed_out,
                      peak_rss=usage.ru_maxrss * 1024)
    if sent is not None:
        outcome.interrupted_at = sent - t0
        outcome.stop_delay = stopped - sent
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return outcome


def python_m(argv):
    """The command line of ``python -m argv...`` with this interpreter."""
    return [sys.executable, "-m", *map(str, argv)]


# --- cases and verdicts ------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """What a case runs and what it expects.

    ``argv`` is the module and its arguments (``python -m`` is added); ``"{port}"`` in it
    is replaced by the device path that ``board`` (the module and arguments of a board
    process, started first) prints. ``expect`` is ``"error"``, ``"ok"`` or ``"either"`` (a
    clear error or a correct result). ``invariants`` are checks that must hold however the
    command ended; ``checks`` must hold when it exited 0. A check is ``f(outcome, ctx)``
    returning ``None`` or a one-line problem. ``interrupt`` (see :func:`execute`) makes it a
    Ctrl-C case. ``outcome``: the case was decided while it was prepared (a setup step
    that the project refused).
    """
    argv: list = None
    expect: str = "error"
    limit: float = FAST
    checks: list = dataclasses.field(default_factory=list)
    invariants: list = dataclasses.field(default_factory=list)
    interrupt: object = None
    board: list = None
    codes: frozenset = EXIT_CODES
    outcome: Outcome = None


@dataclasses.dataclass
class Case:
    """One reproducer: ``make(ctx)`` writes its files under ``ctx.tmp`` and returns a
    :class:`Plan`."""
    name: str
    make: object
    quick: bool = False

    @property
    def group(self):
        return self.name.split("/")[0]


def classify(plan, out, problems=()):
    """The verdict on ``out`` for ``plan``: ``(verdict, why)``.

    ``problems`` are the failed invariants and (after an exit 0) output checks, already
    run; they turn what would be ``clear_error`` or ``correct`` into ``silent_wrong``, and
    code run from a file is ``silent_wrong`` whatever else happened.
    """
    ran = [p for p in problems if p.startswith("code executed")]
    if ran:
        return "silent_wrong", ran[0]
    text = out.stdout + out.stderr
    wanted_interrupt = plan.interrupt is not None
    if out.timed_out:
        if out.interrupted_at is not None:
            return "hang", f"still running {AFTER_INTERRUPT:g} s after Ctrl-C"
        if wanted_interrupt:
            return "hang", f"never got to the point of the Ctrl-C in {plan.limit:g} s"
        return "hang", f"still running after {plan.limit:g} s{out.note}"
    if _TRACEBACK in text:
        return "traceback", "a traceback"
    rc = out.returncode
    if rc < 0 and not (wanted_interrupt and rc == -signal.SIGINT):
        return "crash", f"killed by {signal.Signals(-rc).name}"
    if rc >= 0 and rc not in plan.codes:
        return "crash", f"exit status {rc}"
    if out.stop_delay is not None and out.stop_delay > INTERRUPT_GRACE:
        return "hang", f"took {out.stop_delay:.1f} s to stop after Ctrl-C"
    if problems:
        return "silent_wrong", "; ".join(problems)
    if wanted_interrupt and out.interrupted_at is None:
        return "silent_wrong", f"ended (exit {rc}) before the Ctrl-C"
    if rc == 0:
        if plan.expect == "error":
            return "silent_wrong", "exit 0 where an error was expected"
        return "correct", ""
    last = out.last_line
    if plan.expect == "ok":
        return "silent_wrong", f"failed (exit {rc}) where success was expected"
    if wanted_interrupt:
        if not _INTERRUPTED_LINE.match(last):
            return "silent_wrong", f"exit {rc} after Ctrl-C, last line not 'interrupted'"
        return "clear_error", ""
    if not _ERROR_LINE.match(last):
        return "silent_wrong", f"exit {rc} without a one-line 'error:' message"
    if _BENCH_ARGUMENTS_REFUSED.search(last):
        return "silent_wrong", "the command refused the bench's own options (update the case)"
    return "clear_error", ""


class Context:
    """What a case's ``make`` and checks may use: its folder ``tmp`` (also the working
    folder of its commands), the shared fixtures, ``port`` once a board runs, and
    :meth:`run` for setup steps and follow-up commands."""

    def __init__(self, bench, tmp, case=""):
        self.bench, self.tmp, self.case = bench, tmp, case
        self.port = None
        self.marker = tmp / "CODE-RAN"
        self.hashes = {}

    def path(self, name):
        return self.tmp / name

    def write(self, name, data):
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def run(self, argv, limit=FAST, **kw):
        """Run ``python -m argv`` here (a setup step or a follow-up command)."""
        return execute(python_m(argv), self.tmp, limit, logs=self.bench.logs_for(self.tmp), **kw)

    def remember(self, path):
        """Record ``path``'s hash, for :func:`unchanged`."""
        self.hashes[str(path)] = _sha256(path)
        return path


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Bench:
    """Fixtures shared by the cases of one run, made on first use, in ``root``."""

    def __init__(self, root):
        self.root = Path(root)
        self._lock = threading.RLock()
        self._made = {}
        self._count = 0

    def new_folder(self):
        with self._lock:
            self._count += 1
            n = self._count
        tmp = self.root / f"case{n:03d}"
        tmp.mkdir()
        (self.root / f"case{n:03d}.log").mkdir()
        return tmp

    def logs_for(self, tmp):
        return tmp.parent / f"{tmp.name}.log"

    def fixture(self, name, make):
        with self._lock:
            if name not in self._made:
                self._made[name] = make()
            return self._made[name]

    def tiny_checkpoint(self):
        """A checkpoint of the tiny config after two steps (``models.train``)."""
        def make():
            out = self.root / "fixture-tiny"
            out.mkdir()
            (self.root / "fixture-tiny.log").mkdir(exist_ok=True)
            r = execute(python_m(["models.train", "--config", "tiny", "--out", out,
                                  "--set", "steps=2"]), out, 120,
                        logs=self.root / "fixture-tiny.log")
            if r.returncode != 0 or not (out / "ckpt.pt").is_file():
                raise BenchError(f"could not train the tiny checkpoint: {r.last_line}")
            return (out / "ckpt.pt").read_bytes()
        return self.fixture("tiny", make)

    def image(self):
        """The shipped network as an image of the current format: ``(bytes, manifest,
        body)``."""
        def make():
            data = current_image()
            manifest, body = split_image(data)
            if pack_image(manifest, body) != data:
                raise BenchError("the bench's image packer no longer reproduces the shipped "
                                 "image; update split_image/pack_image to the format")
            return data, manifest, body
        return self.fixture("image", make)


# --- images ------------------------------------------------------------------------------------

def current_image(path=SHIPPED_IMAGE):
    """The bytes of the image at ``path`` written again in the current format version."""
    img = load_image(path)
    return image_bytes(img.net, img.lanes)


def split_image(data):
    """``(manifest dict, body bytes)`` of a well-formed image."""
    magic, version, hsize, mlen, blen, crc, reserved = _HEADER.unpack_from(data)
    return json.loads(data[hsize:hsize + mlen]), data[hsize + mlen:hsize + mlen + blen]


def pack_image(manifest, body, *, magic=IMAGE_MAGIC, version=IMAGE_VERSION):
    """An image of ``manifest`` (a dict, or raw bytes) and ``body`` with a correct CRC."""
    m = manifest if isinstance(manifest, bytes) else \
        json.dumps(manifest, separators=(",", ":")).encode()
    return _HEADER.pack(magic, version, _HEADER.size, len(m), len(body),
                        zlib.crc32(m + body), 0) + m + body


def zero_synapse_image(n, lanes=2):
    """A well-formed image of two ``n``-neuron LIF populations and no synapse at all: a few
    MB on disk, but ``n * n`` int64 (29 GB for ``n = 60000``) to whoever builds its
    projections densely."""
    vocab = sorted(set("ROMEO: abcdefghijklmnopqrstuvwxyz\n"))      # the default prompt fits
    pops = [("h0", "LIF", n), ("h1", "LIF", n), ("readout", "READOUT", len(vocab))]
    projs = [(-1, 0, 0), (0, 1, 0), (1, 2, 0)]
    arrays, body = {}, bytearray()

    def put(name, values, dtype):
        body.extend(b"\0" * (-len(body) % 8))
        a = np.ascontiguousarray(np.asarray(values).astype(dtype))
        arrays[name] = {"dtype": dtype, "shape": list(a.shape), "offset": len(body)}
        body.extend(a.tobytes())

    for i, (_, _, size) in enumerate(pops):
        for key, dtype, value in (("alpha", "<u2", 0), ("theta", "<i2", 1), ("rho", "<u2", 0),
                                  ("jump", "<i2", 0), ("bias", "<i2", 0), ("scale", "<f8", 1)):
            put(f"pop{i}.{key}", np.full(size, value), dtype)
        put(f"pop{i}.perm", np.arange(size), "<u4")
    rows = sum(len(vocab) if s == -1 else pops[s][2] for s, _, _ in projs)
    for lane in range(lanes):
        put(f"lane{lane}.ptr_start", np.zeros(rows), "<u4")
        put(f"lane{lane}.ptr_len", np.zeros(rows), "<u4")
        put(f"lane{lane}.syn_addr", np.zeros(0), "<u2")
        put(f"lane{lane}.syn_weight", np.zeros(0), "<i1")
    bases, base = [], 0
    for _, _, size in pops:
        bases.append(base)
        base += -(-size // lanes)
    ptr_bases, ptr = [], 0
    for s, _, _ in projs:
        ptr_bases.append(ptr)
        ptr += len(vocab) if s == -1 else pops[s][2]
    reset = {"LIF": "ZERO", "READOUT": "NONE"}
    manifest = {
        "lanes": lanes, "vocab": vocab, "readout": 2, "inputs": [],
        "formats": {"weight_bits": 8, "acc_bits": 24, "state_bits": 16, "decay_frac_bits": 8},
        "populations": [{"name": name, "kind": kind, "size": size, "base": b,
                         "reset": reset[kind], "level_bits": 1, "output": False}
                        for (name, kind, size), b in zip(pops, bases)],
        "projections": [{"src": s, "dst": d, "delay": dl, "ptr_base": pb}
                        for (s, d, dl), pb in zip(projs, ptr_bases)],
        "arrays": arrays, "meta": {},
    }
    return pack_image(manifest, bytes(body))


def _lying(edit):
    """An image maker: the shipped manifest changed by ``edit(manifest, ctx)`` (which may
    return raw manifest bytes instead), re-packed with a correct CRC."""
    def make(ctx):
        _, manifest, body = ctx.bench.image()
        m = copy.deepcopy(manifest)
        raw = edit(m, ctx)
        return pack_image(raw if isinstance(raw, bytes) else m, body)
    return make


def _raw(edit):
    """An image maker: ``edit(bytearray of the shipped image)`` (returns the bytes)."""
    def make(ctx):
        data, _, _ = ctx.bench.image()
        return bytes(edit(bytearray(data)))
    return make


def _set_array(name, **fields):
    def edit(m, ctx):
        m["arrays"][name].update(fields)
    return edit


def _nested(depth):
    return ("[" * depth + "]" * depth).encode()


def _nested_meta(m, ctx):
    raw = json.dumps(m, separators=(",", ":")).encode()
    return raw.replace(b'"meta":{', b'"meta":{"deep":' + _nested(100_000) + b",", 1)


def _vocab_entry(value):
    """Replace one vocabulary entry (not one the default prompt "ROMEO:" uses)."""
    def edit(m, ctx):
        k = next(i for i, c in enumerate(m["vocab"]) if c not in "ROMEO:\n ")
        m["vocab"][k] = value(m["vocab"]) if callable(value) else value
    return edit


def _duplicate_vocab(vocab):
    return next(c for c in vocab if c in "ROMEO:")


def _flip(at):
    def edit(b):
        b[at(len(b))] ^= 0x40
        return b
    return edit


def _evil_beside(ctx):
    write_evil_checkpoint(ctx, ctx.path("evil.pt"))
    return "../evil.pt"


def _evil_absolute(ctx):
    write_evil_checkpoint(ctx, ctx.path("elsewhere/evil.pt"))
    return str(ctx.path("elsewhere/evil.pt"))


def _evil_linked(ctx):
    write_evil_checkpoint(ctx, ctx.path("sub/image.pt"))
    return "image.pt"


# --- checkpoints -------------------------------------------------------------------------------

class _RunsCode:
    """Pickles as a call of ``os.system(command)``: whoever unpickles it runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_evil_checkpoint(ctx, path):
    """A ``.pt`` file that would run ``touch ctx.marker`` in a loader that unpickles arbitrary
    objects; written here (never loaded) for the cases that check every loader refuses it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": _RunsCode(f"touch {ctx.marker}"), "model": {}, "vocab": ["a"]}, path)
    return path


def _tiny(ctx):
    return torch.load(io.BytesIO(ctx.bench.tiny_checkpoint()), weights_only=True)


def _save(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def _ck_truncated(ctx, path):
    data = ctx.bench.tiny_checkpoint()
    path.write_bytes(data[:len(data) * 2 // 3])


def _ck_random(ctx, path):
    path.write_bytes(np.random.default_rng(3).bytes(50_000))


def _ck_zip(ctx, path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a checkpoint\n" * 100)
        z.writestr("data/0", b"\0" * 1000)


def _ck_wrong_keys(ctx, path):
    _save({"weights": torch.zeros(4, 4), "note": "wrong keys"}, path)


def _ck_config_lies(ctx, path):
    ck = _tiny(ctx)
    ck["config"]["hidden"] = [10 ** 9]
    _save(ck, path)


def _ck_nan(ctx, path):
    ck = _tiny(ctx)
    for k, v in ck["model"].items():
        if k.startswith("weights") and v.is_floating_point():
            v.fill_(float("nan"))
    _save(ck, path)


def _ck_slim(ctx, path):
    ck = _tiny(ctx)
    _save({k: v for k, v in ck.items() if k not in ("optim", "rng")}, path)


def _ck_evil(ctx, path):
    write_evil_checkpoint(ctx, path)


def _ck_empty(ctx, path):
    path.write_bytes(b"")


def _ck_folder(ctx, path):
    path.mkdir()
    (path / "data.pkl").write_bytes(b"x")


def _ck_dev_zero(ctx, path):
    path.symlink_to("/dev/zero")


def _ck_fifo(ctx, path):
    os.mkfifo(path)


# --- checks ------------------------------------------------------------------------------------

def no_code_ran(out, ctx):
    if ctx.marker.exists():
        return "code executed from a pickle"


def unchanged(path):
    def check(out, ctx):
        p = Path(path)
        if not p.is_file():
            return f"{p.name} is gone"
        if _sha256(p) != ctx.hashes[str(p)]:
            return f"{p.name} was overwritten"
    return check


def absent(path, why):
    def check(out, ctx):
        if Path(path).exists():
            return why
    return check


def stdout_lacks(pattern, why):
    def check(out, ctx):
        if re.search(pattern, out.stdout, re.M):
            return why
    return check


def stdout_has(pattern, why):
    def check(out, ctx):
        if not re.search(pattern, out.stdout, re.M):
            return why
    return check


def no_float_model(out, ctx):
    if _FLOAT_LINE.search(out.stdout):
        return "loaded a checkpoint that the image names outside its folder"


def vocabulary_warning(out, ctx):
    for line in (out.stdout + "\n" + out.stderr).splitlines():
        low = line.lower()
        if "vocabulary" in low and ("skip" in low or "not in" in low):
            return None
    return "no warning that characters outside the vocabulary were dropped"


def image_loads(path, lanes):
    def check(out, ctx):
        try:
            img = load_image(path)
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            return f"the written image does not load ({type(e).__name__}: {e})"
        if img.lanes != lanes:
            return f"the written image has {img.lanes} lanes, not {lanes}"
    return check


def checkpoint_loads(path):
    def check(out, ctx):
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            return f"{Path(path).name} does not load with weights_only=True " \
                   f"({type(e).__name__})"
        if not isinstance(ck, dict) or "model" not in ck or "step" not in ck:
            return f"{Path(path).name} is not a checkpoint"
    return check


def no_temporaries(folder):
    def check(out, ctx):
        left = sorted(p.name for p in Path(folder).iterdir()
                      if p.name.endswith(".tmp") or p.name.startswith("."))
        if left:
            return f"temporary files left behind: {', '.join(left)}"
    return check


def golden_text_matches(argv_ref):
    """stdout equals what ``python -m models.generate argv_ref`` prints."""
    def check(out, ctx):
        ref = ctx.run(["models.generate", *argv_ref], limit=120)
        if ref.returncode != 0:
            return f"the reference models.generate failed: {ref.last_line}"
        if out.stdout.strip() != ref.stdout.strip():
            return "the text differs from models.generate's"
    return check


def board_still_answers(out, ctx):
    r = ctx.run(["sw.generate", "--port", ctx.port, "--tokens", "5", "--timeout", "5"], limit=90)
    if r.returncode != 0 or _TRACEBACK in r.stderr:
        return f"the board no longer answers after Ctrl-C: {r.last_line}"


def prompt_progress(out, ctx):
    lines = [line for line in out.stderr.splitlines() if line.strip()][:-1]
    if not any(_PROGRESS.search(line) for line in lines):
        return "no progress shown while the prompt ran"


# --- the cases ---------------------------------------------------------------------------------

def _compile(ck, ctx, *extra, out="out.img"):
    return ["models.compile", "--checkpoint", ck, "-o", ctx.path(out), "--lanes", "2", *extra]


def _evaluate(path, *extra):
    """``models.evaluate`` of an image, or of a checkpoint (``.pt``) compiled for 2 lanes."""
    if Path(path).suffix == ".pt":
        return ["models.evaluate", "--checkpoint", path, "--lanes", "2", "--chars", "500",
                *extra]
    return ["models.evaluate", "--image", path, "--chars", "500", *extra]


def _generate(image, *extra):
    return ["models.generate", "--image", image, "--tokens", "5", *extra]


def _sw_golden(image, *extra):
    return ["sw.generate", "--backend", "golden", "--image", image, "--tokens", "5", *extra]


def _hw_build(ctx, *extra):
    return ["hw.build", "--board", "ulx3s", "--quiet", "--build-dir", ctx.path("build"), *extra]


def _train(ctx, *extra, out="run"):
    return ["models.train", "--config", "tiny", "--out", ctx.path(out), "--set", "steps=2", *extra]


CHECKPOINTS = {
    # name: (writer, commands it goes to, quick commands)
    "pickle-exec": (_ck_evil, "compile evaluate resume", "compile resume"),
    "truncated": (_ck_truncated, "compile evaluate resume", "resume"),
    "random-bytes": (_ck_random, "compile evaluate", ""),
    "zip-not-checkpoint": (_ck_zip, "compile evaluate", ""),
    "wrong-keys": (_ck_wrong_keys, "compile evaluate resume", ""),
    "empty": (_ck_empty, "compile evaluate resume", ""),
    "folder": (_ck_folder, "compile evaluate resume", ""),
    "dev-zero": (_ck_dev_zero, "compile evaluate resume", ""),
    "fifo": (_ck_fifo, "compile evaluate resume", ""),
    "config-hidden-1e9": (_ck_config_lies, "compile", ""),
    "nan-weights": (_ck_nan, "compile", ""),
}


def _checkpoint_case(kind, writer, command):
    def make(ctx):
        inv = [no_code_ran]
        if command == "resume":
            path = ctx.path("run/ckpt.pt")
            path.parent.mkdir()
            writer(ctx, path)
            return Plan(_train(ctx), invariants=inv)
        path = ctx.path("model.pt")
        writer(ctx, path)
        if command == "compile":
            return Plan(_compile(path, ctx), invariants=inv)
        return Plan(_evaluate(path), invariants=inv)
    return make


def checkpoint_cases():
    cases = []
    for kind, (writer, commands, quick) in CHECKPOINTS.items():
        for command in commands.split():
            cases.append(Case(f"checkpoint/{kind}/{command}",
                              _checkpoint_case(kind, writer, command),
                              quick=command in quick.split()))

    def slim_resume(ctx):
        path = ctx.path("run/ckpt.pt")
        _ck_slim(ctx, path)
        return Plan(_train(ctx), expect="either", checks=[checkpoint_loads(path)])

    def good_compile(ctx):
        path = ctx.remember(ctx.write("model.pt", ctx.bench.tiny_checkpoint()))
        return Plan(_compile(path, ctx), expect="ok", invariants=[unchanged(path)],
                    checks=[image_loads(ctx.path("out.img"), 2)])

    def good_compile_with_checkpoint(ctx):
        path = ctx.remember(ctx.write("model.pt", ctx.bench.tiny_checkpoint()))
        ctx.path("out").mkdir()
        return Plan(_compile(path, ctx, "--with-checkpoint", out="out/net.img"), expect="ok",
                    invariants=[unchanged(path)],
                    checks=[image_loads(ctx.path("out/net.img"), 2),
                            checkpoint_loads(ctx.path("out/net.pt"))])

    def good_evaluate(ctx):
        path = ctx.write("model.pt", ctx.bench.tiny_checkpoint())
        return Plan(_evaluate(path), expect="ok",
                    checks=[stdout_has(r"^float\s*:\s*\d", "no float loss reported"),
                            stdout_has(r"^golden\s*:\s*\d", "no golden loss reported")])

    def good_resume(ctx):
        path = ctx.write("run/ckpt.pt", ctx.bench.tiny_checkpoint())
        return Plan(_train(ctx), expect="ok", checks=[checkpoint_loads(path)])

    cases += [Case("checkpoint/slim-no-optimiser/resume", slim_resume),
              Case("checkpoint/valid/compile", good_compile, quick=True),
              Case("checkpoint/valid/compile-with-checkpoint", good_compile_with_checkpoint),
              Case("checkpoint/valid/evaluate", good_evaluate),
              Case("checkpoint/valid/resume", good_resume)]
    return cases


IMAGES = {
    # name: (maker: ctx -> bytes, commands, quick commands)
    "truncated-header": (_raw(lambda b: b[:20]), "evaluate", ""),
    "truncated-manifest": (_raw(lambda b: b[:1000]), "generate", ""),
    "truncated-body": (_raw(lambda b: b[:len(b) // 2]), "sw", "sw"),
    "truncated-last-byte": (_raw(lambda b: b[:-1]), "evaluate", ""),
    "trailing-bytes": (_raw(lambda b: b + b"\0" * 100), "sw", ""),
    "bad-magic": (_raw(lambda b: b"NOTANIMG" + b[8:]), "generate hw.build", ""),
    "bad-version": (_raw(lambda b: b[:8] + struct.pack("<H", 99) + b[10:]), "sw", ""),
    "flipped-body-byte": (_raw(_flip(lambda n: n - 1000)), "evaluate", ""),
    "flipped-manifest-byte": (_raw(_flip(lambda n: 100)), "generate", ""),
    "lie-population-size-1e9": (_lying(lambda m, c: m["populations"][0].update(size=10 ** 9)),
                                "evaluate", ""),
    "lie-lanes-1e6": (_lying(lambda m, c: m.update(lanes=10 ** 6)), "generate", ""),
    "lie-lanes-0": (_lying(lambda m, c: m.update(lanes=0)), "sw", ""),
    "lie-lanes-string": (_lying(lambda m, c: m.update(lanes="16")), "evaluate", ""),
    "lie-shape-overflow": (_lying(_set_array("lane0.syn_addr", shape=[2 ** 32, 2 ** 32])),
                           "generate", "generate"),
    "lie-shape-1e12": (_lying(_set_array("pop0.alpha", shape=[10 ** 12])), "sw", ""),
    "lie-shape-negative": (_lying(_set_array("pop0.theta", shape=[-1])), "evaluate", ""),
    "lie-offset-negative": (_lying(_set_array("pop0.rho", offset=-8)), "evaluate", ""),
    "lie-offset-2e70": (_lying(_set_array("lane1.ptr_len", offset=2 ** 70)), "generate", ""),
    "lie-dtype-float-weights": (_lying(_set_array("lane0.syn_weight", dtype="<f8")), "sw", ""),
    "lie-dtype-object": (_lying(_set_array("pop0.bias", dtype="|O")), "evaluate", ""),
    "lie-kind-unknown": (_lying(lambda m, c: m["populations"][0].update(kind="BOGUS")),
                         "generate", ""),
    "lie-delay-1e9": (_lying(lambda m, c: m["projections"][0].update(delay=10 ** 9)), "sw", ""),
    "lie-readout-99": (_lying(lambda m, c: m.update(readout=99)), "evaluate", ""),
    "lie-formats": (_lying(lambda m, c: m["formats"].update(weight_bits=4)), "generate", ""),
    "manifest-not-an-object": (_lying(lambda m, c: b"[1, 2, 3]"), "sw", ""),
    "manifest-not-utf8": (_lying(lambda m, c: b"\xff\xfe{}"), "evaluate", ""),
    "manifest-missing-key": (_lying(lambda m, c: m.pop("populations")), "generate", ""),
    "manifest-nested-100000": (_lying(lambda m, c: _nested(100_000)), "evaluate sw", "evaluate"),
    "meta-nested-100000": (_lying(_nested_meta), "generate", ""),
    "vocab-not-a-string": (_lying(_vocab_entry(5)), "generate", ""),
    "vocab-multi-char": (_lying(_vocab_entry("ab")), "sw", ""),
    "vocab-escape-sequence": (_lying(_vocab_entry("\x1b[2J")), "generate", "generate"),
    "vocab-control-char": (_lying(_vocab_entry("\x07")), "evaluate", ""),
    "vocab-empty-string": (_lying(_vocab_entry("")), "sw", ""),
    "vocab-duplicate": (_lying(_vocab_entry(_duplicate_vocab)), "generate", ""),
    "huge-populations-no-synapses": (lambda ctx: zero_synapse_image(60_000), "generate",
                                     "generate"),
}


def _image_command(command, ctx, image):
    if command == "evaluate":
        return _evaluate(image)
    if command == "generate":
        return _generate(image)
    if command == "sw":
        return _sw_golden(image)
    return _hw_build(ctx, "--image", image, "--no-bake")


def _image_case(maker, command):
    def make(ctx):
        image = ctx.write("net.img", maker(ctx))
        codes = HW_BUILD_EXIT_CODES if command == "hw.build" else EXIT_CODES
        if "huge-populations" in ctx.case:          # valid, only large: refuse it or run it
            return Plan(_image_command(command, ctx, image), expect="either",
                        checks=[stdout_has(r"^ROMEO:[\s\S]{5}", "no generated text")])
        return Plan(_image_command(command, ctx, image), codes=codes, invariants=[no_code_ran])
    return make


def _special_file(kind):
    """Makers of paths that are not images at all (their content comes from elsewhere)."""
    def make(ctx, name):
        p = ctx.path(name)
        if kind == "empty":
            p.write_bytes(b"")
        elif kind == "folder":
            p.mkdir()
        elif kind == "dev-zero":
            p.symlink_to("/dev/zero")
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "70MB":
            with open(p, "wb") as f:
                f.write(IMAGE_MAGIC)
                f.truncate(70 << 20)
        return p
    return make


SPECIAL_FILES = {
    "empty": ("evaluate generate sw", ""),
    "folder": ("evaluate generate sw", ""),
    "dev-zero": ("evaluate generate sw hw.build", "sw"),
    "fifo": ("evaluate generate sw hw.build", "generate"),
    "70MB": ("evaluate generate sw", ""),
}


def _special_image_case(kind, command):
    def make(ctx):
        image = _special_file(kind)(ctx, "net.img")
        codes = HW_BUILD_EXIT_CODES if command == "hw.build" else EXIT_CODES
        return Plan(_image_command(command, ctx, image), codes=codes)
    return make


def _meta_case(where, expect_float=False):
    def make(ctx):
        _, manifest, body = ctx.bench.image()
        m = copy.deepcopy(manifest)
        m["meta"]["checkpoint"] = where(ctx)
        image = ctx.write("sub/image.img", pack_image(m, body))
        return Plan(_evaluate(image), expect="either", invariants=[no_code_ran],
                    checks=[] if expect_float else [no_float_model])
    return make


def image_cases():
    cases = []
    for kind, (maker, commands, quick) in IMAGES.items():
        for command in commands.split():
            cases.append(Case(f"image/{kind}/{command}", _image_case(maker, command),
                              quick=command in quick.split()))
    for kind, (commands, quick) in SPECIAL_FILES.items():
        for command in commands.split():
            cases.append(Case(f"image/{kind}/{command}", _special_image_case(kind, command),
                              quick=command in quick.split()))
    up = "../" * 30
    cases += [
        Case("image/meta-checkpoint-etc-passwd/evaluate",
             _meta_case(lambda ctx: up + "etc/passwd")),
        Case("image/meta-checkpoint-escapes-folder/evaluate", _meta_case(_evil_beside),
             quick=True),
        Case("image/meta-checkpoint-absolute-pickle/evaluate", _meta_case(_evil_absolute),
             quick=True),
        Case("image/meta-checkpoint-absolute-valid/evaluate",
             _meta_case(lambda ctx: str(SHIPPED_CHECKPOINT))),
        Case("image/meta-checkpoint-beside-pickle/evaluate",
             _meta_case(_evil_linked, expect_float=True)),
    ]

    def good(command):
        def make(ctx):
            image = ctx.write("net.img", ctx.bench.image()[0])
            checks = {"evaluate": [stdout_has(r"^golden\s*:\s*\d", "no golden loss")],
                      "generate": [stdout_has(r"^ROMEO:[\s\S]{5}", "no generated text")],
                      "sw": [stdout_has(r"^ROMEO:[\s\S]{5}", "no generated text")]}[command]
            return Plan(_image_command(command, ctx, image), expect="ok", checks=checks)
        return make
    cases += [Case(f"image/valid/{c}", good(c))
              for c in ("evaluate", "generate", "sw")]
    return cases


CYRILLIC = ("Съешь же ещё этих мягких французских булок, да выпей чаю. "
            "Широкая электрификация южных губерний даст мощный толчок.\n")


def _text_file(kind):
    def make(ctx, name="text.txt"):
        p = ctx.path(name)
        if kind == "not-utf8":
            p.write_bytes(b"ROMEO: \xff\xfe\xc3\x28 latin-1 caf\xe9\n" * 200)
        elif kind == "empty":
            p.write_bytes(b"")
        elif kind == "too-short":
            p.write_text("ROMEO: hi.\n" * 5)
        elif kind == "cyrillic":
            p.write_text(CYRILLIC * (6000 // len(CYRILLIC)))
        else:
            _special_file(kind)(ctx, name)
        return p
    return make


TEXTS = {
    # name: (commands, quick commands)
    "not-utf8": ("evaluate train compile", ""),
    "empty": ("evaluate train", ""),
    "too-short": ("evaluate train", ""),
    "cyrillic": ("evaluate compile", "evaluate"),
    "folder": ("evaluate train", ""),
    "dev-zero": ("evaluate train", ""),
    "fifo": ("evaluate", ""),
}


def _text_case(kind, command):
    def make(ctx):
        text = _text_file(kind)(ctx)
        expect, checks = ("either", [vocabulary_warning]) if kind == "cyrillic" else ("error", [])
        if command == "evaluate":
            argv = _evaluate(SHIPPED_IMAGE, "--data", text)
        elif command == "train":
            argv = _train(ctx, "--data", text)
        else:
            ck = ctx.write("model.pt", ctx.bench.tiny_checkpoint())
            argv = _compile(ck, ctx, "--data", text)
        return Plan(argv, expect=expect, checks=checks)
    return make


def _trained_then_compiled(text):
    """Train the tiny config on ``text``; the compiler must refuse the result (a refusal by
    the trainer settles the case too)."""
    def make(ctx):
        data = ctx.write("text.txt", text)
        r = ctx.run(_train(ctx, "--data", data), limit=120)
        if r.returncode != 0 or r.timed_out or _TRACEBACK in r.stdout + r.stderr:
            return Plan(r.argv, outcome=r)
        return Plan(_compile(ctx.path("run/ckpt.pt"), ctx, "--data", data))
    return make


def text_cases():
    cases = []
    for kind, (commands, quick) in TEXTS.items():
        for command in commands.split():
            cases.append(Case(f"text/{kind}/{command}", _text_case(kind, command),
                              quick=command in quick.split()))
    rng = np.random.default_rng(4)
    wide = "".join(chr(c) for c in rng.permutation(np.arange(0x4E00, 0x4E00 + 400)))
    cases += [
        Case("text/400-character-vocabulary/train-compile",
             _trained_then_compiled(wide * 5)),
        Case("text/control-character-vocabulary/train-compile",
             _trained_then_compiled(("ROMEO: \x1b[2J\x07 hi there.\n" * 80))),
    ]
    return cases


def _args(argv, expect="error", limit=FAST, quick=False, codes=EXIT_CODES, **kw):
    """An argument case: ``argv`` may hold callables ``f(ctx)`` for paths."""
    def make(ctx):
        resolved = [a(ctx) if callable(a) else a for a in argv]
        return Plan(resolved, expect=expect, limit=limit, codes=codes, **kw)
    return make


def _tiny_path(ctx):
    return ctx.remember(ctx.write("model.pt", ctx.bench.tiny_checkpoint()))


def _short_text(ctx):
    return ctx.write("short.txt", SHIPPED_TEXT.read_text()[:2000])


def argument_cases():
    gen = lambda *a: ["models.generate", "--tokens", "20", *a]
    swg = lambda *a: ["sw.generate", "--backend", "golden", "--tokens", "20", *a]
    ev = lambda *a: ["models.evaluate", "--chars", "500", *a]
    tr = lambda *a: ["models.train", "--config", "tiny", "--out", lambda c: c.path("run"), *a]
    cc = lambda *a: ["models.compile", "--checkpoint", _tiny_path, "-o",
                     lambda c: c.path("o.img"), *a]
    hw = lambda *a: ["hw.build", "--board", "ulx3s", "--quiet", "--build-dir",
                     lambda c: c.path("build"), *a]
    cases = [
        ("models.generate/temperature-nan", gen("--temperature", "nan"), {"quick": True}),
        ("models.generate/temperature-inf", gen("--temperature", "inf"), {}),
        ("models.generate/temperature-negative", gen("--temperature", "-1"), {}),
        ("models.generate/tokens-negative", gen("--tokens", "-5"), {}),
        ("models.generate/tokens-not-a-number", gen("--tokens", "abc"), {}),
        ("models.generate/prompt-empty", gen("--prompt", ""), {}),
        ("models.generate/prompt-outside-vocabulary", gen("--prompt", "Жук"), {}),
        ("sw.generate/temperature-nan", swg("--temperature", "nan"), {}),
        ("sw.generate/temperature-inf", swg("--temperature", "inf"), {}),
        ("sw.generate/tokens-negative", swg("--tokens", "-5"), {}),
        ("sw.generate/timeout-nan", swg("--timeout", "nan"), {"quick": True}),
        ("sw.generate/timeout-zero", swg("--timeout", "0"), {}),
        ("sw.generate/timeout-negative", swg("--timeout", "-1"), {}),
        ("sw.generate/port-missing", ["sw.generate", "--port", lambda c: c.path("no-such-tty")],
         {}),
        ("sw.generate/port-regular-file", ["sw.generate", "--port",
                                           lambda c: c.write("plain.txt", "x"), "--timeout", "1"],
         {}),
        ("models.evaluate/chars-1", ev("--chars", "1"), {"quick": True}),
        ("models.evaluate/chars-negative", ev("--chars", "-5"), {}),
        ("models.evaluate/chars-zero", ev("--chars", "0"), {}),
        ("models.evaluate/streams-zero", ev("--streams", "0"), {}),
        ("models.evaluate/streams-negative", ev("--streams", "-3"), {}),
        ("models.evaluate/lanes-zero", ev("--checkpoint", _tiny_path, "--lanes", "0"), {}),
        ("models.train/set-steps-abc", tr("--set", "steps=abc"), {"quick": True}),
        ("models.train/set-hidden-zero", tr("--set", "hidden=[0]", "--set", "steps=2"), {}),
        ("models.train/set-seq-5000-short-text",
         tr("--set", "seq=5000", "--set", "steps=2", "--data", _short_text), {}),
        ("models.train/set-unknown", tr("--set", "unknown=1"), {}),
        ("models.train/set-batch-zero", tr("--set", "batch=0", "--set", "steps=2"), {}),
        ("models.train/set-lr-nan", tr("--set", "lr=NaN", "--set", "steps=2"), {}),
        ("models.train/set-without-equals", tr("--set", "steps"), {}),
        ("models.train/threads-negative", tr("--threads", "-1", "--set", "steps=2"), {}),
        ("models.train/out-is-a-file", ["models.train", "--config", "tiny", "--set", "steps=2",
                                        "--out", lambda c: c.write("file.txt", "x")], {}),
        ("models.compile/lanes-zero", cc("--lanes", "0"), {}),
        ("models.compile/sparsity-1.5", cc("--sparsity", "1.5"),
         {}),
        ("models.compile/sparsity-nan", cc("--sparsity", "nan"), {}),
        ("models.compile/fpga-99f", cc("--fpga", "99f"), {}),
        ("models.compile/lanes-100000", cc("--lanes", "100000"), {}),
        ("hw.build/fpga-99f", hw("--fpga", "99f"), {"quick": True}),
        ("hw.build/board-unknown", hw("--board", "nosuch"), {}),
        ("hw.build/clock-zero", hw("--clock", "0"), {}),
        ("hw.build/clock-nan", hw("--clock", "nan"), {}),
        ("hw.build/clock-negative", hw("--clock", "-5"), {}),
        ("hw.build/lanes-zero", hw("--lanes", "0"), {}),
        ("hw.build/lanes-1000000", hw("--lanes", "1000000"), {}),
        ("hw.build/set-unknown-field", hw("--set", "bogus=1"), {}),
        ("hw.build/image-and-no-image", hw("--image", str(SHIPPED_IMAGE), "--no-image"), {}),
    ]
    out = []
    for name, argv, kw in cases:
        quick = kw.pop("quick", False)
        if name.startswith("hw.build"):
            kw["codes"] = HW_BUILD_EXIT_CODES
            kw["limit"] = 30
        out.append(Case(f"args/{name}", _args(argv, **kw), quick=quick))

    def compile_over_itself(ctx):
        ck = _tiny_path(ctx)
        return Plan(["models.compile", "--checkpoint", ck, "-o", ck],
                    invariants=[unchanged(ck)])

    def compile_collides_with_checkpoint(ctx):
        ck = ctx.remember(ctx.write("net.pt", ctx.bench.tiny_checkpoint()))
        return Plan(["models.compile", "--checkpoint", ck, "-o", ctx.path("net.img"),
                     "--with-checkpoint"],
                    invariants=[unchanged(ck), absent(ctx.path("net.img"),
                                                      "wrote the image although refused")])

    def compile_image_named_pt(ctx):
        ck = _tiny_path(ctx)
        return Plan(["models.compile", "--checkpoint", ck, "-o", ctx.path("out.pt"),
                     "--with-checkpoint"],
                    invariants=[unchanged(ck)])

    def compile_missing_folder(ctx):
        ck = _tiny_path(ctx)
        return Plan(["models.compile", "--checkpoint", ck, "-o", ctx.path("missing/out.img")],
                    invariants=[stdout_lacks(r"^(network|memory):",
                                             "refused only after the work was done")])

    def compile_into_folder(ctx):
        ck = _tiny_path(ctx)
        ctx.path("folder.img").mkdir()
        return Plan(["models.compile", "--checkpoint", ck, "-o", ctx.path("folder.img")],
                    invariants=[stdout_lacks(r"^(network|memory):",
                                             "refused only after the work was done")])

    def raster_missing_folder(ctx):
        return Plan(["models.generate", "--tokens", "3000", "--raster",
                     ctx.path("missing/raster.png")],
                    invariants=[stdout_lacks(r"ROMEO:", "refused only after generating")])

    def long_prompt(ctx):
        prompt = SHIPPED_TEXT.read_text()[:100_000]
        return Plan(["sw.generate", "--backend", "golden", "--tokens", "1", "--prompt", prompt],
                    expect="ok", limit=900, checks=[prompt_progress])

    out += [
        Case("args/models.compile/output-is-the-checkpoint", compile_over_itself),
        Case("args/models.compile/with-checkpoint-overwrites-input",
             compile_collides_with_checkpoint, quick=True),
        Case("args/models.compile/with-checkpoint-output-named-pt", compile_image_named_pt),
        Case("args/models.compile/output-folder-missing", compile_missing_folder, quick=True),
        Case("args/models.compile/output-is-a-folder", compile_into_folder),
        Case("args/models.generate/raster-folder-missing", raster_missing_folder),
        Case("args/sw.generate/prompt-100kB", long_prompt),
    ]
    return out


def _after_output(chars):
    """Interrupt once stdout holds more than ``chars`` characters."""
    return lambda out, err: len(out) > chars


def signal_cases():
    def generate(ctx):
        return Plan(["models.generate", "--tokens", "100000"], interrupt=_after_output(30),
                    limit=60)

    def train(ctx):
        run = ctx.path("run")
        ck = run / "ckpt.pt"
        return Plan(["models.train", "--config", "tiny", "--out", run, "--set", "steps=100000",
                     "--set", "eval_every=5"],
                    interrupt=lambda out, err: ck.exists(), limit=90,
                    invariants=[checkpoint_loads(ck), no_temporaries(run)])

    def sw_golden(ctx):
        return Plan(["sw.generate", "--backend", "golden", "--tokens", "100000"],
                    interrupt=_after_output(30), limit=60)

    def sw_serial(ctx):
        return Plan(["sw.generate", "--port", "{port}", "--tokens", "100000"],
                    board=["sw.pty_board"], interrupt=_after_output(30), limit=90,
                    invariants=[board_still_answers])

    def evaluate(ctx):
        return Plan(["models.evaluate", "--chars", "50000"],
                    interrupt=lambda out, err: "golden" in err, limit=90)

    return [Case("signal/ctrl-c/models.generate", generate, quick=True),
            Case("signal/ctrl-c/models.train", train, quick=True),
            Case("signal/ctrl-c/sw.generate-golden", sw_golden, quick=True),
            Case("signal/ctrl-c/sw.generate-serial", sw_serial),
            Case("signal/ctrl-c/models.evaluate", evaluate)]


QUICK_FAKE_BOARDS = ("silent", "garbage", "flood", "impossible")
UNASKED_FAKE_BOARDS = ("short-read", "short-status")
"""Fake boards whose fault is in an answer that ``sw.generate`` never asks for (READ,
STATUS): there generation must simply work, with the fake board's token 0 throughout."""


def board_cases():
    def pty_golden(ctx):
        return Plan(["sw.generate", "--port", "{port}", "--tokens", "20", "--seed", "3"],
                    board=["sw.pty_board"], expect="ok", limit=90,
                    checks=[golden_text_matches(["--tokens", "20", "--seed", "3"])])

    cases = [Case("board/pty-golden/sw.generate", pty_golden)]

    def fake(mode):
        def make(ctx):
            unasked = mode in UNASKED_FAKE_BOARDS
            return Plan(["sw.generate", "--port", "{port}", "--timeout", "0.5", "--tokens", "20"],
                        board=["sw.fake_board", "--mode", mode], limit=30,
                        expect="either" if unasked else "error",
                        checks=[stdout_has(r"\AROMEO:(.)\1{19}\s*\Z",
                                           "not the fake board's 20 tokens 0")] if unasked
                        else [])
        return make
    cases += [Case(f"board/fake-{mode}/sw.generate", fake(mode),
                   quick=mode in QUICK_FAKE_BOARDS) for mode in FAKE_BOARD_MODES]
    return cases


def all_cases():
    """Every case, in run order (names unique)."""
    return checkpoint_cases() + image_cases() + text_cases() + argument_cases() + \
        signal_cases() + board_cases()


# --- running the cases -------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    """A case's verdict and what it is based on."""
    case: str
    verdict: str
    why: str
    last_line: str
    seconds: float
    returncode: int
    peak_rss: int


def _start_board(ctx, argv):
    """Start a board process (own process group); returns ``(process, port)`` or
    ``(process, outcome)`` when it printed no device path within a minute."""
    logs = ctx.bench.logs_for(ctx.tmp)
    out_path, err_path = logs / ".board-stdout", logs / ".board-stderr"
    with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
        t0 = time.monotonic()
        proc = subprocess.Popen(python_m(argv), cwd=ctx.tmp, env=child_env(),
                                stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                start_new_session=True)
    while time.monotonic() - t0 < 60:
        first = out_path.read_bytes().split(b"\n", 1)
        if len(first) == 2 or proc.poll() is not None:
            m = re.search(rb"(/dev/\S+)", first[0])
            if m:
                return proc, m.group(1).decode()
            break
        time.sleep(0.05)
    timed_out = proc.poll() is None
    _killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc, Outcome(argv=python_m(argv), returncode=proc.returncode,
                         stdout=out_path.read_text("utf-8", "replace"),
                         stderr=err_path.read_text("utf-8", "replace"),
                         seconds=time.monotonic() - t0, timed_out=timed_out,
                         note=": the board printed no device path")


def _stop_board(proc):
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _killpg(proc.pid, signal.SIGKILL)


def run_case(bench, case):
    """Prepare and run one case in a folder of its own (removed afterwards); returns its
    :class:`Result`."""
    tmp = bench.new_folder()
    ctx = Context(bench, tmp, case.name)
    board = None
    prefix = ""
    try:
        plan = case.make(ctx)
        out = plan.outcome
        if out is None and plan.board:
            board, port = _start_board(ctx, plan.board)
            if isinstance(port, Outcome):
                out, plan, prefix = port, Plan(plan.board, expect="ok", limit=60), "the board: "
            else:
                ctx.port = port
        if out is None:
            argv = [ctx.port if a == "{port}" else a for a in plan.argv]
            out = execute(python_m(argv), tmp, plan.limit, interrupt=plan.interrupt,
                          logs=bench.logs_for(tmp))
        checks = plan.invariants + (plan.checks if out.returncode == 0 and not out.timed_out
                                    else [])
        problems = [p for p in (check(out, ctx) for check in checks) if p]
    finally:
        if board is not None:
            _stop_board(board)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(bench.logs_for(tmp), ignore_errors=True)
    verdict, why = classify(plan, out, problems)
    return Result(case=case.name, verdict=verdict, why=prefix + why,
                  last_line=out.last_line[:300], seconds=round(out.seconds, 2),
                  returncode=out.returncode, peak_rss=out.peak_rss)


def run_cases(cases, root, jobs=1, progress=None):
    """Run ``cases`` with fixtures and case folders under ``root``; returns the results in
    case order. ``progress(i, n, result)`` is called as each case ends."""
    bench = Bench(root)
    results = [None] * len(cases)
    done = 0
    lock = threading.Lock()

    def one(i):
        nonlocal done
        r = run_case(bench, cases[i])
        with lock:
            results[i] = r
            done += 1
            if progress:
                progress(done, len(cases), r)

    if jobs <= 1:
        for i in range(len(cases)):
            one(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for f in [pool.submit(one, i) for i in range(len(cases))]:
                f.result()
    return results


def summarise(results, wall_s=None, subset="all"):
    """The JSON summary: counts per verdict and the failures."""
    s = {"cases": len(results), **{v: 0 for v in VERDICTS}}
    for r in results:
        s[r.verdict] += 1
    s["failures"] = [{"case": r.case, "verdict": r.verdict, "why": r.why,
                      "last_line": r.last_line} for r in results if r.verdict in FAILING]
    s["subset"] = subset
    top = max(results, key=lambda r: r.peak_rss, default=None)
    if top is not None:
        s["peak_rss_mib"], s["peak_rss_case"] = round(top.peak_rss / 2 ** 20), top.case
    if wall_s is not None:
        s["wall_s"] = round(wall_s, 1)
    return s


def table(results):
    """Markdown table: verdict counts per case group, and a total row."""
    groups = {}
    for r in results:
        groups.setdefault(r.case.split("/")[0], []).append(r)
    head = "| group | cases | " + " | ".join(VERDICTS) + " |"
    lines = [head, "|---" * (len(VERDICTS) + 2) + "|"]
    for name, rs in list(groups.items()) + [("**total**", results)]:
        counts = [sum(r.verdict == v for r in rs) for v in VERDICTS]
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def failure_list(results):
    rows = [r for r in results if r.verdict in FAILING]
    if not rows:
        return "Every case ended as a clear error or a correct result."
    return "\n".join(["| case | verdict | why | last stderr line |", "|---|---|---|---|"] + [
        f"| {r.case} | {r.verdict} | {r.why} | `{_md(r.last_line)}` |" for r in rows])


def _md(text):
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= 160 else text[:157] + "..."


def _cap_memory():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_CAP if hard == resource.RLIM_INFINITY else min(MEMORY_CAP, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.hostile",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the representative subset (CI)")
    ap.add_argument("-k", metavar="TEXT", action="append", default=[],
                    help="only cases whose name contains TEXT (repeatable: any of them)")
    ap.add_argument("--exclude", metavar="TEXT", action="append", default=[],
                    help="leave out cases whose name contains TEXT (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the selected cases and stop")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, not {args.jobs}")
    interruptible()
    cases = [c for c in all_cases() if (c.quick or not args.quick)
             and (not args.k or any(k in c.name for k in args.k))
             and not any(x in c.name for x in args.exclude)]
    if args.list:
        for c in cases:
            print(f"{c.name}{'  (quick)' if c.quick else ''}")
        return 0
    _cap_memory()
    width = len(str(len(cases)))

    def progress(i, n, r):
        why = f"{r.why}: " if r.why else ""
        print(f"[{i:{width}d}/{n}] {r.verdict:12s} {r.seconds:6.1f} s  {r.case}  "
              f"({why}{r.last_line[:120]})", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="hostile-") as root:
            results = run_cases(cases, root, args.jobs, progress)
    except BenchError as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None
    wall = time.monotonic() - t0
    subset = "quick" if args.quick else "all"
    subset += "".join(f" -k {k}" for k in args.k) + "".join(f" --exclude {x}"
                                                             for x in args.exclude)
    summary = summarise(results, wall, subset)
    print(table(results))
    print()
    print(failure_list(results))
    if args.write:
        cmd = "python -m bench.hostile " + " ".join(argv if argv is not None else sys.argv[1:])
        body = (f"{len(results)} cases ({subset}) in {wall:.0f} s on {os.cpu_count()} CPU "
                f"cores ({platform.machine()}, shared); every case a real subprocess with "
                f"a time limit and a {MEMORY_CAP >> 30} GiB address-space cap. Largest "
                f"peak memory of one command: {summary.get('peak_rss_mib', 0)} MiB "
                f"({summary.get('peak_rss_case', '-')}).\n\n"
                f"{table(results)}\n\n{failure_list(results)}")
        update_section(TITLE, cmd, body)
    if args.json:
        print(json.dumps(summary))
    return 1 if any(summary[v] for v in FAILING) else 0


if __name__ == "__main__":
    sys.exit(main())
