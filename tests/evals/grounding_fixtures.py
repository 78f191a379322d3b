"""The small grounding fixture releases committed under ``tests/evals/data/grounding/``.

Each benchmark's fixture is a handful of synthetic desktop screens
(:func:`jaxlab.grounding.synthetic.generate_screen`, one app per size) whose targets are real
elements of the screen with their generated instructions, in that benchmark's own schema,
written by :func:`jaxlab.evals.grounding_formats.write_fixture`; a few hand-made polygon,
refusal and corner targets are added where a benchmark has them. Sizes: 256x160 and 240x150
are changed by the default resize rule (to 252x168 and 252x140), 336x224 is not.

Regenerate (after changing the writers or the generator) with
``python -m tests.evals.grounding_fixtures``.
"""

import os
import random

import numpy as np
from PIL import Image

from jaxlab.evals import grounding_formats as gf
from jaxlab.grounding import instructions as instr_lib
from jaxlab.grounding import synthetic

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "grounding")
SIZES = ((256, 160), (336, 224), (240, 150))


def screenshot(width: int, height: int, seed: int) -> Image.Image:
  """A synthetic desktop screen (deterministic)."""
  return synthetic.generate_screen(seed, width, height, app=seed % 7)[0]


def _targets(k: int, width: int, height: int, seed: int, rng: random.Random):
  """``k`` (instruction, box) pairs naming distinct elements of the screen of ``seed``."""
  _, elements = synthetic.generate_screen(seed, width, height, app=seed % 7)
  found = instr_lib.instructions_for_screen(elements, width, height,
                                            np.random.default_rng(seed))
  picks = rng.sample(found, k)
  return [(ins.text, gf.box(*elements[ins.element].bbox)) for ins in picks]


def screens(name: str) -> list[gf.Screen]:
  """The fixture items of benchmark ``name`` (two per screenshot size, some extras)."""
  rng = random.Random(sum(map(ord, name)))
  out = []
  for s, (w, h) in enumerate(SIZES):
    seed = 100 * s + sum(map(ord, name))
    im = screenshot(w, h, seed=seed)
    for j, (instruction, region) in enumerate(_targets(2, w, h, seed, rng)):
      k = 2 * s + j
      labels = {
          "screenspot_pro": {"group": ("Dev", "CAD", "Office")[s], "ui_type": ("text", "icon")[j],
                             "application": ("vscode", "freecad", "word")[s],
                             "platform": "linux" if s < 2 else "windows"},
          "screenspot_v2": {"platform": gf.SSV2_PLATFORMS[s], "data_type": ("text", "icon")[j],
                            "data_source": "synthetic"},
          "osworld_g": {"GUI_types": [("Label", "Icon", "Slider")[s], ("Button", "Panel")[j]],
                        "id": f"osw-{k}"},
          "ui_vision": {"setting": gf.UI_VISION_SETTINGS[(s + j) % 3],
                        "platform": ("VSCode", "GIMP", "MyUnknownApp")[s],
                        "element_type": "button"},
          "mmbench_gui": {"platform": ("windows", "android", "web")[s],
                          "grounding_type": ("basic", "advanced")[j],
                          "data_type": ("text", "icon")[(s + j) % 2], "app_name": "app"},
      }[name]
      out.append(gf.Screen(image=im, name=f"shot_{s}.png", instruction=instruction,
                           region=region, labels=labels))
  if name == "osworld_g":
    im = screenshot(*SIZES[0], seed=7)
    out.append(gf.Screen(image=im, name="shot_0.png", instruction="click the triangle",
                         region=gf.polygon([(20, 20), (80, 30), (40, 90)]),
                         labels={"GUI_types": ["Icon"], "id": "osw-poly"}))
    out.append(gf.Screen(image=im, name="shot_0.png", instruction="click the L shape",
                         region=gf.polygon([(100, 10), (190, 10), (190, 30), (130, 30),
                                            (130, 100), (100, 100)]),
                         labels={"GUI_types": ["Toolbar", "Text Field"], "id": "osw-L"}))
    out.append(gf.Screen(image=im, name="shot_0.png", instruction="click the purple unicorn",
                         region=gf.REFUSAL, labels={"GUI_types": ["/"], "id": "osw-refusal"}))
  if name == "mmbench_gui":
    # Targets at the two corners: a point [1, 1] hits the first only (pixels, not fractions).
    w, h = SIZES[1]
    im = screenshot(w, h, seed=11)
    out.append(gf.Screen(image=im, name="corner.png", instruction="click the top-left corner",
                         region=gf.box(0, 0, 14, 14),
                         labels={"platform": "macos", "grounding_type": "basic",
                                 "data_type": "icon"}))
    out.append(gf.Screen(image=im, name="corner.png",
                         instruction="click the bottom-right corner",
                         region=gf.box(w - 14, h - 14, w, h),
                         labels={"platform": "macos", "grounding_type": "advanced",
                                 "data_type": "icon"}))
  return out


def write_all(root: str = ROOT) -> None:
  for name in gf.BENCHMARKS:
    gf.write_fixture(name, screens(name), os.path.join(root, name))


if __name__ == "__main__":
  write_all()
  print(f"wrote {ROOT}")
