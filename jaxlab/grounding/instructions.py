"""Instructions about synthetic screen elements, of the three kinds of spec §2.2/§2.7.

* **direct**: names what is visible: "Click the 'Save' button", "Click the red triangle icon
  in the toolbar" (``simple_instruction``), or describes look and place: "The filled red
  triangle icon in the toolbar, at the top left of the screen" (``description``).
* **functional**: says what activating the element does: each (glyph, colour) pair of an
  icon has one fixed function ("Run the program"), each button word one phrase.
* **spatial**: locates the element from a neighbour: "Click the icon right of the blue
  star", "Select the entry below 'Projects' in the sidebar".

Filters of the release: an element is used only if its area is at most 0.005 of the image
(0.1 for elements that show text) and its label has at most 30 characters. Every
instruction names its target unambiguously on its screen: direct text instructions only for
text that occurs once, icons by their glyph and colour (unique per screen by construction),
functional phrases only when no other element of the screen has the same one, spatial
instructions only from an anchor that is itself unambiguous, to its immediate neighbour in
the same row (toolbar, menu bar, tabs, buttons) or column (sidebar).

Each instruction goes to one of the release's files (:mod:`jaxlab.grounding.schema`):
direct icon or text, direct description, functional (the extra file, in the centre layout,
for elements of at most 0.0025 of the image), spatial (centre layout).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jaxlab.grounding import schema

MAX_AREA = 0.005
MAX_TEXT_AREA = 0.1
MAX_LABEL_CHARS = 30
EXTRA_AREA = 0.0025  # functional instructions of elements this small go to the extra file
KIND_WEIGHTS = {"direct": 0.35, "description": 0.15, "functional": 0.25, "spatial": 0.25}

GLYPHS = ("circle", "square", "triangle", "star", "arrow")
COLOUR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")

# (label, what it does): our own list; pair i of (glyph, colour) gets entry (7 * i) % 40.
_FUNCTIONS = (
    ("Run", "run the program"), ("Stop", "stop the running task"),
    ("New file", "create a new empty file"), ("Open folder", "open a folder from disk"),
    ("Save all", "save every open document"), ("Print", "print the current page"),
    ("Zoom in", "make the view larger"), ("Zoom out", "make the view smaller"),
    ("Bold", "make the selected text bold"), ("Italic", "slant the selected text"),
    ("Underline", "underline the selected text"), ("Align left", "line the text up on the left"),
    ("Center", "center the selected text"), ("Insert image", "put a picture into the document"),
    ("Insert table", "add a table at the cursor"), ("Insert link", "attach a web link"),
    ("Comment", "leave a comment on the selection"), ("Find", "look for a word in the document"),
    ("Replace", "swap one word for another everywhere"), ("Spelling", "check the spelling"),
    ("Undo", "take back the last change"), ("Redo", "repeat the change that was undone"),
    ("Cut", "move the selection to the clipboard"), ("Copy", "duplicate the selection"),
    ("Paste", "insert what is on the clipboard"), ("Refresh", "reload the current view"),
    ("Preferences", "change the preferences"), ("Share", "send the document to someone"),
    ("Download", "keep a copy on this computer"), ("Upload", "send a file to the server"),
    ("Record", "start recording"), ("Play", "play the media"), ("Pause", "pause playback"),
    ("Crop", "trim the edges of the image"), ("Rotate", "turn the image a quarter turn"),
    ("Brush", "paint with a brush"), ("Eraser", "rub out part of the drawing"),
    ("Fill", "fill an area with colour"), ("Debug", "start the debugger"),
    ("Terminal", "open a command line"),
)
BUTTON_FUNCTIONS = {
    "Save": "store the current work", "Cancel": "dismiss the changes",
    "Apply": "use the new settings without closing", "OK": "confirm and continue",
    "Open": "load an existing file", "Export": "write the work to another format",
    "Import": "bring in data from a file", "Delete": "remove the selected item",
    "Reset": "go back to the default values", "Next": "move to the following step",
    "Back": "return to the previous step", "Add": "create another entry",
    "Remove": "take the entry out of the list", "Send": "deliver the message",
    "Browse": "pick a file from a folder", "Update": "install the latest version",
    "Publish": "make the work public", "Preview": "see how the result will look",
}
CONTROL_FUNCTIONS = {"Close": "close the window", "Maximize": "make the window fill the screen",
                     "Minimize": "hide the window from view"}
_REGION_NAMES = {"title_bar": "title bar", "menu_bar": "menu bar", "toolbar": "toolbar",
                 "sidebar": "sidebar", "content": "main panel", "status_bar": "status bar"}
_KIND_NOUNS = {"button": "button", "menu": "menu", "tab": "tab", "input": "field",
               "checkbox": "checkbox", "sidebar_item": "entry", "text": "text",
               "title": "window title", "status": "status message", "control": "button"}
# Groups with neighbours: a row (sorted by x) or a column (sorted by y).
_ROWS = {"icon": "icon", "menu": "menu", "tab": "tab", "button": "button"}
_COLUMNS = {"sidebar_item": "entry"}


def icon_label(glyph: str, colour: str) -> str:
  """The label (element text) of an icon: the name of its fixed function."""
  return _FUNCTIONS[_function_index(glyph, colour)][0]


def icon_function(glyph: str, colour: str) -> str:
  """What an icon of this glyph and colour does (fixed for every app)."""
  return _FUNCTIONS[_function_index(glyph, colour)][1]


def _function_index(glyph: str, colour: str) -> int:
  i = GLYPHS.index(glyph) * len(COLOUR_NAMES) + COLOUR_NAMES.index(colour)
  return (7 * i) % len(_FUNCTIONS)


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One instruction about element ``element`` (an index into the screen's elements).

  Attributes:
    kind: "direct", "functional" or "spatial" (a description is a "direct" kind).
    text: the instruction used for training.
    file: the release file it belongs to.
    all_instructions: description, functional_instruction, simple_instruction.
    anchor, relation: for spatial instructions, the neighbour it names and where the target
      lies from it ("left", "right", "above", "below").
  """
  element: int
  kind: str
  text: str
  file: str
  all_instructions: dict[str, str]
  anchor: int | None = None
  relation: str | None = None

  def record(self, element: Any, screen_id: str,
             platform: str) -> schema.InstructionRecord | schema.CoordinateInstruction:
    """The record of the instruction file (box layout, or centre layout for the extra and
    spatial files)."""
    if self.file in schema.COORDINATE_FILES:
      x1, y1, x2, y2 = element.bbox
      return schema.CoordinateInstruction(screen_id, ((x1 + x2) / 2, (y1 + y2) / 2),
                                          platform, self.text, element.text,
                                          element.category)
    return schema.InstructionRecord(screen_id, tuple(float(v) for v in element.bbox),
                                    element.text, element.category, platform,
                                    dict(self.all_instructions), self.text)


def _norm(text: str) -> str:
  return " ".join(text.lower().replace(":", " ").replace(".", " ").split())


def eligible(element: Any, image_area: float) -> bool:
  """The release's filters: area share and label length (and no containers)."""
  if element.kind == "panel" or len(element.text) > MAX_LABEL_CHARS:
    return False
  limit = MAX_TEXT_AREA if element.text_bearing else MAX_AREA
  return element.area / image_area <= limit


def _position(element: Any, width: int, height: int) -> str:
  x1, y1, x2, y2 = element.bbox
  cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
  v = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
  h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "center"
  return "center" if (v, h) == ("middle", "center") else f"{v} {h}"


def _is_icon(element: Any) -> bool:
  return element.kind in ("icon", "visual")


def _icon_name(element: Any) -> str:
  return f"{element.colour} {element.glyph}"


def _simple(element: Any, rng: np.random.Generator) -> str:
  k, t = element.kind, element.text
  verb = "Click" if rng.random() < 0.7 else "Press"
  if k == "icon":
    return f"{verb} the {_icon_name(element)} icon in the toolbar"
  if k == "visual":
    return f"Click the {_icon_name(element)} picture"
  if k == "control":
    return f"{verb} the {t.lower()} button of the window"
  if k == "menu":
    return f"Open the '{t}' menu"
  if k == "sidebar_item":
    return f"Select '{t}' in the sidebar"
  if k == "tab":
    return f"Switch to the '{t}' tab"
  if k == "checkbox":
    return f"Toggle the '{t}' checkbox"
  if k == "title":
    return f"Click the window title '{t}'"
  if k == "status":
    return f"Click '{t}' in the status bar"
  if k == "text":
    return f"Click the text '{t}'"
  return f"{verb} the '{t}' {_KIND_NOUNS.get(k, 'element')}"


def _description(element: Any, width: int, height: int) -> str:
  where = f"in the {_REGION_NAMES.get(element.region, element.region)}"
  pos = _position(element, width, height)
  if _is_icon(element):
    look = f"{'filled' if element.filled else 'outlined'} {_icon_name(element)}"
    noun = "icon" if element.kind == "icon" else "picture"
    return f"The {look} {noun} {where}, at the {pos} of the screen"
  noun = _KIND_NOUNS.get(element.kind, "element")
  return f"The {noun} labelled '{element.text}' {where}, at the {pos} of the screen"


def _functional(element: Any) -> str:
  k, t = element.kind, element.text
  if k == "icon":
    phrase = icon_function(element.glyph, element.colour)
  elif k == "button":
    phrase = BUTTON_FUNCTIONS.get(t, "")
  elif k == "control":
    phrase = CONTROL_FUNCTIONS.get(t, "")
  elif k == "menu":
    phrase = f"see the commands listed under {t}"
  elif k == "sidebar_item":
    phrase = f"go to the {t} section"
  elif k == "tab":
    phrase = f"show the {t} page of the panel"
  elif k == "input":
    phrase = f"enter a value for {t.lower()}"
  elif k == "checkbox":
    phrase = f"turn the {t.lower()} option on or off"
  else:
    phrase = ""
  return phrase[:1].upper() + phrase[1:]


def neighbours(elements: Sequence[Any]) -> dict[int, list[tuple[int, str]]]:
  """For each element of a row/column group, its immediate neighbours: ``target -> [(anchor,
  relation of the target to the anchor)]``."""
  groups: dict[tuple[str, str], list[int]] = {}
  for i, e in enumerate(elements):
    if e.kind in _ROWS or e.kind in _COLUMNS:
      groups.setdefault((e.kind, e.region), []).append(i)
  out: dict[int, list[tuple[int, str]]] = {}
  for (kind, _), idx in groups.items():
    column = kind in _COLUMNS
    idx = sorted(idx, key=lambda i: elements[i].bbox[1] if column else elements[i].bbox[0])
    before, after = ("below", "above") if column else ("right", "left")
    for a, b in zip(idx, idx[1:]):
      out.setdefault(b, []).append((a, before))  # b lies right of / below a
      out.setdefault(a, []).append((b, after))
  return out


def _spatial(target: Any, anchor: Any, relation: str) -> str:
  ref = f"the {_icon_name(anchor)}" if _is_icon(anchor) else f"'{anchor.text}'"
  if target.kind == "icon":
    return f"Click the icon {relation} of {ref} in the toolbar"
  if target.kind == "sidebar_item":
    return f"Select the entry {relation} {ref} in the sidebar"
  noun = _KIND_NOUNS[target.kind]
  return f"Click the {noun} {relation} of {ref}"


def instructions_for_screen(elements: Sequence[Any], width: int, height: int,
                            rng: np.random.Generator,
                            weights: dict[str, float] | None = None) -> list[Instruction]:
  """One instruction for every element that passes the filters and can be named
  unambiguously; its kind is drawn with ``weights`` among the kinds the element allows."""
  weights = weights or KIND_WEIGHTS
  area = float(width * height)
  visible = [_norm(e.text) for e in elements if e.text_bearing and e.kind != "panel"]
  text_count: dict[str, int] = {}
  for t in visible:
    text_count[t] = text_count.get(t, 0) + 1
  icons = [(e.glyph, e.colour) for e in elements if _is_icon(e)]
  if len(set(icons)) != len(icons):
    raise ValueError("two icons share glyph and colour on one screen")

  def nameable(e: Any) -> bool:
    if _is_icon(e) or e.kind == "control":
      return True
    return e.text_bearing and text_count.get(_norm(e.text), 0) == 1

  functions = [_functional(e) for e in elements]
  fn_count: dict[str, int] = {}
  for f in functions:
    if f:
      fn_count[f] = fn_count.get(f, 0) + 1
  near = neighbours(elements)
  out = []
  for i, e in enumerate(elements):
    if not eligible(e, area) or not nameable(e):
      continue
    simple = _simple(e, rng)
    func = functions[i] if functions[i] and fn_count[functions[i]] == 1 else ""
    anchors = [(a, rel) for a, rel in near.get(i, []) if nameable(elements[a])]
    options = ["direct", "description"] + (["functional"] if func else []) + (
        ["spatial"] if anchors else [])
    p = np.asarray([weights.get(o, 0.0) for o in options], np.float64)
    if p.sum() <= 0:
      continue
    choice = options[int(rng.choice(len(options), p=p / p.sum()))]
    alls = {"description": _description(e, width, height), "functional_instruction": func,
            "simple_instruction": simple}
    anchor = relation = None
    if choice == "direct":
      kind, text = "direct", simple
      file = schema.DIRECT_ICON if _is_icon(e) else schema.DIRECT_TEXT
    elif choice == "description":
      kind, text, file = "direct", alls["description"], schema.DIRECT_DESCRIPTION
    elif choice == "functional":
      kind, text = "functional", func
      file = schema.FUNCTIONAL_EXTRA if e.area / area <= EXTRA_AREA else schema.FUNCTIONAL
    else:
      anchor, relation = anchors[int(rng.integers(0, len(anchors)))]
      kind, text, file = "spatial", _spatial(e, elements[anchor], relation), schema.SPATIAL
    out.append(Instruction(i, kind, text, file, alls, anchor, relation))
  return out
