"""Exceptions of the ``detectors`` package, all built on one base class."""

from __future__ import annotations


class DetectorError(ValueError):
    """Base class of every error raised by ``detectors``."""


class EmptyReferenceError(DetectorError):
    """The reference data has no usable rows or columns."""


class ConfigError(DetectorError):
    """A detector setting is unknown or out of range."""


class StateError(DetectorError):
    """Saved state bytes are unreadable or belong to another object."""
