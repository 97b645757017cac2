"""Safe file handling for every command: bounded reads of regular files, atomic writes, and
outputs that never overwrite an input.

Untrusted input is the normal case. Every function here turns a bad path into
:class:`FileProblem`, a ``ValueError`` whose message is one line naming the path; the
command-line tools print it and exit non-zero.

* :func:`read_regular` reads a regular file only (no FIFO, device or folder) and refuses one
  larger than a stated limit before reading it, so ``/dev/zero`` or a FIFO can neither grow
  without bound nor block.
* :func:`atomic_write` writes through a temporary file in the target's folder and renames
  it over the target, so a reader never sees half a file and an interrupted write leaves the
  old file (and no temporary) behind.
* :func:`check_output` refuses an output that is one of the inputs (the same file, by any
  path) or whose folder does not exist, before any work starts.
"""

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["FileProblem", "read_regular", "FILE_MODE", "atomic_write", "atomic_write_bytes",
           "check_output", "same_file"]


class FileProblem(ValueError):
    """A path cannot be read or written as asked; the message is one line."""


def _fmt_size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _a(what):
    return f"an {what}" if what[:1] in "aeiou" else f"a {what}"


def read_regular(path, limit, what="file"):
    """The bytes of the regular file ``path``, refused (one line) if it is missing, not a
    regular file, or larger than ``limit`` bytes. Never blocks on a FIFO, never reads past
    ``limit`` even if the file grows while it is read."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not block; the fstat below then
        # refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileProblem(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise FileProblem(f"{path}: is a folder, not {_a(what)}") from None
    except PermissionError:
        raise FileProblem(f"{path}: permission denied") from None
    except OSError as e:
        raise FileProblem(f"{path}: cannot open ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem(f"{path}: is a folder, not {_a(what)}")
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"{path}: not a regular file (a device, FIFO or socket); "
                              "give a file on disk")
        if st.st_size > limit:
            raise FileProblem(f"{path}: {_fmt_size(st.st_size)}, larger than the "
                              f"{_fmt_size(limit)} {_a(what)} may have")
        with os.fdopen(fd, "rb") as f:
            fd = None
            try:
                # Read what the file holds (one byte more shows whether it grew meanwhile).
                data = f.read(st.st_size + 1)
                if len(data) > st.st_size:
                    data += f.read(limit + 1 - len(data))
            except OSError as e:
                raise FileProblem(f"{path}: cannot read ({e.strerror})") from None
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > limit:
        raise FileProblem(f"{path}: larger than the {_fmt_size(limit)} {_a(what)} may have")
    return data


def _file_mode():
    """The permissions ``open()`` gives a new file here (``0o666`` less the umask), read
    once at import: reading the umask means setting it, which must not race other
    threads later."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Context manager yielding a file object open on a temporary file beside ``path``;
    on success it is flushed, synced and renamed over ``path``; on any exception (Ctrl-C
    included) the temporary file is removed and ``path`` is left as it was. The file gets
    the permissions a plain ``open()`` would give it (:data:`FILE_MODE`; ``mkstemp``
    makes it private)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def same_file(a, b):
    """True if paths ``a`` and ``b`` name the same file (both existing), or resolve to the
    same path (either missing)."""
    a, b = Path(a), Path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path, inputs=(), what="output"):
    """Refuse (one line) an output ``path`` that names one of ``inputs``, that is a folder,
    or whose folder does not exist; call before the work starts."""
    path = Path(path)
    for i in inputs:
        if i is not None and same_file(path, i):
            raise FileProblem(f"{path}: the {what} would overwrite the input {i}; "
                              "choose another output path")
    if path.is_dir():
        raise FileProblem(f"{path}: is a folder; name the {what} file")
    parent = path.parent
    if not parent.is_dir():
        raise FileProblem(f"{path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise FileProblem(f"{path}: the folder {parent} is not writable")
    return path
