"""`Settings.load(path)`: the file is for that construction only."""

from __future__ import annotations

from schemas.settings import CONFIG_ENV_VAR, Settings


def test_a_config_file_given_to_load_does_not_leak_into_later_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    config = tmp_path / "driftline.toml"
    config.write_text("[retrain]\npost_trigger_rows = 7\n")
    assert Settings.load(config).retrain.post_trigger_rows == 7
    assert Settings().retrain.post_trigger_rows == 500  # the default again
    monkeypatch.setenv(CONFIG_ENV_VAR, str(config))
    assert Settings().retrain.post_trigger_rows == 7  # DRIFTLINE_CONFIG still works
