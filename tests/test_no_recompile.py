"""The training loop compiles its train and eval steps once and nothing after the first eval.

Runs the real `train.train_and_evaluate` (12 steps, evals at 6 and 12,
checkpoints every 4 steps) and records every XLA compilation through jax's
monitoring events, interleaved with the loop's own log lines so that each
compilation can be placed in the run.
"""

import logging

import jax
from jax._src import dispatch   # the event names: no public constant
import pytest

from conftest import tiny_config
from multimodal_gru import train


class _Recorder(logging.Handler):
  """Collects ("compile", fun_name) and ("log", message) events in order."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.events = []

  def emit(self, record):
    self.events.append(("log", record.getMessage()))

  def on_duration(self, event, duration, **kwargs):
    del duration
    if event == dispatch.BACKEND_COMPILE_EVENT:
      self.events.append(("compile", kwargs.get("fun_name", "?")))

  def compiled(self):
    return [name for kind, name in self.events if kind == "compile"]


@pytest.fixture
def recorder():
  rec = _Recorder()
  jax.monitoring.register_event_duration_secs_listener(rec.on_duration)
  absl_logger = logging.getLogger("absl")
  previous_level = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  absl_logger.addHandler(rec)
  try:
    yield rec
  finally:
    absl_logger.removeHandler(rec)
    absl_logger.setLevel(previous_level)
    jax.monitoring.unregister_event_duration_listener(rec.on_duration)


def _count(names, fun):
  return sum(1 for n in names if n in (fun, f"jit({fun})", f"jit_{fun}"))


def test_train_and_eval_steps_compile_once(tiny_demo_dir, tmp_path, recorder):
  config = tiny_config(tiny_demo_dir)
  config.train.num_steps = 12
  config.train.log_every = 3
  config.train.eval_every = 6
  config.train.checkpoint_every = 4
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["step"] == 12

  names = recorder.compiled()
  assert _count(names, "train_step") == 1, names
  assert _count(names, "eval_step") == 1, names
  # Everything after the first eval (6 train steps, a checkpoint at 8, the eval and
  # checkpoint at 12) reuses compiled programs.
  messages = [(kind, text) for kind, text in recorder.events]
  first_eval = next(i for i, (kind, text) in enumerate(messages)
                    if kind == "log" and text.startswith("eval @ step 6"))
  later = [text for kind, text in messages[first_eval:] if kind == "compile"]
  assert later == [], f"compiled after the first eval: {later}"
  # Between the first logged train step and the first eval only the eval step compiles
  # (the checkpoint at step 4 compiles nothing).
  first_log = next(i for i, (kind, text) in enumerate(messages)
                   if kind == "log" and text.startswith("step 3/12"))
  middle = [text for kind, text in messages[first_log:first_eval] if kind == "compile"]
  assert [n for n in middle if _count([n], "eval_step") == 0] == [], middle
