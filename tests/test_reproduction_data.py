"""The reproduction pages say what their data say.

Every results table of ``docs/reproductions/*.md`` follows a marker
``<!-- data: docs/reproductions/data/<study>/<table>.csv -->`` and must be exactly the table
that ``python -m launch.analyze --data=<that file>`` prints (``stats.seed_table`` of the per-seed
rows; for a benchmark's ``results.json``, ``benchmark.results_table``), so a number on a page
cannot drift from the runs behind it. Every per-seed CSV parses and
is shown by some page. No tracked file names a path of the development machine.
"""

import glob
import json
import os
import re
import shutil
import subprocess

import pytest

from jaxlab.core import stats
from jaxlab.evals import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(glob.glob(os.path.join(REPO, "docs", "reproductions", "*.md")))
DATA = os.path.join(REPO, "docs", "reproductions", "data")
MARKER = re.compile(r"^<!-- data: (\S+\.(?:csv|json)) -->\s*$")
# A table of the paper's own numbers (not ours) says so instead: <!-- not data: why -->.
NOT_DATA = re.compile(r"^<!-- not data: .+ -->\s*$")
# A table whose per-seed values were not kept says so, with what will replace it:
# <!-- data pending: why -->. The page must say the same in its text (tested below), so a
# reader sees which numbers cannot be audited yet.
PENDING = re.compile(r"^<!-- data pending: .+ -->\s*$")
PENDING_NOTE = "Per-seed data pending"


def _markers():
  """``(page, line number, csv path relative to the repo, the table after the marker)``."""
  found = []
  for page in PAGES:
    with open(page, encoding="utf-8") as f:
      lines = f.read().splitlines()
    for i, line in enumerate(lines):
      m = MARKER.match(line.strip())
      if not m:
        continue
      j = i + 1
      while j < len(lines) and not lines[j].strip():
        j += 1
      table = []
      while j < len(lines) and lines[j].lstrip().startswith("|"):
        table.append(lines[j].strip())
        j += 1
      found.append((os.path.relpath(page, REPO), i + 1, m.group(1), "\n".join(table)))
  return found


MARKERS = _markers()


def test_every_table_with_intervals_has_a_data_marker():
  assert MARKERS, "no '<!-- data: FILE -->' marker in docs/reproductions/*.md"
  unmarked = []
  for page in PAGES:
    with open(page, encoding="utf-8") as f:
      lines = f.read().splitlines()
    i = 0
    while i < len(lines):
      if not lines[i].lstrip().startswith("|"):
        i += 1
        continue
      start = i
      while i < len(lines) and lines[i].lstrip().startswith("|"):
        i += 1
      if not any("±" in ln for ln in lines[start:i]):
        continue
      before = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
      if not (MARKER.match(before) or NOT_DATA.match(before) or PENDING.match(before)):
        unmarked.append(f"{os.path.relpath(page, REPO)}:{start + 1}")
  assert not unmarked, ("tables with intervals but no '<!-- data: FILE -->' marker (or "
                        "'<!-- not data: why -->' for a table of paper numbers, or "
                        "'<!-- data pending: why -->'): " + ", ".join(unmarked))


def test_pages_with_pending_tables_say_so():
  """A page with a table whose per-seed data is pending says it in prose, not only in a
  comment that a rendered page hides."""
  silent = []
  for page in PAGES:
    with open(page, encoding="utf-8") as f:
      text = f.read()
    pending = sum(bool(PENDING.match(ln.strip())) for ln in text.splitlines())
    if pending and PENDING_NOTE not in text:
      silent.append(os.path.relpath(page, REPO))
  assert not silent, f"pages with pending tables but no '{PENDING_NOTE}' sentence: {silent}"


@pytest.mark.parametrize("page,line,path,table", MARKERS,
                         ids=[f"{os.path.basename(p)}:{n}" for p, n, _, _ in MARKERS])
def test_table_equals_its_data(page, line, path, table):
  full = os.path.join(REPO, path)
  assert os.path.isfile(full), f"{page}:{line}: {path} does not exist"
  assert table, f"{page}:{line}: no markdown table follows the marker for {path}"
  if full.endswith(".json"):
    with open(full) as f:
      expected = benchmark.results_table(json.load(f)).strip()
  else:
    columns, rows = stats.read_seed_rows(full)
    expected = stats.seed_table(rows, columns).strip()
  assert table.strip() == expected, (
      f"{page}:{line}: the table differs from `python -m launch.analyze --data={path}`:\n"
      f"{expected}")


def test_every_csv_parses_and_is_shown_by_a_page():
  files = sorted(glob.glob(os.path.join(DATA, "**", "*.csv"), recursive=True))
  assert files, f"no per-seed CSV under {os.path.relpath(DATA, REPO)}"
  shown = {os.path.normpath(p) for _, _, p, _ in MARKERS}
  for f in files:
    columns, rows = stats.read_seed_rows(f)  # raises, naming the file and line, if malformed
    rel = os.path.relpath(f, REPO)
    assert columns and rows, f"{rel}: no metric columns or no rows"
    assert rel in shown, f"{rel} is not shown by any page of docs/reproductions/"


# Paths of the development machine; spelt with a class so that this file does not match itself.
_MACHINE_PATHS = r"/wor[k]/|/roo[t]/|/tm[p]/[A-Za-z]"


def test_no_tracked_file_names_a_machine_path():
  if shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")):
    pytest.skip("not a git checkout")
  out = subprocess.run(["git", "grep", "-nE", _MACHINE_PATHS, "--", ":!*.jsonl"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode in (0, 1), out.stderr
  hits = []
  for hit in out.stdout.splitlines():
    path, _, text = hit.partition(":")
    # Tests may build temporary paths (tmp_path, tempfile); those are not the machine's.
    if path.startswith("tests/") and re.search(r"tmp_path|tempfile|gettempdir", text):
      continue
    hits.append(hit)
  assert not hits, "tracked files name paths of the development machine:\n" + "\n".join(hits)
