"""A second tier for the KV cache: the course's own vLLM KV connector, one file per block.

Taught in ``notebooks/09_second_tier.ipynb``. Modules: ``store`` (block files, the
directory, LRU; no vLLM import), ``connector`` (the vLLM connector), ``measure`` (TTFT by tier,
fleet counters). vLLM's native KV offloading does not run on
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

from pathlib import Path
from typing import Any

from course_lib.offload.store import (  # noqa: F401  (re-exported; no vLLM import)
    DEFAULT_CAPACITY_BYTES,
    MAGIC,
    STALE_TMP_S,
    SUFFIX,
    TMP_PREFIX,
    BlockIdentity,
    TierDirectory,
    _stamp,
    new_tier_dir,
    read_header,
    remove_tier_dir,
)

#: The class name and module vLLM's ``KVConnectorFactory.get_connector_class`` imports
#: (``vllm/distributed/kv_transfer/kv_connector/factory.py``: ``kv_connector_module_path`` first).
CONNECTOR_NAME = "CourseTierConnector"
CONNECTOR_MODULE = "course_lib.offload.connector"


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
