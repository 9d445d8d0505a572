"""Online inference: a live video in, per-hop scores out (`python -m multimodal_gru.stream`).

  source.py    decoding in a background thread, pacing, the drop rule, end / stall / error
  features.py  incremental encoders over a ring buffer of segments, image steps and captions
  runner.py    the hop loop: trailing-window scores, JSON records, alerts, timeline plot
  evaluate.py  online accuracy: every eval step scored from its trailing window only
"""
