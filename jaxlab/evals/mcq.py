"""Multiple-choice scoring shared by benchmarks: answer extraction, metrics, results files.

A benchmark (e.g. :mod:`jaxlab.evals.kaleidoscope`) generates one free-text output per
question; this module turns each output into an option index or a format error, and a set of
scored items into the numbers a paper reports. Nothing here knows a dataset's fields.

Extraction
----------
:func:`extract` tries an ordered list of :class:`Rule` s; each proposes a raw letter
candidate, which :func:`normalise_letter` maps to a Latin letter. The first rule whose
candidate is one of ``LETTERS[:num_options]`` wins, and its name goes into the item's record,
so every extracted answer can be audited. All built-in rules read only the final turn of a
chat transcript (the text after the last ``"assistant\\n"``), as the Kaleidoscope code does.

* :data:`DIRECT_RULES` (open models asked for ``{"choice": "<letter>"}``): ``single_letter``
  (the whole output is one letter), ``json_choice``, then ``leading_letter`` (ours).
* :data:`COT_RULES` (models asked to reason and end with ``<ANSWER> X </ANSWER>``):
  ``answer_tags``, then the fallbacks ``correct_answer_is``, ``answer_phrase`` (in-language
  phrases, our own list), ``bold_letter``, ``boxed``, ``paren_letter``, ``letter_dot``, and
  last ``single_letter``. A fallback reads the LAST match in the text that names a valid
  option (the conclusion follows the reasoning; the reference code takes the first).

The reference's second pass (an LLM re-reading the outputs no rule parsed) is not done here:
every extracted answer comes from these rules.

Where we differ from the reference code (spec §3.3) and why:

* ``json_choice`` accepts an object spread over several lines and with extra keys
  (``{"reasoning": "...",\\n "choice": "B"}``); the reference regex only reads an object on
  one line and so scores such outputs as format errors. Objects must be flat (no nested
  braces); the last one naming a valid option is used. A non-string value (a number, null)
  is a format error: ``{"choice": 1}`` could mean A or B.
* Several letters separated by ``.`` (``"B. C"``, ``"A. B"``) count only when exactly one
  part is a valid letter, as in the reference; the parts are normalised first, so look-alike
  letters count too.
* ``leading_letter`` (direct regime only) reads ``"B."``, ``"B)"`` or ``"B. <option text>"``
  at the start of the output, but not when the rest names another option letter (``"A. B"``,
  ``"(B) and (C)"``, ``"A. Paris B. London"``, and also ``"B. Vitamin C"``): an output naming
  two letters is invalid.
* CoT rules accept non-Latin option letters everywhere the reference accepts Latin ones.
  Prose rules (phrases, bold, brackets, line starts) read Latin, Cyrillic and Greek letters
  in upper case only: ``"the answer is a prime"`` names no option, and Russian/Ukrainian
  ``а в с і`` are everyday words. Inside ``<ANSWER>`` tags, JSON and ``\\boxed{}``, and for
  a whole-output letter, either case is read.

Look-alike letters
------------------
Models answering in-language exams often write an option letter in the exam's script. We map
each script's letters to Latin ones BY POSITION in the script's own option sequence, the
convention of exams written in it:

* Cyrillic (ru uk sr, and any other language): А Б В Г Д -> A B C D E (Russian and
  Ukrainian exams letter options А Б В Г Д). Also Ц -> C, Serbian's transliteration of C
  (no position conflicts with it).
* Arabic script (ar fa): أ/ا/إ/آ (and Persian "الف") ب ج د ه -> A B C D E (abjad order).
* Devanagari (hi ne): क ख ग घ ङ -> A..E; also अ ब स द/ड -> A B C D (Hindi-medium papers
  that write (a) (b) (c) (d) this way) and ए बी सी डी (the English letter names).
* Bengali (bn): ক খ গ ঘ ঙ -> A..E; also অ ব স দ/ড and এ বি সি ডি as for Devanagari.
* Telugu (te): we know of no convention of Telugu option letters, so only the reference's
  sound-alikes అ బ స డ -> A B C D and the letter names ఎ బి సి డి; we do not map by the
  vowel order అ ఆ ఇ ఈ.

The reference maps differ: its direct-answer map is Б->B, Ц->C, Д->D, Г->D (plus the Arabic
letters, which agree with ours), its CoT map is positional А Б В Г -> A B C D. We follow the
positional map throughout, so Д is E (a format error on a 4-option item, D for the reference).

Cyrillic and Greek letters that look like Latin ones (А В С Е Н І Ј, Α Β Ε Η Ι) map to the
Latin letter they look like, except where that contradicts the positional map: Cyrillic В
(U+0412) is C for a Cyrillic-script language (``ru uk sr bg mk be``) and B otherwise
(``"В"`` in an English answer is a homoglyph, not the third Russian option). Every other
look-alike maps the same way for every language: no two scripts share a code point.
Full-width and circled Latin letters are folded by NFKC (``"Ｂ"``, ``"Ⓑ"`` -> B).

Metrics (spec §3.3)
-------------------
Per group: total accuracy = correct / all (an invalid answer is wrong), valid accuracy =
correct / valid (None when nothing is valid), format-error rate = invalid / all, each with a
95% percentile bootstrap interval over items (:func:`jaxlab.core.stats.bootstrap_interval`).
:func:`summary` reports both the macro average over a grouping (the paper's headline:
accuracies macro over languages) and the micro average over items (the reference's
"Overall" row), labelled as such; the macro interval resamples items within each group.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import unicodedata
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from jaxlab.core import files
from jaxlab.core import stats
from jaxlab.core.errors import DataError

LETTERS = "ABCDEFGHIJ"
RESULTS_VERSION = 1
METRICS = ("total_accuracy", "valid_accuracy", "format_error_rate")
HIGHER_IS_BETTER = {"total_accuracy": True, "valid_accuracy": True, "format_error_rate": False}


# ---------------------------------------------------------------------------------------------
# Letters


def _positional(letters: Sequence[str]) -> dict[str, str]:
  return {ch: LETTERS[i] for i, ch in enumerate(letters)}


_CYRILLIC_LANGUAGES = frozenset({"ru", "uk", "sr", "bg", "mk", "be"})
_CYRILLIC_VE = "\u0412"  # В: C by position, B by look

# Script letter -> Latin letter. Scripts share no code point, so one table serves all
# languages; only Cyrillic В depends on the language (see the module docstring).
_LOOKALIKE: dict[str, str] = {
    # Latin homoglyphs: Cyrillic А С Е Н І Ј, Greek Α Β Ε Η Ι.
    "\u0410": "A", "\u0421": "C", "\u0415": "E", "\u041d": "H", "\u0406": "I", "\u0408": "J",
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0397": "H", "\u0399": "I",
    # Cyrillic option letters by position (А Б В Г Д; В handled apart) and Ц (Serbian C).
    **{k: v for k, v in _positional("АБВГД").items() if k != _CYRILLIC_VE},
    "Ц": "C",
    # Arabic script, abjad order; alef in all its written forms, Persian spells it "الف".
    **_positional(["أ", "ب", "ج", "د", "ه"]),
    "ا": "A", "إ": "A", "آ": "A", "الف": "A",
    # Devanagari: by position, the a-b-c-d sound-alikes, the English letter names.
    **_positional("कखगघङ"),
    "अ": "A", "ब": "B", "स": "C", "द": "D", "ड": "D", "ए": "A", "बी": "B", "सी": "C", "डी": "D",
    # Bengali: the same three conventions.
    **_positional("কখগঘঙ"),
    "অ": "A", "ব": "B", "স": "C", "দ": "D", "ড": "D", "এ": "A", "বি": "B", "সি": "C", "ডি": "D",
    # Telugu: sound-alikes and letter names only.
    "అ": "A", "బ": "B", "స": "C", "డ": "D", "ఎ": "A", "బి": "B", "సి": "C", "డి": "D",
}

# Stripped from both ends of a candidate: whitespace, brackets, emphasis, trailing punctuation,
# quotes, the Arabic comma and full stop.
_WRAP = " \t\r\n()[]{}<>*_.:;,!?\"'`«»“”‘’،۔।"
_TATWEEL = "\u0640"  # Arabic elongation stroke, as in "هـ"


def normalise_letter(raw: str | None, language: str = "") -> str | None:
  """The Latin letter (in ``LETTERS``) that ``raw`` stands for, or None.

  NFKC-folds, drops Arabic tatweel, strips whitespace and wrapping punctuation (``"(b)."``
  -> ``"b"``), upper-cases, then maps look-alike letters of other scripts (module docstring;
  ``language`` decides Cyrillic В). Whether the letter is a valid option is the caller's
  question: "J" is returned for a 4-option item too.
  """
  if not isinstance(raw, str):
    return None
  s = unicodedata.normalize("NFKC", raw).replace(_TATWEEL, "").strip(_WRAP).upper()
  if len(s) == 1 and s in LETTERS:
    return s
  if s == _CYRILLIC_VE:
    return "C" if language in _CYRILLIC_LANGUAGES else "B"
  return _LOOKALIKE.get(s)


# ---------------------------------------------------------------------------------------------
# Extraction


@dataclasses.dataclass(frozen=True)
class Context:
  """What extraction needs to know about an item.

  Attributes:
    num_options: valid letters are ``LETTERS[:num_options]``.
    language: ISO-639-1 code; selects the answer phrases and the meaning of Cyrillic В.
  """
  num_options: int
  language: str = ""

  def __post_init__(self):
    if not isinstance(self.num_options, int) or not 1 <= self.num_options <= len(LETTERS):
      raise DataError(f"num_options={self.num_options!r}: expected 1..{len(LETTERS)} options")


@dataclasses.dataclass(frozen=True)
class Extraction:
  """What :func:`extract` read from one output.

  Attributes:
    choice: 0-based option index; None: no rule found a valid option (a format error).
    rule: the name of the rule that fired (None if none did).
    letter: the Latin letter after normalisation; for a format error, the first letter a rule
      proposed that is not an option of this item (e.g. "E" on a 4-option item), if any.
  """
  choice: int | None
  rule: str | None
  letter: str | None


@dataclasses.dataclass(frozen=True)
class Rule:
  """A named extraction rule: ``fn(text, ctx)`` -> a raw letter candidate or None."""
  name: str
  fn: Callable[[str, Context], str | None]


def _index(raw: str | None, ctx: Context) -> int | None:
  letter = normalise_letter(raw, ctx.language)
  if letter is None or LETTERS.index(letter) >= ctx.num_options:
    return None
  return LETTERS.index(letter)


def extract(text: str, rules: Sequence[Rule], ctx: Context) -> Extraction:
  """Tries ``rules`` in order; the first whose candidate is a valid option wins."""
  if not isinstance(text, str):
    raise DataError(f"model output {text!r}: expected a string")
  stray = None
  for rule in rules:
    raw = rule.fn(text, ctx)
    letter = normalise_letter(raw, ctx.language)
    if letter is None:
      continue
    if LETTERS.index(letter) < ctx.num_options:
      return Extraction(LETTERS.index(letter), rule.name, letter)
    stray = stray or letter
  return Extraction(None, None, stray)


def final_turn(text: str) -> str:
  """The text after the last ``"assistant\\n"`` (a chat transcript's answer), else all."""
  return text.rsplit("assistant\n", 1)[-1]


# Letters of other scripts as regex alternations, longest first ("बी" before "ब"). Prose rules
# read Cyrillic and Greek letters in upper case only: lower-case а в с і are common words
# ("and", "in", "with"). A candidate must not continue a word: _WORD holds the word characters
# of every script we map, combining vowel signs included.
def _alternation(keys: Iterable[str]) -> str:
  return "|".join(re.escape(k) for k in sorted(set(keys), key=lambda k: (-len(k), k)))


_SCRIPT_UPPER = _alternation([*_LOOKALIKE, _CYRILLIC_VE, "هـ"])
_SCRIPT_ANY = _alternation([*_LOOKALIKE, _CYRILLIC_VE, "هـ",
                            *(k.lower() for k in (*_LOOKALIKE, _CYRILLIC_VE))])
_WORD = r"[\w\u0300-\u036f\u0600-\u06ff\u0900-\u0dff]"


def _letter(latin: str, script: str) -> str:
  """A letter candidate as the named group ``x``, standing alone: Latin from the class
  ``latin`` or another script's option letter from the alternation ``script``."""
  return rf"(?<!{_WORD})(?P<x>{latin}|{script})(?!{_WORD})"


_UPPER = _letter("[A-J]", _SCRIPT_UPPER)
_ANY_CASE = _letter("[A-Ja-j]", _SCRIPT_ANY)


def _last_valid(candidates: Iterable[str], ctx: Context) -> str | None:
  """The last candidate naming a valid option; failing that the last one (so an
  out-of-range letter can be recorded); None when there is none."""
  last = best = None
  for c in candidates:
    last = c
    if _index(c, ctx) is not None:
      best = c
  return best if best is not None else last


def _last_match(pattern: re.Pattern, text: str, ctx: Context) -> str | None:
  """:func:`_last_valid` over the ``x`` groups of ``pattern``'s matches in the final turn."""
  return _last_valid((m.group("x") for m in pattern.finditer(final_turn(text))), ctx)


def _one_letter(value: str, ctx: Context) -> str | None:
  """``value`` if it is one letter; else its one '.'-separated part that is a valid option
  (``"B. C"`` with only B valid -> ``"B"``; ``"A. B"`` -> None)."""
  if _index(value, ctx) is not None:
    return value
  parts = [p for p in value.split(".") if _index(p, ctx) is not None]
  return parts[0] if len(parts) == 1 else None


def _single_letter(text: str, ctx: Context) -> str | None:
  del ctx
  s = final_turn(text).strip()
  return s if len(s) <= 8 else None  # normalise_letter decides; a long text is no letter


_JSON_OBJECT = re.compile(r"\{[^{}]*?[\"']choice[\"'][^{}]*\}")
_JSON_VALUE = re.compile(r"[\"']choice[\"']\s*:\s*(?:\"([^\"]*)\"|'([^']*)')")


def _json_choice(text: str, ctx: Context) -> str | None:
  found = None
  for m in _JSON_OBJECT.finditer(final_turn(text)):
    try:
      obj = json.loads(m.group())
      value = obj.get("choice") if isinstance(obj, dict) else None
    except json.JSONDecodeError:  # single quotes, a trailing comma, ...: read the value alone
      v = _JSON_VALUE.search(m.group())
      value = next((g for g in v.groups() if g is not None), None) if v else None
    if not isinstance(value, str):
      continue
    letter = _one_letter(value, ctx)
    if letter is not None:
      found = letter
  return found


_LEADING = re.compile(rf"^\s*[(\[]?{_ANY_CASE}\s*[.)\]:]")
_UPPER_RE = re.compile(_UPPER)


def _leading_letter(text: str, ctx: Context) -> str | None:
  s = final_turn(text)
  m = _LEADING.match(s)
  if m is None:
    return None
  rest = s[m.end():]
  # An output naming a second option is no answer: "A. B", "(B) and (C)", "B. C or D",
  # "A. Paris B. London". So is option text holding a standalone capital that is an
  # option letter ("B. Vitamin C"): the reference reads all of these as format errors.
  if _index(rest, ctx) is not None or _LEADING.match(rest):
    return None
  if any(_index(c.group("x"), ctx) is not None for c in _UPPER_RE.finditer(rest)):
    return None
  return m.group("x")


_TAGS = re.compile(r"<\s*ANSWER\s*>\s*([^<>]{0,24}?)\s*<\s*/\s*ANSWER\s*>", re.IGNORECASE)


def _answer_tags(text: str, ctx: Context) -> str | None:
  return _last_valid((m.group(1) for m in _TAGS.finditer(final_turn(text))), ctx)


# What may stand between an answer phrase and its letter: a colon or dash, the word "option"
# in some language, an opening bracket or emphasis.
_OPTION_WORD = (r"(?:option|choice|letter|opci[oó]n|op[çc][ãa]o|alternativa|variante|"
                r"вариант|варіант|опција|الخيار|خيار|گزینه|विकल्प|বিকল্প|ఎంపిక|"
                r"opcija|variantas|lehet[őo]s[ée]g)")
_TAIL = (rf"\s*[:：\-–—]?\s*(?i:{_OPTION_WORD}\s*)?[(\[*\"'«“]*\s*")

_ENGLISH = (r"(?i:\b(?:(?:correct|right|final|best)\s+(?:answer|option|choice)"
            r"(?:\s+(?:is|would\s+be|will\s+be|should\s+be))?|answer\s+is|answer(?=\s*:)))")
_CORRECT_ANSWER_IS = re.compile(_ENGLISH + _TAIL + _UPPER)


def _correct_answer_is(text: str, ctx: Context) -> str | None:
  return _last_match(_CORRECT_ANSWER_IS, text, ctx)


# In-language answer phrases (ours): "<the correct> answer <is>" in each Kaleidoscope language.
# English lives in correct_answer_is.
ANSWER_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (),
    "es": (r"respuesta(?:\s+(?:correcta|final))?(?:\s+es)?", r"opci[oó]n\s+correcta(?:\s+es)?"),
    "fr": (r"r[ée]ponse(?:\s+(?:correcte|finale))?(?:\s+est)?",
           r"bonne\s+r[ée]ponse(?:\s+est)?"),
    "de": (r"antwort(?:\s+(?:ist|lautet))?",
           r"(?:richtige|korrekte)\s+antwort(?:\s+(?:ist|lautet))?"),
    "nl": (r"(?:juiste\s+)?antwoord(?:\s+is)?",),
    "pt": (r"resposta(?:\s+(?:correta|certa|final))?(?:\s+[ée])?",
           r"(?:alternativa|op[çc][ãa]o)\s+correta(?:\s+[ée])?"),
    "hu": (r"(?:helyes\s+)?v[áa]lasz(?:\s+az?)?",),
    "hr": (r"(?:to[čc]an\s+)?odgovor(?:\s+je)?",),
    "lt": (r"(?:teisingas\s+)?atsakymas(?:\s+yra)?",),
    "ru": (r"(?:правильный\s+|верный\s+)?ответ", r"(?:правильный|верный)\s+вариант"),
    "uk": (r"(?:правильна\s+)?відповідь", r"правильний\s+варіант"),
    "sr": (r"(?:тачан\s+)?одговор(?:\s+је)?", r"(?:ta[čc]an\s+)?odgovor(?:\s+je)?"),
    "ar": (r"(?:الإجابة|الاجابة|الجواب)(?:\s+(?:الصحيحة|الصحيح))?(?:\s+(?:هي|هو))?",),
    "fa": (r"(?:پاسخ|جواب)(?:\s+(?:صحیح|درست))?(?:\s+(?:است|برابر))?",
           r"گزینه\s+(?:صحیح|درست)(?:\s+است)?"),
    "hi": (r"(?:सही\s+)?उत्तर(?:\s+है)?", r"सही\s+विकल्प(?:\s+है)?"),
    "ne": (r"(?:सही\s+)?उत्तर(?:\s+हो)?", r"सही\s+विकल्प(?:\s+हो)?"),
    "bn": (r"(?:সঠিক\s+)?উত্তর(?:\s+(?:হলো|হল))?", r"সঠিক\s+বিকল্প"),
    "te": (r"(?:సరైన\s+)?సమాధానం", r"సరైన\s+ఎంపిక"),
}


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern | None:
  if not phrases:
    return None
  return re.compile(rf"(?<!{_WORD})(?i:{'|'.join(phrases)})" + _TAIL + _UPPER)


_PHRASE_PATTERNS = {lang: _phrase_pattern(p) for lang, p in ANSWER_PHRASES.items()}
_ALL_PHRASES = _phrase_pattern([p for ps in ANSWER_PHRASES.values() for p in ps])


def _answer_phrase(text: str, ctx: Context) -> str | None:
  """The item's language's phrases; every language's for a language we have none for."""
  pattern = _PHRASE_PATTERNS.get(ctx.language, _ALL_PHRASES)
  return None if pattern is None else _last_match(pattern, text, ctx)


_BOLD = re.compile(rf"\*\*\s*[(\[]?{_UPPER}[)\]]?(?:[.:)]?\s[^*\n]*|[.:)])?\s*\*\*")
_BOXED = re.compile(rf"\\boxed\{{\s*(?:\\text(?:bf)?\{{)?\s*\(?{_ANY_CASE}\)?\s*\}}?\s*\}}")
_PAREN = re.compile(rf"\(\s*{_UPPER}\s*\)")
_LINE_DOT = re.compile(rf"^[ \t>#*-]*\(?{_UPPER}\s*[.)]", re.MULTILINE)


def _bold_letter(text: str, ctx: Context) -> str | None:
  return _last_match(_BOLD, text, ctx)


def _boxed(text: str, ctx: Context) -> str | None:
  return _last_match(_BOXED, text, ctx)


def _paren_letter(text: str, ctx: Context) -> str | None:
  return _last_match(_PAREN, text, ctx)


def _letter_dot(text: str, ctx: Context) -> str | None:
  return _last_match(_LINE_DOT, text, ctx)


SINGLE_LETTER = Rule("single_letter", _single_letter)
JSON_CHOICE = Rule("json_choice", _json_choice)
LEADING_LETTER = Rule("leading_letter", _leading_letter)
ANSWER_TAGS = Rule("answer_tags", _answer_tags)
CORRECT_ANSWER_IS = Rule("correct_answer_is", _correct_answer_is)
ANSWER_PHRASE = Rule("answer_phrase", _answer_phrase)
BOLD_LETTER = Rule("bold_letter", _bold_letter)
BOXED = Rule("boxed", _boxed)
PAREN_LETTER = Rule("paren_letter", _paren_letter)
LETTER_DOT = Rule("letter_dot", _letter_dot)

DIRECT_RULES: tuple[Rule, ...] = (SINGLE_LETTER, JSON_CHOICE, LEADING_LETTER)
COT_RULES: tuple[Rule, ...] = (ANSWER_TAGS, CORRECT_ANSWER_IS, ANSWER_PHRASE, BOLD_LETTER,
                               BOXED, PAREN_LETTER, LETTER_DOT, SINGLE_LETTER)


# ---------------------------------------------------------------------------------------------
# Metrics


@dataclasses.dataclass(frozen=True)
class Scored:
  """One scored item.

  Attributes:
    key: unique id of the item.
    answer: the right option's 0-based index.
    choice: the extracted index; None: invalid (a format error).
    groups: grouping name -> this item's value, e.g. ``{"language": "es", "domain": "STEM"}``.
  """
  key: str
  answer: int
  choice: int | None
  groups: Mapping[str, str]


def _is_index(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0


def _outcomes(items: Sequence[Scored]) -> tuple[np.ndarray, np.ndarray]:
  """``(correct [n], valid [n])`` as floats, after checking the items.

  Raises:
    DataError: no items, a repeated key, or an answer/choice that is not an option index.
  """
  if not items:
    raise DataError("no scored items: expected at least one")
  seen: set[str] = set()
  for it in items:
    if it.key in seen:
      raise DataError(f"item {it.key!r}: key appears twice; expected unique item keys")
    seen.add(it.key)
    if not _is_index(it.answer):
      raise DataError(f"item {it.key!r}: answer={it.answer!r}, expected a 0-based option index")
    if it.choice is not None and not _is_index(it.choice):
      raise DataError(f"item {it.key!r}: choice={it.choice!r}, expected an index or None")
  valid = np.asarray([it.choice is not None for it in items], np.float64)
  correct = np.asarray([it.choice == it.answer for it in items], np.float64)
  return correct, valid


def _group_labels(items: Sequence[Scored], by: str) -> list[str]:
  out = []
  for it in items:
    if by not in it.groups:
      raise DataError(f"item {it.key!r}: no group {by!r} (has {sorted(it.groups)}); expected "
                      f"every item to carry each grouping it is scored by")
    out.append(str(it.groups[by]))
  return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den, NaN where den is 0 (no warning)."""
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _rates(w: np.ndarray, correct: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """The three metrics of resamples given as item weights ``[b, n]`` -> ``[b, 3]``."""
  n, c, v = w.sum(axis=1), w @ correct, w @ valid
  return np.stack([_ratio(c, n), _ratio(c, v), _ratio(n - v, n)], axis=1)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
  """Mean over the finite entries along ``axis`` (NaN where there are none; no warning)."""
  ok = np.isfinite(x)
  return _ratio(np.where(ok, x, 0.0).sum(axis=axis), ok.sum(axis=axis).astype(np.float64))


def _num(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


def _interval(lo_hi: np.ndarray) -> list[float] | None:
  lo, hi = (_num(v) for v in lo_hi)
  return None if lo is None or hi is None else [lo, hi]


def _report(point: np.ndarray, ci: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for name, p, lo_hi in zip(names, point, ci):
    out[name] = _num(p)
    out[name + "_ci"] = _interval(lo_hi) if out[name] is not None else None
  return out


def _metrics(correct: np.ndarray, valid: np.ndarray, num_bootstrap: int, seed: int,
             names: Sequence[str] = METRICS) -> dict[str, Any]:
  def statistic(w):
    return _rates(w, correct, valid)
  point = statistic(np.ones((1, correct.size)))[0]
  ci = stats.bootstrap_interval(statistic, correct.size, num_resamples=num_bootstrap, seed=seed)
  return _report(point, ci, names)


def group_metrics(items: Sequence[Scored], by: str, *, num_bootstrap: int = 1000,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
  """Per value of the grouping ``by`` (sorted): ``n``, ``num_valid``, ``num_correct``, the three
  metrics and their 95% bootstrap intervals ``<metric>_ci = [lo, hi]`` (items of the group
  resampled; a resample without a valid answer is left out of the valid-accuracy interval).
  ``valid_accuracy`` and its interval are None when no answer in the group is valid."""
  correct, valid = _outcomes(items)
  labels = np.asarray(_group_labels(items, by), dtype=object)
  out = {}
  for value in sorted(set(labels)):
    sel = labels == value
    out[value] = {"n": int(sel.sum()), "num_valid": int(valid[sel].sum()),
                  "num_correct": int(correct[sel].sum()),
                  **_metrics(correct[sel], valid[sel], num_bootstrap, seed)}
  return out


def summary(items: Sequence[Scored], by: str = "language", *, num_bootstrap: int = 1000,
            seed: int = 0) -> dict[str, Any]:
  """Macro (over the groups of ``by``) and micro (over items) averages of the three metrics.

  Macro: each group's metric, averaged with equal weight per group; valid accuracy averages the
  groups where it is defined. Its interval resamples items within each group (group sizes
  fixed). Micro: over all items, resampled together.

  Returns:
    ``{"by", "n", "num_groups", "macro": {"total_accuracy_macro_<by>": x,
    "total_accuracy_macro_<by>_ci": [lo, hi], ...}, "micro": {"total_accuracy_micro": x, ...}}``.
  """
  correct, valid = _outcomes(items)
  labels = _group_labels(items, by)
  groups = sorted(set(labels))
  codes = np.asarray([groups.index(g) for g in labels])
  onehot = np.eye(len(groups))[codes]  # [n, G]

  def macro(w):
    n, c, v = w @ onehot, (w * correct) @ onehot, (w * valid) @ onehot  # [b, G]
    per_group = [_ratio(c, n), _ratio(c, v), _ratio(n - v, n)]
    return np.stack([_nanmean(m, axis=1) for m in per_group], axis=1)

  point = macro(np.ones((1, correct.size)))[0]
  ci = stats.bootstrap_interval(macro, codes, num_resamples=num_bootstrap, seed=seed)
  return {"by": by, "n": int(correct.size), "num_groups": len(groups),
          "macro": _report(point, ci, [f"{m}_macro_{by}" for m in METRICS]),
          "micro": _metrics(correct, valid, num_bootstrap, seed, [f"{m}_micro" for m in METRICS])}


def breakdowns(items: Sequence[Scored], keys: Sequence[str],
               **kw: Any) -> dict[str, dict[str, dict[str, Any]]]:
  """``{key: group_metrics(items, key, **kw)}`` for each grouping in ``keys``."""
  return {key: group_metrics(items, key, **kw) for key in keys}


# ---------------------------------------------------------------------------------------------
# Results files

RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
PLOT_FILE = "per_language.png"


def write_results(workdir: str, *, task: str, items: Sequence[Scored],
                  breakdown_keys: Sequence[str], config: Mapping[str, Any],
                  per_item: Sequence[Mapping[str, Any]], num_bootstrap: int = 1000,
                  seed: int = 0, macro_by: str = "language") -> dict[str, Any]:
  """Writes ``results.json``, ``samples.jsonl`` and ``per_language.png`` into ``workdir``.

  ``results.json`` follows the layout lm-evaluation-harness / lmms-eval users know, with our
  metric names: ``results[task]`` maps ``"<metric>,<aggregate>"`` to a number and
  ``"<metric>_ci,<aggregate>"`` to its 95% bootstrap interval (where lm-eval gives
  ``"acc_stderr,none"``), aggregates ``macro_<macro_by>`` and ``micro``; ``breakdowns`` holds
  :func:`group_metrics` for ``macro_by`` and each of ``breakdown_keys``; ``configs``,
  ``versions``, ``n-samples`` and ``higher_is_better`` are keyed by task as in lm-eval;
  ``bootstrap`` says how intervals were computed. ``samples.jsonl`` holds ``per_item``
  verbatim, one object a line. The PNG shows each ``macro_by`` group's total accuracy with
  its interval.

  Returns:
    The dict written to ``results.json``.

  Raises:
    DataError: bad items (see :func:`summary`) or a per-item row that is not a JSON object.
  """
  samples_path = os.path.join(workdir, SAMPLES_FILE)
  rows = []
  for i, row in enumerate(per_item):
    try:
      rows.append(json.loads(json.dumps(dict(row))))
    except (TypeError, ValueError) as err:
      raise DataError(f"{samples_path}: per-item row {i} is not a JSON object ({err})") from None
  kw = {"num_bootstrap": num_bootstrap, "seed": seed}
  summ = summary(items, macro_by, **kw)
  keys = [macro_by] + [k for k in breakdown_keys if k != macro_by]
  tables = breakdowns(items, keys, **kw)
  headline: dict[str, Any] = {"alias": task}
  for aggregate, labels in (("macro_" + macro_by, summ["macro"]), ("micro", summ["micro"])):
    for m in METRICS:
      label = f"{m}_{aggregate}"
      headline[f"{m},{aggregate}"] = labels[label]
      headline[f"{m}_ci,{aggregate}"] = labels[label + "_ci"]
  results = {
      "results": {task: headline},
      "breakdowns": tables,
      "configs": {task: dict(config)},
      "versions": {task: RESULTS_VERSION},
      "n-samples": {task: {"original": summ["n"], "effective": summ["n"]}},
      "higher_is_better": {task: dict(HIGHER_IS_BETTER)},
      "bootstrap": {"method": "percentile", "level": 0.95, "num_resamples": num_bootstrap,
                    "seed": seed, "macro": f"mean over {macro_by} groups, items resampled "
                                           f"within each group"},
  }
  files.write_json(os.path.join(workdir, RESULTS_FILE), results, indent=2)
  files.write_jsonl(samples_path, rows)
  plot_groups(os.path.join(workdir, PLOT_FILE), tables[macro_by], macro_by,
               summ["macro"][f"total_accuracy_macro_{macro_by}"], task)
  return results


def plot_groups(path: str, table: Mapping[str, Mapping[str, Any]], by: str,
                 macro: float | None, title: str) -> None:
  """Bar chart of each group's total accuracy with its bootstrap interval, written atomically."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # files only
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  names = list(table)
  acc = np.asarray([table[g]["total_accuracy"] for g in names], np.float64)
  cis = [table[g]["total_accuracy_ci"] or [a, a] for g, a in zip(names, acc)]
  err = np.abs(np.asarray([[a - lo, hi - a] for a, (lo, hi) in zip(acc, cis)]).T)
  fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 1.5), 3.5))
  ax.bar(names, acc, yerr=err, capsize=3, color="#4c72b0")
  if macro is not None:
    ax.axhline(macro, color="k", lw=1, ls="--", label=f"macro {macro:.3f}")
    ax.legend(fontsize=8)
  ax.set_ylim(0, 1)
  ax.set_xlabel(by)
  ax.set_ylabel("total accuracy (95% bootstrap CI)")
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  files.write_figure(path, fig)
  plt.close(fig)
