"""Prints the README's set-up commands, NUL-separated, for .ci/run to run exactly as written.

They are the first two ```bash blocks of README.md's "## Quick start" section: one installs
and trains on the embedded demo, one runs the tests. Exits non-zero if the section changed
shape, so CI and the README cannot drift apart silently.
"""

import re
import sys


def quick_start_commands(readme: str) -> list[str]:
  section = re.search(r"^## Quick start\n(.*?)(?=^## )", readme, re.S | re.M)
  if section is None:
    raise SystemExit("README.md has no '## Quick start' section")
  blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
  if len(blocks) < 2:
    raise SystemExit(f"README.md's Quick start has {len(blocks)} bash blocks, expected 2 "
                     "(install + demo, tests)")
  commands = [b.strip() for b in blocks[:2]]
  for c in commands:
    if "\n" in c:
      raise SystemExit(f"README.md's Quick start commands must be one line each: {c!r}")
  return commands


if __name__ == "__main__":
  with open(sys.argv[1] if len(sys.argv) > 1 else "README.md") as f:
    sys.stdout.write("\0".join(quick_start_commands(f.read())))
