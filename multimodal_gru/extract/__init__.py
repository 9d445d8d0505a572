"""Feature extraction from raw videos: I3D video, per-frame image and caption text features.

  from multimodal_gru import extract
  extractor = extract.Extractor(extract.get_config())   # or Extractor.from_dataset_info(info)
  clips = extractor.extract_video("clip.mp4")           # list[input_pipeline.record_format.Clip]

Command line: `python -m multimodal_gru.extract --help`. The names below load
on first use, so importing a light submodule (decode, sampling) stays light.
"""

import importlib

_EXPORTS = {
    "get_config": "config", "VideoDecodeError": "decode", "EncoderMismatchError": "pipeline",
    "Extractor": "pipeline", "Window": "pipeline", "WeightsNotFoundError": "weights",
}


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
