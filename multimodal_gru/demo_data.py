"""The embedded demo benchmark: generated, seeded, multimodal, order-dependent.

Real DVD and Aff-Wild2 data are EULA-gated, so the demo trains on clips that
this module generates. The task is built so that (a) every modality matters,
(b) the ORDER of events within a modality matters (time-mean pooling cannot
solve it, a recurrent model can) and (c) both demo tasks (classification and
valence/arousal regression) read the same records.

Structure of one clip (all times in seconds, clip duration 8 s):

  modality  steps T_m (uniform)  dim D_m   timestamps
  video     10..16               64        (k + 0.5) * 8 / T_m, k = 0..T_m-1
  image     20..32               64        idem
  text       5..8                32        idem

  features  x_m[k] = bias_m + noise (iid N(0, 1) per value) + planted events
  events    every modality m has a fixed bias_m (N(0, 0.5^2) per dim) and fixed
            orthonormal directions A_m, B_m and 4 distractor directions (from a
            fixed seed, shared by all clips and splits; see `event_directions`).
            An event of direction u adds a * u to 1 or 2 consecutive steps,
            a = 4.5 x uniform(0.85, 1.15) per event: a single event stands out
            from the noise in its direction, but not always above the noise
            maxima of a long clip. A_m and B_m occur exactly once each, never
            overlapping (placement uniform over all valid ones); 0-3 distractor
            events (random type, anywhere, may overlap) are added on top.
  hidden    b_m = 1 iff A_m starts before B_m; b_m ~ Bernoulli(1/2), independent.

Labels (all set in every record):

  label/class       majority(b_video, b_image, b_text): 1 iff >= 2 bits are 1.
                    One modality alone predicts it 75% of the time; all three 100%.
  label/step_class  per image step. e_m = start time of the later of A_m, B_m
                    (when modality m's order becomes known). For class-1 clips,
                    t* = the second-earliest e_m among the modalities with b_m = 1
                    (the moment the majority is complete); steps from the image step
                    whose interval [k, k+1) * 8 / T_image contains t* onward are 1,
                    all earlier ones 0. Class-0 clips: all 0.
  label/va          per image step t (its timestamp), valence then arousal:
                    valence(t) = 0.8 tanh(s_video(t) + s_text(t)) + N(0, 0.03^2), where
                      s_m(t) = 0 before m's first A/B event starts, +-0.5 after it
                      (+ if it was A), and +-1 once both have started (+ iff b_m = 1);
                    arousal(t) = 0.8 tanh(E(t) - 1) + N(0, 0.03^2), where
                      E(t) = sum over all events (A, B, distractors) of video and
                      image that started at s <= t of exp(-(t - s) / 1.5 s);
                    both clipped to [-1, 1].
  label/valid       half of the clips have one unannotated run of 2-6 image steps:
                    valid = 0 and va = -5 there (Aff-Wild2's marker); else valid = 1.

Probes without a model (tests/test_demo_data.py, 1200 train clips): reading each
b_m from the peaks of the A_m / B_m projections and voting gives ~99% clip
accuracy, one modality's bit alone 73-77%, and a logistic regression on the
time-mean of the features ~50% (chance).

Clips are a pure function of (split, seed, index). `ensure_demo_dataset`
writes the train/eval splits once (float16 features) and rewrites them when
the generator's version stamp changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
import zlib
from typing import Iterator

import numpy as np

from input_pipeline import record_format
from input_pipeline import shards

VERSION = 2                       # bump whenever generated clips change
DATASET_NAME = "multimodal_gru_demo"
DURATION_S = 8.0
STEP_RANGE = {"video": (10, 16), "image": (20, 32), "text": (5, 8)}   # inclusive
DIMS = {"video": 64, "image": 64, "text": 32}
NUM_DISTRACTOR_TYPES = 4
MAX_DISTRACTORS = 3
EVENT_AMPLITUDE = 4.5
AMPLITUDE_JITTER = 0.15
VALENCE_MODALITIES = ("video", "text")
AROUSAL_MODALITIES = ("video", "image")
AROUSAL_DECAY_S = 1.5
LABEL_NOISE = 0.03
UNANNOTATED_VALUE = -5.0
_DIRECTION_SEED = 20250703


@dataclasses.dataclass(frozen=True)
class Event:
  kind: str          # "A", "B" or "distractor"
  start: int         # first step
  length: int        # 1 or 2 steps
  onset_s: float     # timestamp of the first step


@dataclasses.dataclass(frozen=True)
class Directions:
  bias: np.ndarray          # [D]
  a: np.ndarray             # [D] unit
  b: np.ndarray             # [D] unit
  distractors: np.ndarray   # [NUM_DISTRACTOR_TYPES, D] unit; all rows mutually orthogonal


def event_directions() -> dict[str, Directions]:
  """The fixed per-modality event directions shared by every clip."""
  rng = np.random.default_rng(_DIRECTION_SEED)
  out = {}
  for m in record_format.MODALITIES:
    d = DIMS[m]
    q, _ = np.linalg.qr(rng.normal(size=(d, 2 + NUM_DISTRACTOR_TYPES)))
    out[m] = Directions(bias=0.5 * rng.normal(size=d), a=q[:, 0], b=q[:, 1],
                        distractors=q[:, 2:].T)
  return out


def timestamps(num_steps: int) -> np.ndarray:
  """Step-centre times [T] in seconds over the clip."""
  return ((np.arange(num_steps) + 0.5) * DURATION_S / num_steps).astype(np.float32)


def _place_a_b(rng: np.random.Generator, num_steps: int, a_first: bool):
  """Disjoint spans for A and B, A first iff a_first; uniform over valid placements."""
  len_first, len_second = (int(v) for v in rng.integers(1, 3, size=2))
  # Placements with the first span at s1: second start in [s1 + len_first, T - len_second].
  per_start = np.maximum(num_steps - len_second - len_first - np.arange(num_steps) + 1, 0)
  cumulative = np.cumsum(per_start)
  k = int(rng.integers(cumulative[-1]))
  s1 = int(np.searchsorted(cumulative, k, side="right"))
  s2 = s1 + len_first + k - (int(cumulative[s1 - 1]) if s1 else 0)
  first, second = ("A", "B") if a_first else ("B", "A")
  return (first, s1, len_first), (second, s2, len_second)


def _modality_events(rng, num_steps: int, bit: int) -> list[Event]:
  ts = timestamps(num_steps)
  spans = list(_place_a_b(rng, num_steps, a_first=bool(bit)))
  for _ in range(rng.integers(0, MAX_DISTRACTORS + 1)):
    length = int(rng.integers(1, 3))
    spans.append((f"d{rng.integers(NUM_DISTRACTOR_TYPES)}",
                  int(rng.integers(0, num_steps - length + 1)), length))
  return [Event(kind, start, length, float(ts[start])) for kind, start, length in spans]


def _features(rng, directions: Directions, num_steps: int, events: list[Event]) -> np.ndarray:
  d = directions.bias.shape[0]
  x = directions.bias + rng.normal(size=(num_steps, d))
  for e in events:
    if e.kind in ("A", "B"):
      u = directions.a if e.kind == "A" else directions.b
    else:
      u = directions.distractors[int(e.kind[1:])]
    amplitude = EVENT_AMPLITUDE * rng.uniform(1 - AMPLITUDE_JITTER, 1 + AMPLITUDE_JITTER)
    x[e.start:e.start + e.length] += amplitude * u
  return x.astype(np.float32)


def _order_evidence(events: list[Event], t: np.ndarray) -> np.ndarray:
  """s_m(t) of the docstring: signed evidence of one modality at times t [T]."""
  a = next(e.onset_s for e in events if e.kind == "A")
  b = next(e.onset_s for e in events if e.kind == "B")
  first_sign = 1.0 if a < b else -1.0
  return first_sign * (0.5 * (t >= min(a, b)) + 0.5 * (t >= max(a, b)))


@dataclasses.dataclass(frozen=True)
class Truth:
  """The hidden state behind one clip (not written to the records)."""
  bits: dict[str, int]                 # b_m per modality
  events: dict[str, list[Event]]       # planted events per modality


def _labels(rng, truth: Truth, num_image_steps: int):
  t = timestamps(num_image_steps).astype(np.float64)
  label = int(sum(truth.bits.values()) >= 2)
  step_class = np.zeros(num_image_steps, np.int64)
  if label:
    decided = sorted(max(e.onset_s for e in truth.events[m] if e.kind in ("A", "B"))
                     for m, bit in truth.bits.items() if bit)
    t_star = decided[1]
    first_step = min(int(t_star * num_image_steps / DURATION_S), num_image_steps - 1)
    step_class[first_step:] = 1
  valence = 0.8 * np.tanh(sum(_order_evidence(truth.events[m], t) for m in VALENCE_MODALITIES))
  energy = np.zeros_like(t)
  for m in AROUSAL_MODALITIES:
    for e in truth.events[m]:
      energy += np.where(t >= e.onset_s, np.exp(-np.maximum(t - e.onset_s, 0) / AROUSAL_DECAY_S),
                         0.0)
  arousal = 0.8 * np.tanh(energy - 1.0)
  va = np.stack([valence, arousal], axis=-1) + LABEL_NOISE * rng.normal(size=(len(t), 2))
  va = np.clip(va, -1.0, 1.0)
  valid = np.ones(num_image_steps, bool)
  if rng.random() < 0.5:
    run = int(rng.integers(2, 7))
    start = int(rng.integers(0, num_image_steps - run + 1))
    valid[start:start + run] = False
    va[~valid] = UNANNOTATED_VALUE
  return label, step_class, va.astype(np.float32), valid


def _split_key(split: str) -> int:
  return zlib.crc32(split.encode())


def generate_clip_and_truth(split: str, index: int, seed: int,
                            directions: dict[str, Directions] | None = None,
                            ) -> tuple[record_format.Clip, Truth]:
  """Clip `index` of `split` and its hidden state: a pure function of (split, seed, index)."""
  directions = directions or event_directions()
  rng = np.random.default_rng([seed, _split_key(split), index])
  steps = {m: int(rng.integers(lo, hi + 1)) for m, (lo, hi) in STEP_RANGE.items()}
  bits = {m: int(rng.integers(0, 2)) for m in record_format.MODALITIES}
  events = {m: _modality_events(rng, steps[m], bits[m]) for m in record_format.MODALITIES}
  features = {m: _features(rng, directions[m], steps[m], events[m])
              for m in record_format.MODALITIES}
  truth = Truth(bits, events)
  label, step_class, va, valid = _labels(rng, truth, steps["image"])
  clip = record_format.Clip(
      clip_id=f"demo-{split}-{index:06d}", source=f"{DATASET_NAME}/v{VERSION}/{split}",
      features=features, timestamps={m: timestamps(steps[m]) for m in steps},
      label=label, step_class=step_class, va=va, valid=valid)
  return clip, truth


def generate_clips(split: str, num_clips: int, seed: int) -> Iterator[record_format.Clip]:
  """Clips 0..num_clips-1 of `split`; each deterministic in (split, seed, index)."""
  directions = event_directions()
  for i in range(num_clips):
    yield generate_clip_and_truth(split, i, seed, directions)[0]


def _stamp(num_train: int, num_eval: int, num_shards: int, seed: int) -> dict:
  return dict(version=VERSION, num_train=num_train, num_eval=num_eval, num_shards=num_shards,
              seed=seed)


def _read_stamp(data_dir: str) -> dict | None:
  """The demo stamp in data_dir's dataset_info.json; None if absent or not a demo folder."""
  try:
    with open(os.path.join(data_dir, shards.DATASET_INFO)) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return None
  return info.get("demo_stamp") if info.get("name") == DATASET_NAME else None


def _is_replaceable(data_dir: str) -> bool:
  """True for a folder that only a demo write could have made (or an empty one)."""
  if not os.listdir(data_dir):
    return True
  try:
    with open(os.path.join(data_dir, shards.DATASET_INFO)) as f:
      return json.load(f).get("name") == DATASET_NAME
  except (OSError, ValueError):
    return False


def ensure_demo_dataset(data_dir: str, *, num_train: int = 4096, num_eval: int = 1024,
                        num_shards: int = 4, seed: int = 0) -> str:
  """Writes the demo's train/eval splits into data_dir unless they are already there.

  Regenerates when the stamp (generator VERSION and the arguments) differs.
  Safe when several processes call it at once (see `ensure_generated`).
  Refuses to replace a non-empty folder that is not a demo dataset.
  Returns data_dir.
  """
  def write(tmp):
    for split, n in (("train", num_train), ("eval", num_eval)):
      shards.write_split(tmp, split, generate_clips(split, n, seed), num_shards, dtype="float16")
    return dict(
        description=__doc__.split("\n\n")[0],
        tasks=["classification", "regression"], num_classes=2,
        modalities=list(record_format.MODALITIES), dims=DIMS,
        max_steps={m: hi for m, (_, hi) in STEP_RANGE.items()},
        feature_dtype="float16", splits={"train": num_train, "eval": num_eval})
  return ensure_generated(data_dir, _stamp(num_train, num_eval, num_shards, seed), write)


def ensure_generated(data_dir: str, stamp: dict, write) -> str:
  """Runs write(tmp_dir) -> dataset_info fields into data_dir unless its stamp matches.

  Shared by the demo generators (demo_data, demo_data_v2): the folder's
  dataset_info.json records `stamp`; a different stamp regenerates. Safe when
  several processes call it at once: each writes a private temporary folder
  that is renamed into place; identical content, first wins. Refuses to
  replace a non-empty folder that is not a demo dataset. Returns data_dir.
  """
  target = os.path.abspath(os.path.expanduser(data_dir))
  if _read_stamp(target) == stamp:
    return data_dir
  if os.path.isdir(target) and not _is_replaceable(target):
    raise FileExistsError(f"{data_dir!r} is not empty and holds no demo dataset; refusing to "
                          "overwrite it. Point config.data.dir at a new folder.")
  parent, name = os.path.split(target)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
  try:
    info = write(tmp)
    shards.write_dataset_info(tmp, dict(name=DATASET_NAME, demo_stamp=stamp, **info))
    for _ in range(3):
      if _read_stamp(target) == stamp:         # another process finished first
        return data_dir
      try:
        os.rename(tmp, target)                 # works if target is missing or empty
        return data_dir
      except OSError:
        pass
      if _read_stamp(target) == stamp:
        return data_dir
      stale = os.path.join(parent, f".{name}.stale-{uuid.uuid4().hex}")
      try:
        os.rename(target, stale)               # an older demo version: move it aside
      except FileNotFoundError:
        pass
      shutil.rmtree(stale, ignore_errors=True)
    raise RuntimeError(f"could not move the generated demo dataset into {data_dir!r}")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
