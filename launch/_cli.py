"""What the evaluation launchers share: one-line errors, quiet restores, flag checks.

* :func:`run`: ``absl.app.run`` of a ``main`` whose clear errors (``ValueError``,
  ``FileNotFoundError``, ``NotADirectoryError``, :class:`UsageError`) are printed as one line on
  stderr, ``<launcher>: error: <message>``, with exit code 2 for a bad flag and 1 otherwise, instead
  of a traceback around the message (``ROBUST_JAX_TRACEBACK=1`` in the environment shows the
  traceback again, for debugging).
* :func:`quiet_read_only_restores`: drops orbax's ``Given directory is read only=...`` warning,
  which every read-only restore (``launch.eval``, ``launch.analyze``) logs and which says nothing
  wrong.
* :class:`UsageError`: a flag outside its range.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Callable

from absl import app


class UsageError(ValueError):
  """A flag outside its valid range (exit code 2)."""


def check(ok: bool, message: str) -> None:
  """Raises :class:`UsageError` with ``message`` unless ``ok``."""
  if not ok:
    raise UsageError(message)


class _DropReadOnly(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    return "Given directory is read only" not in str(record.msg)


_FILTER = _DropReadOnly()


def quiet_read_only_restores() -> None:
  """Drops orbax's read-only warning from the absl logger (idempotent)."""
  for name in ("absl", ""):
    logger = std_logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
    for handler in logger.handlers:
      if _FILTER not in handler.filters:
        handler.addFilter(_FILTER)


def run(main: Callable, prog: str) -> None:
  """``app.run(main)``, with clear errors as one line on stderr and a non-zero exit code."""

  def wrapped(argv):
    quiet_read_only_restores()
    if os.environ.get("ROBUST_JAX_TRACEBACK"):
      return main(argv)
    try:
      return main(argv)
    except UsageError as e:
      print(f"{prog}: error: {e}", file=sys.stderr)
      sys.exit(2)
    except app.UsageError as e:
      print(f"{prog}: error: {e}", file=sys.stderr)
      sys.exit(2)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
      print(f"{prog}: error: {e}", file=sys.stderr)
      sys.exit(1)

  app.run(wrapped)
