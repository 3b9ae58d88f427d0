"""The one settings object: defaults, then a TOML file, then environment variables.

Environment variables are prefixed `DRIFTLINE_`, nested fields joined by `__`
(`DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS`, `DRIFTLINE_POSTGRES__DSN`). The file is named by
`--config` or `DRIFTLINE_CONFIG`. Only entry points build a `Settings`; everything below
them receives the parts it needs as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV_VAR = "DRIFTLINE_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    features_topic: str = "features"
    predictions_topic: str = "predictions"
    actuals_topic: str = "actuals"
    labelled_topic: str = "labelled"
    retrain_requests_topic: str = "retrain-requests"
    retrain_events_topic: str = "retrain-events"
    dead_letter_topic: str = "driftline-dead-letters"

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            config["ssl.ca.location"] = self.ssl_cafile
        return config


class PostgresSettings(_Section):
    dsn: SecretStr = SecretStr("postgresql://driftline:driftline@127.0.0.1:5433/driftline")
    db_schema: str = Field(default="public", description="schema holding driftline's tables")


class ModelSettings(_Section):
    """One monitored model: where its reference (training) data is and its baseline."""

    reference_path: Path
    task: Literal["regression", "classification"] = "regression"
    feature_columns: list[str] | None = None  # default: numeric columns but the two below
    prediction_column: str = "prediction"
    actual_column: str = "actual"
    baseline: dict[str, float] = {}  # r2, rmse, accuracy; computed from the reference when absent
    # Historical data for retraining (features and the target in `actual_column`);
    # the reference data when not set.
    training_data_path: Path | None = None


class MonitorSettings(_Section):
    """The streaming monitor (`driftline worker`)."""

    app_id: str = "driftline-monitor"
    metrics_port: int = 9464


class RetrainSettings(_Section):
    """The retrain consumer (`driftline retrainer`)."""

    group_id: str = "driftline-retrainer"
    metrics_port: int = 9465


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    postgres: PostgresSettings = PostgresSettings()
    models: dict[str, ModelSettings] = {}
    model_store_path: Path = Path(".driftline/models")
    monitor: MonitorSettings = MonitorSettings()
    retrain: RetrainSettings = RetrainSettings()
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV_VAR)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Builds the settings; `config_file` wins over `DRIFTLINE_CONFIG`."""
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            os.environ[CONFIG_ENV_VAR] = str(path)
        return cls(**overrides)
