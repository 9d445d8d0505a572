"""Compile time of the train step and its parts, and peak host memory of a demo run.

compile   lower (trace + StableHLO) and XLA compile times, measured separately, of
          the full train step (jitted as train.train_and_evaluate does) at each
          --configs size, and of its parts at the first size:
            gru_recurrence      one bidirectional recurrence (custom_vjp), fwd / fwd+bwd
            gru_autodiff        the same recurrence differentiated by jax (plain scan)
            gru_encoder         one stream's GRUEncoder (image stream), unroll 1 and 4
            recurrences_3       the 3 streams' recurrences as 3 scans (what the model does)
            recurrences_fused   prototype: the 3 streams' 6 directions in one scan
                                (streams padded to the longest), fwd+bwd
            encoders            the 3 StreamEncoders (LayerNorm, GRU, merge)
            fusion              the xattn_bidir fusion alone
            model               the model forward (eval) / gradient of the loss (train)
          --runtime adds the median run time of each compiled part.
memory    peak RSS (getrusage high-water mark of the child) of
            python -m multimodal_gru.main --config=configs/demo.py --config.train.num_steps=N
          in a temp workdir, with the demo data generated beforehand into a temp dir
          (MGRU_DEMO_DATA); also its wall time and first-step time.
cache     compile time of the train step on a cold and on a warm persistent
          compilation cache (two fresh processes sharing JAX_COMPILATION_CACHE_DIR).

  python benchmarks/compile_and_memory.py --quick
  python benchmarks/compile_and_memory.py --configs demo dvd --runtime --out /tmp/compile.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):   # run as a file
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import demo, dvd
from multimodal_gru import objective, optim, sharding, train
from multimodal_gru.models import gru
from multimodal_gru.models.fusion import get_fusion
from multimodal_gru.models.model import StreamEncoder, build_model

CONFIGS = {"demo": demo.get_config, "dvd": dvd.get_config}


def _time(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def compile_times(fn, *args, donate=(), runtime_reps: int = 0) -> dict:
  """Lower and compile seconds of jax.jit(fn)(*args); with runtime_reps, median run ms."""
  lowered, lower_s = _time(lambda: jax.jit(fn, donate_argnums=donate).lower(*args))
  compiled, compile_s = _time(lowered.compile)
  out = dict(lower_s=lower_s, compile_s=compile_s)
  if runtime_reps:
    jax.block_until_ready(compiled(*args))
    times = [_time(lambda: jax.block_until_ready(compiled(*args)))[1] for _ in range(runtime_reps)]
    out["run_ms"] = 1e3 * float(np.median(times))
  return out


def train_step_compile(config) -> dict:
  """Lower / compile seconds of the real train step (shardings, donation) on abstract inputs."""
  mesh = sharding.make_mesh(config.mesh)
  model = build_model(config)
  tx = optim.make_optimizer(config)
  sample = train.dummy_batch(config)

  def init(rng):
    params = model.init({"params": rng}, sample, train=False)["params"]
    return train.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  rng = jax.random.key(0)
  state = jax.eval_shape(init, rng)
  state_shardings = sharding.param_shardings(state, mesh)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       train.dummy_batch(config, config.train.batch_size))
  jitted = jax.jit(train.make_train_step(config, model),
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0,))
  lowered, lower_s = _time(lambda: jitted.lower(state, batch, rng))
  compiled, compile_s = _time(lowered.compile)
  hlo = compiled.as_text()
  return dict(lower_s=lower_s, compile_s=compile_s, hlo_lines=hlo.count("\n"),
              while_loops=len(re.findall(r"\bwhile\(", hlo)),
              fusions=len(re.findall(r"\bfusion\(", hlo)))


class _Encoders(nn.Module):
  """The model's three StreamEncoders, as in MultimodalModel."""
  config: object

  @nn.compact
  def __call__(self, feats, masks):
    m = self.config.model
    return {n: StreamEncoder(m.hidden_dim, m.gru_layers, m.bidirectional, m.use_gru,
                             name=f"{n}_encoder")(feats[n], masks[n]) for n in sorted(feats)}


def _grad(loss):
  """fwd+bwd of a scalar function of (params, inputs): gradients with respect to both."""
  return jax.grad(loss, argnums=(0, 1))


def _sum_outputs(tree):
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def component_compile_times(config, runtime_reps: int) -> dict:
  """Compile (and optionally run) times of the train step's parts at `config`'s sizes."""
  c = config
  batch_size, hidden = c.train.batch_size, c.model.hidden_dim
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(v) for k, v in train.dummy_batch(c, batch_size).items()}
  for n in c.data.modalities:
    batch[n] = jnp.asarray(rng.normal(size=batch[n].shape), jnp.float32)
  feats = {n: batch[n] for n in c.data.modalities}
  masks = {n: batch[f"{n}_mask"] for n in c.data.modalities}
  key = jax.random.key(0)
  results = {}

  def add(name, fn, *args):
    results[name] = compile_times(fn, *args, runtime_reps=runtime_reps)
    print(f"  {name:<28} " + "  ".join(f"{k} {v:7.2f}" for k, v in results[name].items()), flush=True)

  # One bidirectional recurrence at the image stream's length.
  steps = c.data.max_steps.image
  gates = tuple(jnp.asarray(rng.normal(size=(steps, 2, batch_size, hidden)), jnp.float32) for _ in range(3))
  mask = jnp.ones((steps, 2, batch_size, 1), bool)
  kernel = jnp.asarray(rng.normal(size=(2, hidden, 3 * hidden)) / np.sqrt(hidden), jnp.float32)
  bias = jnp.zeros((2, hidden), jnp.float32)
  recurrence = lambda w, g: gru.gru_recurrence(g, mask, w, bias)[0]
  autodiff = lambda w, g: gru._scan_forward(g, mask, w, bias, jnp.float32, 1)[1]   # pylint: disable=protected-access
  add("gru_recurrence fwd", recurrence, kernel, gates)
  add("gru_recurrence fwd+bwd", _grad(lambda w, g: _sum_outputs(recurrence(w, g))), kernel, gates)
  add("gru_autodiff fwd+bwd", _grad(lambda w, g: _sum_outputs(autodiff(w, g))), kernel, gates)

  # One stream's encoder, scan unroll 1 and 4.
  x, lengths = feats["image"], masks["image"].sum(1)
  for unroll in (1, 4):
    enc = gru.GRUEncoder(hidden, bidirectional=True, unroll=unroll)
    params = enc.init(key, x, lengths)
    add(f"gru_encoder u{unroll} fwd", lambda p, x, enc=enc: enc.apply(p, x, lengths)[0], params, x)
    add(f"gru_encoder u{unroll} fwd+bwd",
        _grad(lambda p, x, enc=enc: _sum_outputs(enc.apply(p, x, lengths)[0])), params, x)

  # The 3 streams' recurrences: 3 scans (as the model runs them) or one scan over 6 directions.
  names = sorted(c.data.modalities)
  lens = {n: c.data.max_steps[n] for n in names}
  per_stream = {n: tuple(jnp.asarray(rng.normal(size=(lens[n], 2, batch_size, hidden)), jnp.float32)
                         for _ in range(3)) for n in names}
  kernels = {n: kernel for n in names}

  def three_scans(ws, gs):
    return [gru.gru_recurrence(gs[n], jnp.ones((lens[n], 2, batch_size, 1), bool), ws[n], bias)[0]
            for n in names]

  longest = max(lens.values())

  def one_scan(ws, gs):   # pad every stream to the longest; padded steps are masked
    pad = lambda a, n: jnp.pad(a, ((0, longest - lens[n]),) + ((0, 0),) * (a.ndim - 1))
    g = tuple(jnp.concatenate([pad(gs[n][i], n) for n in names], axis=1) for i in range(3))
    m = jnp.concatenate([pad(jnp.ones((lens[n], 2, batch_size, 1), bool), n) for n in names], axis=1)
    w = jnp.concatenate([ws[n] for n in names])
    states = gru.gru_recurrence(g, m, w, jnp.zeros((2 * len(names), hidden)))[0]
    return [states[:lens[n], 2 * i:2 * i + 2] for i, n in enumerate(names)]

  add("recurrences_3 fwd+bwd", _grad(lambda w, g: _sum_outputs(three_scans(w, g))), kernels, per_stream)
  add("recurrences_fused fwd+bwd", _grad(lambda w, g: _sum_outputs(one_scan(w, g))), kernels, per_stream)

  # The three stream encoders, the fusion, the whole model.
  encoders = _Encoders(c)
  enc_params = encoders.init(key, feats, masks)
  add("encoders fwd", lambda p, f: encoders.apply(p, f, masks), enc_params, feats)
  add("encoders fwd+bwd", _grad(lambda p, f: _sum_outputs(encoders.apply(p, f, masks))), enc_params, feats)
  seqs = {n: jnp.asarray(rng.normal(size=(batch_size, lens[n], hidden)), jnp.float32) for n in names}
  fusion = get_fusion(c.model.fusion)(width=hidden, num_heads=c.model.num_heads, mlp_dim=c.model.mlp_dim,
                                      num_layers=c.model.xattn_layers)
  fusion_params = fusion.init(key, seqs, masks, masks["image"], train=False)
  fusion_out = lambda p, s: fusion.apply(p, s, masks, masks["image"], train=False)
  add("fusion fwd", fusion_out, fusion_params, seqs)
  add("fusion fwd+bwd", _grad(lambda p, s: _sum_outputs(fusion_out(p, s))), fusion_params, seqs)
  model = build_model(c)
  params = model.init(key, batch, train=False)["params"]
  add("model fwd (eval)", lambda p, b: model.apply({"params": p}, b, train=False), params, batch)

  def loss(p, b):
    out = model.apply({"params": p}, b, train=True, rngs={"dropout": key, "augment": key})
    return objective.compute_losses(out, b, c)[0]

  add("model fwd+bwd (train)", lambda p, b: jax.grad(loss)(p, b), params, batch)
  return results


def _child_env(**extra) -> dict:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.update(extra)
  return env


def demo_run_memory(num_steps: int) -> dict:
  """Wall time, first-step time and peak RSS of a short demo training run in a child process."""
  from multimodal_gru import demo_data   # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    data_dir, workdir = os.path.join(tmp, "data"), os.path.join(tmp, "workdir")
    _, generate_s = _time(lambda: demo_data.ensure_demo_dataset(data_dir))
    cmd = [sys.executable, "-m", "multimodal_gru.main", "--config=configs/demo.py",
           f"--workdir={workdir}", f"--config.train.num_steps={num_steps}",
           f"--config.train.checkpoint_every={num_steps}", f"--config.train.eval_every={num_steps}"]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO, env=_child_env(MGRU_DEMO_DATA=data_dir),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
      raise RuntimeError(f"{' '.join(cmd)} failed ({child.returncode}):\n{log[-3000:]}")
  first = re.search(r"First step \(compilation included\) took ([\d.]+)s", log)
  return dict(num_steps=num_steps, generate_data_s=generate_s, wall_s=wall,
              first_step_s=float(first.group(1)) if first else None,
              peak_rss_mib=usage.ru_maxrss / 1024,   # Linux: KiB
              cpu_s=usage.ru_utime + usage.ru_stime)


_CACHE_CHILD = """
import sys, time, json
sys.path.insert(0, {repo!r})
import jax
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
from benchmarks.compile_and_memory import CONFIGS, train_step_compile
print(json.dumps(train_step_compile(CONFIGS[{name!r}]())))
"""


def persistent_cache(name: str) -> dict:
  """Train-step compile seconds with a cold, then a warm persistent compilation cache."""
  out = {}
  with tempfile.TemporaryDirectory() as cache:
    for run in ("cold", "warm"):
      code = _CACHE_CHILD.format(repo=REPO, cache=cache, name=name)
      result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_child_env(),
                              capture_output=True, text=True, check=True)
      out[run] = json.loads(result.stdout.strip().splitlines()[-1])
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--configs", nargs="+", default=["demo", "dvd"], choices=list(CONFIGS))
  parser.add_argument("--components", default="dvd", choices=list(CONFIGS) + ["none"],
                      help="config whose sizes the per-component compile times use")
  parser.add_argument("--runtime", action="store_true", help="also time each compiled component")
  parser.add_argument("--reps", type=int, default=5, help="runs per component with --runtime")
  parser.add_argument("--memory_steps", type=int, default=50, help="steps of the demo run (0: skip)")
  parser.add_argument("--cache", action="store_true", help="cold vs warm persistent compilation cache")
  parser.add_argument("--quick", action="store_true",
                      help="demo sizes only: train step, components, a 20-step demo run")
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args()
  if args.quick:
    args.configs, args.components, args.memory_steps = ["demo"], "demo", 20

  results = dict(jax_version=jax.__version__, cpus=len(os.sched_getaffinity(0)),
                 load_before=os.getloadavg())
  print(f"jax {jax.__version__}, {results['cpus']} cores, load average {results['load_before']}")
  results["train_step"] = {}
  for name in args.configs:
    r = train_step_compile(CONFIGS[name]())
    results["train_step"][name] = r
    print(f"train step [{name}]: lower {r['lower_s']:.2f} s, compile {r['compile_s']:.2f} s "
          f"({r['hlo_lines']} HLO lines, {r['while_loops']} while loops, {r['fusions']} fusions)",
          flush=True)
  if args.components != "none":
    print(f"components at {args.components} sizes (seconds; run_ms with --runtime):")
    results["components"] = component_compile_times(CONFIGS[args.components](),
                                                    args.reps if args.runtime else 0)
  if args.cache:
    results["persistent_cache"] = {}
    for name in args.configs:
      r = persistent_cache(name)
      results["persistent_cache"][name] = r
      print(f"persistent cache [{name}]: compile cold {r['cold']['compile_s']:.2f} s, "
            f"warm {r['warm']['compile_s']:.2f} s", flush=True)
  if args.memory_steps:
    r = demo_run_memory(args.memory_steps)
    results["demo_run"] = r
    print(f"demo run, {r['num_steps']} steps: wall {r['wall_s']:.1f} s (first step "
          f"{r['first_step_s']} s, CPU {r['cpu_s']:.1f} s), peak RSS {r['peak_rss_mib']:.0f} MiB; "
          f"data generation beforehand {r['generate_data_s']:.1f} s", flush=True)
  results["load_after"] = os.getloadavg()
  print(f"load average after {results['load_after']}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
