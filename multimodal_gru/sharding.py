"""Device mesh, parameter and batch shardings.

The mesh has three axes:
  data   pure data parallelism (parameters replicated),
  fsdp   data parallelism with parameters (and optimizer state) sharded,
  model  tensor parallelism over the output dim of kernels.
The batch is split over ("data", "fsdp"). Axis types are Auto, so jit
propagates shardings and no code needs explicit sharding annotations.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from absl import logging
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")
MIN_FSDP_SIZE = 2**12   # parameters with fewer elements stay replicated


def mesh_shape(mesh_config: Mapping[str, int], device_count: int) -> tuple[int, int, int]:
  """Resolves config.mesh (data/fsdp/model, at most one -1) to a concrete shape."""
  sizes = {axis: mesh_config.get(axis, 1) for axis in MESH_AXES}
  for axis, size in sizes.items():
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (size < 1 and size != -1):
      raise ValueError(f"config.mesh.{axis} must be a positive int or -1, got {size!r}")
  rest = [axis for axis, size in sizes.items() if size == -1]
  if len(rest) > 1:
    raise ValueError(f"at most one of config.mesh.{{data,fsdp,model}} may be -1, got {sizes}")
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if rest:
    if device_count % fixed:
      raise ValueError(
          f"config.mesh {sizes}: the product of the fixed axes ({fixed}) does not divide "
          f"the device count ({device_count})")
    sizes[rest[0]] = device_count // fixed
  elif fixed != device_count:
    raise ValueError(
        f"config.mesh {sizes} needs {fixed} devices but there are {device_count}; "
        "set one axis to -1 to use the rest")
  return tuple(int(sizes[axis]) for axis in MESH_AXES)


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
  """A ("data", "fsdp", "model") mesh over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  device_array = None
  if devices[0].platform == "tpu":
    # Lays the inner (fsdp, model) axes along fast ICI links.
    try:
      device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError) as e:
      logging.warning("create_device_mesh(%s) failed (%s); using device order", shape, e)
  if device_array is None:
    # jax.devices() is ordered by process, so each process's devices are contiguous along "data".
    device_array = np.asarray(devices, dtype=object).reshape(shape)
  mesh = Mesh(device_array, MESH_AXES)
  logging.info("Mesh %s over %d devices (%d processes)", dict(mesh.shape), len(devices),
               len({d.process_index for d in devices}))
  return mesh


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dim split over ("data", "fsdp"), other dims replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def partition_spec(shape: Sequence[int], mesh: Mesh, min_fsdp_size: int = MIN_FSDP_SIZE) -> P:
  """The PartitionSpec of one parameter (or optimizer state) of this shape.

  model > 1: the last dim of a 2-D+ kernel goes over "model" when divisible.
  fsdp > 1: the largest remaining dim divisible by the fsdp size goes over
  "fsdp" (the first of equal ones), for arrays of at least `min_fsdp_size`
  elements. Everything else is replicated.
  """
  fsdp, model = mesh.shape["fsdp"], mesh.shape["model"]
  spec = [None] * len(shape)
  if model > 1 and len(shape) >= 2 and shape[-1] % model == 0:
    spec[-1] = "model"
  if fsdp > 1 and math.prod(shape) >= min_fsdp_size:
    free = [i for i, dim in enumerate(shape) if spec[i] is None and dim % fsdp == 0]
    if free:
      spec[max(free, key=lambda i: shape[i])] = "fsdp"
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def param_shardings(tree: Any, mesh: Mesh, min_fsdp_size: int = MIN_FSDP_SIZE) -> Any:
  """NamedShardings for a tree of arrays or jax.ShapeDtypeStructs (params, optax states).

  Sharding depends on shape only, so an optimizer state gets the same layout
  as its parameters; scalars (e.g. step counts) are replicated.
  """
  def leaf_sharding(leaf):
    shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
    return NamedSharding(mesh, partition_spec(shape, mesh, min_fsdp_size))
  return jax.tree.map(leaf_sharding, tree)


def _batch_shards(mesh: Mesh) -> tuple[int, int]:
  """(number of batch shards, number of them that hold devices of this process)."""
  process = jax.process_index()
  devices = mesh.devices   # [data, fsdp, model]
  local = {(i, j) for (i, j, k), d in np.ndenumerate(devices) if d.process_index == process}
  return devices.shape[0] * devices.shape[1], len(local)


def global_batch_size_per_process(global_batch_size: int, mesh: Mesh | None = None) -> int:
  """Rows each process loads so that the global batch is `global_batch_size`.

  Without `mesh` every device holds its own batch shard (the default
  data-parallel mesh); pass the mesh when config.mesh.model > 1.
  """
  process_count = jax.process_count()
  if mesh is None:
    num_shards, local_shards = jax.device_count(), jax.local_device_count()
  else:
    num_shards, local_shards = _batch_shards(mesh)
  if global_batch_size % process_count:
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the number of "
        f"processes ({process_count})")
  if global_batch_size % num_shards:
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the number of batch "
        f"shards ({num_shards} = mesh data x fsdp)")
  return global_batch_size // num_shards * local_shards


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's rows into global arrays split over the batch axes.

  With P processes each holding B local rows (and no model axis across
  processes), every leaf becomes a jax.Array of P * B rows.
  """
  sizes = {key: np.shape(value)[0] if np.ndim(value) else None for key, value in local_batch.items()}
  if len(set(sizes.values())) > 1 or None in sizes.values():
    raise ValueError(f"all batch entries need the same leading (batch) dim, got {sizes}")
  return jax.make_array_from_process_local_data(batch_sharding(mesh), dict(local_batch))


class BatchSizeError(ValueError):
  """A global batch size that the mesh and process count cannot split evenly."""


def check_batch_sizes(sizes: Mapping[str, int], num_shards: int, process_count: int,
                      device_count: int) -> None:
  """Raises BatchSizeError unless every global batch size splits evenly.

  sizes: {"batch_size": 64, "eval_batch_size": 128} (fields of config.train).
  A global batch is split over `num_shards` batch shards (mesh data x fsdp)
  and loaded in `process_count` equal parts, so it must be a positive
  multiple of both.
  """
  unit = math.lcm(num_shards, process_count)
  bad = []
  for name, size in sizes.items():
    if size < unit or size % unit:
      lower = size // unit * unit
      nearest = " or ".join(str(n) for n in (lower, lower + unit) if n > 0)
      bad.append(f"config.train.{name}={size} (nearest valid: {nearest})")
  if bad:
    raise BatchSizeError(
        f"{'; '.join(bad)}: a global batch must be a multiple of {unit}, as it is split over "
        f"{num_shards} batch shards (mesh data x fsdp) on {device_count} devices in "
        f"{process_count} process(es). Set --config.train.batch_size / "
        "--config.train.eval_batch_size to a multiple of "
        f"{unit}, or change config.mesh.")


def check_mesh_batch_sizes(train_config, mesh: Mesh) -> None:
  """check_batch_sizes for config.train on `mesh` in this JAX process group."""
  check_batch_sizes({"batch_size": int(train_config.batch_size),
                     "eval_batch_size": int(train_config.eval_batch_size)},
                    mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count(), mesh.size)
