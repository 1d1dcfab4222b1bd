"""Service settings from the environment, and the `adbm-service config` command."""

from __future__ import annotations

import json

import pytest

from reference_service import cli
from reference_service.config import Settings, redact_url


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADBM_DB_POOL_MAX_SIZE", "7")
    monkeypatch.setenv("ADBM_DB_POOL_ACQUIRE_TIMEOUT_SECONDS", "0.5")
    settings = Settings()
    assert settings.db_pool_max_size == 7
    assert settings.db_pool_acquire_timeout_seconds == 0.5


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("amqp://guest:s3cret@mq:5672/") == "amqp://guest:***@mq:5672/"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_config_command_never_prints_passwords(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADBM_DATABASE_URL", "postgresql://app:hunter2@db:5432/shop")
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert json.loads(out)["database_url"] == "postgresql://app:***@db:5432/shop"


def test_config_command_reports_bad_values_by_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADBM_DB_POOL_MAX_SIZE", "0")
    assert cli.main(["config"]) == 2
    assert "ADBM_DB_POOL_MAX_SIZE" in capsys.readouterr().err
