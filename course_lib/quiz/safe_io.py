"""Files in a folder other people can write to: ``course grade`` reads a class drop folder that every
student can write to, and writes the gradebook, possibly beside it.

Three rules, each closing a way a planted file could hang the grader, exhaust its memory, or make
it overwrite a file the instructor owns:

- ``read_regular_file`` reads regular files only (a FIFO would block ``open`` forever; ``/dev/zero``
  claims a size of 0 and never ends), opens them without blocking and without following a last
  symlink, and bounds the bytes actually read, not the size the file claims.
- ``write_atomic`` writes through a temporary file created exclusively (``O_EXCL``) under a random
  name in the target's folder, then renames it over the target: a planted ``<out>.tmp`` symlink is
  never followed, and a reader sees the old file or the new one, never half of it.
- ``shown`` escapes every character a terminal would interpret (newline, ANSI escape, direction
  overrides), so a file name cannot forge or hide a line of the report.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


class FileRefused(ValueError):
    """A file that is not read, with the reason as its message."""


def shown(text: object) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u202e``) and ``\\`` doubled.

    Used for every file name and student name a message prints: a newline in a name would
    start a forged report line, an ANSI escape could hide what follows, a direction override
    could show another name.
    """
    out = []
    for ch in str(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def is_inside(path: str, folder: str) -> bool:
    """Whether the resolved ``path`` lies in the resolved ``folder`` (both already ``realpath``-ed)."""
    return os.path.commonpath([path, folder]) == folder


def read_regular_file(path: Path, limit: int, *, folder: Path | None = None) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), or ``FileRefused`` saying why not.

    With ``folder``, a symlink whose target lies outside ``folder`` is refused: a student who can
    write to a drop folder must not make the grader read (and report on) another file.
    """
    try:
        st = os.stat(path)  # follows symlinks: what would be opened
    except FileNotFoundError:
        raise FileRefused("no such file (or a symlink to nothing)") from None
    except OSError as exc:
        raise FileRefused(f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileRefused("is a folder, not a submission file")
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"is {_kind(st.st_mode)}, not a regular file: not read")
    real = os.path.realpath(path)
    if folder is not None and os.path.islink(path):
        home = os.path.realpath(folder)
        if not is_inside(real, home):
            raise FileRefused(f"is a symlink to {shown(real)}, outside its folder {shown(home)}: not read")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:  # swapped for a symlink or a FIFO since the check: ELOOP, ENXIO...
        raise FileRefused(f"cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"is {_kind(st.st_mode)}, not a regular file: not read")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefused(f"more than {limit} bytes: larger than a submission can be")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def same_file_key(path: Path) -> tuple[int, int] | str:
    """What identifies a file whatever path reaches it: (device, inode), or the resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return os.path.realpath(path)


def write_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through an exclusive, randomly named temporary file in its folder.

    ``os.replace`` renames over ``target`` without following it, so a symlink planted at
    ``target`` is replaced, not written through. The file is created with mode 0600 (a gradebook
    holds personal data); ``OSError`` propagates.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
