"""The list of videos that failed to extract, and the exit status it implies."""

from __future__ import annotations

import json
import os

EXIT_SOME_FAILED = 3   # the split is written, but without some videos


def write_failures(out_dir: str, split: str, failed: dict[str, str]) -> str | None:
  """Writes {out}/failures_{split}.json ({video id: why}); returns its path.

  With no failures it removes a stale list from an earlier run and returns None.
  """
  path = os.path.join(out_dir, f"failures_{split}.json")
  if not failed:
    if os.path.exists(path):
      os.remove(path)
    return None
  os.makedirs(out_dir, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(dict(sorted(failed.items())), f, indent=1)
    f.write("\n")
  os.replace(path + ".tmp", path)
  return path


def exit_status(num_videos: int, failed: dict[str, str], failures_path: str | None,
                allow_failures: bool) -> tuple[int, str]:
  """(exit status, message for stderr, "" if none) of a run whose split is written."""
  if not failed:
    return 0, ""
  message = f"{len(failed)} of {num_videos} videos failed; the list is in {failures_path}."
  if allow_failures:
    return 0, message + " (--allow_failures: exit status 0)"
  return EXIT_SOME_FAILED, (message + " Fix or remove them and rerun (finished videos are "
                            "cached), or pass --allow_failures to accept the split without them.")
