"""The course's KV connector: vLLM's v1 connector API on a directory of block files.

Part of ``course_lib.offload`` (see its docstring for the design); taught in
``notebooks/09_second_tier.ipynb``. It mirrors the two halves of
``vllm/distributed/kv_transfer/kv_connector/v1/base.py``: the scheduler side answers
``get_num_new_matched_tokens`` and plans loads and saves (``build_connector_meta``), the
worker side copies blocks between files and the paged KV cache (``start_load_kv``,
``wait_for_save``). vLLM's ``ExampleConnector`` (``.../v1/example_connector.py``) has the
same structure, keyed by whole prompts and saving layer by layer.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from course_lib.offload.store import (
    DEFAULT_CAPACITY_BYTES,
    BlockIdentity,
    TierDirectory,
    _stamp,
    logger,
    read_header,
)

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

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
