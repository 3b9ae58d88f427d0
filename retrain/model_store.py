"""The model store: one interface, `ModelStore`, and two backends chosen by the
`model_store` setting (`open_model_store`): `FileModelStore` here, and
`MlflowModelStore` (retrain/mlflow_store.py, an MLflow model registry; imported only
when configured, so nothing else loads MLflow).

Both keep the same contract (tests/retrain/test_model_store_contract.py): versions are
numbered strings; a version is added as a candidate with its metadata (`trigger_id`
among it, by which a redelivered trigger finds it again instead of training twice) and
the SHA-256 its training wrote; `load_model` unpickles only an artifact whose digest
matches the recorded one; `promote` switches the current version in one atomic step,
only to a version with a reference profile, and prunes all but `keep_versions`;
`rollback` goes back to the version current before.

The files backend: per model, numbered version folders and a pointer to the current one.

    <root>/<model_id>/versions/<n>/model.joblib            the fitted model
    <root>/<model_id>/versions/<n>/metadata.json           metrics, data ranges, parent, trigger_id,
                                                           artifact_sha256, decision (promoted,
                                                           rejected, failed, rolled_back; absent
                                                           while validating)
    <root>/<model_id>/versions/<n>/reference_profile.bin   ReferenceProfile.to_bytes(), for the monitor
    <root>/<model_id>/CURRENT                              the current version number

A version folder is built under a temporary name and renamed into place, and promotion
replaces CURRENT with `os.replace`, so a reader sees the old or the new version, never a
mix. Artifacts are loaded only from here, never from a path in a message, and only when
their content still has the SHA-256 recorded when they were added (the training
process's own digest of what it wrote): unpickling runs code, so the long-lived
retrainer never unpickles bytes that the trainer did not produce. (A version stored
before digests were recorded loads with a warning.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib

from retrain.errors import ModelStoreError
from retrain.launch import sha256_of
from schemas.logs import get_logger

if TYPE_CHECKING:
    from schemas.settings import Settings

log = get_logger(__name__)

ARTIFACT = "model.joblib"
METADATA = "metadata.json"
PROFILE = "reference_profile.bin"
POINTER = "CURRENT"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class ModelStore(ABC):
    """Where retrained models live; see the module's docstring for the contract."""

    keep_versions: int  # versions kept per model by `prune`; the current one always stays

    @abstractmethod
    def models(self) -> list[str]:
        """The models that have versions."""

    @abstractmethod
    def versions(self, model_id: str) -> list[str]:
        """A model's versions, oldest first."""

    @abstractmethod
    def current_version(self, model_id: str) -> str | None:
        """The version serving now (the files' CURRENT, MLflow's `champion` alias)."""

    @abstractmethod
    def metadata(self, model_id: str, version: str) -> dict[str, Any]:
        """Metrics, data ranges, parent_version, trigger_id, artifact_sha256, decision."""

    @abstractmethod
    def load_model(self, model_id: str, version: str | None = None) -> Any:
        """The fitted model of `version` (default: the current one), digest checked."""

    @abstractmethod
    def find_by_trigger(self, model_id: str, trigger_id: str) -> dict[str, Any] | None:
        """The metadata of the version a trigger already produced (after a crash), if any."""

    @abstractmethod
    def add_version(
        self, model_id: str, artifact: Path, metadata: dict[str, Any], sha256: str | None = None
    ) -> str:
        """Adds a candidate version (not current, no profile yet) and returns its number.
        `sha256`, the digest the training process wrote, must match the stored copy."""

    @abstractmethod
    def write_profile(self, model_id: str, version: str, profile: bytes) -> None:
        """Stores the version's reference profile (`ReferenceProfile.to_bytes()`)."""

    @abstractmethod
    def reference_profile_path(self, model_id: str, version: str) -> str:
        """Where the monitor reads the version's profile (the `reference_profile` of a
        promotion on retrain-events)."""

    @abstractmethod
    def update_metadata(self, model_id: str, version: str, **fields: Any) -> dict[str, Any]:
        """Adds or replaces metadata fields; returns the whole metadata."""

    @abstractmethod
    def promote(self, model_id: str, version: str) -> None:
        """Makes `version` current in one atomic step; it must have a reference profile."""

    @abstractmethod
    def _delete_version(self, model_id: str, version: str) -> None:
        """Removes a version for good (`prune`)."""

    def prune(self, model_id: str) -> list[str]:
        """Deletes all but the newest `keep_versions` versions; the current one stays."""
        versions = self.versions(model_id)
        current = self.current_version(model_id)
        doomed = [v for v in versions[: -self.keep_versions] if v != current]
        for version in doomed:
            self._delete_version(model_id, version)
        return doomed

    def rollback(self, model_id: str, version: str | None = None) -> str:
        """Back to `version`, or to the version that was current before the current one."""
        current = self.current_version(model_id)
        if version is None:
            if current is None:
                raise ModelStoreError(f"model {model_id} has no current version")
            version = self.metadata(model_id, current).get("parent_version")
            if version is None:
                raise ModelStoreError(f"version {current} of {model_id} has no earlier version")
        self.promote(model_id, version)
        return version


def open_model_store(settings: Settings, root: Path | None = None) -> ModelStore:
    """The configured backend; `root` replaces `model_store_path` (files backend)."""
    if settings.model_store == "mlflow":
        try:
            from retrain.mlflow_store import MlflowModelStore
        except ImportError as error:  # a bad setting: fail at once, never retried
            raise ModelStoreError(f"model_store = \"mlflow\" needs the MLflow extra: "
                                  f"pip install 'driftline[mlflow]' ({error})") from error
        return MlflowModelStore(settings.mlflow, settings.retrain.keep_versions)
    return FileModelStore(root or settings.model_store_path, settings.retrain.keep_versions)


def version_record(metadata: dict[str, Any], *, model_id: str, sha256: str, parent_version: str | None,
                   **identity: str) -> dict[str, Any]:
    """A new version's metadata as every store keeps it: the caller's (trigger, training
    window...), the artifact's digest, where it comes from, and the store's own
    identifiers (`identity`: the version, or a tracking run)."""
    return {**metadata, "artifact_sha256": sha256, "model_id": model_id, **identity,
            "parent_version": parent_version, "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class FileModelStore(ModelStore):
    def __init__(self, root: Path, keep_versions: int) -> None:
        self.root = Path(root)
        self.keep_versions = keep_versions

    # -- layout --------------------------------------------------------------------------
    def _model_dir(self, model_id: str) -> Path:
        if not SAFE_NAME.match(model_id):
            raise ModelStoreError(f"model id {model_id!r} is not a safe folder name")
        return self.root / model_id

    def version_dir(self, model_id: str, version: str) -> Path:
        path = self._model_dir(model_id) / "versions" / str(version)
        if not str(version).isdigit() or not path.is_dir():
            raise ModelStoreError(f"model {model_id} has no version {version}")
        return path

    def reference_profile_path(self, model_id: str, version: str) -> str:
        """Relative to the store root."""
        return str((self.version_dir(model_id, version) / PROFILE).relative_to(self.root))

    # -- reading -------------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, model_id: str) -> list[str]:
        folder = self._model_dir(model_id) / "versions"
        if not folder.is_dir():
            return []
        return sorted((p.name for p in folder.iterdir() if p.name.isdigit()), key=int)

    def current_version(self, model_id: str) -> str | None:
        pointer = self._model_dir(model_id) / POINTER
        return pointer.read_text().strip() if pointer.is_file() else None

    def metadata(self, model_id: str, version: str) -> dict[str, Any]:
        return json.loads((self.version_dir(model_id, version) / METADATA).read_text())

    def load_model(self, model_id: str, version: str | None = None) -> Any:
        version = version or self.current_version(model_id)
        if version is None:
            raise ModelStoreError(f"model {model_id} has no current version")
        artifact = self.version_dir(model_id, version) / ARTIFACT
        expected = self.metadata(model_id, version).get("artifact_sha256")
        if expected is None:
            log.warning("artifact_unverified", model=model_id, version=version, reason="stored without a digest")
        elif sha256_of(artifact) != expected:
            raise ModelStoreError(
                f"version {version} of {model_id}: the artifact's SHA-256 differs from the one recorded; not loaded"
            )
        return joblib.load(artifact)

    def find_by_trigger(self, model_id: str, trigger_id: str) -> dict[str, Any] | None:
        for version in reversed(self.versions(model_id)):
            metadata = self.metadata(model_id, version)
            if metadata.get("trigger_id") == trigger_id:
                return metadata
        return None

    # -- writing -------------------------------------------------------------------------
    def add_version(
        self, model_id: str, artifact: Path, metadata: dict[str, Any], sha256: str | None = None
    ) -> str:
        versions_dir = self._model_dir(model_id) / "versions"
        versions_dir.mkdir(parents=True, exist_ok=True)
        staging = versions_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            shutil.copyfile(artifact, staging / ARTIFACT)
            stored = sha256_of(staging / ARTIFACT)
            if sha256 is not None and stored != sha256:
                raise ModelStoreError(
                    f"the artifact of {model_id} differs from the one its training wrote (SHA-256 mismatch)"
                )
            while True:
                version = str(int((self.versions(model_id) or ["0"])[-1]) + 1)
                record = version_record(metadata, model_id=model_id, sha256=stored,
                                        parent_version=self.current_version(model_id), version=version)
                (staging / METADATA).write_text(json.dumps(record, indent=2, sort_keys=True))
                try:
                    # rename() onto an existing non-empty folder fails: another writer won.
                    staging.rename(versions_dir / version)
                    return version
                except OSError:
                    if not (versions_dir / version).exists():
                        raise
                    continue
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    def write_profile(self, model_id: str, version: str, profile: bytes) -> None:
        _write_atomically(self.version_dir(model_id, version) / PROFILE, profile)

    def update_metadata(self, model_id: str, version: str, **fields: Any) -> dict[str, Any]:
        record = {**self.metadata(model_id, version), **fields}
        _write_atomically(
            self.version_dir(model_id, version) / METADATA, json.dumps(record, indent=2, sort_keys=True).encode()
        )
        return record

    def promote(self, model_id: str, version: str) -> None:
        """Makes `version` current with one atomic rename, then prunes old versions."""
        if not (self.version_dir(model_id, version) / PROFILE).is_file():
            raise ModelStoreError(f"version {version} of {model_id} has no reference profile")
        _write_atomically(self._model_dir(model_id) / POINTER, f"{version}\n".encode())
        self.update_metadata(model_id, version, promoted_at=dt.datetime.now(dt.timezone.utc).isoformat())
        self.prune(model_id)

    def _delete_version(self, model_id: str, version: str) -> None:
        shutil.rmtree(self._model_dir(model_id) / "versions" / version)
