"""Benchmarks GRUEncoder against torch.nn.GRU and flax's nn.RNN(nn.GRUCell).

Times forward and forward+backward (gradient of sum(outputs) with respect to
the parameters and the inputs) over a grid of batch size B, steps T and input
width D; all sequences are full length. Implementations are timed in
interleaved rounds, so background load hits them alike; ratios are torch time
/ our time (above 1: we are faster).

  python -m benchmarks.gru --quick          # from the repository root
  python -m benchmarks.gru --bidirectional --out /tmp/gru_bench.json
  # On a shared, busy machine: one core, CPU time instead of wall time.
  taskset -c 0 python -m benchmarks.gru --quick --threads 1 --cpu_time
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_gru.models.gru import GRUEncoder

QUICK_GRID = [(8, 16, 256), (32, 32, 512), (128, 64, 512)]


def gru_flops(batch, steps, in_dim, hidden, num_dirs):
  """Forward matmul FLOPs: input projection plus recurrent matmul (gates excluded)."""
  return 2 * batch * steps * 3 * hidden * (in_dim + hidden) * num_dirs


def ours(batch, steps, in_dim, hidden, bidirectional, unroll):
  model = GRUEncoder(hidden, bidirectional=bidirectional, unroll=unroll)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, steps, in_dim)), jnp.float32)
  lengths = jnp.full((batch,), steps, jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), x, lengths)
  forward = jax.jit(lambda p, x: model.apply(p, x, lengths)[0])
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply(p, x, lengths)[0]), argnums=(0, 1)))
  return (lambda: forward(params, x).block_until_ready(),
          lambda: jax.block_until_ready(grad(params, x)))


def flax_rnn(batch, steps, in_dim, hidden, bidirectional):
  rnn = lambda: nn.RNN(nn.GRUCell(hidden))
  model = nn.Bidirectional(rnn(), rnn()) if bidirectional else rnn()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, steps, in_dim)), jnp.float32)
  lengths = jnp.full((batch,), steps, jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), x, seq_lengths=lengths)
  apply = lambda p, x: model.apply(p, x, seq_lengths=lengths)
  forward = jax.jit(apply)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x)), argnums=(0, 1)))
  return (lambda: forward(params, x).block_until_ready(),
          lambda: jax.block_until_ready(grad(params, x)))


def torch_gru(batch, steps, in_dim, hidden, bidirectional):
  import torch  # pylint: disable=g-import-not-at-top
  module = torch.nn.GRU(in_dim, hidden, batch_first=True, bidirectional=bidirectional)
  x = torch.randn(batch, steps, in_dim, requires_grad=True)

  def forward():
    with torch.no_grad():
      module(x)

  def forward_backward():
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x)[0].sum().backward()

  return forward, forward_backward


def time_interleaved(fns, rounds, reps, clock=time.perf_counter):
  """Median seconds per call of each zero-argument callable, timed in rounds."""
  for fn in fns.values():
    fn(), fn()  # compile / warm up
  samples = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      for _ in range(reps):
        start = clock()
        fn()
        samples[name].append(clock() - start)
  return {name: float(np.median(s)) for name, s in samples.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, nargs="+", default=[8, 32, 128])
  parser.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256])
  parser.add_argument("--in_dim", type=int, nargs="+", default=[256, 512, 1024])
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--bidirectional", action="store_true")
  parser.add_argument("--unroll", type=int, default=1, help="our scan's unroll factor")
  parser.add_argument("--quick", action="store_true", help=f"only (B, T, D) in {QUICK_GRID}")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--reps", type=int, default=4, help="calls per implementation per round")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="torch threads (XLA uses one per core)")
  parser.add_argument("--cpu_time", action="store_true",
                      help="time process CPU time, not wall time: steadier on a busy machine, "
                      "meaningful only when pinned to one core (taskset -c 0) with --threads 1")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--no_flax", action="store_true")
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args()

  grid = QUICK_GRID if args.quick else list(itertools.product(args.batch, args.steps, args.in_dim))
  if not args.no_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.threads)
  num_dirs = 2 if args.bidirectional else 1
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.threads} threads, "
        f"hidden {args.hidden}, {'bidirectional' if args.bidirectional else 'forward'}, "
        f"unroll {args.unroll}; median {'CPU' if args.cpu_time else 'wall'} ms per call; "
        "ratio = torch / ours")
  print(f"{'':16} | {'forward':^29} | {'forward + backward':^29} | {'GFLOP':>6} "
        f"{'ours GFLOP/s':>13}")
  print(f"{'B':>4} {'T':>4} {'D':>5} | {'ours':>7} {'torch':>7} {'flax':>7} {'ratio':>5} | "
        f"{'ours':>7} {'torch':>7} {'flax':>7} {'ratio':>5} | {'fwd':>6} {'fwd':>6} {'f+b':>6}")
  results = []
  for batch, steps, in_dim in grid:
    shape = (batch, steps, in_dim, args.hidden, args.bidirectional)
    fns = {}
    fns["ours_fwd"], fns["ours_fwd_bwd"] = ours(*shape, args.unroll)
    if not args.no_torch:
      fns["torch_fwd"], fns["torch_fwd_bwd"] = torch_gru(*shape)
    if not args.no_flax:
      fns["flax_fwd"], fns["flax_fwd_bwd"] = flax_rnn(*shape)
    times = time_interleaved(fns, args.rounds, args.reps,
                             time.process_time if args.cpu_time else time.perf_counter)
    flops = gru_flops(batch, steps, in_dim, args.hidden, num_dirs)
    row = dict(batch=batch, steps=steps, in_dim=in_dim, hidden=args.hidden,
               bidirectional=args.bidirectional, fwd_gflop=flops / 1e9,
               fwd_bwd_gflop=3 * flops / 1e9, **{f"{k}_ms": v * 1e3 for k, v in times.items()})
    for mode in ("fwd", "fwd_bwd"):
      if "torch_fwd" in times:
        row[f"torch_over_ours_{mode}"] = times[f"torch_{mode}"] / times[f"ours_{mode}"]
    results.append(row)

    ms = lambda key: f"{row[key]:7.2f}" if key in row else f"{'-':>7}"
    ratio = lambda key: f"{row[key]:5.2f}" if key in row else f"{'-':>5}"
    print(f"{batch:4d} {steps:4d} {in_dim:5d} | {ms('ours_fwd_ms')} {ms('torch_fwd_ms')} "
          f"{ms('flax_fwd_ms')} {ratio('torch_over_ours_fwd')} | {ms('ours_fwd_bwd_ms')} "
          f"{ms('torch_fwd_bwd_ms')} {ms('flax_fwd_bwd_ms')} {ratio('torch_over_ours_fwd_bwd')} | "
          f"{flops / 1e9:6.3f} {flops / times['ours_fwd'] / 1e9:6.1f} "
          f"{3 * flops / times['ours_fwd_bwd'] / 1e9:6.1f}", flush=True)
  print("GFLOP: forward matmul FLOPs per call; forward + backward counts 3x that.")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(jax_version=jax.__version__, threads=args.threads, unroll=args.unroll,
                     clock="cpu" if args.cpu_time else "wall", results=results), f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
