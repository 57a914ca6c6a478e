"""The one error type of the ``devices`` package's parsers.

``devices`` reads input files (bandwidth traces, availability traces, model ``config.json`` files) but
knows nothing about scenarios; its parsers raise :class:`DeviceInputError`, whose message names the
file and the line or key at fault, and the scenario loader (``sim``) turns it into its own error that
names the scenario key.
"""

from __future__ import annotations


class DeviceInputError(ValueError):
    """A device-side input file is unreadable or malformed; ``str(e)`` names the file and what is wrong."""


EXCERPT_CHARS = 40
"""The most characters of a user file (or a value read from one) that a message may quote."""


def excerpt(text: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable quotation of ``text`` for an error message: at most ``limit`` characters of it,
    control and non-printable characters escaped (``\\n``, ``\\x1b``), cut with "…" when longer, in quotes.

    Messages quote input files at most this much, so an error about ``/proc/self/environ`` or a key file
    given as a trace cannot print the file back."""
    s = str(text)
    cut = len(s) > limit
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s[:limit])
    return f"'{shown}{'…' if cut else ''}'"
