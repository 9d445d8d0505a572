"""Data parallelism over this process's devices for the encoders.

Parameters are replicated on every local device and each batch is split row-wise
across them (a 1-D `jax.sharding.Mesh` with axis "batch"); `batching.batched` pads
batches to a multiple of the device count. Only local devices: under
jax.distributed every process encodes its own videos, no collective is involved.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """config.compute_dtype -> jnp dtype; a clear error for anything else."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, "
                     f"got {name!r}")
  return COMPUTE_DTYPES[name]


class LocalDevices:
  """A batch-sharded mesh over `devices` (default: all of this process's devices)."""

  def __init__(self, devices: Sequence[jax.Device] | None = None):
    self.devices = list(devices if devices is not None else jax.local_devices())
    self.mesh = Mesh(np.asarray(self.devices), ("batch",))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.rows = NamedSharding(self.mesh, PartitionSpec("batch"))

  @property
  def count(self) -> int:
    return len(self.devices)

  def replicate(self, tree: Any) -> Any:
    """Every array of `tree` on every device (the encoders' parameters)."""
    return jax.device_put(tree, self.replicated)

  def shard(self, x: np.ndarray) -> jax.Array:
    """[B, ...] with B a multiple of `count` -> rows split across the devices."""
    return jax.device_put(x, self.rows)


@functools.cache
def default() -> LocalDevices:
  """All local devices (created on first use, after jax.distributed is initialised)."""
  return LocalDevices()
