"""The exceptions mefn raises on bad input or state.

Every message says what was expected, what was found, and how to fix it, in one line.
The CLI maps them to exit codes: :class:`InputError` and :class:`ConfigError` are usage
errors (exit 2), the others runtime failures (exit 1).
"""

from __future__ import annotations

import re


class MefnError(Exception):
    """Base class of every error mefn raises on purpose."""

    exit_code = 1


class InputError(MefnError):
    """An input file or folder is missing, unreadable, or not what was expected."""

    exit_code = 2


class GeometryError(MefnError):
    """Images do not agree in physical space (no overlap, wrong dimension, bad grid)."""

    exit_code = 1


class ConfigError(MefnError):
    """A configuration file or option is invalid."""

    exit_code = 2


class CheckpointError(MefnError):
    """A weights, checkpoint or adapter file is corrupt, foreign or incompatible."""

    exit_code = 1


class OutputError(MefnError):
    """An output cannot be written (exists without --overwrite, folder not writable)."""

    exit_code = 2


def one_line(exc: BaseException | str, limit: int = 1000) -> str:
    """``exc``'s message on one line: line breaks (with the spaces around them) become one
    space; spaces inside the text stay as they are, so file names with runs of spaces can be
    copied from it. Longer than ``limit`` characters, it is cut with "..."."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", str(exc)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
