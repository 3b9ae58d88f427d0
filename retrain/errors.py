"""Exceptions of the `retrain` package, all built on one base class."""

from __future__ import annotations


class RetrainError(Exception):
    """Base class of every error raised by `retrain`."""


class DataPreparationError(RetrainError):
    """The historical or recent data cannot be used for training."""


class TrainingFailed(RetrainError):
    """The trainer crashed, hung past its timeout or wrote no usable artifact."""


class ModelStoreError(RetrainError):
    """A model or version is missing from the store, or the store is inconsistent."""


class UnknownModel(RetrainError):
    """A trigger or command names a model that is not in the settings."""
