"""Resolving the paths that command lines take."""

import os


def resolve(path: str) -> str:
  """An absolute local path (`~` expanded); a URL such as gs://b/x is unchanged.

  Entry points resolve their path flags once, so that relative paths mean the
  same thing in every process, thread and library that later sees them.
  """
  if not path or "://" in path:
    return path
  return os.path.abspath(os.path.expanduser(path))
