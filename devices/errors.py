"""The one error type of the ``devices`` package's parsers.

``devices`` reads input files (bandwidth traces, availability traces, model ``config.json`` files) but
knows nothing about scenarios; its parsers raise :class:`DeviceInputError`, whose message names the
file and the line or key at fault, and the scenario loader (``sim``) turns it into its own error that
names the scenario key.
"""

from __future__ import annotations


class DeviceInputError(ValueError):
    """A device-side input file is unreadable or malformed; ``str(e)`` names the file and what is wrong."""
