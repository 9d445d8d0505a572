"""Demo benchmark v2: one job for each mechanism of the model (configs/demo_v2.py).

demo_data.py (v1, configs/demo.py) is kept as it is. In v1 every modality
carries an order bit, so any fusion that reads all three streams solves it and
cross-attention has nothing to do that concatenation cannot. v2 gives each
mechanism a job that the others cannot do:

  GRU              order of two events INSIDE a stream (video, text);
  cross-attention  co-occurrence of markers ACROSS two streams (video, image);
  augmentation     a small training set (1024 clips) and an eval split in
                   which half of the clips have one broken stream.

Clip (8 s; all streams sample it uniformly, step k at (k + 0.5) * 8 / T_m):

  modality  steps T_m  dim D_m  content (besides bias_m + iid N(0, 1) noise)
  video     12..16     32       order events A, B; 3 markers; scene tags
  image     16..24     32       3 markers; scene tags
  text       6..8      16       order events A, B

  scenes    the clip is cut into 6 scenes (cut k at 8k/6 s + U(-0.3, 0.3) s; a
            scene lasts >= 0.73 s, longer than any step, so every stream has a
            step in every scene). Scene s has a random tag g_s ~ N(0, I_16) * 5/4
            (fresh per clip), added to every video and image step in it through
            fixed per-modality projections: the streams share "what the scene
            looks like", the only content that tells which steps coincide.
  order     video and text: events A and B (1-2 steps, amplitude 4.5 +- 15%, in
            fixed directions) occur once each, disjoint; bit o_m = 1 iff A starts
            first. 0-2 distractor events (other fixed directions) anywhere.
  markers   image: a marker event (amplitude 4.5 +- 15%) at one random step in
            each of 3 random scenes S_i. video: a marker at one random step in
            each of 3 scenes S_v. Bit a = 1 ("aligned"): S_v = S_i; a = 0: S_v =
            the other 3 scenes. Each stream alone sees markers in a uniform
            random 3 of the 6 scenes either way.

  label/class       majority(o_video, o_text, a), the three bits iid Bernoulli(1/2).
  label/step_class  per image step: for class-1 clips, 1 from the image step that
                    contains t* onward, where t* is the second-earliest decision time
                    among the bits equal to 1 (o_m: the later onset of A_m, B_m; a: the
                    last marker onset of either stream); 0 elsewhere.
  label/va, valid   not part of v2 (zeros, all valid): classification only.

  eval split only   each clip, with probability 1/2, has one broken stream (uniform
                    over the three): half of those "missing" (all features 0, as from
                    a failed extractor), half "noise only" (bias + N(0, 2^2), no
                    events, no tags). A broken stream carries no information.
                    The train split is clean.

Why concatenated pooled features are not enough, by construction: o_m only
swaps WHERE A and B sit, a only swaps WHICH scenes hold the video markers; the
multiset of a stream's step vectors, and hence its time-mean (or any other
per-stream permutation-invariant pooling without a recurrent encoder), has the
same distribution whatever the bits, and jointly so across streams (the time
means of video, image and text together do not depend on the bits). A classifier
on the concatenated time-means is at chance (50%); tests/test_demo_data_v2.py
checks it with a logistic regression. Reading a needs, for each image marker,
the video step that shows the SAME scene tag: cross-attention compares steps of
two streams (query tag . key tag), which it can do from content alone (with or
without a GRU). `concat` can read it only if each stream's pooled GRU summary
carried the (random 16-d) tags of its 3 marker scenes and the head compared the
two sets; we expect it not to learn that (this is the one bound below that is
an expectation, not a construction).

Accuracy each variant can reach by construction (Bayes, majority of 3 fair bits:
knowing 0 bits 50%, 1 or 2 bits 75%, all 3 100%), on clean clips and on the eval
split (half clean, half with one broken stream; `accuracy_bounds` computes them):

  variant                                reads          clean   eval split
  xattn_bidir (also without AE, aug)     o_v, o_t, a    1.000   0.875
  xattn_bidir, model.use_gru=False       a              0.750   0.667
  concat                                 o_v, o_t       0.750   0.750 (expected; see above)
  video_only                             o_v            0.750   0.708
  text_only                              o_t            0.750   0.708
  image_only                             -              0.500   0.500

Expectations written before the grid ran (docs/ablation_demo.md reports what
came out): xattn_bidir above concat and above the best unimodal baseline; the
GRU above mean pooling; augmentation (modality dropout, noise) above no
augmentation, mostly on the broken half of the eval split; the autoencoder has
no job here (on vs off within the seed noise). Events stand out from the noise
but not perfectly, so trained models stay below these bounds.

Probes without a model (tests/test_demo_data_v2.py, train clips): reading the
order bits from the peaks of the A / B projections is right 99.7% of the time;
matching the scene tags of the 3 strongest marker steps of each stream reads a
89% of the time; their majority gives 94% clip accuracy. A logistic regression
on the concatenated time-means stays at chance (~50%).

Clips are a pure function of (split, seed, index).
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from typing import Iterator

import numpy as np

from input_pipeline import record_format
from input_pipeline import shards
from multimodal_gru import demo_data

VERSION = 1                       # bump whenever generated clips change
GENERATOR = "v2"
DURATION_S = demo_data.DURATION_S
STEP_RANGE = {"video": (12, 16), "image": (16, 24), "text": (6, 8)}   # inclusive
DIMS = {"video": 32, "image": 32, "text": 16}
ORDER_MODALITIES = ("video", "text")
MARKER_MODALITIES = ("video", "image")       # image first: its scenes are drawn, video follows
NUM_SCENES = 6
SCENE_JITTER_S = 0.3
SCENE_DIM = 16
SCENE_SCALE = 1.25                # per tag dimension
NUM_MARKERS = 3
NUM_DISTRACTOR_TYPES = 2
MAX_DISTRACTORS = 2
EVENT_AMPLITUDE = 4.5
AMPLITUDE_JITTER = 0.15
BROKEN_FRACTION = 0.5             # eval clips with one broken stream
BROKEN_NOISE_STD = 2.0
BROKEN_KINDS = ("missing", "noise_only")
BITS = ("order_video", "order_text", "aligned")
_DIRECTION_SEED = 20250704


@dataclasses.dataclass(frozen=True)
class Directions:
  """Fixed per-modality directions (rows unit and mutually orthogonal, except bias)."""
  bias: np.ndarray                # [D]
  a: np.ndarray | None            # [D] order event A (video, text)
  b: np.ndarray | None            # [D] order event B
  marker: np.ndarray | None       # [D] (video, image)
  scene: np.ndarray | None        # [SCENE_DIM, D] tag projection (video, image)
  distractors: np.ndarray         # [NUM_DISTRACTOR_TYPES, D]


def event_directions() -> dict[str, Directions]:
  """The fixed directions shared by every clip and split."""
  rng = np.random.default_rng(_DIRECTION_SEED)
  out = {}
  for m in record_format.MODALITIES:
    order, marked = m in ORDER_MODALITIES, m in MARKER_MODALITIES
    k = 2 * order + (1 + SCENE_DIM) * marked + NUM_DISTRACTOR_TYPES
    q, _ = np.linalg.qr(rng.normal(size=(DIMS[m], k)))
    rows = list(q.T)
    take = lambda n: np.stack([rows.pop(0) for _ in range(n)])
    a, b = take(2) if order else (None, None)
    marker = take(1)[0] if marked else None
    scene = take(SCENE_DIM) if marked else None
    out[m] = Directions(bias=0.5 * rng.normal(size=DIMS[m]), a=a, b=b, marker=marker,
                        scene=scene, distractors=take(NUM_DISTRACTOR_TYPES))
  return out


def timestamps(num_steps: int) -> np.ndarray:
  return demo_data.timestamps(num_steps)


@dataclasses.dataclass(frozen=True)
class Truth:
  """The hidden state behind one clip (not written to the records)."""
  bits: dict[str, int]                     # BITS -> 0/1
  steps: dict[str, int]                    # T_m
  cuts: np.ndarray                         # [NUM_SCENES - 1] scene boundaries, seconds
  marker_scenes: dict[str, tuple[int, ...]]   # video/image -> sorted scenes with a marker
  marker_steps: dict[str, tuple[int, ...]]    # video/image -> marker step per scene above
  order_spans: dict[str, dict[str, tuple[int, int]]]   # video/text -> {A, B: (start, length)}
  broken: str | None = None                # eval: the broken stream, or None
  broken_kind: str | None = None           # "missing" | "noise_only"


def scene_of_steps(cuts: np.ndarray, num_steps: int) -> np.ndarray:
  """[T] scene index of every step (by its centre time)."""
  return np.searchsorted(cuts, timestamps(num_steps), side="right")


def _amplitude(rng) -> float:
  return EVENT_AMPLITUDE * rng.uniform(1 - AMPLITUDE_JITTER, 1 + AMPLITUDE_JITTER)


def _order_spans(rng, num_steps: int, a_first: bool) -> dict[str, tuple[int, int]]:
  """Disjoint A and B spans (lengths drawn per kind, so order alone depends on the bit)."""
  len_a, len_b = (int(v) for v in rng.integers(1, 3, size=2))
  first, second = (len_a, len_b) if a_first else (len_b, len_a)
  # Uniform over placements: first start s1, second start in [s1 + first, T - second].
  per_start = np.maximum(num_steps - second - first - np.arange(num_steps) + 1, 0)
  cumulative = np.cumsum(per_start)
  k = int(rng.integers(cumulative[-1]))
  s1 = int(np.searchsorted(cumulative, k, side="right"))
  s2 = s1 + first + k - (int(cumulative[s1 - 1]) if s1 else 0)
  spans = {"first": (s1, first), "second": (s2, second)}
  return {"A": spans["first" if a_first else "second"], "B": spans["second" if a_first else "first"]}


def _stream(rng, d: Directions, num_steps: int, scene_steps: np.ndarray, tags: np.ndarray,
            spans: dict | None, marker_steps: tuple[int, ...]) -> np.ndarray:
  x = d.bias + rng.normal(size=(num_steps, d.bias.shape[0]))
  if d.scene is not None:
    x += tags[scene_steps] @ d.scene
  for kind, (start, length) in (spans or {}).items():
    x[start:start + length] += _amplitude(rng) * (d.a if kind == "A" else d.b)
  for step in marker_steps:
    x[step] += _amplitude(rng) * d.marker
  for _ in range(rng.integers(0, MAX_DISTRACTORS + 1)):
    length = int(rng.integers(1, 3))
    start = int(rng.integers(0, num_steps - length + 1))
    x[start:start + length] += _amplitude(rng) * d.distractors[rng.integers(NUM_DISTRACTOR_TYPES)]
  return x


def _step_class(truth: Truth, label: int) -> np.ndarray:
  t_image = truth.steps["image"]
  out = np.zeros(t_image, np.int64)
  if not label:
    return out
  decided = []
  for m in ORDER_MODALITIES:
    if truth.bits[f"order_{m}"]:
      decided.append(max(timestamps(truth.steps[m])[s] for s, _ in truth.order_spans[m].values()))
  if truth.bits["aligned"]:
    decided.append(max(timestamps(truth.steps[m])[max(truth.marker_steps[m])]
                       for m in MARKER_MODALITIES))
  t_star = sorted(decided)[1]
  out[min(int(t_star * t_image / DURATION_S), t_image - 1):] = 1
  return out


def _split_key(split: str) -> int:
  return zlib.crc32(f"{GENERATOR}/{split}".encode())


def generate_clip_and_truth(split: str, index: int, seed: int,
                            directions: dict[str, Directions] | None = None,
                            ) -> tuple[record_format.Clip, Truth]:
  """Clip `index` of `split` and its hidden state: a pure function of (split, seed, index)."""
  directions = directions or event_directions()
  rng = np.random.default_rng([seed, _split_key(split), index])
  steps = {m: int(rng.integers(lo, hi + 1)) for m, (lo, hi) in STEP_RANGE.items()}
  bits = {b: int(rng.integers(0, 2)) for b in BITS}
  cuts = (np.arange(1, NUM_SCENES) * DURATION_S / NUM_SCENES
          + rng.uniform(-SCENE_JITTER_S, SCENE_JITTER_S, NUM_SCENES - 1))
  tags = SCENE_SCALE * rng.normal(size=(NUM_SCENES, SCENE_DIM))
  image_scenes = np.sort(rng.choice(NUM_SCENES, NUM_MARKERS, replace=False))
  video_scenes = image_scenes if bits["aligned"] else np.setdiff1d(np.arange(NUM_SCENES),
                                                                  image_scenes)
  marker_scenes = {"image": tuple(int(s) for s in image_scenes),
                   "video": tuple(int(s) for s in video_scenes)}
  scene_steps = {m: scene_of_steps(cuts, steps[m]) for m in MARKER_MODALITIES}
  marker_steps = {m: tuple(int(rng.choice(np.flatnonzero(scene_steps[m] == s)))
                           for s in marker_scenes[m]) for m in MARKER_MODALITIES}
  order_spans = {m: _order_spans(rng, steps[m], bool(bits[f"order_{m}"]))
                 for m in ORDER_MODALITIES}
  features = {}
  for m in record_format.MODALITIES:
    features[m] = _stream(rng, directions[m], steps[m],
                          scene_steps.get(m, np.zeros(steps[m], int)), tags,
                          order_spans.get(m), marker_steps.get(m, ()))
  broken = broken_kind = None
  if split != "train" and rng.random() < BROKEN_FRACTION:
    broken = record_format.MODALITIES[int(rng.integers(len(record_format.MODALITIES)))]
    broken_kind = BROKEN_KINDS[int(rng.integers(len(BROKEN_KINDS)))]
    shape = features[broken].shape
    features[broken] = (np.zeros(shape) if broken_kind == "missing" else
                        directions[broken].bias + BROKEN_NOISE_STD * rng.normal(size=shape))
  truth = Truth(bits, steps, cuts, marker_scenes, marker_steps, order_spans, broken, broken_kind)
  label = int(sum(bits.values()) >= 2)
  t_image = steps["image"]
  clip = record_format.Clip(
      clip_id=f"demo2-{split}-{index:06d}", source=f"{demo_data.DATASET_NAME}/{GENERATOR}."
      f"{VERSION}/{split}", features={m: x.astype(np.float32) for m, x in features.items()},
      timestamps={m: timestamps(steps[m]) for m in steps}, label=label,
      step_class=_step_class(truth, label), va=np.zeros((t_image, 2), np.float32),
      valid=np.ones(t_image, bool))
  return clip, truth


def generate_clips(split: str, num_clips: int, seed: int) -> Iterator[record_format.Clip]:
  """Clips 0..num_clips-1 of `split`; each deterministic in (split, seed, index)."""
  directions = event_directions()
  for i in range(num_clips):
    yield generate_clip_and_truth(split, i, seed, directions)[0]


# --- what each variant can reach ------------------------------------------------------

# Bits a variant can read, and the streams each bit needs.
READS = {
    "xattn_bidir": BITS,
    "xattn_bidir,use_gru=off": ("aligned",),
    "concat": ("order_video", "order_text"),
    "video_only": ("order_video",),
    "text_only": ("order_text",),
    "image_only": (),
}
NEEDS = {"order_video": ("video",), "order_text": ("text",), "aligned": ("video", "image")}


def bayes_accuracy(known: int) -> float:
  """Accuracy of the best guess of majority(3 fair bits) from `known` of them."""
  correct = 0.0
  for seen in itertools.product((0, 1), repeat=known):
    p1 = np.mean([sum(seen + rest) >= 2 for rest in itertools.product((0, 1), repeat=3 - known)])
    correct += max(p1, 1 - p1)
  return float(correct / 2 ** known)


def accuracy_bounds(reads=READS) -> dict[str, dict[str, float]]:
  """{variant: {clean, eval}}: Bayes accuracy from the readable bits (module docstring)."""
  out = {}
  for variant, bits in reads.items():
    clean = bayes_accuracy(len(bits))
    broken = np.mean([bayes_accuracy(sum(m not in NEEDS[b] for b in bits))
                      for m in record_format.MODALITIES])
    out[variant] = {"clean": clean,
                    "eval": (1 - BROKEN_FRACTION) * clean + BROKEN_FRACTION * float(broken)}
  return out


# --- the dataset folder ----------------------------------------------------------------


def ensure_demo_dataset(data_dir: str, *, num_train: int = 1024, num_eval: int = 1024,
                        num_shards: int = 2, seed: int = 0) -> str:
  """Writes the v2 train/eval splits into data_dir unless they are already there."""
  stamp = dict(generator=GENERATOR, version=VERSION, num_train=num_train, num_eval=num_eval,
               num_shards=num_shards, seed=seed)

  def write(tmp):
    for split, n in (("train", num_train), ("eval", num_eval)):
      shards.write_split(tmp, split, generate_clips(split, n, seed), num_shards, dtype="float16")
    return dict(description=__doc__.split("\n\n")[0], tasks=["classification"], num_classes=2,
                modalities=list(record_format.MODALITIES), dims=DIMS,
                max_steps={m: hi for m, (_, hi) in STEP_RANGE.items()},
                feature_dtype="float16", splits={"train": num_train, "eval": num_eval})
  return demo_data.ensure_generated(data_dir, stamp, write)
