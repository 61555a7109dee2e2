"""The tier's storage: block files in a directory, with a byte capacity and LRU eviction.

Part of ``course_lib.offload`` (taught in ``notebooks/09_second_tier.ipynb``); no vLLM import
here, so the store can be read and tested on its own. A block file is a header (JSON: block
hash, model, dtype, block size, layer names and shape, payload size and CRC-32) and the
block's KV bytes, all layers one after the other. The directory is the only shared state:
no index in memory, so every process that opens it sees the same tier.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import struct
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("course_lib.offload")

MAGIC = b"CKVTIER1"
SUFFIX = ".kvblock"
TMP_PREFIX = ".tmp-"
#: Temporary files older than this are leftovers of a crashed writer: eviction removes them.
STALE_TMP_S = 600.0
DEFAULT_CAPACITY_BYTES = 2 << 30

#: Directories ``tier_config`` created: removed when this Python process exits.
_CREATED: set[str] = set()


def _remove_created() -> None:
    for path in list(_CREATED):
        shutil.rmtree(path, ignore_errors=True)
        _CREATED.discard(path)


atexit.register(_remove_created)


def new_tier_dir() -> str:
    """A fresh, empty tier directory on ``/dev/shm`` (a tmpfs: host RAM), else in the temp dir.

    It is removed when the process that made it exits (``remove_tier_dir`` removes it sooner):
    like host RAM, this tier does not outlive the machine's processes that use it.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="course-kv-tier-", dir=base)
    _CREATED.add(path)
    return path


def remove_tier_dir(path: str | Path) -> None:
    """Remove a tier directory made by ``new_tier_dir`` (and every block in it)."""
    if str(path) not in _CREATED:
        raise ValueError(f"{path} was not made by new_tier_dir(): remove it yourself if you mean to")
    shutil.rmtree(path, ignore_errors=True)
    _CREATED.discard(str(path))


# -- the block file: header + payload --------------------------------------------------------


@dataclass(frozen=True)
class BlockIdentity:
    """What a block file must match to be trusted: everything that shapes its bytes."""

    model: str
    dtype: str
    block_size: int
    layers: tuple[str, ...]
    layer_shape: tuple[int, ...]  # one block of one layer, e.g. (kv_heads, block_size, 2*head_size)

    def as_header(self, block_hash: str, payload: bytes) -> bytes:
        head = {"block_hash": block_hash, "model": self.model, "dtype": self.dtype,
                "block_size": self.block_size, "layers": list(self.layers),
                "layer_shape": list(self.layer_shape), "payload_bytes": len(payload),
                "crc32": f"{zlib.crc32(payload):08x}"}  # fixed width: every block file has one size
        raw = json.dumps(head, sort_keys=True).encode()
        return MAGIC + struct.pack("<I", len(raw)) + raw

    def check(self, head: dict[str, Any], block_hash: str) -> str | None:
        """Why ``head`` does not describe this block of this engine, or None if it does."""
        expected = {"block_hash": block_hash, "model": self.model, "dtype": self.dtype,
                    "block_size": self.block_size, "layers": list(self.layers),
                    "layer_shape": list(self.layer_shape)}  # fmt: skip
        for key, value in expected.items():
            if head.get(key) != value:
                return f"{key} is {head.get(key)!r}, expected {value!r}"
        return None


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header of a block file and the offset of its payload; ValueError if malformed or truncated."""
    with open(path, "rb") as f:
        start = f.read(len(MAGIC) + 4)
        if len(start) < len(MAGIC) + 4 or not start.startswith(MAGIC):
            raise ValueError("not a tier block file (bad magic or truncated header)")
        (n,) = struct.unpack("<I", start[len(MAGIC):])
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError("truncated header")
        head = json.loads(raw)
    offset = len(MAGIC) + 4 + n
    size = path.stat().st_size
    if size != offset + head.get("payload_bytes", -1):
        raise ValueError(f"file is {size} bytes, header says {offset + head.get('payload_bytes', -1)}")
    return head, offset


# -- the directory: the only shared state ----------------------------------------------------

_last_stamp_ns = 0


def _stamp(path: Path) -> None:
    """Set ``path``'s mtime to now, to the nanosecond, strictly after this process's last stamp.

    File systems stamp writes with a coarse clock (a few milliseconds on Linux), so blocks
    written in one step would tie and LRU order would be arbitrary; an explicit
    ``time.time_ns()`` keeps the order in which blocks were written or last hit.
    """
    global _last_stamp_ns
    _last_stamp_ns = max(time.time_ns(), _last_stamp_ns + 1)
    os.utime(path, ns=(_last_stamp_ns, _last_stamp_ns))



class TierDirectory:
    """A directory of block files with a byte capacity and LRU eviction (by mtime).

    No index is kept in memory: every question ("is this block there?", "how full is the
    tier?") is answered from the directory itself, so any number of processes can share it.
    """

    def __init__(self, path: str | Path, capacity_bytes: int, fsync: bool = True) -> None:
        self.path = Path(path)
        self.capacity_bytes = int(capacity_bytes)
        self.fsync = fsync
        if not self.path.is_dir():
            raise ValueError(f"KV tier directory {str(self.path)!r} does not exist: create it first "
                             "(or call course_lib.offload.tier_config() without a directory)")
        if self.capacity_bytes <= 0:
            raise ValueError(f"KV tier capacity must be positive, not {capacity_bytes}")
        probe = self.path / f"{TMP_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ValueError(f"KV tier directory {str(self.path)!r} is not writable: {exc}") from exc

    def block_path(self, block_hash: str) -> Path:
        return self.path / f"{block_hash}{SUFFIX}"

    def write(self, block_hash: str, data: bytes) -> bool:
        """Store one block atomically (temp name, flush, rename); False if skipped (logged)."""
        if len(data) > self.capacity_bytes:
            logger.warning("KV tier: block %s skipped: %d bytes exceed the tier capacity %d",
                           block_hash[:16], len(data), self.capacity_bytes)
            return False
        self.make_room(len(data))
        tmp = self.path / f"{TMP_PREFIX}{block_hash[:16]}-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            _stamp(tmp)  # rename keeps the mtime: the block is the most recently used
            os.replace(tmp, self.block_path(block_hash))  # atomic: readers see all or nothing
        except OSError as exc:  # full (ENOSPC), removed, made read-only meanwhile...
            logger.warning("KV tier: block %s skipped: %s", block_hash[:16], exc)
            tmp.unlink(missing_ok=True)
            return False
        return True

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every block file, oldest first; stale temp files are removed."""
        out = []
        now = time.time()
        for entry in os.scandir(self.path):
            try:
                st = entry.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            if entry.name.endswith(SUFFIX):
                out.append((st.st_mtime, st.st_size, Path(entry.path)))
            elif entry.name.startswith(TMP_PREFIX) and now - st.st_mtime > STALE_TMP_S:
                Path(entry.path).unlink(missing_ok=True)
        return sorted(out)

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def make_room(self, nbytes: int) -> list[Path]:
        """Evict least recently used block files until ``nbytes`` more fit; the evicted paths."""
        entries = self.entries()
        used = sum(size for _, size, _ in entries)
        evicted = []
        for _, size, path in entries:
            if used + nbytes <= self.capacity_bytes:
                break
            path.unlink(missing_ok=True)  # another process may have evicted it first
            used -= size
            evicted.append(path)
        return evicted

    def block_hashes(self) -> set[str]:
        """Hashes of the blocks stored now (hex)."""
        return {p.name[: -len(SUFFIX)] for _, _, p in self.entries()}
