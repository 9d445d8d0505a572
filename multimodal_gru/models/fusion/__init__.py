"""Registry of fusion variants, keyed by `config.model.fusion`.

Each variant lives in its own module and registers itself with `@register`.
"""

from typing import Callable

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
  def wrap(cls):
    if name in _REGISTRY:
      raise ValueError(f"fusion {name!r} registered twice")
    _REGISTRY[name] = cls
    cls.registry_name = name
    return cls
  return wrap


def get_fusion(name: str) -> type:
  if name not in _REGISTRY:
    raise ValueError(f"unknown fusion {name!r}; config.model.fusion must be one of {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def available() -> list[str]:
  return sorted(_REGISTRY)


# Import the variants so that they register.
from multimodal_gru.models.fusion import concat, gated, unimodal, xattn_bidir, xattn_image  # noqa: E402,F401
