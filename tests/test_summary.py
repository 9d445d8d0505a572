"""TensorBoard writer: read back with tensorboard's EventAccumulator; no tensorflow."""

import glob
import os
import subprocess
import sys

import ml_collections
import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from multimodal_gru import summary


def _load(logdir):
  acc = event_accumulator.EventAccumulator(
      logdir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
  acc.Reload()
  return acc


def test_scalars_round_trip(tmp_path):
  writer = summary.TensorBoardWriter(str(tmp_path))
  for step in (1, 5, 10):
    writer.write_scalars(step, {"train/loss": 1.0 / step, "train/lr": np.float32(step * 1e-3)})
  writer.write_scalars(10, {"eval/ccc_mean": np.float64(0.25)})
  writer.close()
  assert len(glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))) == 1
  acc = _load(str(tmp_path))
  assert set(acc.Tags()["scalars"]) == {"train/loss", "train/lr", "eval/ccc_mean"}
  loss = acc.Scalars("train/loss")
  assert [e.step for e in loss] == [1, 5, 10]
  np.testing.assert_allclose([e.value for e in loss], [1.0, 0.2, 0.1], rtol=1e-6)
  np.testing.assert_allclose([e.value for e in acc.Scalars("train/lr")], [1e-3, 5e-3, 1e-2],
                             rtol=1e-6)
  assert [(e.step, e.value) for e in acc.Scalars("eval/ccc_mean")] == [(10, 0.25)]


def test_hparams_and_text(tmp_path):
  config = ml_collections.ConfigDict(dict(
      task="regression", model=dict(hidden_dim=256, dropout=0.1, use_gru=True),
      data=dict(modalities=("video", "image"))))
  with summary.TensorBoardWriter(str(tmp_path)) as writer:
    writer.write_hparams(config)
    writer.write_text(3, "note", "hello **world**")
  acc = _load(str(tmp_path))
  text = {t: acc.Tensors(t) for t in acc.Tags()["tensors"]}
  assert text["note"][0].step == 3
  assert text["note"][0].tensor_proto.string_val == [b"hello **world**"]
  table = text["config"][0].tensor_proto.string_val[0].decode()
  assert "| model.hidden_dim | 256 |" in table
  assert "| data.modalities | ('video', 'image') |" in table
  assert "_hparams_/session_start_info" in text   # HParams dashboard entry


def test_flatten_config():
  config = ml_collections.ConfigDict(dict(a=1, b=dict(c=2, d=dict(e="x"))))
  assert summary.flatten_config(config) == {"a": 1, "b.c": 2, "b.d.e": "x"}


def test_default_writer_just_logging_writes_no_files(tmp_path, caplog):
  writer = summary.create_default_writer(str(tmp_path / "tb"), just_logging=True)
  writer.write_scalars(7, {"loss": 0.5})
  writer.close()
  assert not (tmp_path / "tb").exists()
  writer = summary.create_default_writer(str(tmp_path / "tb"), just_logging=False)
  writer.write_scalars(7, {"loss": 0.5})
  writer.close()
  assert [e.value for e in _load(str(tmp_path / "tb")).Scalars("loss")] == [0.5]


def test_logging_writer_line(caplog):
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO)
  with caplog.at_level("INFO"):
    summary.LoggingWriter().write_scalars(12, {"train/loss": 0.125, "train/acc": 0.5})
  assert "[12] train/loss=0.125, train/acc=0.5" in caplog.text


_NO_TF_SCRIPT = """
import sys, tempfile

attempts = []

class RecordTensorflowImports:
  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
      attempts.append(name)
    return None

sys.meta_path.insert(0, RecordTensorflowImports())
import multimodal_gru.summary as s
w = s.create_default_writer(tempfile.mkdtemp())
w.write_hparams({"a": 1, "b": {"c": (1, 2)}})
w.write_text(0, "t", "x")
w.write_scalars(0, {"x": 1})
w.close()
assert not attempts, f"tried to import {attempts}"
assert "tensorflow" not in sys.modules
"""


def test_import_and_use_do_not_touch_tensorflow():
  # Records even failed attempts, so it also bites where tensorflow is not installed.
  result = subprocess.run([sys.executable, "-c", _NO_TF_SCRIPT], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr
