"""The list of tests that README's "before four papers" suite time is measured on
(tests/suite_before_four_papers.txt) names tests that still exist, so its command keeps
working after a rename (pytest stops with "not found" on a stale id)."""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def test_every_listed_test_is_defined_in_its_file():
  with open(os.path.join(HERE, "suite_before_four_papers.txt")) as f:
    ids = [line.strip() for line in f if line.strip() and not line.startswith("#")]
  assert len(ids) > 300
  stale = []
  for node in ids:
    path, *names = node.split("::")
    try:
      with open(os.path.join(ROOT, path)) as f:
        source = f.read()
    except OSError:
      stale.append(node)
      continue
    indent = "  " if len(names) == 2 else ""
    if not re.search(rf"^{indent}def {re.escape(names[-1])}\(", source, re.M) or (
        len(names) == 2 and not re.search(rf"^class {re.escape(names[0])}\b", source, re.M)):
      stale.append(node)
  assert not stale, f"tests/suite_before_four_papers.txt names missing tests: {stale}"
