"""The command line of every launcher: bad input ends with one ``error:`` line on stderr and
exit status 2, never a traceback or absl's two-line ``FATAL Flags parsing error``.

    from launch import cli
    ...
    if __name__ == "__main__":
      cli.run(main)          # absl's app.run with the parsing below

``fail`` is for the checks a launcher makes after parsing (a missing file, a bad value). The
benchmark scripts start the same way.
"""

from __future__ import annotations

import sys
import threading

from absl import app, flags


def fail(message: str, code: int = 2) -> None:
  """One line on stderr (whitespace collapsed), no traceback, exit status ``code``."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  # The run is over. Background threads (orbax's asynchronous checkpointing) may still be
  # winding down and can raise while the interpreter shuts down ("Event loop is closed");
  # their tracebacks would bury the line above, so they are not printed from here on.
  threading.excepthook = lambda args: None
  sys.unraisablehook = lambda unraisable: None
  sys.exit(code)


def flag_error(err: flags.Error) -> str:
  """absl's message for a bad flag as one line. A config file whose ``get_config`` raised
  arrives with the traceback inside the message: keep the head and the exception's last line."""
  text = str(err)
  if "Traceback (most recent call last)" in text:
    head = text.split("Traceback (most recent call last)")[0].strip()
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    text = f"{head} {last}"
  if ("get_config() takes 0 positional arguments" in text
      and ": Error whilst parsing" in text and text.startswith("flag --config=")):
    # A ':<arg>' given to a config file without arms: absl reports Python's TypeError.
    flag = text.split(": Error whilst parsing", 1)[0].removeprefix("flag ")
    path, _, arg = flag.removeprefix("--config=").rpartition(":")
    return (f"{flag}: {path} has no arms (its get_config() takes no argument); drop "
            f"':{arg}' and set keys with --config.<key>=<value>")
  return " ".join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (an unknown flag, a value of the wrong type, a missing required flag,
  a config file that fails to load), failing with :func:`fail`."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    fail(flag_error(err))
    raise  # not reached: fail exits


def run(main) -> None:
  """``app.run(main)`` with :func:`parse_flags`; an ``app.UsageError`` raised by ``main`` (a
  flag value it rejects) is one ``error:`` line too, without absl's usage text."""

  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as err:
      fail(str(err))

  app.run(guarded, flags_parser=parse_flags)
