"""The model store in an MLflow model registry (`model_store = "mlflow"`).

    registered model <model_id>            one per model, tagged driftline=true; its newest
                                           retrain.keep_versions versions are kept (and the current)
    its alias `champion`                   the current version (aliases, not the deprecated stages)
    model version <n>                      a candidate: source runs:/<run>/model, tags = the metadata
                                           (trigger_id, decision, data_ranges, parent_version,
                                           artifact_sha256, reference_profile, ...)
    run of experiment `mlflow.experiment`  one per retrain: params (trainer, row counts, trigger
                                           types), the training and holdout windows, the
                                           challenger's and champion's validation metrics,
                                           artifacts model/model.joblib and reference_profile.bin

A metadata field is a version tag: a string as it is, anything else as JSON (the tag
`driftline.json_fields` names those), so `tag.trigger_id = '...'` finds a trigger's version.
Promotion moves the alias in one registry update. As in the files store, `load_model`
downloads the artifact and unpickles it only when its SHA-256 is the one recorded at
`add_version` (the training process's own digest).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import joblib
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from retrain.errors import ModelStoreError
from retrain.launch import sha256_of
from retrain.model_store import ARTIFACT, PROFILE, SAFE_NAME, ModelStore, version_record
from schemas.logs import get_logger
from schemas.settings import MlflowSettings

log = get_logger(__name__)

CHAMPION = "champion"
JSON_FIELDS = "driftline.json_fields"
MODEL_PATH = "model"  # the run's artifact folder that a version's source names
MAX_TAG_CHARS = 100_000  # the registry's limit on a model version tag's value


def default_artifact_location(tracking_uri: str) -> str | None:
    """Beside a sqlite:/// file, so every process (whatever its working folder) uses one."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    database = Path(tracking_uri[len("sqlite:///"):]).resolve()
    return str(database.parent / "mlflow-artifacts")


def _missing(error: MlflowException) -> bool:
    return error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class MlflowModelStore(ModelStore):
    def __init__(self, settings: MlflowSettings, keep_versions: int) -> None:
        self.keep_versions = keep_versions
        uri = settings.tracking_uri
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = uri
        # MLflow draws a progress bar per download on stderr, between the structured logs.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.experiment = settings.experiment
        self.artifact_location = settings.artifact_location or default_artifact_location(uri)
        self._experiment_id: str | None = None

    # -- names ---------------------------------------------------------------------------
    @staticmethod
    def _name(model_id: str) -> str:
        if not SAFE_NAME.match(model_id):
            raise ModelStoreError(f"model id {model_id!r} is not a safe registered model name")
        return model_id

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=self.artifact_location
                    )
                except MlflowException:  # another process created it first
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            if self._experiment_id is None:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _version(self, model_id: str, version: str):
        try:
            return self.client.get_model_version(self._name(model_id), str(version))
        except MlflowException as error:
            if _missing(error):
                raise ModelStoreError(f"model {model_id} has no version {version}") from error
            raise

    # -- reading -------------------------------------------------------------------------
    def models(self) -> list[str]:
        found = self.client.search_registered_models(filter_string="tags.driftline = 'true'")
        return sorted(model.name for model in found)

    def versions(self, model_id: str) -> list[str]:
        found = self.client.search_model_versions(f"name = '{self._name(model_id)}'")
        return sorted((str(v.version) for v in found), key=int)

    def current_version(self, model_id: str) -> str | None:
        try:
            aliases = self.client.get_registered_model(self._name(model_id)).aliases
        except MlflowException as error:
            if _missing(error):
                return None
            raise
        version = aliases.get(CHAMPION)
        return None if version is None else str(version)

    def metadata(self, model_id: str, version: str) -> dict[str, Any]:
        return _decode(self._version(model_id, version))

    def load_model(self, model_id: str, version: str | None = None) -> Any:
        version = version or self.current_version(model_id)
        if version is None:
            raise ModelStoreError(f"model {model_id} has no current version")
        found = self._version(model_id, version)
        expected = found.tags.get("artifact_sha256")
        if not expected:
            raise ModelStoreError(f"version {version} of {model_id} has no recorded SHA-256; not loaded")
        folder = Path(tempfile.mkdtemp(prefix=f"driftline-{model_id}-"))
        try:
            path = Path(self.client.download_artifacts(found.run_id, f"{MODEL_PATH}/{ARTIFACT}", str(folder)))
            if sha256_of(path) != expected:
                raise ModelStoreError(
                    f"version {version} of {model_id}: the artifact's SHA-256 differs from the one recorded; "
                    f"not loaded"
                )
            return joblib.load(path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def find_by_trigger(self, model_id: str, trigger_id: str) -> dict[str, Any] | None:
        name = self._name(model_id)
        query = f"name = '{name}'"
        if not set(trigger_id) & {"'", "\\"}:  # else the filter's quoting: all versions, compared below
            query += f" and tag.trigger_id = '{trigger_id}'"
        found = self.client.search_model_versions(query)
        matching = [v for v in found if v.tags.get("trigger_id") == trigger_id]
        if not matching:
            return None
        return _decode(max(matching, key=lambda v: int(v.version)))

    def reference_profile_path(self, model_id: str, version: str) -> str:
        uri = self._version(model_id, version).tags.get("reference_profile")
        if not uri:
            raise ModelStoreError(f"version {version} of {model_id} has no reference profile")
        return uri

    # -- writing -------------------------------------------------------------------------
    def _registered(self, model_id: str) -> str:
        name = self._name(model_id)
        try:
            self.client.create_registered_model(name, tags={"driftline": "true"})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return name

    def add_version(
        self, model_id: str, artifact: Path, metadata: dict[str, Any], sha256: str | None = None
    ) -> str:
        stored = sha256_of(artifact)
        if sha256 is not None and stored != sha256:
            raise ModelStoreError(
                f"the artifact of {model_id} differs from the one its training wrote (SHA-256 mismatch)"
            )
        name = self._registered(model_id)
        trigger_id = str(metadata.get("trigger_id", ""))
        run = self.client.create_run(
            self._experiment(),
            run_name=f"retrain-{model_id}"[:250],
            tags={"model_id": model_id, "trigger_id": trigger_id,
                  "trigger_types": ",".join(metadata.get("trigger_types", []))},
        )
        run_id = run.info.run_id
        self._log_run_inputs(run_id, metadata)
        staging = Path(tempfile.mkdtemp(prefix=f"driftline-{model_id}-"))
        try:
            shutil.copyfile(artifact, staging / ARTIFACT)
            self.client.log_artifact(run_id, str(staging / ARTIFACT), MODEL_PATH)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record = version_record(metadata, model_id=model_id, sha256=stored,
                                parent_version=self.current_version(model_id), run_id=run_id)
        # The tags come with the version in one registry call: a version is never without
        # its trigger_id, so a redelivered trigger always finds it.
        created = self.client.create_model_version(
            name, f"{run.info.artifact_uri}/{MODEL_PATH}", run_id=run_id, tags=_encode(record)
        )
        log.info("version_registered", model=model_id, version=created.version, run_id=run_id)
        return str(created.version)

    def _log_run_inputs(self, run_id: str, metadata: dict[str, Any]) -> None:
        params = {f"rows.{key}": value for key, value in (metadata.get("data_counts") or {}).items()}
        params.update({key: metadata[key] for key in ("trainer", "trigger_id") if key in metadata})
        params["trigger_types"] = ",".join(metadata.get("trigger_types", []))
        for key, value in params.items():
            self.client.log_param(run_id, key, str(value)[:6000])
        for key in ("training_window", "holdout_window", "data_ranges"):
            if metadata.get(key):
                self.client.log_dict(run_id, metadata[key], f"{key}.json")

    def write_profile(self, model_id: str, version: str, profile: bytes) -> None:
        found = self._version(model_id, version)
        staging = Path(tempfile.mkdtemp(prefix=f"driftline-{model_id}-"))
        try:
            (staging / PROFILE).write_bytes(profile)
            self.client.log_artifact(found.run_id, str(staging / PROFILE))
            digest = sha256_of(staging / PROFILE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.update_metadata(
            model_id, version, reference_profile=f"runs:/{found.run_id}/{PROFILE}", reference_profile_sha256=digest
        )

    def update_metadata(self, model_id: str, version: str, **fields: Any) -> dict[str, Any]:
        found = self._version(model_id, version)
        name = found.name
        for key, value in _encode({**_decode(found), **fields}).items():
            if found.tags.get(key) != value:
                self.client.set_model_version_tag(name, str(version), key, value)
        validation = fields.get("validation") or {}
        for role, scores in (("challenger", validation.get("new")), ("champion", validation.get("current"))):
            for metric, value in (scores or {}).items():
                if value is not None:
                    self.client.log_metric(found.run_id, f"{role}_{metric}", float(value))
        if "decision" in fields:
            self.client.set_tag(found.run_id, "decision", str(fields["decision"]))
            if self.client.get_run(found.run_id).info.status == "RUNNING":
                self.client.set_terminated(found.run_id, "FAILED" if fields["decision"] == "failed" else "FINISHED")
        return self.metadata(model_id, version)

    def promote(self, model_id: str, version: str) -> None:
        found = self._version(model_id, version)
        if not found.tags.get("reference_profile"):
            raise ModelStoreError(f"version {version} of {model_id} has no reference profile")
        self.client.set_registered_model_alias(found.name, CHAMPION, str(version))
        self.update_metadata(model_id, version, promoted_at=dt.datetime.now(dt.timezone.utc).isoformat())
        self.prune(model_id)

    def _delete_version(self, model_id: str, version: str) -> None:
        """The registered version goes; its run, with the model and profile, stays."""
        self.client.delete_model_version(self._name(model_id), str(version))


def _encode(metadata: dict[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    as_json = []
    for key, value in metadata.items():
        if key in ("version", JSON_FIELDS):
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        if not isinstance(value, str) and len(text) <= MAX_TAG_CHARS:
            as_json.append(key)
        tags[key] = text[:MAX_TAG_CHARS]  # a longer JSON value is kept as its truncated text
    tags[JSON_FIELDS] = ",".join(sorted(as_json))
    return tags


def _decode(found) -> dict[str, Any]:
    tags = dict(found.tags)
    as_json = set(filter(None, tags.pop(JSON_FIELDS, "").split(",")))
    metadata = {key: json.loads(value) if key in as_json else value for key, value in tags.items()}
    metadata["version"] = str(found.version)
    return metadata
