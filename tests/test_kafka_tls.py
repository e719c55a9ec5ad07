"""The Kafka client settings the Kubernetes manifests use: SASL_SSL with SCRAM and the cluster's own CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest

from arrears_shared.messaging.kafka import _common
from arrears_shared.settings import CommonSettings


def test_sasl_ssl_uses_the_given_ca_file_and_credentials() -> None:
    settings = CommonSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="arrears-scoring",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=certifi.where(),
    )
    opts = _common(settings)
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    assert opts["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert opts["ssl_context"].cert_store_stats()["x509_ca"] > 0
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "arrears-scoring"


def test_a_missing_ca_file_fails_at_start_not_at_first_use(tmp_path: Path) -> None:
    settings = CommonSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "absent.crt"))
    with pytest.raises(FileNotFoundError):
        _common(settings)


def test_plaintext_has_no_ssl_context() -> None:
    assert "ssl_context" not in _common(CommonSettings())
