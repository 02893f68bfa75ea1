"""Multi-host runs: start JAX's distributed runtime on a pod, and split work items across hosts.

On a TPU pod slice every worker runs the same command; ``initialize_distributed()`` connects the
workers (a no-op on one machine), then each host takes ``host_slice(items, jax.process_index(),
jax.process_count())`` and writes its own result shards; ``valueprobe merge`` joins them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# Environment variables that say "this process is one of several hosts".
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def _item_key(item: Any) -> Any:
    if isinstance(item, (str, bytes, int)):
        return item
    if hasattr(item, "key"):
        return item.key
    if isinstance(item, Mapping) and "key" in item:
        return item["key"]
    raise TypeError(f"host_slice: cannot find a key for {type(item).__name__}; pass key=")


def host_slice(items: Sequence[T], process_index: int, process_count: int, *,
               key: Callable[[T], Any] | None = None) -> list[T]:
    """This host's share of ``items``: a contiguous block of the items sorted by key.

    Every item lands on exactly one host whatever order the hosts listed them in (the sort makes
    the split independent of input order); block sizes differ by at most one; neighbouring keys
    (same style, same prompt prefix) stay on one host. Keys must be unique.
    """
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"host_slice: process_index={process_index} not in [0, {process_count})")
    key = key or _item_key
    keyed = sorted(((key(it), it) for it in items), key=lambda kv: kv[0])
    keys = [k for k, _ in keyed]
    if len(set(keys)) != len(keys):
        raise ValueError("host_slice: work items have duplicate keys")
    n = len(keyed)
    start = (n * process_index) // process_count
    stop = (n * (process_index + 1)) // process_count
    return [it for _, it in keyed[start:stop]]


def multihost_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment says this is one host of several.

    ``VALUEPROBE_DISTRIBUTED=1/0`` decides outright (launch/tpu_pod.sh sets 1); otherwise a JAX
    coordinator address, a TPU VM with several workers (TPU_WORKER_HOSTNAMES lists more than
    one), or a SLURM job with several tasks.
    """
    env = os.environ if env is None else env
    flag = env.get("VALUEPROBE_DISTRIBUTED", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    if any(env.get(v) for v in _MULTIHOST_ENV):
        return True
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return True
    try:
        return int(env.get("SLURM_NTASKS", "1")) > 1
    except ValueError:
        return False


def initialize_distributed(env: Mapping[str, str] | None = None, **kwargs: Any) -> bool:
    """Call ``jax.distributed.initialize`` when running multi-host (see multihost_requested).

    Must run before anything touches a JAX device. On TPU VMs and SLURM, JAX finds the
    coordinator, process count and index itself; elsewhere pass them as kwargs or through
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. Returns True when it
    initialised (or already was), False on a single host, where it does nothing.
    """
    import jax

    if not multihost_requested(env):
        return False
    if jax.distributed.is_initialized():
        return True
    env = os.environ if env is None else env
    if "JAX_NUM_PROCESSES" in env and "num_processes" not in kwargs:
        kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in env and "process_id" not in kwargs:
        kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    return True


def process_info() -> tuple[int, int]:
    """(process_index, process_count) of this host."""
    import jax

    return jax.process_index(), jax.process_count()


@dataclasses.dataclass(frozen=True)
class WorkSplit:
    """How the hosts share the work items for one mesh.

    ``index``/``count``: pass to ``host_slice`` (or the sweep's chunk split). ``writer``: whether
    this host writes result shards. ``lockstep``: the mesh spans several hosts, so they must all
    run the same items in the same order (every host calls every jitted function; one writes).
    """

    index: int
    count: int
    writer: bool
    lockstep: bool


def work_split(mesh: Any) -> WorkSplit:
    """Per-host items when the mesh lives on this host alone; otherwise one group in lockstep
    with process 0 writing. On one host: WorkSplit(0, 1, True, False)."""
    import jax

    me, n = jax.process_index(), jax.process_count()
    owners = {d.process_index for d in mesh.devices.flat}
    if owners == {me}:
        return WorkSplit(me, n, True, False)
    if len(owners) != n:
        raise ValueError(f"mesh spans {len(owners)} of {n} hosts: use this host's devices or all")
    return WorkSplit(0, 1, me == 0, True)



def same_date(date_string: str) -> str:
    """Process 0's ``YYYY-MM-DD`` on every host (identity on one host). A pod's hosts each
    resolve the date a dated chat template writes; on a sweep's very first start no manifest
    holds it yet and a start that straddles midnight would give hosts different dates, so the
    hosts take process 0's."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return date_string
    from jax.experimental import multihost_utils

    digits = np.int32(int(date_string.replace("-", "")))  # YYYYMMDD fits in int32
    got = int(np.asarray(multihost_utils.broadcast_one_to_all(digits)))
    return f"{got // 10000:04d}-{got // 100 % 100:02d}-{got % 100:02d}"


def agree(mask: Sequence[bool]) -> list[bool]:
    """Process 0's copy of a per-item flag list on every host (e.g. "chunk still to do" in a
    lockstep sweep, where only process 0 sees the shards it wrote). Identity on one host."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return [bool(x) for x in mask]
    from jax.experimental import multihost_utils

    arr = multihost_utils.broadcast_one_to_all(np.asarray(mask, np.bool_))
    return [bool(x) for x in np.asarray(arr)]
