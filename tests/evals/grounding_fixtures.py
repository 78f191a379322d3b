"""The small grounding fixture releases committed under ``tests/evals/data/grounding/``.

Each benchmark's fixture is a handful of PIL-drawn screenshots (random coloured rectangles on a
grey canvas) with targets in that benchmark's own schema, written by
:func:`jaxlab.evals.grounding_formats.write_fixture`. Sizes: 200x120 and 150x90 are changed by
the default resize rule (to 196x112 and 140x84), 168x112 is not.

Regenerate (after changing the writers) with ``python -m tests.evals.grounding_fixtures``.
"""

import os
import random

from PIL import Image, ImageDraw

from jaxlab.evals import grounding_formats as gf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "grounding")
SIZES = ((200, 120), (168, 112), (150, 90))


def screenshot(width: int, height: int, seed: int) -> Image.Image:
  """A grey canvas with a few random filled rectangles (deterministic)."""
  rng = random.Random(seed)
  im = Image.new("RGB", (width, height), (200, 200, 200))
  draw = ImageDraw.Draw(im)
  for _ in range(6):
    x1, y1 = rng.randrange(0, width - 10), rng.randrange(0, height - 10)
    x2, y2 = min(width - 1, x1 + rng.randrange(8, 40)), min(height - 1, y1 + rng.randrange(6, 24))
    draw.rectangle((x1, y1, x2, y2), fill=tuple(rng.randrange(0, 256) for _ in range(3)))
  return im


def _boxes(k: int, w: int, h: int, rng: random.Random):
  out = []
  for _ in range(k):
    bw, bh = rng.randrange(6, w // 3), rng.randrange(5, h // 3)
    x1, y1 = rng.randrange(0, w - bw), rng.randrange(0, h - bh)
    out.append(gf.box(x1, y1, x1 + bw, y1 + bh))
  return out


def screens(name: str) -> list[gf.Screen]:
  """The fixture items of benchmark ``name`` (two per screenshot size, some extras)."""
  rng = random.Random(sum(map(ord, name)))
  out = []
  for s, (w, h) in enumerate(SIZES):
    im = screenshot(w, h, seed=100 * s + sum(map(ord, name)))
    for j, region in enumerate(_boxes(2, w, h, rng)):
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
      out.append(gf.Screen(image=im, name=f"shot_{s}.png", instruction=f"click item {k}",
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
