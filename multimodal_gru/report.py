"""Ablation report: every metric per variant, mean ± std over seeds.

  python -m multimodal_gru.report --workdir=ROOT [--out=PREFIX]

Reads every ROOT/**/results.json (written by `multimodal_gru.main`), groups the
runs into variants by their config differences except the seeds (`seed`,
`data.shuffle_seed`), and writes PREFIX.md (a markdown table, best per column
in bold), PREFIX.csv and PREFIX.png (the primary metric per variant with std
error bars); PREFIX defaults to ROOT/report. Prints the table. PREFIX.md also
gets the paper's comparisons, paired over seeds, and (when the runs hold
robust/* metrics) a variants x corruptions table (report_stats.py).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import json
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from multimodal_gru import grid, paths, report_stats

SEED_KEYS = ("seed", "data.shuffle_seed")
SKIP_METRICS = ("num_examples",)
_LOWER_IS_BETTER = re.compile(r"(^|_)(loss|mse|mae|rmse|error)(_|$)")


class ReportError(ValueError):
  pass


@dataclasses.dataclass
class Variant:
  name: str
  settings: dict[str, Any]           # the config keys that tell variants apart
  runs: list[dict]                    # results.json contents

  @property
  def seeds(self) -> list[int]:
    return sorted(r["config"].get("seed") for r in self.runs)

  def values(self, metric: str) -> np.ndarray:
    return np.array([r["metrics"][metric] for r in self.runs if metric in r["metrics"]], float)

  def mean_std(self, metric: str) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for a single run) over the variant's runs."""
    v = self.values(metric)
    if not len(v):
      return float("nan"), float("nan")
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else float("nan"))


@dataclasses.dataclass
class Report:
  task: str
  primary_metric: str
  metrics: list[str]
  variants: list[Variant]             # best primary metric first
  markdown: str
  paths: dict[str, str]               # "md", "csv", "png" -> written file


def lower_is_better(metric: str) -> bool:
  return bool(_LOWER_IS_BETTER.search(metric))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, f"{prefix}{k}."))
    else:
      flat[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
  return flat


def load_runs(root: str) -> list[dict]:
  """results.json of every finished run under `root`, each with its `workdir` added."""
  runs = []
  for path in sorted(glob.glob(os.path.join(glob.escape(root), "**", "results.json"), recursive=True)):
    with open(path) as f:
      results = json.load(f)
    if not isinstance(results, dict) or "metrics" not in results or "config" not in results:
      continue
    results["workdir"] = os.path.dirname(path)
    runs.append(results)
  return runs


def group_variants(runs: list[dict]) -> list[Variant]:
  """Runs with equal configs up to SEED_KEYS form one variant (in order of first appearance)."""
  flats = [_flatten(r["config"]) for r in runs]
  keys = sorted(set().union(*flats))
  differing = [k for k in keys if k not in SEED_KEYS and len({repr(f.get(k)) for f in flats}) > 1]
  variants: dict[tuple, Variant] = {}
  for run, flat in zip(runs, flats):
    settings = {k: flat.get(k) for k in differing}
    key = tuple(repr(v) for v in settings.values())
    if key not in variants:
      variants[key] = Variant(grid.point_name(settings), settings, [])
    variants[key].runs.append(run)
  return list(variants.values())


def _cell(mean: float, std: float) -> str:
  if np.isnan(mean):
    return "–"
  return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _best(variants: list[Variant], metric: str) -> float:
  means = [v.mean_std(metric)[0] for v in variants]
  means = [m for m in means if not np.isnan(m)]
  if not means:
    return float("nan")
  return min(means) if lower_is_better(metric) else max(means)


def markdown_table(variants: list[Variant], metrics: list[str]) -> str:
  header = ["variant", "seeds", *metrics, "parameters"]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":--", "--:"] + ["--:"] * len(metrics) + ["--:"]) + "|"]
  best = {m: _best(variants, m) for m in metrics}
  for v in variants:
    cells = [f"`{v.name}`", str(len(v.runs))]
    for m in metrics:
      mean, std = v.mean_std(m)
      text = _cell(mean, std)
      cells.append(f"**{text}**" if mean == best[m] else text)
    cells.append(f"{v.runs[0].get('num_parameters', 0):,}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_csv(path: str, variants: list[Variant], metrics: list[str]) -> None:
  setting_keys = list(variants[0].settings) if variants else []
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["variant", *setting_keys, "num_seeds", "seeds",
                     *[f"{m}_{s}" for m in metrics for s in ("mean", "std")], "num_parameters"])
    for v in variants:
      stats = [x for m in metrics for x in v.mean_std(m)]
      writer.writerow([v.name, *[grid.format_value(v.settings[k]) for k in setting_keys],
                       len(v.runs), " ".join(map(str, v.seeds)),
                       *["" if np.isnan(x) else f"{x:.6g}" for x in stats],
                       v.runs[0].get("num_parameters", "")])


def write_chart(path: str, variants: list[Variant], metric: str, title: str) -> None:
  """Horizontal bars of `metric` per variant (best on top) with std error bars."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  stats = np.array([v.mean_std(metric) for v in variants])
  means, stds = stats[:, 0], stats[:, 1]     # std NaN for a single seed: no error bar
  y = np.arange(len(variants))[::-1]
  fig, ax = plt.subplots(figsize=(9, 1.2 + 0.38 * len(variants)))
  ax.barh(y, means, xerr=stds, color="#4C72B0", ecolor="black", capsize=3, height=0.7)
  for yi, m, s in zip(y, means, stds):
    label = f" {m:.3f}" if np.isnan(s) else f" {m:.3f} ± {s:.3f}"
    ax.text(m + np.nan_to_num(s), yi, label, va="center", fontsize=8)
  stds = np.nan_to_num(stds)
  ax.set_yticks(y, [v.name for v in variants], fontsize=8)
  ax.set_xlabel(f"{metric} ({'lower' if lower_is_better(metric) else 'higher'} is better; "
                "mean ± std over seeds)")
  ax.set_title(title, fontsize=10)
  finite = means[np.isfinite(means)]
  if len(finite):
    ax.set_xlim(0, float(np.max(finite + stds[np.isfinite(means)])) * 1.2)
  ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _pending_note(root: str, variants: list[Variant]) -> str:
  """Points of ROOT/sweep.json without results, by status."""
  try:
    with open(os.path.join(root, "sweep.json")) as f:
      points = json.load(f)["points"]
  except (OSError, ValueError, KeyError):
    return ""
  done = {os.path.basename(r["workdir"]) for v in variants for r in v.runs}   # ROOT/NAME
  missing: dict[str, list[str]] = {}
  for p in points:
    if p["name"] not in done:
      missing.setdefault(p["status"], []).append(p["name"])
  if not missing:
    return ""
  parts = [f"{status} ({len(names)}): " + ", ".join(f"`{n}`" for n in names)
           for status, names in sorted(missing.items())]
  return "Not in the table, from sweep.json: " + "; ".join(parts) + "."


def build_report(root: str, out_prefix: str | None = None) -> Report:
  """Reads the runs under `root`, writes PREFIX.md/.csv/.png (PREFIX = ROOT/report)."""
  runs = load_runs(root)
  if not runs:
    raise ReportError(f"no results.json under {root}")
  tasks = sorted({r.get("task") for r in runs})
  if len(tasks) > 1:
    raise ReportError(f"{root} holds runs of several tasks {tasks}; report them from separate roots")
  primary = runs[0]["primary_metric"]
  metrics = sorted({m for r in runs for m in r["metrics"]
                   if m not in SKIP_METRICS and not m.startswith(report_stats.ROBUST_PREFIX)})
  metrics = [primary] + [m for m in metrics if m != primary]
  sign = 1.0 if lower_is_better(primary) else -1.0
  variants = sorted(group_variants(runs),
                    key=lambda v: (np.nan_to_num(sign * v.mean_std(primary)[0], nan=np.inf), v.name))

  prefix = out_prefix or os.path.join(root, "report")
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  paths = {ext: f"{prefix}.{ext}" for ext in ("md", "csv", "png")}
  steps = sorted({r["step"] for r in runs})
  title = (f"{primary} per variant: {len(runs)} runs, {len(variants)} variants, "
           f"{'/'.join(map(str, steps))} steps")
  write_chart(paths["png"], variants, primary, title)
  write_csv(paths["csv"], variants, metrics)
  lines = [
      f"## Ablation report ({tasks[0]}): {len(runs)} runs in {len(variants)} variants",
      "",
      f"Runs under `{root}`, trained for {'/'.join(map(str, steps))} steps. Each cell: mean ± "
      "sample std over the variant's seeds (one seed: the value alone); best per column in "
      f"**bold**; rows sorted by the primary metric `{primary}`"
      f" ({'lower' if lower_is_better(primary) else 'higher'} is better).",
      "",
      markdown_table(variants, metrics),
      "",
      f"![{primary} per variant]({os.path.basename(paths['png'])})",
  ]
  robust = report_stats.robustness_table(variants, primary)
  compared = [primary] + ([f"{report_stats.ROBUST_MEAN}/{primary}"] if robust else [])
  comparisons = report_stats.comparisons_table(variants, compared,
                                               lambda m: not lower_is_better(m))
  if comparisons:
    lines += ["", "### The paper's comparisons, paired over seeds", "",
              "A = the reference model, B = it with one mechanism changed; runs with the same "
              "seed are paired. `reading`: the 95% t interval of A − B excludes 0 (A or B "
              f"better) or not (within noise). `{report_stats.ROBUST_MEAN}/{primary}`: the mean "
              "over the robustness corruptions.", "", comparisons]
  if robust:
    lines += ["", f"### Robustness: `{primary}` under corruptions", "",
              "Each cell: mean ± sample std over seeds, on the eval set corrupted as named "
              "(`multimodal_gru/evaluate/robustness.py`); clean = no corruption.", "", robust]
  note = _pending_note(root, variants)
  if note:
    lines += ["", note]
  markdown = "\n".join(lines) + "\n"
  with open(paths["md"], "w") as f:
    f.write(markdown)
  return Report(tasks[0], primary, metrics, variants, markdown, paths)


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="sweep root (searched recursively)")
  parser.add_argument("--out", default=None, help="output prefix (default ROOT/report)")
  args = parser.parse_args(argv)
  try:
    report = build_report(paths.resolve(args.workdir), args.out and paths.resolve(args.out))
  except ReportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report.markdown)
  print("wrote " + ", ".join(report.paths.values()), file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
