"""The five GUI-grounding benchmarks' own release layouts: readers and fixture writers.

Each benchmark ships its annotations in its own folder layout and record schema (spec
``looped_grounding_kaleidoscope.md`` §2.4). :func:`read` checks a release folder against the
layout of the benchmark it is named as, checks every record, and returns
:class:`GroundingItem` s whose target region is already converted into the RESIZED frame of
its screenshot (:func:`jaxlab.grounding.frames.frame_for` with the model directory's image
processor config), the frame in which a model answers. :func:`write_fixture` writes the same
layouts from :class:`Screen` s (a screenshot and a target in original pixels), so that small
releases can be generated from synthetic screens and read back through the real readers.

=================  ==========================================  ==============================
benchmark          layout under ``--data``                     target in the record
=================  ==========================================  ==============================
``screenspot_pro`` ``annotations/*.json`` (one list per app),  ``bbox`` [x1, y1, x2, y2] px
                   ``images/`` (``img_filename`` below it)
``screenspot_v2``  ``screenspot_{mobile,desktop,web}_v2.json``, ``bbox`` [x, y, w, h] px
                   ``screenspotv2_image/``
``osworld_g``      ``OSWorld-G_refined.json`` (else              ``box_type`` bbox: [x, y, w, h];
                   ``OSWorld-G.json``), ``images/``, optional    polygon: flat [x1, y1, ...];
                   ``buckets.json``                              refusal: none
``ui_vision``      ``annotations/element_grounding/``            ``bbox`` [x1, y1, x2, y2] px
                   ``element_grounding_{basic,functional,
                   spatial}.json``, ``images/``
``mmbench_gui``    ``L2_annotations.json``,                      ``bbox`` [x1, y1, x2, y2] in
                   ``offline_images/<platform>/``                [0, 1] image fractions
=================  ==========================================  ==============================

Groups (the breakdowns each benchmark reports; every value is a tuple of labels, so that an
item can sit in several groups of one breakdown, as OSWorld-G's buckets do):

  * ScreenSpot-Pro: ``group`` (Dev, Creative, CAD, Scientific, Office, OS), ``ui_type`` (text
    / icon), ``group/ui_type``, ``application``.
  * ScreenSpot-v2: ``platform`` (from the file name), ``data_type``, ``platform/data_type``.
  * OSWorld-G: ``bucket`` (text_matching, element_recognition, layout_understanding,
    fine_grained_manipulation, refusal) and ``box_type``. An item is in every bucket that
    lists one of its ``GUI_types`` in ``buckets.json`` (``{bucket: [GUI type, ...]}``), and
    in ``refusal`` when its ``box_type`` is refusal or its GUI types hold ``"/"``. Without a
    ``buckets.json`` the other items are ``unclassified``.
  * UI-Vision: ``setting`` (basic / functional / spatial, from the file name), ``category``
    (the app's category: the release's ``mapdict_cat2platform.json`` when present in
    ``--data``, else :data:`UI_VISION_CATEGORIES`; "Other" for an unknown app) and
    ``setting/category``.
  * MMBench-GUI L2: ``grounding_type`` (basic / advanced), ``platform``,
    ``grounding_type/platform`` and ``data_type``.

Checks, each failure one :class:`DataError` line naming the file, the row (0-based, the
record's position in its JSON list) and the field:

  * a missing annotation file or image folder (the layout), a file that is not a JSON list of
    objects, a missing or mistyped field;
  * a missing or unreadable screenshot;
  * a record's own image size (``img_size`` / ``image_size``) that differs from its
    screenshot's;
  * a target outside its image by more than :data:`EDGE_TOLERANCE_PX` pixels (normalised
    boxes: more than :data:`EDGE_TOLERANCE_NORM`). MMBench-GUI writes ``-1`` for "at the
    edge"; like its own scorer we read a ``-1`` there as 0.

Item keys are ``<file relative to --data>#<row>``: stable as long as the release is.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Iterable, Mapping, Sequence

from jaxlab.core import files
from jaxlab.core.errors import ConfigError, DataError
from jaxlab.grounding import frames, geometry

BENCHMARKS = ("screenspot_pro", "screenspot_v2", "osworld_g", "ui_vision", "mmbench_gui")

# A box may overhang its image by this much (annotation tools round outwards) before a record
# is refused as lying outside its image.
EDGE_TOLERANCE_PX = 2.0
EDGE_TOLERANCE_NORM = 1e-3

SSV2_PLATFORMS = ("mobile", "desktop", "web")
UI_VISION_SETTINGS = ("basic", "functional", "spatial")
OSWORLD_BUCKETS = ("text_matching", "element_recognition", "layout_understanding",
                   "fine_grained_manipulation", "refusal")
OSWORLD_FILES = ("OSWorld-G_refined.json", "OSWorld-G.json")
OSWORLD_BUCKETS_FILE = "buckets.json"
UI_VISION_MAP_FILE = "mapdict_cat2platform.json"
MMBENCH_FILE = "L2_annotations.json"

# UI-Vision's six app categories and their apps (the benchmark's published grouping).
UI_VISION_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Education": ("Anki", "Zotero", "GrassGIS", "Calibre", "Audacity", "QGIS", "OpenBoard",
                  "Mendeley"),
    "Browsers": ("Brave", "Chromium", "Mozilla Firefox", "DuckDuckGo"),
    "Development": ("VSCode", "Atom", "FreeCAD", "Eclipse", "NetBeans", "PyCharm",
                    "IntelliJ IDEA", "Brackets", "Geany", "Bluefish", "KDevelop", "Komodo Edit",
                    "Code::Blocks", "Qt Creator", "Arduino IDE", "Spyder", "Ubuntu Terminal",
                    "Conky", "Bash", "gedit"),
    "Productivity": ("LibreOffice Calc", "LibreOffice Draw", "LibreOffice Impress",
                     "LibreOffice Writer", "draw.io", "Joplin", "OpenProject", "Affine", "Zulip",
                     "PDFedit", "OnlyOffice Calendar", "OnlyOffice Document Editor",
                     "OnlyOffice Forms", "OnlyOffice PDF Forms", "OnlyOffice Presentation",
                     "OnlyOffice Spreadsheet", "Nextcloud", "Gnumeric", "Simplenote",
                     "Cryptomator", "WeKan", "7-Zip", "GnuCash", "Bitwarden", "Metabase",
                     "Jitsi", "Flameshot", "Nemo"),
    "Creativity": ("Blender", "GIMP", "Inkscape", "Krita", "darktable", "FontForge",
                   "MuseScore", "Scribus", "OpenShot", "OBS Studio", "Lightworks", "Shotcut",
                   "Natron", "OpenToonz", "WordPress"),
    "Entertainment": ("VLC Media Player", "Kodi", "Element", "Signal", "Mastodon", "Lemmy",
                      "Matrix", "Emby"),
}

# A bucket map for fixtures only (our own small choice of GUI type names); a real OSWorld-G
# release brings its own buckets.json.
FIXTURE_BUCKETS: dict[str, tuple[str, ...]] = {
    "text_matching": ("Label", "Text"),
    "element_recognition": ("Icon", "Button"),
    "layout_understanding": ("Panel", "Toolbar", "Menu"),
    "fine_grained_manipulation": ("Slider", "Text Field"),
}


@dataclasses.dataclass(frozen=True)
class Region:
  """A target region. ``kind``: ``"box"`` (``box`` = ordered [x1, y1, x2, y2], closed),
  ``"polygon"`` (``polygon`` = vertices), ``"refusal"`` (the element is absent: the answer
  must be a point with both coordinates negative) or ``"empty"`` (no target: the answer must
  hold no point)."""
  kind: str
  box: tuple[float, float, float, float] | None = None
  polygon: tuple[tuple[float, float], ...] | None = None

  def __post_init__(self):
    if self.kind not in ("box", "polygon", "refusal", "empty"):
      raise ValueError(f"Region kind {self.kind!r}: expected box, polygon, refusal or empty")
    if (self.kind == "box") != (self.box is not None):
      raise ValueError("a box region needs `box` (and only a box region has one)")
    if (self.kind == "polygon") != (self.polygon is not None):
      raise ValueError("a polygon region needs `polygon` (and only a polygon region has one)")

  def contains(self, point: Sequence[float] | None) -> bool:
    """Whether ``point`` (None: no point) answers this region correctly (spec §2.4)."""
    if self.kind == "empty":
      return point is None
    if self.kind == "refusal":
      return geometry.is_refusal(point)
    if self.kind == "box":
      return geometry.in_box(point, self.box)
    return geometry.in_polygon(point, self.polygon)

  def bounds(self) -> tuple[float, float, float, float] | None:
    """The [x1, y1, x2, y2] hull of a box or polygon (None for refusal / empty)."""
    if self.kind == "box":
      return self.box
    if self.kind == "polygon":
      xs, ys = [p[0] for p in self.polygon], [p[1] for p in self.polygon]
      return min(xs), min(ys), max(xs), max(ys)
    return None

  def map(self, fn) -> "Region":
    """This region with every vertex passed through ``fn((x, y)) -> (x, y)``."""
    if self.kind == "box":
      (x1, y1), (x2, y2) = fn(self.box[:2]), fn(self.box[2:])
      return Region("box", box=frames.ordered_box((x1, y1, x2, y2)))
    if self.kind == "polygon":
      return Region("polygon", polygon=tuple(tuple(fn(p)) for p in self.polygon))
    return self


def box(x1: float, y1: float, x2: float, y2: float) -> Region:
  return Region("box", box=frames.ordered_box((x1, y1, x2, y2)))


def polygon(points: Iterable[Sequence[float]]) -> Region:
  return Region("polygon", polygon=tuple((float(x), float(y)) for x, y in points))


REFUSAL = Region("refusal")
EMPTY = Region("empty")


@dataclasses.dataclass(frozen=True)
class GroundingItem:
  """One benchmark item, ready for a model.

  Attributes:
    key: ``<annotation file relative to the release>#<row>``, the resume key.
    image: path of the screenshot.
    instruction: what to click.
    frame: the screenshot's original and resized sizes.
    region: the target in the RESIZED frame (what the model's point is compared with).
    original: the same target in original pixels (for overlays).
    groups: breakdown name -> this item's labels in it (usually one).
    record: fields copied into the item's line of ``samples.jsonl``.
  """
  key: str
  image: str
  instruction: str
  frame: frames.Frame
  region: Region
  original: Region
  groups: Mapping[str, tuple[str, ...]]
  record: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Screen:
  """One item to write into a fixture release.

  Attributes:
    image: the screenshot (a ``PIL.Image``).
    name: its file name (items of one screenshot share it; written once).
    instruction: what to click.
    region: the target in the screenshot's ORIGINAL pixels (a polygon or a refusal only for
      OSWorld-G).
    labels: the benchmark's own group fields; see :func:`write_fixture`.
  """
  image: Any
  name: str
  instruction: str
  region: Region
  labels: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# -- reading -------------------------------------------------------------------------------------


def _load_list(path: str) -> list[dict[str, Any]]:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except OSError as e:
    raise DataError(f"{path}: cannot read the annotation file ({e.strerror})") from None
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
  if not isinstance(data, list):
    raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
  for i, rec in enumerate(data):
    if not isinstance(rec, dict):
      raise DataError(f"{path} row {i}: expected a JSON object, got {type(rec).__name__}")
  return data


class _Row:
  """Typed field access to one record, each failure naming the file, row and field."""

  def __init__(self, path: str, index: int, rec: Mapping[str, Any]):
    self.path, self.index, self.rec = path, index, rec

  def error(self, field: str, message: str) -> DataError:
    return DataError(f"{self.path} row {self.index}: field '{field}': {message}")

  def has(self, field: str) -> bool:
    return field in self.rec and self.rec[field] is not None

  def text(self, field: str) -> str:
    if field not in self.rec:
      raise self.error(field, "expected a string, got no such field")
    v = self.rec[field]
    if not isinstance(v, str) or not v.strip():
      raise self.error(field, f"expected a non-empty string, got {v!r}"[:160])
    return v

  def numbers(self, field: str, count: int | None = None, *, even: bool = False) -> list[float]:
    if field not in self.rec:
      raise self.error(field, "expected a list of numbers, got no such field")
    v = self.rec[field]
    ok = (isinstance(v, (list, tuple))
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))
    if ok and count is not None:
      ok = len(v) == count
    if ok and even:
      ok = len(v) >= 6 and len(v) % 2 == 0
    if not ok:
      want = (f"a list of {count} numbers" if count is not None
              else "an even number (>= 6) of numbers" if even else "a list of numbers")
      raise self.error(field, f"expected {want}, got {v!r}"[:160])
    return [float(x) for x in v]

  def strings(self, field: str) -> list[str]:
    if field not in self.rec:
      raise self.error(field, "expected a list of strings, got no such field")
    v = self.rec[field]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
      raise self.error(field, f"expected a list of strings, got {v!r}"[:160])
    return list(v)


def _xywh(row: _Row, field: str) -> tuple[float, float, float, float]:
  x, y, w, h = row.numbers(field, 4)
  if w < 0 or h < 0:
    raise row.error(field, f"expected [x, y, w, h] with w, h >= 0, got {row.rec[field]!r}")
  return frames.xywh_to_xyxy((x, y, w, h))


def _image_size(row: _Row, field: str, path: str) -> tuple[int, int]:
  """The (width, height) of the screenshot at ``path`` (header only)."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise row.error(field, f"screenshot {path} not found")
  try:
    with Image.open(path) as im:
      return im.size
  except (OSError, UnidentifiedImageError) as e:
    raise row.error(field, f"screenshot {path} is not a readable image ({e})") from None


def _check_size(row: _Row, field: str, size: tuple[int, int]) -> None:
  """A record's own image size must match its screenshot."""
  if row.has(field):
    w, h = row.numbers(field, 2)
    if (int(round(w)), int(round(h))) != tuple(size):
      raise row.error(field, f"expected the screenshot's size [{size[0]}, {size[1]}], got "
                             f"[{w:g}, {h:g}]")


def _check_inside(row: _Row, field: str, bounds: Sequence[float], size: tuple[int, int],
                  tol: float = EDGE_TOLERANCE_PX) -> None:
  x1, y1, x2, y2 = bounds
  w, h = size
  if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
    raise row.error(field, f"the target [{x1:g}, {y1:g}, {x2:g}, {y2:g}] (x1, y1, x2, y2 in "
                           f"pixels) lies outside its {w}x{h} image")


def _item(row: _Row, rel: str, image: str, instruction: str, original: Region,
          size: tuple[int, int], groups: Mapping[str, Sequence[str]], image_config: Any,
          record: Mapping[str, Any], check_inside: bool = True,
          target_field: str = "bbox") -> GroundingItem:
  bounds = original.bounds()
  if bounds is not None and check_inside:
    _check_inside(row, target_field, bounds, size)
  frame = frames.frame_for(size[0], size[1], image_config)
  sx, sy = frame.scale
  region = original.map(lambda p: (float(p[0]) * sx, float(p[1]) * sy))
  return GroundingItem(key=f"{rel}#{row.index}", image=image, instruction=instruction,
                       frame=frame, region=region, original=original,
                       groups={k: tuple(str(x) for x in v) for k, v in groups.items()},
                       record=dict(record))


def _require_dir(path: str, what: str, layout: str) -> str:
  if not os.path.isdir(path):
    raise DataError(f"{path}: no such folder; expected {what} ({layout})")
  return path


def _release(data: str, name: str) -> str:
  if not os.path.isdir(data):
    raise DataError(f"{data}: no such folder; expected a {TITLES[name]} release folder "
                    f"({LAYOUTS[name]})")
  return data


def _screenspot_pro(data, images, image_config):
  files_ = sorted(glob.glob(os.path.join(data, "annotations", "*.json")))
  if not files_:
    raise DataError(f"{data}: not a ScreenSpot-Pro release: no annotations/*.json "
                    f"(expected {LAYOUTS['screenspot_pro']})")
  images = _require_dir(images or os.path.join(data, "images"), "the screenshots folder",
                        LAYOUTS["screenspot_pro"])
  out = []
  for path in files_:
    rel = os.path.relpath(path, data)
    for i, rec in enumerate(_load_list(path)):
      row = _Row(path, i, rec)
      name = row.text("img_filename")
      image = os.path.join(images, name)
      size = _image_size(row, "img_filename", image)
      _check_size(row, "img_size", size)
      x1, y1, x2, y2 = row.numbers("bbox", 4)
      group, ui_type = row.text("group"), row.text("ui_type")
      app = rec.get("application") if isinstance(rec.get("application"), str) else (
          os.path.splitext(os.path.basename(path))[0])
      groups = {"group": [group], "ui_type": [ui_type], "group/ui_type": [f"{group}/{ui_type}"],
                "application": [app]}
      out.append(_item(row, rel, image, row.text("instruction"),
                       box(x1, y1, x2, y2), size, groups, image_config,
                       {"img_filename": name, "id": rec.get("id")}))
  return out


def _screenspot_v2(data, images, image_config):
  found = [(p, os.path.join(data, f"screenspot_{p}_v2.json")) for p in SSV2_PLATFORMS]
  found = [(p, f) for p, f in found if os.path.isfile(f)]
  if not found:
    raise DataError(f"{data}: not a ScreenSpot-v2 release: none of "
                    f"{', '.join(f'screenspot_{p}_v2.json' for p in SSV2_PLATFORMS)} "
                    f"(expected {LAYOUTS['screenspot_v2']})")
  images = _require_dir(images or os.path.join(data, "screenspotv2_image"),
                        "the screenshots folder", LAYOUTS["screenspot_v2"])
  out = []
  for platform, path in found:
    rel = os.path.relpath(path, data)
    for i, rec in enumerate(_load_list(path)):
      row = _Row(path, i, rec)
      name = row.text("img_filename")
      image = os.path.join(images, name)
      size = _image_size(row, "img_filename", image)
      x1, y1, x2, y2 = _xywh(row, "bbox")
      dtype = row.text("data_type")
      groups = {"platform": [platform], "data_type": [dtype],
                "platform/data_type": [f"{platform}/{dtype}"]}
      out.append(_item(row, rel, image, row.text("instruction"),
                       box(x1, y1, x2, y2), size, groups, image_config,
                       {"img_filename": name, "data_source": rec.get("data_source")}))
  return out


def _osworld_buckets(data: str) -> tuple[dict[str, set[str]] | None, str | None]:
  path = os.path.join(data, OSWORLD_BUCKETS_FILE)
  if not os.path.isfile(path):
    return None, None
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: cannot read the bucket map ({e})") from None
  if not isinstance(raw, dict) or not all(
      isinstance(v, list) and all(isinstance(t, str) for t in v) for v in raw.values()):
    raise DataError(f"{path}: expected a JSON object bucket -> list of GUI type names")
  return {k: set(v) for k, v in raw.items()}, path


def _osworld_g(data, images, image_config):
  path = next((os.path.join(data, f) for f in OSWORLD_FILES
               if os.path.isfile(os.path.join(data, f))), None)
  if path is None:
    raise DataError(f"{data}: not an OSWorld-G release: neither {' nor '.join(OSWORLD_FILES)} "
                    f"(expected {LAYOUTS['osworld_g']})")
  images = _require_dir(images or os.path.join(data, "images"), "the screenshots folder",
                        LAYOUTS["osworld_g"])
  buckets, _ = _osworld_buckets(data)
  rel = os.path.relpath(path, data)
  out = []
  for i, rec in enumerate(_load_list(path)):
    row = _Row(path, i, rec)
    name = row.text("image_path")
    image = os.path.join(images, name)
    size = _image_size(row, "image_path", image)
    _check_size(row, "image_size", size)
    kind = row.text("box_type")
    if kind == "bbox":
      region = box(*_xywh(row, "box_coordinates"))
    elif kind == "polygon":
      region = polygon(geometry.polygon_from_flat(row.numbers("box_coordinates", even=True)))
    elif kind == "refusal":
      region = REFUSAL
    else:
      raise row.error("box_type", f"expected one of bbox, polygon, refusal, got {kind!r}")
    types = row.strings("GUI_types")
    names = []
    if buckets is not None:
      names = [b for b in buckets if b != "refusal" and any(t in buckets[b] for t in types)]
    if kind == "refusal" or "/" in types:
      names.append("refusal")
    if not names:
      names = ["unclassified"]
    groups = {"bucket": names, "box_type": [kind]}
    out.append(_item(row, rel, image, row.text("instruction"), region, size,
                     groups, image_config,
                     {"id": rec.get("id"), "image_path": name, "GUI_types": types},
                     target_field="box_coordinates"))
  return out


def _ui_vision_categories(data: str) -> dict[str, str]:
  path = os.path.join(data, UI_VISION_MAP_FILE)
  table: Mapping[str, Sequence[str]] = UI_VISION_CATEGORIES
  if os.path.isfile(path):
    try:
      with open(path, encoding="utf-8") as f:
        table = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise DataError(f"{path}: cannot read the category map ({e})") from None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
      raise DataError(f"{path}: expected a JSON object category -> list of app names")
  return {app.lower(): cat for cat, apps in table.items() for app in apps}


def _ui_vision(data, images, image_config):
  folder = os.path.join(data, "annotations", "element_grounding")
  found = [(s, os.path.join(folder, f"element_grounding_{s}.json")) for s in UI_VISION_SETTINGS]
  found = [(s, f) for s, f in found if os.path.isfile(f)]
  if not found:
    raise DataError(f"{data}: not a UI-Vision release: none of "
                    f"annotations/element_grounding/element_grounding_"
                    f"{{{','.join(UI_VISION_SETTINGS)}}}.json "
                    f"(expected {LAYOUTS['ui_vision']})")
  images = _require_dir(images or os.path.join(data, "images"), "the screenshots folder",
                        LAYOUTS["ui_vision"])
  categories = _ui_vision_categories(data)
  out = []
  for setting, path in found:
    rel = os.path.relpath(path, data)
    for i, rec in enumerate(_load_list(path)):
      row = _Row(path, i, rec)
      name = row.text("image_path")
      image = os.path.join(images, name)
      size = _image_size(row, "image_path", image)
      _check_size(row, "image_size", size)
      x1, y1, x2, y2 = row.numbers("bbox", 4)
      platform = row.text("platform")
      category = categories.get(platform.lower(), "Other")
      groups = {"setting": [setting], "category": [category],
                "setting/category": [f"{setting}/{category}"]}
      out.append(_item(row, rel, image, row.text("prompt_to_evaluate"),
                       box(x1, y1, x2, y2), size, groups, image_config,
                       {"image_path": name, "platform": platform,
                        "element_type": rec.get("element_type")}))
  return out


def _edge(v: float) -> float:
  """MMBench-GUI writes -1 for a coordinate at the image edge; its scorer reads it as 0."""
  return 0.0 if v == -1 else v


def _mmbench_gui(data, images, image_config):
  path = os.path.join(data, MMBENCH_FILE)
  if not os.path.isfile(path):
    raise DataError(f"{data}: not an MMBench-GUI release: no {MMBENCH_FILE} "
                    f"(expected {LAYOUTS['mmbench_gui']})")
  images = _require_dir(images or os.path.join(data, "offline_images"),
                        "the screenshots folder", LAYOUTS["mmbench_gui"])
  rel = os.path.relpath(path, data)
  out = []
  for i, rec in enumerate(_load_list(path)):
    row = _Row(path, i, rec)
    platform = row.text("platform")
    name = row.text("image_path")
    image = os.path.join(images, platform, name)
    size = _image_size(row, "image_path", image)
    _check_size(row, "image_size", size)
    nb = [_edge(v) for v in row.numbers("bbox", 4)]
    t = EDGE_TOLERANCE_NORM
    if any(v < -t or v > 1 + t for v in nb):
      raise row.error("bbox", f"expected [x1, y1, x2, y2] as fractions of the image in [0, 1], "
                              f"got {row.rec['bbox']!r}")
    w, h = size
    original = box(nb[0] * w, nb[1] * h, nb[2] * w, nb[3] * h)
    gtype, dtype = row.text("grounding_type"), row.text("data_type")
    groups = {"grounding_type": [gtype], "platform": [platform],
              "grounding_type/platform": [f"{gtype}/{platform}"], "data_type": [dtype]}
    item = _item(row, rel, image, row.text("instruction"), original, size, groups,
                 image_config, {"image_path": name, "app_name": rec.get("app_name"),
                                "index": rec.get("index")}, check_inside=False)
    # The normalised box straight into the resized frame (no trip through original pixels).
    item = dataclasses.replace(item, region=box(*frames.normalized_box_to_frame(nb, item.frame)))
    out.append(item)
  return out


TITLES = {"screenspot_pro": "ScreenSpot-Pro", "screenspot_v2": "ScreenSpot-v2",
          "osworld_g": "OSWorld-G", "ui_vision": "UI-Vision", "mmbench_gui": "MMBench-GUI L2"}
LAYOUTS = {
    "screenspot_pro": "annotations/*.json and images/",
    "screenspot_v2": "screenspot_{mobile,desktop,web}_v2.json and screenspotv2_image/",
    "osworld_g": "OSWorld-G_refined.json or OSWorld-G.json, images/ and optionally "
                 "buckets.json",
    "ui_vision": "annotations/element_grounding/element_grounding_"
                 "{basic,functional,spatial}.json and images/",
    "mmbench_gui": "L2_annotations.json and offline_images/<platform>/",
}
_READERS = {"screenspot_pro": _screenspot_pro, "screenspot_v2": _screenspot_v2,
            "osworld_g": _osworld_g, "ui_vision": _ui_vision, "mmbench_gui": _mmbench_gui}


def check_name(name: str) -> str:
  if name not in _READERS:
    raise ConfigError(f"unknown grounding benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
  return name


def read(name: str, data: str, *, images: str | None = None, image_config: Any = None,
         limit: int = 0) -> list[GroundingItem]:
  """Reads and checks the release of benchmark ``name`` at ``data``.

  Args:
    name: one of :data:`BENCHMARKS`.
    data: the release folder (layouts in the module docstring).
    images: the screenshots folder, when not the release's own subfolder.
    image_config: the model directory's ``ImageProcessorConfig`` (None: the default one);
      decides the resized frame of every item.
    limit: keep the first ``limit`` items (0: all). Every record is still checked.

  Raises:
    DataError: a wrong layout or a bad record (file, row and field named).
    ConfigError: an unknown benchmark name or a negative limit.
  """
  check_name(name)
  if limit < 0:
    raise ConfigError(f"limit: expected >= 0, got {limit}")
  items = _READERS[name](_release(data, name), images, image_config)
  if not items:
    raise DataError(f"{data}: the {TITLES[name]} release has no records")
  return items[:limit] if limit else items


# -- writing -------------------------------------------------------------------------------------


def _label(screen: Screen, key: str, default: Any) -> Any:
  return screen.labels.get(key, default)


def _num(v: float) -> float | int:
  v = round(float(v), 2)
  return int(v) if v == int(v) else v


def _box_of(screen: Screen, name: str) -> tuple[float, float, float, float]:
  if screen.region.kind != "box":
    raise ValueError(f"{name}: item {screen.instruction!r} has a {screen.region.kind} target; "
                     f"{TITLES[name]} holds boxes only")
  return screen.region.box


def write_fixture(name: str, screens: Sequence[Screen], out_dir: str, *,
                  buckets: Mapping[str, Sequence[str]] | None = None) -> str:
  """Writes ``screens`` as a release of benchmark ``name`` under ``out_dir``; returns it.

  Screenshots are written once per :attr:`Screen.name` (as PNG). Group fields are taken from
  :attr:`Screen.labels`, with defaults:

    * screenspot_pro: ``group`` ("Dev"), ``ui_type`` ("text"), ``application`` ("app"),
      ``platform`` ("linux"); one annotation file per (application, platform);
    * screenspot_v2: ``platform`` ("desktop": which of the three files), ``data_type``
      ("text"), ``data_source`` ("synthetic");
    * osworld_g: ``GUI_types`` (["Button"]), ``id``; ``buckets`` (default
      :data:`FIXTURE_BUCKETS`) goes to ``buckets.json``; refusal and polygon targets allowed;
    * ui_vision: ``setting`` ("basic": which of the three files), ``platform`` (an app name,
      "VSCode"), ``element_type`` ("button");
    * mmbench_gui: ``platform`` ("windows"), ``grounding_type`` ("basic"), ``data_type``
      ("text"), ``app_name`` ("app"); the box is written as image fractions.
  """
  check_name(name)
  os.makedirs(out_dir, exist_ok=True)
  saved: dict[str, tuple[int, int]] = {}

  def save(folder: str, screen: Screen) -> tuple[int, int]:
    path = os.path.join(out_dir, folder, screen.name)
    if path not in saved:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      screen.image.save(path, format="PNG", optimize=True)
      saved[path] = screen.image.size
    return saved[path]

  groups: dict[str, list[dict[str, Any]]] = {}
  for k, s in enumerate(screens):
    if name == "screenspot_pro":
      app, plat = _label(s, "application", "app"), _label(s, "platform", "linux")
      folder = f"{app}_{plat}"
      size = save(os.path.join("images", folder), s)
      groups.setdefault(os.path.join("annotations", f"{folder}.json"), []).append({
          "img_filename": f"{folder}/{s.name}", "bbox": [_num(v) for v in _box_of(s, name)],
          "instruction": s.instruction, "img_size": list(size), "id": f"{folder}_{k}",
          "application": app, "platform": plat, "group": _label(s, "group", "Dev"),
          "ui_type": _label(s, "ui_type", "text")})
    elif name == "screenspot_v2":
      x1, y1, x2, y2 = _box_of(s, name)
      save("screenspotv2_image", s)
      plat = _label(s, "platform", "desktop")
      if plat not in SSV2_PLATFORMS:
        raise ValueError(f"screenspot_v2 platform {plat!r}: expected one of {SSV2_PLATFORMS}")
      groups.setdefault(f"screenspot_{plat}_v2.json", []).append({
          "img_filename": s.name, "bbox": [_num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)],
          "instruction": s.instruction, "data_type": _label(s, "data_type", "text"),
          "data_source": _label(s, "data_source", "synthetic")})
    elif name == "osworld_g":
      size = save("images", s)
      r = s.region
      if r.kind == "box":
        x1, y1, x2, y2 = r.box
        kind, coords = "bbox", [_num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)]
      elif r.kind == "polygon":
        kind, coords = "polygon", [_num(v) for p in r.polygon for v in p]
      elif r.kind == "refusal":
        kind, coords = "refusal", [0, 0, 0, 0]
      else:
        raise ValueError("osworld_g holds boxes, polygons and refusals, not empty targets")
      groups.setdefault(OSWORLD_FILES[0], []).append({
          "id": _label(s, "id", f"item-{k}"), "image_path": s.name, "image_size": list(size),
          "instruction": s.instruction, "box_type": kind, "box_coordinates": coords,
          "GUI_types": list(_label(s, "GUI_types", ["Button"]))})
    elif name == "ui_vision":
      size = save("images", s)
      setting = _label(s, "setting", "basic")
      if setting not in UI_VISION_SETTINGS:
        raise ValueError(f"ui_vision setting {setting!r}: expected one of {UI_VISION_SETTINGS}")
      groups.setdefault(os.path.join("annotations", "element_grounding",
                                     f"element_grounding_{setting}.json"), []).append({
          "image_path": s.name, "image_size": list(size),
          "bbox": [_num(v) for v in _box_of(s, name)], "prompt_to_evaluate": s.instruction,
          "platform": _label(s, "platform", "VSCode"),
          "element_type": _label(s, "element_type", "button")})
    else:  # mmbench_gui
      plat = _label(s, "platform", "windows")
      w, h = save(os.path.join("offline_images", plat), s)
      x1, y1, x2, y2 = _box_of(s, name)
      groups.setdefault(MMBENCH_FILE, []).append({
          "index": k, "image_path": s.name, "image_size": [w, h],
          "instruction": s.instruction,
          "bbox": [round(x1 / w, 6), round(y1 / h, 6), round(x2 / w, 6), round(y2 / h, 6)],
          "platform": plat, "grounding_type": _label(s, "grounding_type", "basic"),
          "data_type": _label(s, "data_type", "text"), "app_name": _label(s, "app_name", "app")})
  for rel, records in groups.items():
    files.write_json(os.path.join(out_dir, rel), records, indent=1)
  if name == "osworld_g":
    table = {k: list(v) for k, v in (buckets or FIXTURE_BUCKETS).items()}
    files.write_json(os.path.join(out_dir, OSWORLD_BUCKETS_FILE), table, indent=1)
  return out_dir
