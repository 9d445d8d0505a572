"""Dataset preparation (DVD, Aff-Wild2): `python -m multimodal_gru.prepare --help`.

Each dataset module (dvd.py, affwild2.py) documents its folder layout and
provides NAME, TASK, INSTRUCTIONS, layout_problem(), find(), extraction_unit(),
to_clips(), frame_labels() and dataset_info(); build.py runs extraction and
labelling for any of them.
"""

from multimodal_gru.prepare import affwild2
from multimodal_gru.prepare import dvd

DATASETS = {"dvd": dvd, "affwild2": affwild2}
