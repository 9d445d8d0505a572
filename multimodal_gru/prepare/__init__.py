"""Dataset preparation (DVD, Aff-Wild2): `python -m multimodal_gru.prepare --help`."""
