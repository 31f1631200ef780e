"""Errors the embedded engine's scheduler raises to the requests it serves.

Kept apart from ``scheduler`` (which imports torch) so that ``server.errors`` can map them to
status codes without loading the model stack.
"""

from __future__ import annotations


class QueueFullError(Exception):
    """More requests are waiting than the configured queue allows (RESOURCE_EXHAUSTED)."""


class EngineStoppedError(Exception):
    """The scheduler is not running: stopped, or died on an error (UNAVAILABLE)."""


class StepFailedError(RuntimeError):
    """A forward step raised; the requests in it are failed (INTERNAL), the engine goes on."""
