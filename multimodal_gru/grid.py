"""Hyper-parameter grids: lists of override dicts, and stable run names for them.

A grid is a list of points; a point is a dict of config overrides keyed by
dotted field path ({"model.fusion": "concat", "seed": 1}). Grids compose:

  grid.product(
      grid.sweep("model.fusion", ["concat", "xattn_bidir"]),
      grid.sweep("augment.enabled", [True, False]),
      grid.sweep("seed", range(3)))                      # 2 x 2 x 3 = 12 points
  grid.zip(grid.sweep("model.hidden_dim", [64, 128]),
           grid.sweep("model.mlp_dim", [128, 256]))      # 2 points, paired
  grid.chain(grid_a, grid_b)                             # grid_a's points, then grid_b's

A plain dict stands for a one-point grid: grid.product({"train.num_steps": 600}, ...).
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import re
from typing import Any, Iterable, Mapping, Union

Point = dict[str, Any]
GridLike = Union[Mapping[str, Any], Iterable[Mapping[str, Any]]]

MAX_NAME_LENGTH = 160             # longer names are cut and end in a hash of the full name
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")
_NAME_ORDER = {"model.fusion": 0, "seed": 2}   # the rest (1) sorts by key


def _points(grid: GridLike) -> list[Point]:
  if isinstance(grid, Mapping):
    return [dict(grid)]
  return [dict(p) for p in grid]


def _merge(points: Iterable[Point]) -> Point:
  merged: Point = {}
  for p in points:
    for key, value in p.items():
      if key in merged:
        raise ValueError(f"key {key!r} is set by two of the combined grids")
      merged[key] = value
  return merged


def sweep(key: str, values: Iterable[Any]) -> list[Point]:
  """One point per value: [{key: v} for v in values]."""
  return [{key: v} for v in values]


def product(*grids: GridLike) -> list[Point]:
  """Cartesian product; the last grid varies fastest. Keys must not repeat across grids."""
  return [_merge(combo) for combo in itertools.product(*(_points(g) for g in grids))]


def zip(*grids: GridLike) -> list[Point]:  # pylint: disable=redefined-builtin
  """Pairs the i-th points of grids of equal length."""
  lists = [_points(g) for g in grids]
  if len({len(p) for p in lists}) > 1:
    raise ValueError(f"grid.zip needs grids of equal length, got {[len(p) for p in lists]}")
  return [_merge(combo) for combo in builtins.zip(*lists)]


def chain(*grids: GridLike) -> list[Point]:
  """The points of every grid, one grid after the other."""
  return [p for g in grids for p in _points(g)]


def short_key(key: str) -> str:
  """`model.fusion` -> `fusion`, `augment.enabled` -> `augment`."""
  parts = key.split(".")
  if parts[-1] == "enabled" and len(parts) > 1:
    return parts[-2]
  return parts[-1]


def format_value(value: Any) -> str:
  if isinstance(value, bool):
    return "on" if value else "off"
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (tuple, list)):
    return "+".join(format_value(v) for v in value)
  return str(value)


def point_name(point: Mapping[str, Any]) -> str:
  """A readable, path-safe name, independent of the order of the point's keys.

  {"seed": 0, "model.fusion": "concat", "augment.enabled": True}
    -> "fusion=concat,augment=on,seed=0"
  Keys are shortened to their last component (the section for `.enabled`)
  unless two keys of the point would read the same.
  """
  if not point:
    return "base"
  keys = sorted(point, key=lambda k: (_NAME_ORDER.get(k, 1), k))
  shorts = [short_key(k) for k in keys]
  labels = [s if shorts.count(s) == 1 else k for k, s in builtins.zip(keys, shorts)]
  name = ",".join(f"{label}={format_value(point[k])}" for label, k in builtins.zip(labels, keys))
  name = _UNSAFE.sub("_", name)
  if name.startswith("."):
    name = "_" + name[1:]
  if len(name) > MAX_NAME_LENGTH:
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = f"{name[:MAX_NAME_LENGTH - 11]}-{digest}"
  return name
