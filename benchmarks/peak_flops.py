"""Machine peak FLOP/s and model FLOP counting, shared by the benchmarks.

Peak (float32, all cores):
  cores x FMA units per core x SIMD lanes x 2 FLOPs per FMA x clock
SIMD lanes come from the CPU flags the OS exposes (avx512f: 16, avx2/avx: 8,
sse: 4 float32 lanes); FMA units default to 2 per core (every x86 core since
Haswell / Zen); the clock is cpuinfo_max_freq when cpufreq exists, else the
"cpu MHz" of /proc/cpuinfo (in a VM usually the TSC rate, not the boost clock).
`measured_matmul_flops` gives the practical ceiling: XLA's best float32 matmul.

Model FLOPs are counted on the jaxpr (`jaxpr_matmul_flops`): 2 * M * N * K per
dot_general, scan bodies times their length. XLA's `cost_analysis()` counts a
while loop's body once, whatever its trip count, so it undercounts every
scan-based model (a GRU by about T times); it is reported for reference only.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

_SIMD_LANES_FP32 = (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse", 4))


def cpu_info() -> dict[str, Any]:
  """Model name, usable cores, float32 SIMD lanes and clock (GHz) of this machine."""
  fields = {}
  with open("/proc/cpuinfo") as f:
    for line in f:
      key, _, value = line.partition(":")
      fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get("flags", "").split())
  lanes = next((n for flag, n in _SIMD_LANES_FP32 if flag in flags), 1)
  clock_ghz, clock_source = float(fields.get("cpu MHz", "nan")) / 1e3, "/proc/cpuinfo cpu MHz"
  max_freq = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
  if os.path.exists(max_freq):
    with open(max_freq) as f:
      clock_ghz, clock_source = int(f.read()) / 1e6, max_freq
  return dict(model=fields.get("model name", "?"), cores=len(os.sched_getaffinity(0)),
              fp32_lanes=lanes, fma=("fma" in flags), avx512=("avx512f" in flags),
              clock_ghz=clock_ghz, clock_source=clock_source)


def peak_flops(info: dict[str, Any] | None = None, fma_units: int = 2,
               clock_ghz: float | None = None) -> float:
  """Theoretical float32 FLOP/s: cores x fma_units x lanes x 2 x clock."""
  info = info or cpu_info()
  clock = clock_ghz or info["clock_ghz"]
  flops_per_fma = 2 if info["fma"] else 1   # without FMA: one add or one mul per unit and cycle
  return info["cores"] * fma_units * info["fp32_lanes"] * flops_per_fma * clock * 1e9


def peak_formula(info: dict[str, Any], fma_units: int = 2) -> str:
  return (f"{info['cores']} cores x {fma_units} FMA units x {info['fp32_lanes']} fp32 lanes x "
          f"{2 if info['fma'] else 1} x {info['clock_ghz']:.3f} GHz ({info['clock_source']}) = "
          f"{peak_flops(info, fma_units) / 1e9:.1f} GFLOP/s")


def measured_matmul_flops(size: int = 1024, reps: int = 10) -> float:
  """Median FLOP/s of a jitted float32 [size, size] x [size, size] matmul."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  matmul(a).block_until_ready()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size**3 / float(np.median(times))


def _dot_flops(eqn) -> int:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs_shape = eqn.invars[0].aval.shape
  contracted = math.prod(lhs_shape[d] for d in lhs_contract)
  return 2 * math.prod(eqn.outvars[0].aval.shape) * contracted


def _sub_jaxprs(value):
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def _count(jaxpr, stats) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "cond":   # the most expensive branch
      total += max(_count(b.jaxpr, stats) for b in eqn.params["branches"])
    elif name == "scan":
      total += eqn.params["length"] * _count(eqn.params["jaxpr"].jaxpr, stats)
    elif name == "while":   # unknown trip count: the body once, and say so
      stats["while_loops"] += 1
      total += _count(eqn.params["body_jaxpr"].jaxpr, stats)
    else:
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          total += _count(sub, stats)
  return total


def jaxpr_matmul_flops(fn: Callable, *args, **kwargs) -> int:
  """Matmul FLOPs of one call of `fn(*args)` (2 M N K per dot, scans unrolled).

  Raises if `fn` contains a while loop (its trip count is unknown).
  """
  jaxpr = jax.make_jaxpr(fn)(*args, **kwargs)
  stats = {"while_loops": 0}
  flops = _count(jaxpr.jaxpr, stats)
  if stats["while_loops"]:
    raise ValueError(f"{stats['while_loops']} while loop(s): their FLOPs cannot be counted")
  return flops


def xla_cost_flops(compiled) -> float | None:
  """FLOPs from XLA's cost analysis of a compiled function (loop bodies counted once)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return None if not cost else cost.get("flops")


if __name__ == "__main__":
  info = cpu_info()
  print(info)
  print("peak:", peak_formula(info))
  print(f"measured XLA float32 matmul 1024^3: {measured_matmul_flops() / 1e9:.1f} GFLOP/s")
