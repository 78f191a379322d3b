"""benchmarks/device/pack_site.sh and site.sh: the packages a device call carries.

pack_site.sh needs PyPI, so it is not run here; what can drift is checked instead: every
package it packs that pyproject.toml also names is packed at a version pyproject.toml admits
(a device run must use the code the CPU tests ran), and site.sh without the archive stops with
one line that says what to run, exit status 2.
"""

from __future__ import annotations

import os
import re
import subprocess

from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = os.path.join(ROOT, "benchmarks", "device")


def _norm(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _packed() -> dict[str, str]:
  with open(os.path.join(DEVICE, "pack_site.sh")) as f:
    body = re.search(r"^PACKAGES=\((.*?)^\)", f.read(), re.S | re.M).group(1)
  pins = dict(p.split("==") for p in body.split())
  return {_norm(k): v for k, v in pins.items()}


def _pyproject_requirements() -> dict[str, Requirement]:
  with open(os.path.join(ROOT, "pyproject.toml")) as f:
    text = f.read()
  deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
  reqs = [Requirement(s) for s in re.findall(r'^\s*"([^"]+)"', deps, re.M)]
  return {_norm(r.name): r for r in reqs}


def test_packed_versions_are_the_ones_pyproject_admits():
  packed = _packed()
  reqs = _pyproject_requirements()
  # The simulators and what imports them: the image has none of them.
  for name in ("mujoco", "mujoco-mjx", "playground", "brax", "gymnax", "ml-collections",
               "tensorboardx"):
    assert name in packed, f"pack_site.sh does not pack {name}"
  wrong = {name: (version, str(reqs[name].specifier)) for name, version in packed.items()
           if name in reqs and not reqs[name].specifier.contains(version)}
  assert not wrong, f"pack_site.sh packs versions pyproject.toml does not admit: {wrong}"


def test_site_without_the_archive_says_what_to_run(tmp_path):
  command = f"source {os.path.join(DEVICE, 'site.sh')} && echo after"
  out = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 2 and "after" not in out.stdout
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: .device_site.tar.gz is missing")
  assert "pack_site.sh" in lines[0]
