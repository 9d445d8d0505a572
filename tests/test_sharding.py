"""Tests of multimodal_gru.sharding.

Checks that need several devices run in a subprocess with 8 simulated CPU
devices (XLA_FLAGS must be set before jax is imported).
"""

import os
import subprocess
import sys
import textwrap

from jax.sharding import AbstractMesh, PartitionSpec as P
import pytest

from multimodal_gru import config_base
from multimodal_gru import sharding

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_with_8_devices(code: str) -> str:
  """Runs `code` in a fresh Python with 8 CPU devices; returns its stdout."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-5000:]
  return result.stdout


@pytest.mark.parametrize("config, expected", [
    (dict(data=-1, fsdp=1, model=1), (8, 1, 1)),
    (dict(data=2, fsdp=4, model=1), (2, 4, 1)),
    (dict(data=2, fsdp=-1, model=1), (2, 4, 1)),
    (dict(data=2, fsdp=1, model=4), (2, 1, 4)),
    (dict(data=-1, fsdp=2, model=2), (2, 2, 2)),
    (dict(data=1, fsdp=1, model=-1), (1, 1, 8)),
    (dict(data=-1), (8, 1, 1)),
])
def test_mesh_shape(config, expected):
  assert sharding.mesh_shape(config, 8) == expected


def test_mesh_shape_of_base_config():
  assert sharding.mesh_shape(config_base.get_base_config().mesh, 16) == (16, 1, 1)


@pytest.mark.parametrize("config, message", [
    (dict(data=-1, fsdp=3, model=1), r"fixed axes \(3\) does not divide the device count \(8\)"),
    (dict(data=-1, fsdp=-1, model=1), "at most one"),
    (dict(data=2, fsdp=2, model=1), "needs 4 devices but there are 8"),
    (dict(data=16, fsdp=1, model=1), "needs 16 devices but there are 8"),
    (dict(data=0, fsdp=1, model=-1), r"config.mesh.data must be a positive int or -1, got 0"),
    (dict(data=-1, fsdp=1.5, model=1), "config.mesh.fsdp must be a positive int"),
])
def test_mesh_shape_errors(config, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(config, 8)


@pytest.mark.parametrize("mesh_shape, shape, expected", [
    ((8, 1, 1), (1024, 512), P()),                              # pure data parallel
    ((2, 4, 1), (1024, 512), P("fsdp")),                        # largest divisible dim
    ((2, 4, 1), (512, 1024), P(None, "fsdp")),
    ((2, 4, 1), (512, 512), P("fsdp")),                         # first of equal dims
    ((2, 4, 1), (4096,), P("fsdp")),                            # 1-D, big enough
    ((2, 4, 1), (1024,), P()),                                  # small: replicated
    ((2, 4, 1), (3, 3, 64, 128), P(None, None, None, "fsdp")),
    ((2, 4, 1), (1001, 7), P()),                                # nothing divisible
    ((2, 4, 1), (1001, 8), P(None, "fsdp")),                    # only the small dim divides
    ((2, 1, 4), (1024, 512), P(None, "model")),
    ((2, 1, 4), (100, 6), P()),                                 # not divisible by model
    ((2, 1, 4), (512,), P()),                                   # 1-D: never over model
    ((2, 1, 4), (3, 3, 16, 128), P(None, None, None, "model")),
    ((1, 2, 4), (3, 3, 16, 128), P(None, None, "fsdp", "model")),
    ((1, 2, 4), (128, 512), P("fsdp", "model")),
    ((1, 2, 4), (), P()),                                       # scalar (optax count)
])
def test_partition_spec(mesh_shape, shape, expected):
  mesh = AbstractMesh(mesh_shape, sharding.MESH_AXES)
  assert sharding.partition_spec(shape, mesh) == expected


def test_make_mesh_on_8_devices():
  out = run_with_8_devices("""
    import jax
    from jax.sharding import AxisType
    from multimodal_gru import config_base, sharding

    for config in [dict(data=-1, fsdp=1, model=1), dict(data=2, fsdp=4, model=1),
                   dict(data=2, fsdp=1, model=4), dict(data=-1, fsdp=2, model=2)]:
      mesh = sharding.make_mesh(config)
      assert mesh.axis_names == ("data", "fsdp", "model")
      assert all(t == AxisType.Auto for t in mesh.axis_types), mesh.axis_types
      assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
      print("shape", tuple(mesh.shape.values()))
    print("base", tuple(sharding.make_mesh(config_base.get_base_config().mesh).shape.values()))
    try:
      sharding.make_mesh(dict(data=-1, fsdp=3, model=1))
    except ValueError as e:
      print("error", e)
  """)
  assert "shape (8, 1, 1)\nshape (2, 4, 1)\nshape (2, 1, 4)\nshape (2, 2, 2)\n" in out
  assert "base (8, 1, 1)" in out
  assert "error config.mesh" in out and "does not divide the device count (8)" in out


def test_param_shardings_of_flax_model_on_8_devices():
  out = run_with_8_devices("""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import PartitionSpec as P
    from multimodal_gru import sharding

    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):                                # [B, 8, 8, 16]
        x = nn.Conv(128, (3, 3), name="conv")(x)            # kernel [3, 3, 16, 128]
        x = nn.Dense(512, name="dense")(x)                  # kernel [128, 512]
        return nn.LayerNorm(name="norm")(x)                 # scale, bias [512]

    net = Net()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 16)).astype(np.float32)
    abstract = jax.eval_shape(net.init, jax.random.key(0), x)
    # Random values of the right shapes (compiling net.init is slow on CPU).
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype) / 8, abstract)
    expected_out = np.asarray(jax.jit(net.apply)(params, x))

    def specs(tree, mesh):
      return jax.tree.map(lambda s: s.spec, sharding.param_shardings(tree, mesh))

    expected = {
        (2, 4, 1): dict(conv=(P(None, None, None, "fsdp"), P()), dense=(P(None, "fsdp"), P())),
        (2, 1, 4): dict(conv=(P(None, None, None, "model"), P()), dense=(P(None, "model"), P())),
        (1, 2, 4): dict(conv=(P(None, None, "fsdp", "model"), P()), dense=(P("fsdp", "model"), P())),
        (8, 1, 1): dict(conv=(P(), P()), dense=(P(), P())),
    }
    for shape, want in expected.items():
      mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))
      got = specs(params, mesh)["params"]
      for layer, (kernel, bias) in want.items():
        assert got[layer]["kernel"] == kernel, (shape, layer, got[layer]["kernel"])
        assert got[layer]["bias"] == bias, (shape, layer, got[layer]["bias"])
      assert got["norm"] == dict(scale=P(), bias=P()), got["norm"]
      assert specs(abstract, mesh) == specs(params, mesh)      # ShapeDtypeStructs: same rules

      # Optimizer state: moments like the params, the step count replicated.
      opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
      opt_specs = specs(opt_state, mesh)
      assert opt_specs[0].mu == specs(params, mesh) and opt_specs[0].nu == specs(params, mesh)
      assert opt_specs[0].count == P()

      # Sharded params and batch give the unsharded result.
      shardings = sharding.param_shardings(params, mesh)
      sharded = jax.device_put(params, shardings)
      kernel = sharded["params"]["dense"]["kernel"]
      assert kernel.sharding == shardings["params"]["dense"]["kernel"]
      xs = jax.device_put(x, sharding.batch_sharding(mesh))
      out = jax.jit(net.apply)(sharded, xs)
      np.testing.assert_allclose(np.asarray(out), expected_out, rtol=1e-5, atol=1e-5)

      # A plain matmul with the kernel's sharding.
      a = np.random.default_rng(1).normal(size=(16, 128)).astype(np.float32)
      a_sharded = jax.device_put(a, sharding.batch_sharding(mesh))
      product = jax.jit(jnp.matmul)(a_sharded, kernel)
      np.testing.assert_allclose(np.asarray(product),
                                 a @ np.asarray(params["params"]["dense"]["kernel"]),
                                 rtol=1e-5, atol=1e-4)
      shard_shape = kernel.addressable_shards[0].data.shape
      print("checked", shape, "dense kernel shard", shard_shape)
  """)
  assert "checked (2, 4, 1) dense kernel shard (128, 128)" in out
  assert "checked (2, 1, 4) dense kernel shard (128, 128)" in out
  assert "checked (1, 2, 4) dense kernel shard (64, 128)" in out
  assert "checked (8, 1, 1) dense kernel shard (128, 512)" in out


def test_global_batch_on_8_devices():
  out = run_with_8_devices("""
    import jax
    import numpy as np
    from multimodal_gru import sharding

    rng = np.random.default_rng(0)
    for shape, batch_shards in [((2, 4, 1), 8), ((2, 1, 4), 2), ((-1, 1, 1), 8)]:
      mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))
      rows = sharding.global_batch_size_per_process(16, mesh)
      assert rows == 16, rows                              # one process: all rows
      local = dict(video=rng.normal(size=(rows, 4, 3)).astype(np.float32),
                   label=rng.integers(0, 2, size=rows).astype(np.int32),
                   example_mask=np.ones(rows, bool))
      batch = sharding.make_global_batch(local, mesh)
      assert set(batch) == set(local)
      for key, value in batch.items():
        assert isinstance(value, jax.Array)
        assert value.shape == local[key].shape and value.dtype == local[key].dtype
        assert value.sharding == sharding.batch_sharding(mesh)
        for shard in value.addressable_shards:
          assert shard.data.shape[0] == 16 // batch_shards
          np.testing.assert_array_equal(np.asarray(shard.data), local[key][shard.index])
        np.testing.assert_array_equal(np.asarray(value), local[key])
      print("batch ok", shape)

    mesh = sharding.make_mesh(dict(data=2, fsdp=4, model=1))
    for call in [lambda: sharding.global_batch_size_per_process(12, mesh),
                 lambda: sharding.global_batch_size_per_process(12),
                 lambda: sharding.make_global_batch(
                     dict(a=np.zeros((16, 2)), b=np.zeros(8)), mesh)]:
      try:
        call()
        print("no error")
      except ValueError as e:
        print("error", e)
    print("model mesh rows", sharding.global_batch_size_per_process(
        6, sharding.make_mesh(dict(data=2, fsdp=1, model=4))))
  """)
  for shape in [(2, 4, 1), (2, 1, 4), (-1, 1, 1)]:
    assert f"batch ok {shape}" in out
  assert ("error global batch size 12 is not divisible by the number of batch shards "
          "(8 = mesh data x fsdp)") in out
  assert "error all batch entries need the same leading (batch) dim" in out
  assert "no error" not in out
  assert "model mesh rows 6" in out
