"""Running a jitted function over arrays of any length with few distinct shapes."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np


def batch_sizes(n: int, batch_size: int) -> list[int]:
  """Full batches, then the rest padded up to a power of two (<= batch_size)."""
  sizes = [batch_size] * (n // batch_size)
  if n % batch_size:
    sizes.append(min(batch_size, 1 << (n % batch_size - 1).bit_length()))
  return sizes


def batched(fn: Callable[..., object], inputs: Sequence[np.ndarray], batch_size: int):
  """fn over `inputs` (all [N, ...]) in padded batches; outputs concatenated to [N, ...].

  Padding repeats the last row and is dropped again, so at most
  log2(batch_size) + 1 batch shapes are ever compiled.
  """
  n = len(inputs[0])
  outputs, start = [], 0
  for size in batch_sizes(n, batch_size):
    rows = np.minimum(np.arange(start, start + size), n - 1)
    out = jax.device_get(fn(*(x[rows] for x in inputs)))
    outputs.append(jax.tree.map(lambda y, k=min(size, n - start): y[:k], out))
    start += size
  return jax.tree.map(lambda *ys: np.concatenate(ys), *outputs)
