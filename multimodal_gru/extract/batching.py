"""Running a jitted function over arrays of any length with few distinct shapes."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from multimodal_gru.extract import devices as devices_lib


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def batch_sizes(n: int, batch_size: int, multiple: int = 1) -> list[int]:
  """Full batches, then the rest padded up to a power of two (<= batch_size).

  With `multiple` > 1 (the device count) every size is rounded up to a multiple of it.
  """
  batch_size = _round_up(batch_size, multiple)
  sizes = [batch_size] * (n // batch_size)
  if n % batch_size:
    sizes.append(_round_up(min(batch_size, 1 << (n % batch_size - 1).bit_length()), multiple))
  return sizes


def warm_up_counts(max_inputs: int, batch_size: int, multiple: int = 1) -> list[int]:
  """Fewest input counts whose batches cover every shape that 1..max_inputs inputs use."""
  counts, shapes = [], set()
  for n in range(1, max_inputs + 1):
    last = batch_sizes(n, batch_size, multiple)[-1]
    if last not in shapes:
      shapes.add(last)
      counts.append(n)
  return counts


def batched(fn: Callable[..., object], inputs: Sequence[np.ndarray], batch_size: int,
            devices: devices_lib.LocalDevices | None = None):
  """fn over `inputs` (all [N, ...]) in padded batches; outputs concatenated to [N, ...].

  Each batch is split row-wise over `devices` (default: all local devices).
  Padding repeats the last row and is dropped again, so at most
  log2(batch_size) + 1 batch shapes are ever compiled.
  """
  devices = devices or devices_lib.default()
  n = len(inputs[0])
  outputs, start = [], 0
  for size in batch_sizes(n, batch_size, devices.count):
    rows = np.minimum(np.arange(start, start + size), n - 1)
    out = jax.device_get(fn(*(devices.shard(x[rows]) for x in inputs)))
    outputs.append(jax.tree.map(lambda y, k=min(size, n - start): y[:k], out))
    start += size
  return jax.tree.map(lambda *ys: np.concatenate(ys), *outputs)
