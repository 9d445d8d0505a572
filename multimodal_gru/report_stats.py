"""The report's comparisons (paired over seeds) and its robustness table.

Comparisons: the paper's claims as pairs of variants, A the reference model
(`REFERENCE`: bidirectional cross-attention, GRU, augmentation, autoencoder)
and B the reference with one setting changed. Runs of A and B with the same
seed form a pair (same initialisation seed, same data order); the table gives
the mean paired difference A - B, its 95% t interval and the two-sided paired
t-test p-value. B = "best unimodal" is the unimodal variant with the best mean
(chosen after the fact, which favours B).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from scipy import stats

ROBUST_PREFIX = "robust/"
ROBUST_MEAN = "robust_mean"          # per run: mean over corruptions of a metric
UNIMODAL = ("video_only", "image_only", "text_only")
REFERENCE = {"model.fusion": "xattn_bidir", "augment.enabled": True, "model.use_gru": True,
             "autoencoder.enabled": True}
# (claim, B's change from REFERENCE); model.fusion=UNIMODAL means the best unimodal variant.
COMPARISONS = (
    ("fused vs best unimodal", {"model.fusion": UNIMODAL}),
    ("xattn_bidir vs concat", {"model.fusion": "concat"}),
    ("augmentation on vs off", {"augment.enabled": False}),
    ("GRU vs mean pooling", {"model.use_gru": False}),
    ("autoencoder on vs off", {"autoencoder.enabled": False}),
)


def robust_names(runs: Sequence[dict], metric: str) -> list[str]:
  """Corruption names with `metric` in any run: config.eval's order first, then the rest."""
  found = {k[len(ROBUST_PREFIX):-len(metric) - 1] for r in runs for k in r["metrics"]
           if k.startswith(ROBUST_PREFIX) and k.endswith("/" + metric)}
  order = []
  try:
    import ml_collections
    from multimodal_gru.evaluate import robustness
    order = list(robustness.corruptions(ml_collections.ConfigDict(runs[0]["config"])))
  except (KeyError, AttributeError, ValueError, TypeError):
    pass
  return [n for n in order if n in found] + sorted(found - set(order))


def run_value(run: dict, metric: str) -> float:
  """A run's metric; ROBUST_MEAN/<m> = the mean of robust/<c>/<m> over its corruptions."""
  if metric.startswith(ROBUST_MEAN + "/"):
    base = metric[len(ROBUST_MEAN) + 1:]
    values = [v for k, v in run["metrics"].items()
              if k.startswith(ROBUST_PREFIX) and k.endswith("/" + base)]
    return float(np.mean(values)) if values else float("nan")
  return float(run["metrics"].get(metric, float("nan")))


@dataclasses.dataclass
class Paired:
  n: int                 # seeds present in both
  mean_a: float
  mean_b: float
  diff: float            # mean of A - B over the paired seeds
  low: float             # 95% t interval of diff
  high: float
  p: float               # two-sided paired t-test


def paired(runs_a: Sequence[dict], runs_b: Sequence[dict], metric: str) -> Paired | None:
  by_seed_b = {r["config"].get("seed"): r for r in runs_b}
  pairs = [(run_value(a, metric), run_value(by_seed_b[a["config"].get("seed")], metric))
           for a in runs_a if a["config"].get("seed") in by_seed_b]
  pairs = np.array([p for p in pairs if np.isfinite(p).all()], float).reshape(-1, 2)
  if len(pairs) < 2:
    return None
  d = pairs[:, 0] - pairs[:, 1]
  half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
  p = float(stats.ttest_rel(pairs[:, 0], pairs[:, 1]).pvalue) if d.std() > 0 else 0.0
  return Paired(len(d), float(pairs[:, 0].mean()), float(pairs[:, 1].mean()), float(d.mean()),
                float(d.mean() - half), float(d.mean() + half), p)


def _matches(settings: dict[str, Any], wanted: dict[str, Any]) -> bool:
  for k, v in wanted.items():
    if k not in settings:
      continue   # not varied by the grid: the same in every run
    if isinstance(v, tuple) and not isinstance(settings[k], tuple):
      if settings[k] not in v:
        return False
    elif settings[k] != v:
      return False
  return True


def comparison_pairs(variants) -> list[tuple[str, Any, Any]]:
  """(claim, variant A, variant B) for every COMPARISONS entry that the grid holds."""
  reference = [v for v in variants if _matches(v.settings, REFERENCE)]
  if len(reference) != 1:
    return []
  a = reference[0]
  out = []
  for claim, change in COMPARISONS:
    if not all(k in a.settings for k in change):
      continue
    wanted = {**REFERENCE, **change}
    candidates = [v for v in variants if v is not a and _matches(v.settings, wanted)]
    if candidates:
      out.append((claim, a, candidates))
  return out


def comparisons_table(variants, metrics: Sequence[str], higher_is_better) -> str:
  """Markdown: one row per (claim, metric)."""
  lines = ["| claim | metric | A | B | A | B | A − B (paired) | 95% interval | p | seeds "
           "| reading |",
           "|:--|:--|:--|:--|--:|--:|--:|--:|--:|--:|:--|"]
  for claim, a, candidates in comparison_pairs(variants):
    for metric in metrics:
      sign = 1.0 if higher_is_better(metric) else -1.0
      means = [sign * np.nanmean([run_value(r, metric) for r in v.runs]) for v in candidates]
      if all(np.isnan(means)):
        continue
      b = candidates[int(np.nanargmax(means))]
      r = paired(a.runs, b.runs, metric)
      if r is None:
        continue
      if sign * r.low > 0 or sign * r.high < 0:
        reading = "A better" if sign * r.diff > 0 else "B better"
      else:
        reading = "within noise"
      lines.append(f"| {claim} | `{metric}` | `{a.name}` | `{b.name}` | {r.mean_a:.4f} | "
                   f"{r.mean_b:.4f} | {r.diff:+.4f} | [{r.low:+.4f}, {r.high:+.4f}] | "
                   f"{r.p:.3g} | {r.n} | {reading} |")
  return "\n".join(lines) if len(lines) > 2 else ""


def robustness_table(variants, metric: str) -> str:
  """Markdown: variants x (clean, corruptions, their mean) of `metric`, mean ± std over seeds."""
  runs = [r for v in variants for r in v.runs]
  names = robust_names(runs, metric)
  if not names:
    return ""
  columns = [metric] + [f"{ROBUST_PREFIX}{n}/{metric}" for n in names] + [
      f"{ROBUST_MEAN}/{metric}"]
  header = ["variant", "seeds", "clean", *names, "mean"]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|"]
  for v in variants:
    cells = [f"`{v.name}`", str(len(v.runs))]
    for c in columns:
      x = np.array([run_value(r, c) for r in v.runs], float)
      x = x[np.isfinite(x)]
      if not len(x):
        cells.append("–")
      else:
        cells.append(f"{x.mean():.3f}" + (f" ± {x.std(ddof=1):.3f}" if len(x) > 1 else ""))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
