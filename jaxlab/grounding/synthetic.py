"""Synthetic desktop screenshots with exact element boxes (spec §2.7), deterministic by seed.

A screen is one application window drawn with PIL: a title bar (title text and three window
controls), a menu bar of 4-8 text items, a toolbar of 6-20 small icons (circle, square,
triangle, star or arrow; filled or outlined; 8 colours; every glyph+colour pair at most once
per screen), a sidebar list, a content panel with tabs, an input field, checkboxes, a small
picture, lines of distractor text and a row of buttons, and a status bar. Text uses PIL's
built-in bitmap font (6x11 pixels a character, no font file, identical on every machine).

An **app** (:class:`App`, from an integer id by :func:`make_app`) fixes a theme (colours),
layout parameters (sidebar side and width, icon size and spacing, margins, button style) and
its own vocabulary (menus, sidebar entries, buttons, tabs...), so screens of apps held out
from training look different and say different words.

Sizes: any canvas of at least 240x150 pixels. Layouts are made on a base canvas of about
256x160 to 330x210 pixels and scaled up by the integer ``k = min(W // 256, H // 160)``
(nearest neighbour, so boxes scale exactly), e.g. 256x160 and 320x200 (k = 1, the CPU sizes)
or 896x560 (k = 3) and 1288x812 (k = 5).

API for other code::

  image, elements = generate_screen(seed, width, height, app)   # app: an id or an App

``elements`` is a list of :class:`Element` in drawing order: ``bbox`` ``[x1, y1, x2, y2]`` in
original pixels (a box covers pixels ``x1 <= x < x2``), ``text`` (the label a person would
give it), ``category`` (:data:`jaxlab.grounding.schema.CATEGORIES`), ``kind`` ("icon",
"menu", "button", "control", "tab", "input", "checkbox", "sidebar_item", "text", "title",
"status", "visual", "panel"), ``region``, and for icons and pictures ``glyph``, ``colour``
and ``filled``. Apart from the one "panel" element (the content area, which contains
others), element boxes never overlap.

:func:`write_dataset` writes a dataset in the release layout (:mod:`jaxlab.grounding.schema`)
with instructions of the three kinds (:mod:`jaxlab.grounding.instructions`) and SFT/RL rows
whose targets are in the resized frame of the given image-processor settings (by default
:class:`~jaxlab.models.qwen_vl.processor.ImageProcessorConfig`'s: min_pixels = 56*56,
max_pixels = 28*28*1280, factor 28, which moves 256x160 to 252x168, 320x200 to 308x196 and
1288x812 to 1260x784)::

  python -m jaxlab.grounding.synthetic --out=runs/groundcua_data --num_screens=200 \\
      --seed=0 --apps=0,1,2,3,4,5 --sizes=256x160,320x200
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxlab.core import files
from jaxlab.core.errors import ConfigError
from jaxlab.grounding import answer
from jaxlab.grounding import frames as frames_lib
from jaxlab.grounding import instructions as instr_lib
from jaxlab.grounding import schema
from jaxlab.models.qwen_vl import processor

GLYPHS = instr_lib.GLYPHS
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40), "orange": (245, 130, 20), "yellow": (205, 170, 0),
    "green": (44, 160, 44), "cyan": (0, 170, 190), "blue": (31, 90, 220),
    "purple": (130, 60, 190), "pink": (230, 80, 170),
}
assert tuple(COLOURS) == instr_lib.COLOUR_NAMES
CHAR_W, CHAR_H = 6, 11  # the bitmap font's cell
BASE_W, BASE_H = 256, 160
MIN_W, MIN_H = 240, 150
_TAG = 0x6C5A  # separates this module's random streams from other users of the same seed

# Vocabulary pools (our own words); each app draws its own subset.
MENU_WORDS = ("File", "Edit", "View", "Insert", "Format", "Tools", "Window", "Help", "Image",
              "Layer", "Select", "Filter", "Run", "Debug", "Go", "Project", "Build", "Table",
              "Data", "Sheet", "Share", "Media", "Audio", "Video", "Track", "Mail", "Code",
              "Text", "Page", "Object", "Arrange", "Options")
SIDEBAR_WORDS = ("Home", "Recent", "Projects", "Library", "Favorites", "Downloads",
                 "Documents", "Pictures", "Music", "Settings", "Trash", "Archive", "Inbox",
                 "Drafts", "Sent", "Shared", "Notes", "Tasks", "Calendar", "Contacts",
                 "Layers", "Assets", "Scenes", "Plugins", "Templates", "History", "Bookmarks",
                 "Network", "Devices", "Servers")
# Button words with a phrase in instructions.BUTTON_FUNCTIONS and no icon function's name.
BUTTON_WORDS = tuple(instr_lib.BUTTON_FUNCTIONS)
TAB_WORDS = ("General", "Layout", "Colors", "Details", "Summary", "Advanced", "Output",
             "Console", "Files", "Outline", "Properties", "Styles", "Effects", "Timeline",
             "Comments", "Sources")
INPUT_WORDS = ("Search", "Name", "Title", "Path", "Filter", "Email", "Tags", "Width",
               "Height", "Find", "Author", "Address")
CHECK_WORDS = ("Wrap lines", "Show grid", "Auto save", "Dark mode", "Snap", "Spell check",
               "Line numbers", "Alerts", "Sync", "Hide tips", "Loop", "Autoplay")
STATUS_WORDS = ("Ready", "Saved", "Idle", "Offline", "Synced", "Busy", "Done", "Paused")
DOC_WORDS = ("report", "notes", "draft", "budget", "scene", "photo", "song", "plan", "slides",
             "main", "index", "letter")
DOC_EXT = (".txt", ".doc", ".png", ".csv", ".py", ".odt", ".svg", ".md")
_SYLLABLES = ("ka", "lo", "mi", "ra", "zen", "tor", "vi", "qu", "pel", "dor", "nix", "sa",
              "bri", "mo", "tek", "lu", "fa", "gro", "ven", "shi")


@dataclasses.dataclass(frozen=True)
class Theme:
  """An app's colours (RGB)."""
  desktop: tuple[int, int, int]
  window: tuple[int, int, int]
  title_bar: tuple[int, int, int]
  title_text: tuple[int, int, int]
  bar: tuple[int, int, int]
  sidebar: tuple[int, int, int]
  text: tuple[int, int, int]
  accent: tuple[int, int, int]
  muted: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class App:
  """An application: its name, theme, layout parameters and vocabulary.

  Attributes:
    id: the integer it was made from (:func:`make_app`).
    name: shown in the title bar.
    platform: the dataset's ``<Platform>`` folder name (name + id, unique per id).
  """
  id: int
  name: str
  platform: str
  theme: Theme
  sidebar_side: str  # "left" | "right"
  sidebar_width: int  # base pixels
  icon_size: int  # base pixels
  icon_gap: int
  icon_frame: bool  # draw a frame around each toolbar icon
  margin: int  # desktop visible around the window (base pixels)
  title_centered: bool
  buttons_right: bool
  filled_buttons: bool
  menu_words: tuple[str, ...]
  sidebar_words: tuple[str, ...]
  button_words: tuple[str, ...]
  tab_words: tuple[str, ...]
  input_words: tuple[str, ...]
  check_words: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Element:
  """One visible element of a synthetic screen, original pixels."""
  bbox: tuple[int, int, int, int]
  text: str
  category: str
  kind: str
  region: str
  glyph: str | None = None
  colour: str | None = None
  filled: bool | None = None
  text_bearing: bool = False

  @property
  def size(self) -> tuple[int, int]:
    return self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]

  @property
  def area(self) -> int:
    w, h = self.size
    return w * h

  def to_annotation(self, image_path: str) -> schema.Annotation:
    return schema.Annotation(image_path, tuple(float(v) for v in self.bbox), self.text,
                             self.category)


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng([_TAG, *[int(k) & 0xFFFFFFFF for k in key]])


def _pick(rng: np.random.Generator, pool: Sequence[str], n: int) -> tuple[str, ...]:
  idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
  return tuple(pool[i] for i in idx)


def _light(rng: np.random.Generator, lo: int = 200, hi: int = 250) -> tuple[int, int, int]:
  return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def make_app(app_id: int) -> App:
  """The app of an id (a pure function of the id)."""
  rng = _rng(1, app_id)
  name = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()
  dark_title = bool(rng.random() < 0.5)
  title_bar = (tuple(int(v) for v in rng.integers(30, 90, size=3)) if dark_title
               else _light(rng, 170, 215))
  theme = Theme(
      desktop=tuple(int(v) for v in rng.integers(40, 160, size=3)),
      window=_light(rng, 236, 256), title_bar=title_bar,
      title_text=(245, 245, 245) if dark_title else (20, 20, 20),
      bar=_light(rng, 205, 240), sidebar=_light(rng, 215, 245),
      text=tuple(int(v) for v in rng.integers(0, 50, size=3)),
      accent=tuple(int(v) for v in rng.integers(40, 140, size=3)),
      muted=tuple(int(v) for v in rng.integers(120, 160, size=3)))
  return App(
      id=int(app_id), name=name, platform=f"{name}{int(app_id)}", theme=theme,
      sidebar_side="left" if rng.random() < 0.6 else "right",
      sidebar_width=int(rng.integers(56, 78)), icon_size=int(rng.integers(10, 14)),
      icon_gap=int(rng.integers(2, 5)), icon_frame=bool(rng.random() < 0.5),
      margin=int(rng.choice([0, 2, 4])), title_centered=bool(rng.random() < 0.5),
      buttons_right=bool(rng.random() < 0.6), filled_buttons=bool(rng.random() < 0.5),
      menu_words=_pick(rng, MENU_WORDS, 10), sidebar_words=_pick(rng, SIDEBAR_WORDS, 12),
      button_words=_pick(rng, BUTTON_WORDS, 8), tab_words=_pick(rng, TAB_WORDS, 6),
      input_words=_pick(rng, INPUT_WORDS, 4), check_words=_pick(rng, CHECK_WORDS, 5))


def _font() -> ImageFont.ImageFont:
  loader = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1
  return loader() if loader is not None else ImageFont.load_default()


def _pseudo_word(rng: np.random.Generator) -> str:
  return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4))))


# -- drawing ----------------------------------------------------------------------------------


class _Canvas:
  """The base canvas, its draw handle, and the elements placed so far."""

  def __init__(self, width: int, height: int, app: App):
    self.w, self.h = width, height
    self.app = app
    self.image = Image.new("RGB", (width, height), app.theme.desktop)
    self.draw = ImageDraw.Draw(self.image)
    self.font = _font()
    self.elements: list[Element] = []

  def text(self, x: int, y: int, s: str, fill) -> None:
    self.draw.text((x, y), s, font=self.font, fill=fill)

  def add(self, box, text, category, kind, region, **kw) -> Element:
    el = Element(tuple(int(v) for v in box), text, category, kind, region, **kw)
    self.elements.append(el)
    return el


def text_width(s: str) -> int:
  """Width in base pixels of ``s`` in the bitmap font."""
  return CHAR_W * len(s)


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
  pts = []
  for i in range(10):
    a = -np.pi / 2 + i * np.pi / 5
    rr = r if i % 2 == 0 else r * 0.45
    pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
  return pts


def draw_glyph(draw: ImageDraw.ImageDraw, box: Sequence[int], glyph: str, colour: str,
               filled: bool) -> None:
  """One icon glyph inside ``box`` (inset by one pixel)."""
  x1, y1, x2, y2 = box[0] + 1, box[1] + 1, box[2] - 2, box[3] - 2
  rgb = COLOURS[colour]
  fill = rgb if filled else None
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  if glyph == "circle":
    draw.ellipse((x1, y1, x2, y2), fill=fill, outline=rgb)
  elif glyph == "square":
    draw.rectangle((x1 + 1, y1 + 1, x2 - 1, y2 - 1), fill=fill, outline=rgb)
  elif glyph == "triangle":
    draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill, outline=rgb)
  elif glyph == "star":
    draw.polygon(_star(cx, cy, (x2 - x1) / 2 + 0.5), fill=fill, outline=rgb)
  elif glyph == "arrow":
    mid = x1 + (x2 - x1) * 0.55
    t = (y2 - y1) * 0.2
    draw.polygon([(x1, cy - t), (mid, cy - t), (mid, y1), (x2, cy), (mid, y2), (mid, cy + t),
                  (x1, cy + t)], fill=fill, outline=rgb)
  else:
    raise ValueError(f"unknown glyph {glyph!r}")


def _title_bar(c: _Canvas, win, rng) -> int:
  th = c.app.theme
  x1, y1, x2, _ = win
  h = 13
  c.draw.rectangle((x1, y1, x2 - 1, y1 + h - 1), fill=th.title_bar)
  # Window controls at the right: minimise, maximise, close.
  cx = x2 - 3
  for name in ("Close", "Maximize", "Minimize"):
    box = (cx - 9, y1 + 2, cx, y1 + 11)
    c.draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=th.title_text)
    if name == "Close":
      c.draw.line((box[0] + 2, box[1] + 2, box[2] - 3, box[3] - 3), fill=th.title_text)
      c.draw.line((box[0] + 2, box[3] - 3, box[2] - 3, box[1] + 2), fill=th.title_text)
    elif name == "Maximize":
      c.draw.rectangle((box[0] + 2, box[1] + 2, box[2] - 3, box[3] - 3), outline=th.title_text)
    else:
      c.draw.line((box[0] + 2, box[3] - 3, box[2] - 3, box[3] - 3), fill=th.title_text)
    c.add(box, name, "Button", "control", "title_bar")
    cx -= 11
  title = f"{c.app.name} - {rng.choice(DOC_WORDS)}{rng.choice(DOC_EXT)}"
  tw = text_width(title)
  room = cx - x1 - 4
  if tw <= room:
    tx = x1 + 4 if not c.app.title_centered else x1 + max(4, (x2 - x1 - tw) // 2)
    tx = min(tx, cx - tw - 2)
    c.text(tx, y1 + 1, title, th.title_text)
    c.add((tx, y1 + 1, tx + tw, y1 + 12), title, "Information", "title", "title_bar",
          text_bearing=True)
  return y1 + h


def _menu_bar(c: _Canvas, win, y: int, rng) -> int:
  th = c.app.theme
  x1, _, x2, _ = win
  h = 13
  c.draw.rectangle((x1, y, x2 - 1, y + h - 1), fill=th.bar)
  n = int(rng.integers(4, 9))
  words = list(c.app.menu_words[:n])
  x = x1 + 2
  for wd in words:
    w = text_width(wd) + 6
    if x + w > x2 - 2:
      break
    c.text(x + 3, y + 1, wd, th.text)
    c.add((x, y, x + w, y + h), wd, "Menu", "menu", "menu_bar", text_bearing=True)
    x += w + 1
  return y + h


def _toolbar(c: _Canvas, win, y: int, rng, pairs: list[tuple[str, str]]) -> int:
  app, th = c.app, c.app.theme
  x1, _, x2, _ = win
  s = app.icon_size
  h = s + 4
  c.draw.rectangle((x1, y, x2 - 1, y + h - 1), fill=th.bar)
  c.draw.line((x1, y + h - 1, x2 - 1, y + h - 1), fill=th.muted)
  n = int(rng.integers(6, 21))
  x = x1 + 3
  for i in range(n):
    if i and rng.random() < 0.15:  # a group separator
      c.draw.line((x + 1, y + 2, x + 1, y + h - 3), fill=th.muted)
      x += 4
    if x + s > x2 - 3 or not pairs:
      break
    glyph, colour = pairs.pop()
    filled = bool(rng.random() < 0.5)
    box = (x, y + 2, x + s, y + 2 + s)
    if app.icon_frame:
      c.draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=th.muted)
    draw_glyph(c.draw, box, glyph, colour, filled)
    c.add(box, instr_lib.icon_label(glyph, colour), "Button", "icon", "toolbar", glyph=glyph,
          colour=colour, filled=filled)
    x += s + app.icon_gap
  return y + h


def _sidebar(c: _Canvas, area, rng) -> None:
  th = c.app.theme
  x1, y1, x2, y2 = area
  c.draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=th.sidebar)
  edge = x2 - 1 if c.app.sidebar_side == "left" else x1
  c.draw.line((edge, y1, edge, y2 - 1), fill=th.muted)
  words = list(_pick(rng, c.app.sidebar_words, int(rng.integers(4, 9))))
  selected = int(rng.integers(0, len(words)))
  y = y1 + 3
  for i, wd in enumerate(words):
    if y + 12 > y2 - 2:
      break
    maxc = (x2 - x1 - 10) // CHAR_W
    wd = wd[:maxc]
    box = (x1 + 3, y, x1 + 3 + text_width(wd) + 4, y + 12)
    if i == selected:
      c.draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=th.accent)
      c.text(box[0] + 2, y + 1, wd, (250, 250, 250))
    else:
      c.text(box[0] + 2, y + 1, wd, th.text)
    c.add(box, wd, "Sidebar", "sidebar_item", "sidebar", text_bearing=True)
    y += 14


def _content(c: _Canvas, area, rng, pairs: list[tuple[str, str]]) -> None:
  app, th = c.app, c.app.theme
  x1, y1, x2, y2 = area
  c.add(area, "Document view", "Others", "panel", "content")
  # Buttons along the bottom.
  bh = 14
  by = y2 - bh - 3
  words = _pick(rng, app.button_words, int(rng.integers(2, 5)))
  widths = [max(text_width(wd) + 10, 28) for wd in words]
  while widths and sum(widths) + 4 * (len(widths) - 1) > x2 - x1 - 6:
    widths.pop()
  words = words[:len(widths)]
  total = sum(widths) + 4 * max(0, len(widths) - 1)
  x = x2 - 3 - total if app.buttons_right else x1 + 3
  for wd, w in zip(words, widths):
    box = (x, by, x + w, by + bh)
    fill = th.accent if app.filled_buttons else th.bar
    c.draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill, outline=th.text)
    tx = x + (w - text_width(wd)) // 2
    c.text(tx, by + 2, wd, (250, 250, 250) if app.filled_buttons else th.text)
    c.add(box, wd, "Button", "button", "content", text_bearing=True)
    x += w + 4
  y = y1 + 2
  # Tabs.
  if rng.random() < 0.8 and y + 13 <= by - 3:
    x = x1 + 3
    tabs = _pick(rng, app.tab_words, int(rng.integers(2, 5)))
    active = int(rng.integers(0, len(tabs)))
    for i, wd in enumerate(tabs):
      w = text_width(wd) + 8
      if x + w > x2 - 3:
        break
      box = (x, y, x + w, y + 13)
      c.draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1),
                       fill=th.window if i == active else th.bar, outline=th.muted)
      c.text(x + 4, y + 1, wd, th.text)
      c.add(box, wd, "Navigation", "tab", "content", text_bearing=True)
      x += w + 1
    y += 16
  # An input field and a small picture beside it.
  word = str(rng.choice(app.input_words))
  placeholder = word + "..."
  w = max(text_width(placeholder) + 8, int(rng.integers(60, 95)))
  if x1 + 3 + w <= x2 - 20 and y + 14 <= by - 3:
    box = (x1 + 3, y, x1 + 3 + w, y + 14)
    c.draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255),
                     outline=th.muted)
    c.text(box[0] + 4, y + 2, placeholder, th.muted)
    c.add(box, word, "Input", "input", "content", text_bearing=True)
    if pairs and rng.random() < 0.7:
      glyph, colour = pairs.pop()
      px = box[2] + 6
      pbox = (px, y, px + 13, y + 13)
      if pbox[2] <= x2 - 3:
        c.draw.rectangle((pbox[0], pbox[1], pbox[2] - 1, pbox[3] - 1), fill=(250, 250, 245),
                         outline=th.muted)
        draw_glyph(c.draw, pbox, glyph, colour, True)
        c.add(pbox, f"{colour} {glyph} picture", "Visual", "visual", "content", glyph=glyph,
              colour=colour, filled=True)
    y += 17
  # Checkboxes on one row.
  x = x1 + 3
  for wd in _pick(rng, app.check_words, int(rng.integers(1, 4))):
    w = 11 + text_width(wd)
    if x + w > x2 - 3 or y + 12 > by - 3:
      break
    c.draw.rectangle((x, y + 2, x + 7, y + 9), fill=(255, 255, 255), outline=th.text)
    if rng.random() < 0.5:
      c.draw.line((x + 2, y + 5, x + 3, y + 7), fill=th.accent)
      c.draw.line((x + 3, y + 7, x + 6, y + 3), fill=th.accent)
    c.text(x + 11, y + 1, wd, th.text)
    c.add((x, y, x + w, y + 12), wd, "Input", "checkbox", "content", text_bearing=True)
    x += w + 8
  y += 15
  # Distractor text in between.
  maxc = (x2 - x1 - 8) // CHAR_W
  while y + 12 <= by - 3:
    words_ = []
    n = int(rng.integers(2, 8))
    for _ in range(n):
      words_.append(_pseudo_word(rng))
    line = " ".join(words_)[:maxc].strip()
    if line:
      c.text(x1 + 4, y, line, th.text)
      c.add((x1 + 4, y, x1 + 4 + text_width(line), y + 11), line, "Information", "text",
            "content", text_bearing=True)
    y += 13


def _status_bar(c: _Canvas, win, rng) -> int:
  th = c.app.theme
  x1, _, x2, y2 = win
  h = 12
  y = y2 - h
  c.draw.rectangle((x1, y, x2 - 1, y2 - 1), fill=th.bar)
  c.draw.line((x1, y, x2 - 1, y), fill=th.muted)
  msg = str(rng.choice(STATUS_WORDS))
  c.text(x1 + 4, y + 1, msg, th.text)
  c.add((x1 + 4, y + 1, x1 + 4 + text_width(msg), y + 12), msg, "Information", "status",
        "status_bar", text_bearing=True)
  pos = f"Ln {int(rng.integers(1, 200))}, Col {int(rng.integers(1, 80))}"
  px = x2 - 4 - text_width(pos)
  if px > x1 + 10 + text_width(msg):
    c.text(px, y + 1, pos, th.text)
    c.add((px, y + 1, px + text_width(pos), y + 12), pos, "Information", "status",
          "status_bar", text_bearing=True)
  return y


def scale_of(width: int, height: int) -> int:
  """The integer upscaling ``k`` of a canvas (layouts are made at ``W // k x H // k``)."""
  return max(1, min(width // BASE_W, height // BASE_H))


def generate_screen(seed: int, width: int, height: int,
                    app: App | int) -> tuple[Image.Image, list[Element]]:
  """One synthetic screenshot and its elements (a pure function of the arguments).

  Args:
    seed: the screen's seed.
    width, height: canvas size in pixels (at least 240x150).
    app: an :class:`App` or an app id.

  Returns:
    The RGB image and its elements (boxes in the image's pixels).
  """
  if width < MIN_W or height < MIN_H:
    raise ConfigError(f"synthetic screen {width}x{height}: expected at least {MIN_W}x{MIN_H}")
  app = make_app(app) if not isinstance(app, App) else app
  k = scale_of(width, height)
  bw, bh = width // k, height // k
  rng = _rng(2, seed, app.id, bw, bh)  # the content depends on the base canvas only
  c = _Canvas(bw, bh, app)
  m = app.margin
  win = (m, m, bw - m, bh - m)
  c.draw.rectangle((win[0], win[1], win[2] - 1, win[3] - 1), fill=app.theme.window)
  pairs = [(g, col) for g in GLYPHS for col in COLOURS]
  order = rng.permutation(len(pairs))
  pairs = [pairs[i] for i in order]  # popped from the end: each pair once per screen
  y = _title_bar(c, win, rng)
  y = _menu_bar(c, win, y, rng)
  y = _toolbar(c, win, y, rng, pairs)
  bottom = _status_bar(c, win, rng)
  sw = app.sidebar_width
  if app.sidebar_side == "left":
    side, content = (win[0], y, win[0] + sw, bottom), (win[0] + sw, y, win[2], bottom)
  else:
    side, content = (win[2] - sw, y, win[2], bottom), (win[0], y, win[2] - sw, bottom)
  _sidebar(c, side, rng)
  _content(c, content, rng, pairs)
  image = c.image
  if k > 1:
    image = image.resize((bw * k, bh * k), Image.NEAREST)
  if image.size != (width, height):
    full = Image.new("RGB", (width, height), app.theme.desktop)
    full.paste(image, (0, 0))
    image = full
  elements = [dataclasses.replace(e, bbox=tuple(v * k for v in e.bbox)) for e in c.elements]
  return image, elements


def screen_hash(image: Image.Image) -> str:
  """sha256 of the image's size and raw RGB pixels (independent of PNG encoder settings)."""
  h = hashlib.sha256(f"{image.size[0]}x{image.size[1]}:".encode())
  h.update(image.tobytes())
  return h.hexdigest()


# -- datasets ---------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
  """``"256x160"`` -> (256, 160)."""
  try:
    w, h = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ConfigError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 256x160") from None
  return w, h


def write_dataset(out_dir: str, num_screens: int, seed: int,
                  apps: Sequence[int | App] = (0, 1, 2, 3),
                  sizes: Sequence[tuple[int, int]] = ((256, 160), (320, 200)), *,
                  image_config: processor.ImageProcessorConfig | None = None,
                  instructions_per_screen: int | None = None,
                  system_template: str = schema.SYSTEM_TEMPLATE) -> dict[str, Any]:
  """Writes ``num_screens`` screens and their records under ``out_dir``.

  Screen ``i`` uses app ``apps[i % len(apps)]``, size ``sizes[(i // len(apps)) %
  len(sizes)]`` and seed ``(seed, i)``. Files (see :mod:`jaxlab.grounding.schema`)::

    images/<Platform>/<hash>.png, data/<Platform>/<hash>.json
    instruction_tuning/<release file names>.json
    sft.jsonl, rl.jsonl    one row per instruction, resized frame of ``image_config``
    tasks.jsonl            the RL rows as LLM task rows (task "groundcua")
    manifest.json          the arguments and counts

  Args:
    out_dir: the dataset directory (created).
    num_screens: how many screenshots.
    seed: the dataset seed.
    apps: app ids (or apps); keep held-out ids disjoint from training ids.
    sizes: canvas sizes ``(W, H)``.
    image_config: the processor settings whose resize rule defines the SFT/RL frame (the
      default ``ImageProcessorConfig()``).
    instructions_per_screen: at most this many instructions per screen (random subset;
      a screen has about 30-45 usable elements, so 10 gives the CPU budget's 2K screens /
      20K instructions of spec §2.7; JSONL rows carry the system and tool texts, about
      1.2 KB each).
    system_template: the system text (``{width}``/``{height}`` get the resized size).

  Returns:
    The manifest (also written): counts per instruction kind and file.
  """
  if num_screens < 1:
    raise ConfigError(f"num_screens must be >= 1, got {num_screens}")
  if not apps or not sizes:
    raise ConfigError("write_dataset needs at least one app and one size")
  cfg = image_config or processor.ImageProcessorConfig()
  app_objs = [a if isinstance(a, App) else make_app(a) for a in apps]
  by_file: dict[str, list] = {f: [] for f in schema.INSTRUCTION_FILES}
  sft, rl = [], []
  for i in range(num_screens):
    app = app_objs[i % len(app_objs)]
    w, h = sizes[(i // len(app_objs)) % len(sizes)]
    image, elements = generate_screen(int(_rng(3, seed, i).integers(0, 2**31)), w, h, app)
    digest = screen_hash(image)
    rel = f"{app.platform}/{digest}.png"
    img_path = os.path.join(out_dir, "images", rel)
    os.makedirs(os.path.dirname(img_path), exist_ok=True)
    image.save(img_path, format="PNG")
    schema.write_annotations(os.path.join(out_dir, "data", app.platform, digest + ".json"),
                             [e.to_annotation(rel) for e in elements])
    frame = frames_lib.frame_for(w, h, cfg)
    system = schema.system_prompt(*frame.resized_size, system_template)
    rng = _rng(4, seed, i)
    items = instr_lib.instructions_for_screen(elements, w, h, rng)
    if instructions_per_screen is not None and len(items) > instructions_per_screen:
      keep = sorted(rng.choice(len(items), size=instructions_per_screen, replace=False))
      items = [items[j] for j in keep]
    for it in items:
      el = elements[it.element]
      by_file[it.file].append(it.record(el, digest, app.platform))
      box_r = frames_lib.box_to_frame(el.bbox, frame)
      point = frames_lib.center(box_r)
      meta = {"id": digest, "platform": app.platform, "app": app.id, "kind": it.kind,
              "file": it.file, "category": el.category, "element_kind": el.kind,
              "element_size": list(el.size), "resized_element_size": [
                  round(box_r[2] - box_r[0], 3), round(box_r[3] - box_r[1], 3)]}
      image_ref = "images/" + rel
      sft.append(schema.SFTRecord.make(it.text, point, image_ref, system, meta))
      rl.append(schema.RLRecord(system, it.text, [image_ref], answer.format_answer(*point),
                                tuple(round(v, 3) for v in box_r), frame.resized_size,
                                (w, h), meta))
  for name, recs in by_file.items():
    schema.write_instructions(os.path.join(out_dir, "instruction_tuning", name), recs)
  schema.write_jsonl(os.path.join(out_dir, "sft.jsonl"), sft)
  schema.write_jsonl(os.path.join(out_dir, "rl.jsonl"), rl)
  files.write_jsonl(os.path.join(out_dir, "tasks.jsonl"),
                    (schema.task_row(r, seed=i) for i, r in enumerate(rl)))
  kinds: dict[str, int] = {}
  for r in rl:
    kinds[r.metadata["kind"]] = kinds.get(r.metadata["kind"], 0) + 1
  manifest = {
      "num_screens": num_screens, "seed": seed, "apps": [a.id for a in app_objs],
      "platforms": [a.platform for a in app_objs], "sizes": [list(s) for s in sizes],
      "image_config": {"factor": cfg.factor, "min_pixels": cfg.min_pixels,
                       "max_pixels": cfg.max_pixels},
      "instructions": len(rl), "by_kind": kinds,
      "by_file": {k: len(v) for k, v in by_file.items()},
  }
  files.write_json(os.path.join(out_dir, "manifest.json"), manifest, indent=1)
  return manifest


def main(argv: Iterable[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m jaxlab.grounding.synthetic",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_screens", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--apps", default="0,1,2,3", help="comma-separated app ids")
  parser.add_argument("--sizes", default="256x160,320x200", help="comma-separated WxH")
  parser.add_argument("--instructions_per_screen", type=int, default=None)
  args = parser.parse_args(None if argv is None else list(argv))
  try:
    apps = [int(a) for a in args.apps.split(",") if a.strip()]
  except ValueError:
    print(f"--apps={args.apps!r}: expected comma-separated integers", file=sys.stderr)
    return 2
  try:
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    manifest = write_dataset(args.out, args.num_screens, args.seed, apps, sizes,
                             instructions_per_screen=args.instructions_per_screen)
  except ConfigError as e:
    print(str(e), file=sys.stderr)
    return 2
  print(f"wrote {args.num_screens} screens, {manifest['instructions']} instructions "
        f"{manifest['by_kind']} to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
