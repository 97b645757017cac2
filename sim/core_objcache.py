"""Reuse Verilator's runtime objects across the core testbenches' builds.

Every Verilator build compiles the same runtime (``verilated.cpp``, ``verilated_vpi.cpp``,
...) from scratch, about a third of a small model's build. Verilator's makefile runs every
compile as ``$(OBJCACHE) $(CXX) ...``; with ``OBJCACHE="python -m sim.core_objcache"`` (or
this file's path) this script keeps the objects of sources under Verilator's own
``include`` folder, keyed by the whole command line and the source's path, size and
modification time, and hands them back to later builds. Any other compile (the model's,
and cocotb's ``verilator.cpp``, which includes the model) runs unchanged.

The cache lives in ``$CORE_OBJCACHE_DIR`` (the tests point it into ``sim_build/``).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]

CACHE_ENV = "CORE_OBJCACHE_DIR"


def _runtime_source(argv):
    """The runtime source this compile builds, or ``None`` if it is not one."""
    root = os.environ.get("VERILATOR_ROOT")
    if not root or "-c" not in argv or "-o" not in argv:
        return None
    include = (Path(root) / "include").resolve()
    sources = [Path(a) for a in argv if a.endswith(".cpp")]
    if len(sources) != 1 or include not in sources[0].resolve().parents:
        return None
    return sources[0]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    source = _runtime_source(argv)
    cache = os.environ.get(CACHE_ENV)
    if source is None or not cache:
        return subprocess.call(argv)
    stat = source.stat()
    key = hashlib.sha256("\0".join(
        argv + [str(source.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    ).encode()).hexdigest()[:32]
    output = Path(argv[argv.index("-o") + 1])
    cached = Path(cache) / f"{source.stem}-{key}.o"
    if cached.is_file():
        shutil.copyfile(cached, output)
        return 0
    status = subprocess.call(argv)
    if status == 0 and output.is_file():
        Path(cache).mkdir(parents=True, exist_ok=True)
        # Copy then rename, so that a parallel build never sees half an object.
        fd, partial = tempfile.mkstemp(dir=cache, suffix=".part")
        os.close(fd)
        shutil.copyfile(output, partial)
        os.replace(partial, cached)
    return status


if __name__ == "__main__":
    sys.exit(main())
