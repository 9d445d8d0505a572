"""Examples/s of the full train step, ours (JAX) against the same model in PyTorch.

The step is the real one: `train.make_train_step` (mixup, feature augmentation,
forward, losses, backward, global-norm clipping, AdamW), jitted with the
training loop's shardings and state donation, compiled ahead of time. The
PyTorch step is benchmarks/torch_reference.py (same layers, masks, losses and
optimizer; fused AdamW), eager and under torch.compile. Both get the same
batch (a synthetic one of the config's shapes; 3/4 of the sequences full
length, the rest shorter) and the same number of threads.

Implementations are timed in interleaved rounds, so background load hits them
alike; medians of wall time and of process CPU time (all threads) per step.
Model FLOPs: matmul FLOPs of the jitted step counted on its jaxpr (padded
steps included, as our scan computes them); see benchmarks/peak_flops.py.

  python benchmarks/train_step.py --quick
  python benchmarks/train_step.py --out /tmp/train_step.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import time
import traceback

if __package__ in (None, ""):   # run as a file
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# libgomp's default spin-waiting makes torch burn its time slices on a shared,
# oversubscribed CPU (6x the CPU time of a GRU step measured here); before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import numpy as np

from benchmarks import peak_flops
from configs import dvd
from multimodal_gru import sharding, train
from multimodal_gru.models.model import build_model


def _large(c):
  """Twice the batch and twice the clip length of the default."""
  c.train.batch_size = 128
  c.data.max_steps.video, c.data.max_steps.image, c.data.max_steps.text = 32, 64, 16


SETTINGS = {"dvd": lambda c: None, "large": _large}


def make_config(setting: str, dtype: str = "float32"):
  c = dvd.get_config()
  SETTINGS[setting](c)
  c.model.dtype = dtype
  return c


def synthetic_batch(config, batch_size: int | None = None, seed: int = 0,
                    full_fraction: float = 0.75) -> dict[str, np.ndarray]:
  """A batch of the pipeline's contract with normal features and random lengths in [1, T]."""
  rng = np.random.default_rng(seed)
  batch = train.dummy_batch(config, batch_size or config.train.batch_size)
  size = batch["example_mask"].shape[0]
  for m in config.data.modalities:
    t = config.data.max_steps[m]
    lengths = np.where(rng.random(size) < full_fraction, t, rng.integers(1, t + 1, size))
    batch[f"{m}_mask"] = np.arange(t)[None] < lengths[:, None]
    batch[m] = rng.normal(size=batch[m].shape).astype(np.float32) * batch[f"{m}_mask"][..., None]
  k, t_image = config.data.num_classes, config.data.max_steps.image
  batch["label"] = rng.integers(0, k, size).astype(np.int32)
  batch["step_label"] = rng.integers(0, k, (size, t_image)).astype(np.int32)
  batch["step_valid"] = batch["image_mask"].copy()
  return batch


class JaxStep:
  """Our train step, jitted as train.train_and_evaluate does; one call = one step."""

  def __init__(self, config, batch):
    mesh = sharding.make_mesh(config.mesh)
    model = build_model(config)
    self.state, state_shardings = train.create_train_state(config, model, mesh)
    self.batch = sharding.make_global_batch(batch, mesh)
    self.rng = jax.random.key(config.seed + 1)
    step_fn = train.make_train_step(config, model)
    jitted = jax.jit(step_fn, in_shardings=(state_shardings, sharding.batch_sharding(mesh),
                                            sharding.replicated(mesh)),
                     out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0,))
    start = time.perf_counter()
    lowered = jitted.lower(self.state, self.batch, self.rng)
    self.lower_s = time.perf_counter() - start
    start = time.perf_counter()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - start
    self.matmul_flops = peak_flops.jaxpr_matmul_flops(step_fn, self.state, self.batch, self.rng)
    self.xla_flops = peak_flops.xla_cost_flops(self.compiled)

  def __call__(self):
    self.state, metrics = self.compiled(self.state, self.batch, self.rng)
    return float(metrics["loss"])   # waits for the step


class TorchStep:
  """benchmarks/torch_reference.py's train step; one call = one step."""

  def __init__(self, config, batch, compile: bool):
    from benchmarks import torch_reference   # pylint: disable=g-import-not-at-top
    self.trainer = torch_reference.Trainer(config, compile=compile, seed=config.seed)
    self.batch = torch_reference.to_torch(batch)
    self.compile_s = None
    if compile:   # torch.compile compiles on the first call
      start = time.perf_counter()
      self()
      self.compile_s = time.perf_counter() - start

  def __call__(self):
    return self.trainer.step(self.batch)["loss"].item()


def time_interleaved(fns, rounds: int, reps: int, warmup: int = 2):
  """{name: (median wall s, median CPU s)} per call, timed in interleaved rounds."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  wall = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        loss = fn()
        cpu[name].append(time.process_time() - c)
        wall[name].append(time.perf_counter() - w)
        if not np.isfinite(loss):
          raise FloatingPointError(f"{name}: non-finite loss {loss}")
  return {name: (float(np.median(wall[name])), float(np.median(cpu[name]))) for name in fns}


def _hlo_op_sources(hlo_text: str) -> dict[str, str]:
  """{HLO op name: flax module path} from the op_name metadata of the compiled module."""
  sources = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo_text, re.M):
    path = re.sub(r"(jit|pjit)\([^)]*\)/?", "", m.group(2))   # jit(train_step)/jvp(Model)/x/y
    path = re.sub(r"(transpose\()?jvp\((\w+)\)\)?", lambda g: "bwd" if g.group(1) else "fwd", path)
    sources[m.group(1)] = "/".join(path.strip("/").split("/")[:2])
  return sources


def profile_steps(step: JaxStep, logdir: str, steps: int = 3, top: int = 12) -> None:
  """Traces `steps` calls of our step; prints XLA op time by op kind and by model part."""
  step()
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    for _ in range(steps):
      step()
  [trace] = glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True)
  with gzip.open(trace) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  sources = _hlo_op_sources(step.compiled.as_text())
  by_kind, by_part = collections.Counter(), collections.Counter()
  for e in events:   # XLA thunks carry their HLO op name; ynn_fusion = a YNNPACK GEMM
    op = e.get("args", {}).get("hlo_op") if e.get("ph") == "X" else None
    if op and e.get("dur"):
      by_kind[re.sub(r"\.\d+$", "", op)] += e["dur"] / steps / 1e3
      by_part[sources.get(op, "(no source)")] += e["dur"] / steps / 1e3
  total = sum(by_kind.values())
  print(f"  profile ({trace}): XLA op time per step, summed over threads: {total:.0f} ms", flush=True)
  for title, counter in (("op kind", by_kind), ("model part (fwd / bwd)", by_part)):
    print(f"   by {title}:", flush=True)
    for name, ms in counter.most_common(top):
      print(f"    {ms:8.1f} ms {100 * ms / total:5.1f}%  {name}", flush=True)


def run_setting(setting: str, args, peak: float) -> list[dict]:
  config = make_config(setting, args.dtype)
  batch = synthetic_batch(config)
  size = config.train.batch_size
  print(f"\n[{setting}] B={size} T={dict(config.data.max_steps)} D={dict(config.data.dims)} "
        f"hidden={config.model.hidden_dim} mlp={config.model.mlp_dim} heads={config.model.num_heads} "
        f"dtype={config.model.dtype} mixup={config.augment.mixup_alpha} "
        f"autoencoder={config.autoencoder.enabled}", flush=True)
  rows = []
  fns, notes = {}, {}
  ours = JaxStep(config, batch)
  fns["jax"] = ours
  notes["jax"] = dict(lower_s=ours.lower_s, compile_s=ours.compile_s)
  print(f"  jax: lower {ours.lower_s:.1f} s, compile {ours.compile_s:.1f} s; matmul GFLOP/step "
        f"{ours.matmul_flops / 1e9:.1f} (XLA cost analysis: {(ours.xla_flops or 0) / 1e9:.1f}, "
        "loop bodies once)", flush=True)
  if not args.no_torch:
    import torch   # pylint: disable=g-import-not-at-top
    if args.check and config.model.dtype == "float32":
      from benchmarks import torch_reference   # pylint: disable=g-import-not-at-top
      diffs = torch_reference.check_equivalence(config, synthetic_batch(config, 4, seed=1))
      print("  torch reference vs ours (same params, eval mode): "
            + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()), flush=True)
      notes["equivalence"] = diffs
    fns["torch_eager"] = TorchStep(config, batch, compile=False)
    if args.torch_compile:
      try:
        torch._dynamo.utils.counters.clear()   # pylint: disable=protected-access
        compiled = TorchStep(config, batch, compile=True)
        fns["torch_compile"] = compiled
        breaks = dict(torch._dynamo.utils.counters["graph_break"])   # pylint: disable=protected-access
        notes["torch_compile"] = dict(compile_s=compiled.compile_s, graph_breaks=breaks)
        print(f"  torch.compile: first step (compilation) {compiled.compile_s:.1f} s, "
              f"{sum(breaks.values())} graph breaks: {list(breaks)[:3]}", flush=True)
      except Exception as e:   # pylint: disable=broad-except
        notes["torch_compile"] = dict(error=f"{type(e).__name__}: {e}"[:2000])
        print(f"  torch.compile failed: {type(e).__name__}: {str(e)[:500]}", flush=True)
        traceback.print_exc(limit=3)
  if args.profile:
    profile_steps(ours, os.path.join(args.profile, setting))
  times = time_interleaved(fns, args.rounds, args.reps)
  jax_wall = times["jax"][0]
  torch_threads = None if args.no_torch else torch.get_num_threads()
  for name, (wall, cpu) in times.items():
    rows.append(dict(
        setting=setting, impl=name, batch_size=size, ms_per_step=wall * 1e3, cpu_ms_per_step=cpu * 1e3,
        examples_per_s=size / wall, matmul_gflop_per_step=ours.matmul_flops / 1e9,
        gflop_per_s=ours.matmul_flops / wall / 1e9, fraction_of_peak=ours.matmul_flops / wall / peak,
        ours_over_this=(size / jax_wall) / (size / wall), torch_threads=torch_threads,
        **notes.get(name, {})))
  if "equivalence" in notes:
    rows[0]["torch_equivalence"] = notes["equivalence"]
  if "torch_compile" in notes and "torch_compile" not in times:
    rows.append(dict(setting=setting, impl="torch_compile", **notes["torch_compile"]))
  return rows


def print_table(rows, peak):
  print(f"\n{'setting':<7} {'impl':<14} {'ms/step':>9} {'cpu ms':>9} {'ex/s':>8} {'GFLOP':>7} "
        f"{'GFLOP/s':>8} {'%peak':>6} {'ours/this':>9}")
  for r in rows:
    if "ms_per_step" not in r:
      print(f"{r['setting']:<7} {r['impl']:<14} failed: {r.get('error', '')[:80]}")
      continue
    print(f"{r['setting']:<7} {r['impl']:<14} {r['ms_per_step']:9.1f} {r['cpu_ms_per_step']:9.1f} "
          f"{r['examples_per_s']:8.1f} {r['matmul_gflop_per_step']:7.1f} {r['gflop_per_s']:8.1f} "
          f"{100 * r['fraction_of_peak']:6.1f} {r['ours_over_this']:9.2f}")
  print(f"ours/this: examples/s of ours over this row's (above 1: ours is faster). "
        f"%peak of {peak / 1e9:.1f} GFLOP/s.")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
  parser.add_argument("--quick", action="store_true",
                      help="dvd setting only, fewer rounds, no torch.compile, no equivalence check")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--reps", type=int, default=3, help="steps per implementation per round")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="torch threads (XLA:CPU uses one per usable core)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="config.model.dtype of our model (torch stays float32)")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--no_torch_compile", dest="torch_compile", action="store_false")
  parser.add_argument("--no_check", dest="check", action="store_false",
                      help="skip the flax/torch equivalence check")
  parser.add_argument("--out", help="write the results as JSON here")
  parser.add_argument("--profile", help="also trace 3 of our steps per setting into this folder "
                      "(jax.profiler: TensorBoard profile + Perfetto trace) and print the top ops")
  args = parser.parse_args()
  if args.quick:
    args.settings, args.rounds, args.reps, args.torch_compile, args.check = ["dvd"], 3, 2, False, False

  info = peak_flops.cpu_info()
  peak = peak_flops.peak_flops(info)
  if not args.no_torch:
    import torch   # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.threads)
  load_before = os.getloadavg()
  matmul = peak_flops.measured_matmul_flops()
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}, XLA:CPU intra-op threads = "
        f"{len(os.sched_getaffinity(0))} usable cores); torch threads {args.threads}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
  print(f"CPU {info['model']}: peak {peak_flops.peak_formula(info)}; "
        f"measured XLA 1024^3 matmul {matmul / 1e9:.1f} GFLOP/s; load average {load_before}")
  rows = []
  for setting in args.settings:
    rows += run_setting(setting, args, peak)
  print_table(rows, peak)
  load_after = os.getloadavg()
  print(f"load average before {load_before}, after {load_after}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(jax_version=jax.__version__, cpu=info, peak_flops=peak,
                     peak_formula=peak_flops.peak_formula(info), measured_matmul_flops=matmul,
                     jax_threads=len(os.sched_getaffinity(0)), torch_threads=args.threads,
                     omp_wait_policy=os.environ["OMP_WAIT_POLICY"],
                     load_before=load_before, load_after=load_after, rounds=args.rounds,
                     reps=args.reps, results=rows), f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
