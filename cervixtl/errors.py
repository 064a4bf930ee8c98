"""Errors a user can cause.

Every error that bad input can trigger is a :class:`CervixTLError` (or a subclass). The CLI turns it into one
line on stderr and exit status 2; the Slicer modules show its message in a dialog. Messages name the file or
value and the problem, so that a medical physicist can act on them without a traceback.
"""

from __future__ import annotations


class CervixTLError(Exception):
    """Base class of all user-facing errors (bad input, bad geometry, bad model, ...).

    ``kind`` is the one word of the ``{"stage": "error", "kind": ...}`` progress record (see
    :func:`cervixtl.progress.error_record`).
    """

    kind = "error"


class BadInput(CervixTLError):
    """A file or argument is not what was expected (not an image, empty mask, out-of-range value...)."""

    kind = "input"


class GeometryMismatch(CervixTLError):
    """Two images that must share a voxel grid (size, spacing, origin, direction) do not."""

    kind = "geometry"


class ModelError(CervixTLError):
    """A model is unknown, corrupt, fails verification or does not fit the task."""

    kind = "model"


class Cancelled(CervixTLError):
    """A long operation was cancelled by the user (SIGINT/SIGTERM or a cancel request)."""

    kind = "cancelled"
