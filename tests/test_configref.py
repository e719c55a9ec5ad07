"""docs/operations.md's configuration reference is generated from the settings classes and cannot drift."""

from __future__ import annotations

from arrears_dev import configref
from arrears_shared.settings import CommonSettings


def test_configuration_reference_matches_the_settings() -> None:
    text = configref.DOC.read_text()
    assert configref.updated(text) == text, "run: python -m arrears_dev.configref"


def test_reference_lists_every_variable_and_marks_secrets() -> None:
    reference = configref.reference()
    for name, info in CommonSettings.model_fields.items():
        for env in configref.env_names(CommonSettings, name, info):
            assert f"`{env}`" in reference
    secret_rows = [line for line in reference.splitlines() if "**Secret**" in line]
    for env in ("ARREARS_DATABASE_URL", "ARREARS_KAFKA_SASL_PASSWORD", "ARREARS_NOTIFIER_LINK_SECRET"):
        assert any(f"`{env}`" in row for row in secret_rows), env
    assert "`ARREARS_ROLE`" in reference
