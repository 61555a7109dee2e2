"""A second tier for the KV cache: the course's own vLLM KV connector, one file per block.

Taught in ``notebooks/09_second_tier.ipynb``. vLLM's native KV offloading does not run on
its CPU build (``vllm/v1/kv_offload/cpu/spec.py`` refuses every non-GPU platform), but the
KV connector API does (``vllm/distributed/kv_transfer/kv_connector/v1/base.py``). This
module is a small connector on that API:

- **keyed by vLLM's own block hashes** (``Request.block_hashes``, the chain of
  ``vllm/v1/core/kv_cache_utils.py``), one file per full block, so a prompt that shares
  only a prefix with a stored one hits for that prefix. vLLM's reference
  ``ExampleConnector`` (``.../v1/example_connector.py``) keys one folder by the whole
  prompt instead, so it only hits on the same prompt;
- **stored in a directory**, by default a fresh one on a tmpfs (``/dev/shm``: host RAM),
  with a capacity in bytes and LRU eviction by file modification time (a hit refreshes it);
- **the directory is the truth**: no in-memory index, so a second process (another engine,
  another server) reading and writing the same directory sees every block the first stored;
- **atomic and checked**: a block is written to a unique temporary name, flushed and
  renamed into place (``os.replace`` is atomic within a file system), so a reader sees the
  whole file or none. Every file carries the block hash, block size, model, dtype, the
  KV layout and a CRC-32 of its payload; a file that does not match is a miss, named in the
  log, never loaded. A payload found corrupt while loading is reported to vLLM as a load
  error (``get_block_ids_with_load_errors``) and vLLM recomputes those tokens
  (``kv_load_failure_policy="recompute"``, which ``tier_config`` sets).

Scope: only the prompt's full blocks are stored (not blocks filled by decoding); one KV
cache group (full attention, as the course model has); one worker (no tensor parallelism).
Loads and saves are synchronous: a request that hits waits for its blocks to be read.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = logging.getLogger("course_lib.offload")

#: The class name and module vLLM's ``KVConnectorFactory.get_connector_class`` imports.
CONNECTOR_NAME = "CourseTierConnector"
CONNECTOR_MODULE = "course_lib.offload"
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


def tier_config(tier_dir: str | Path | None = None, capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
                *, fsync: bool = True) -> dict[str, Any]:
    """The ``kv_transfer_config`` that loads this connector (for ``make_llm`` or ``VLLMServer``).

    ``tier_dir=None`` uses a fresh directory from ``new_tier_dir()``. A directory you
    give must exist and be writable (the engine refuses to start otherwise).
    ``kv_load_failure_policy="recompute"``: a block found corrupt while loading is
    recomputed instead of failing the request (``vllm/config/kv_transfer.py``).
    """
    if tier_dir is None:
        tier_dir = new_tier_dir()
    return {
        "kv_connector": CONNECTOR_NAME,
        "kv_connector_module_path": CONNECTOR_MODULE,
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {
            "tier_dir": str(tier_dir), "capacity_bytes": int(capacity_bytes), "fsync": bool(fsync),
        },
    }


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


# -- the connector ---------------------------------------------------------------------------


@dataclass
class TierMetadata(KVConnectorMetadata):
    """What the scheduler side tells the worker side for one step: (block_id, block_hash) pairs."""

    loads: list[tuple[int, str]] = field(default_factory=list)
    saves: list[tuple[int, str]] = field(default_factory=list)


class CourseTierConnector(KVConnectorBase_V1):
    """A KV connector whose store is a directory of block files (see the module docstring).

    vLLM makes two instances: one with ``role=SCHEDULER`` (answers "how many tokens past the
    local hit does the tier hold?" and plans loads and saves), one with ``role=WORKER``
    (copies blocks between the files and the paged KV cache). They share nothing but the
    ``TierMetadata`` vLLM passes each step, and the directory.
    """

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole,
                 kv_cache_config: "KVCacheConfig") -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = self._kv_transfer_config.kv_connector_extra_config or {}
        if "tier_dir" not in extra:
            raise ValueError("CourseTierConnector needs kv_connector_extra_config['tier_dir']: "
                             "use course_lib.offload.tier_config()")
        if self._kv_transfer_config.kv_load_failure_policy != "recompute":
            raise ValueError("CourseTierConnector needs kv_load_failure_policy='recompute' (a corrupt "
                             "block is then recomputed, not a failed request): use tier_config()")
        self.tier = TierDirectory(extra["tier_dir"], extra.get("capacity_bytes", DEFAULT_CAPACITY_BYTES),
                                  extra.get("fsync", True))
        self.block_size = vllm_config.cache_config.block_size
        self.model = str(vllm_config.model_config.model)
        self.dtype = str(vllm_config.model_config.dtype).replace("torch.", "")
        layers = sorted(kv_cache_config.kv_cache_groups[0].layer_names) if kv_cache_config.kv_cache_groups else []
        self.layers = tuple(layers)
        self.identity: BlockIdentity | None = None  # the worker knows the layer shape once the cache exists
        # scheduler side
        self._requests: dict[str, "Request"] = {}
        self._block_ids: dict[str, list[int]] = {}
        self._lookups: dict[str, int] = {}  # req_id -> first block index the tier covers
        self._pending_loads: dict[str, list[tuple[int, str]]] = {}
        # worker side
        self._kv_caches: dict[str, "torch.Tensor"] = {}
        self._load_errors: set[int] = set()
        self.stats = {"loaded_blocks": 0, "saved_blocks": 0, "rejected_files": 0, "skipped_saves": 0}

    # ---- scheduler side ----------------------------------------------------------------------
    def _trusted_on_lookup(self, block_hash: str) -> bool:
        """Is this block's file there, whole, and made by an engine like this one? (header only)"""
        path = self.tier.block_path(block_hash)
        try:
            head, _ = read_header(path)
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            logger.warning("KV tier: %s is a miss: %s", path.name, exc)
            return False
        for key, value in (("block_hash", block_hash), ("model", self.model), ("dtype", self.dtype),
                           ("block_size", self.block_size), ("layers", list(self.layers))):
            if head.get(key) != value:
                logger.warning("KV tier: %s is a miss: %s is %r, expected %r", path.name, key, head.get(key), value)
                return False
        return True

    def get_num_new_matched_tokens(self, request: "Request", num_computed_tokens: int) -> tuple[int, bool]:
        """Tokens past the local hit whose blocks the tier holds, as a chain from that point.

        Mirrors the local lookup (``KVCacheManager.get_computed_blocks``): consecutive full
        blocks from the first block the local cache did not have, stopping at the first miss,
        and never the prompt's last token (vLLM must compute at least one token to sample).
        """
        self._requests[request.request_id] = request
        first = num_computed_tokens // self.block_size
        last = min((request.num_tokens - 1) // self.block_size, len(request.block_hashes))
        n = first
        while n < last and self._trusted_on_lookup(request.block_hashes[n].hex()):
            n += 1
        self._lookups[request.request_id] = first
        return (n - first) * self.block_size, False

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int) -> None:
        """Remember which allocated blocks the worker must fill from which files."""
        if num_external_tokens <= 0:
            return
        first = self._lookups[request.request_id]
        block_ids = blocks.get_block_ids()[0]
        n = num_external_tokens // self.block_size
        self._pending_loads[request.request_id] = [
            (block_ids[i], request.block_hashes[i].hex()) for i in range(first, first + n)
        ]

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> TierMetadata:
        """This step's loads (planned above) and saves (prompt blocks this step completes)."""
        meta = TierMetadata()
        for loads in self._pending_loads.values():
            meta.loads += loads
        self._pending_loads.clear()
        progress: list[tuple[str, int]] = []
        for new in scheduler_output.scheduled_new_reqs:
            self._block_ids[new.req_id] = list(new.block_ids[0])
            progress.append((new.req_id, new.num_computed_tokens))
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            new_ids = cached.new_block_ids[i]
            if new_ids is not None:
                if req_id in cached.resumed_req_ids:
                    self._block_ids[req_id] = list(new_ids[0])
                else:
                    self._block_ids.setdefault(req_id, []).extend(new_ids[0])
            progress.append((req_id, cached.num_computed_tokens[i]))
        loading = {h for _, h in meta.loads}
        for req_id, begin in progress:
            request = self._requests.get(req_id)
            if request is None:
                continue
            end = begin + scheduler_output.num_scheduled_tokens.get(req_id, 0)
            full = min(end, request.num_prompt_tokens) // self.block_size
            for j in range(begin // self.block_size, min(full, len(request.block_hashes))):
                h = request.block_hashes[j].hex()
                if h not in loading and not self.tier.block_path(h).exists():
                    meta.saves.append((self._block_ids[req_id][j], h))
        return meta

    def request_finished(self, request: "Request", block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        for table in (self._requests, self._block_ids, self._lookups, self._pending_loads):
            table.pop(request.request_id, None)
        return False, None

    # ---- worker side -------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: dict[str, "torch.Tensor"]) -> None:
        """Keep the paged KV tensors: on CPU, ``[num_blocks, kv_heads, block_size, 2*head_size]``
        per layer (``vllm/v1/attention/backends/cpu_attn.py``), so ``kv[block_id]`` is one block."""
        self._kv_caches = {name: kv_caches[name] for name in self.layers}
        shapes = {tuple(t.shape[1:]) for t in self._kv_caches.values()}
        if len(shapes) != 1:
            raise ValueError(f"CourseTierConnector expects one KV block shape for all layers, got {shapes}")
        self.identity = BlockIdentity(self.model, self.dtype, self.block_size, self.layers, shapes.pop())

    def _block_bytes(self, block_id: int) -> bytes:
        return b"".join(self._kv_caches[name][block_id].contiguous().view(-1).view(_u8()).numpy().tobytes()
                        for name in self.layers)

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        """Copy this step's tier blocks into the paged cache, before the forward pass reads them."""
        meta = self._get_connector_metadata()
        assert isinstance(meta, TierMetadata) and self.identity is not None
        for block_id, block_hash in meta.loads:
            payload = self._read_checked(block_hash)
            if payload is None:
                self._load_errors.add(block_id)  # vLLM recomputes it (kv_load_failure_policy)
                continue
            self._copy_in(block_id, payload)
            self.stats["loaded_blocks"] += 1

    def _read_checked(self, block_hash: str) -> bytes | None:
        """The payload of a block file, or None (logged) if it is gone, foreign or corrupt."""
        path = self.tier.block_path(block_hash)
        try:
            head, offset = read_header(path)
            problem = self.identity.check(head, block_hash)  # type: ignore[union-attr]
            with open(path, "rb") as f:
                f.seek(offset)
                payload = f.read()
            if problem is None and f"{zlib.crc32(payload):08x}" != head["crc32"]:
                problem = "payload checksum mismatch (corrupt file)"
            if problem is None and len(payload) != head["payload_bytes"]:
                problem = "truncated payload"
        except (OSError, ValueError) as exc:
            problem = str(exc)
        if problem is not None:
            self.stats["rejected_files"] += 1
            logger.warning("KV tier: %s not loaded (recomputed instead): %s", path.name, problem)
            return None
        try:
            _stamp(path)  # a hit makes the block the most recently used
        except OSError:  # evicted by another process since: the payload we read is still whole
            pass
        return payload

    def _copy_in(self, block_id: int, payload: bytes) -> None:
        import torch

        per_layer = len(payload) // len(self.layers)
        buf = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        for i, name in enumerate(self.layers):
            dst = self._kv_caches[name][block_id]
            dst.copy_(buf[i * per_layer:(i + 1) * per_layer].view(dst.dtype).view(dst.shape))

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Nothing to wait for: ``start_load_kv`` loads synchronously."""

    def save_kv_layer(self, layer_name: str, kv_layer: "torch.Tensor", attn_metadata: Any, **kwargs: Any) -> None:
        """Nothing per layer: ``wait_for_save`` writes whole blocks (all layers) after the forward pass."""

    def wait_for_save(self) -> None:
        """Write the blocks this step completed, one file per block, after the forward pass."""
        meta = self._get_connector_metadata()
        assert isinstance(meta, TierMetadata) and self.identity is not None
        for block_id, block_hash in meta.saves:
            if self.tier.block_path(block_hash).exists():  # another process stored it meanwhile
                continue
            payload = self._block_bytes(block_id)
            if self.tier.write(block_hash, self.identity.as_header(block_hash, payload) + payload):
                self.stats["saved_blocks"] += 1
            else:
                self.stats["skipped_saves"] += 1

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors


def _u8() -> Any:
    import torch

    return torch.uint8
