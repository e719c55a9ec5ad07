"""deploy/k8s agrees with the code and with what a cluster needs, checked on the rendered overlays.

kubernetes-validate and checkov (``make lint``) check the Kubernetes schemas and the security baseline;
these tests check what they cannot: the custom resources (KafkaTopic, ScaledObject, PrometheusRule...),
the wiring between objects (selectors, autoscalers, Secrets, NetworkPolicies), and agreement with the
code (topics, consumer groups, ports, settings, metric names). No cluster is needed; kubectl renders.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import arrears_shared.metrics  # noqa: F401 - registers every metric
from arrears_case_manager.settings import CaseSettings
from arrears_dev import k8s
from arrears_ingest.settings import IngestSettings
from arrears_notifier.settings import NotifierSettings
from arrears_scoring.settings import ScoringSettings
from arrears_shared.runtime import Runtime
from arrears_shared.settings import CommonSettings
from arrears_shared.topics import TOPICS

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
OPERATIONS = ROOT / "docs" / "operations.md"
OVERLAY_NAMES = sorted(p.name for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())
WORKLOADS = {w.name: w for w in k8s.WORKLOADS}
SETTINGS: dict[str, type[CommonSettings]] = {
    "ingest": IngestSettings,
    "scoring": ScoringSettings,
    "case_manager": CaseSettings,
    "notifier": NotifierSettings,
}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the overlays")


def _render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=OVERLAY_NAMES)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _env_names(cls: type[BaseSettings]) -> set[str]:
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str)}
        else:
            names.add(f"ARREARS_{name}".upper())
    return names


KNOWN_ENV = set().union(
    *(_env_names(c) for c in (CommonSettings, IngestSettings, ScoringSettings, CaseSettings, NotifierSettings))
) | {"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "POD_NAME"}


def _containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


# ---------------------------------------------------------------------------------------------- code agreement


def test_generated_base_is_up_to_date() -> None:
    assert k8s.stale() == [], "run: python -m arrears_dev.k8s"


def test_workloads_match_the_services() -> None:
    """Each workload's consumer group, topics, loops and port are what the service really runs in its role."""
    import importlib

    for w in k8s.WORKLOADS:
        app_module = importlib.import_module(f"arrears_{w.service}.app")
        models = importlib.import_module(f"arrears_{w.service}.models")
        settings_cls = SETTINGS[w.service]
        settings = settings_cls(role=w.role)
        assert getattr(settings, "http_port", None) == w.port
        assert w.port_env in _env_names(settings_cls)
        runtime = Runtime(service=w.service, settings=settings, outbox_table=models.outbox, inbox_table=models.inbox)
        app_module.create_app(settings, runtime)
        groups = {(group, tuple(topics)) for group, topics in runtime.consumer_groups.items()}
        expected = {(w.group, w.topics)} if w.group else set()
        assert groups == expected | set(w.extra_consumers), w.name
        if w.role == "api":
            assert runtime.loop_names == ["outbox-relay"], "the API Deployment runs no consumer and no timer"
        if w.name == "case-manager-worker":
            assert "timer-sweeper" in runtime.loop_names


# ---------------------------------------------------------------------------------------------- rendered overlays


def test_every_topic_has_a_kafka_topic(docs: list[dict[str, Any]]) -> None:
    topics = {d["spec"]["topicName"]: d for d in of_kind(docs, "KafkaTopic").values()}
    assert set(topics) == {t.name for t in TOPICS}
    for t in TOPICS:
        spec = topics[t.name]["spec"]
        assert spec["partitions"] == t.partitions
        assert spec["config"]["retention.ms"] == t.retention_ms
        assert spec["config"]["min.insync.replicas"] <= spec["replicas"]
        assert topics[t.name]["metadata"]["labels"]["strimzi.io/cluster"] == k8s.KAFKA_CLUSTER


def test_deployments_are_hardened_and_probed(docs: list[dict[str, Any]]) -> None:
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == set(WORKLOADS)
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        assert "replicas" not in d["spec"], f"{name}: the autoscaler owns the replica count"
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["terminationGracePeriodSeconds"] >= 45
        assert {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}} in pod["volumes"]
        for c in _containers(d):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["runAsUser"] >= 10000
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
            assert c["ports"] == [{"name": "http", "containerPort": WORKLOADS[name].port, "protocol": "TCP"}]
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1], image
            assert not image.endswith(":latest"), image
            assert c["resources"]["requests"]["cpu"]
            assert c["resources"]["limits"]["memory"]
            role = {e["name"]: e.get("value") for e in c["env"]}["ARREARS_ROLE"]
            assert role == WORKLOADS[name].role
        assert pod["serviceAccountName"] in of_kind(docs, "ServiceAccount")


def test_every_variable_is_a_real_setting_and_secrets_come_from_secrets(docs: list[dict[str, Any]]) -> None:
    assert not of_kind(docs, "Secret"), "secrets are referenced, never rendered from the repository"
    configmaps = of_kind(docs, "ConfigMap")
    for cm in configmaps.values():
        if cm["metadata"]["name"].startswith("arrears-grafana"):
            continue
        assert set(cm.get("data", {})) <= KNOWN_ENV, cm["metadata"]["name"]
    for d in [*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()]:
        for c in _containers(d):
            for env in c.get("env", []):
                assert env["name"] in KNOWN_ENV, env["name"]
                if re.search("PASSWORD|SECRET|TOKEN|DATABASE_URL", env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), env["name"]
            for ref in c.get("envFrom", []):
                assert ref["configMapRef"]["name"] in configmaps


def test_one_autoscaler_per_deployment(docs: list[dict[str, Any]]) -> None:
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    scaled = of_kind(docs, "ScaledObject")
    targets = [o["spec"]["scaleTargetRef"]["name"] for o in [*hpas.values(), *scaled.values()]]
    assert sorted(targets) == sorted(WORKLOADS), "every Deployment has exactly one autoscaler, never both"
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()] == ["case-manager-api"]
    partitions = {t.name: t.partitions for t in TOPICS}
    for name, so in scaled.items():
        w = WORKLOADS[name]
        kafka = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        assert {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in kafka} == {
            (w.group, topic) for topic in w.topics
        }
        assert all(t["metadata"]["bootstrapServers"] == k8s.KAFKA_BOOTSTRAP for t in kafka)
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        assert so["spec"]["maxReplicaCount"] <= min(partitions[t] for t in w.topics)


def test_kafka_is_tls_and_scram_with_least_privilege_users(docs: list[dict[str, Any]]) -> None:
    (kafka,) = of_kind(docs, "Kafka").values()
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True
    assert listener["port"] == k8s.KAFKA_PORT
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    config = of_kind(docs, "ConfigMap")
    common = next(c for n, c in config.items() if n.startswith("arrears-config"))["data"]
    assert common["ARREARS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert common["ARREARS_KAFKA_BOOTSTRAP_SERVERS"].endswith(f":{k8s.KAFKA_PORT}")
    users = of_kind(docs, "KafkaUser")
    auths = of_kind(docs, "TriggerAuthentication")
    for name, d in of_kind(docs, "Deployment").items():
        w = WORKLOADS[name]
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["ARREARS_KAFKA_SASL_USERNAME"]["value"] == w.kafka_user
        assert env["ARREARS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == w.kafka_user
        acls = users[w.kafka_user]["spec"]["authorization"]["acls"]
        granted = {(a["resource"]["type"], a["resource"]["name"], op) for a in acls for op in a["operations"]}
        for topic in w.topics:
            assert ("topic", topic, "Read") in granted
        for topic in w.produces:
            assert ("topic", topic, "Write") in granted
        if w.group:
            assert ("group", w.group, "Read") in granted
        # nothing beyond what some workload of the same service needs
        same = [o for o in WORKLOADS.values() if o.kafka_user == w.kafka_user]
        allowed = (
            {("topic", t) for o in same for t in (*o.topics, *o.produces)}
            | {("group", o.group) for o in same if o.group}
            | {("topic", t) for o in same for _g, topics in o.extra_consumers for t in topics}
            | {("group", g) for o in same for g, _t in o.extra_consumers}
        )
        assert {(kind, res) for kind, res, _op in granted} <= allowed
    for so in of_kind(docs, "ScaledObject").values():
        for trigger in so["spec"]["triggers"]:
            if trigger["type"] == "kafka":
                assert trigger["authenticationRef"]["name"] in auths
                assert trigger["metadata"]["sasl"] == "scram_sha512"


def test_every_service_that_publishes_can_write_the_dlq() -> None:
    from arrears_shared.topics import DLQ

    for w in k8s.WORKLOADS:
        assert DLQ in w.produces, w.name


def test_services_pdbs_and_migrations(docs: list[dict[str, Any]]) -> None:
    deployments = of_kind(docs, "Deployment")
    services = of_kind(docs, "Service")
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert set(services) == {n for n, w in WORKLOADS.items() if w.http_traffic}
    for name, svc in services.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert set(pdbs) == set(deployments)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["maxUnavailable"] == 1
    jobs = of_kind(docs, "Job")
    assert set(jobs) == {f"{s.replace('_', '-')}-migrate" for s in k8s.SERVICES}
    images = {c["image"].split(":")[0] for d in deployments.values() for c in _containers(d)}
    for name, job in jobs.items():
        (c,) = _containers(job)
        service = name.removesuffix("-migrate").replace("-", "_")
        assert c["args"] == ["python", "-m", f"arrears_{service}.main", "migrate"]
        assert c["image"].split(":")[0] in images, "migrations run with the service's own image"
        assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_network_policies_deny_by_default_and_allow_exactly(docs: list[dict[str, Any]]) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    deny = policies["arrears-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    pods = [*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()]
    for d in pods:
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert deny["podSelector"]["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
    for name, w in WORKLOADS.items():
        spec = policies[f"{name}-allow"]["spec"]
        internet = [r for r in spec["egress"] if any("ipBlock" in p for p in r["to"])]
        assert bool(internet) == (name == "notifier"), "only the notifier reaches SMTP and SMS providers"
        kafka = [r for r in spec["egress"] if r["ports"] == [{"protocol": "TCP", "port": k8s.KAFKA_PORT}]]
        assert kafka, f"{name} publishes through its outbox relay"
        from_ingress = [r for r in spec["ingress"] if len(r["from"]) > 1]
        assert bool(from_ingress) == w.http_traffic


def _labelnames(metric: str) -> set[str]:
    base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
    collector = REGISTRY._names_to_collectors.get(base) or REGISTRY._names_to_collectors.get(metric)
    assert collector is not None, metric
    return set(getattr(collector, "_labelnames", ()))


def test_alerts_use_real_metrics_and_have_runbooks(docs: list[dict[str, Any]]) -> None:
    (rule,) = of_kind(docs, "PrometheusRule").values()
    metrics = {m.name for m in REGISTRY.collect()}
    names = set(metrics)
    for m in REGISTRY.collect():
        if m.type in ("counter",):
            names.add(m.name + "_total")
        if m.type == "histogram":
            names |= {m.name + "_bucket", m.name + "_count", m.name + "_sum"}
    text = OPERATIONS.read_text()
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "ArrearsDeadLetters",
        "ArrearsOutboxStale",
        "ArrearsConsumerLag",
        "ArrearsDeliveryFailures",
    }
    for alert in alerts:
        for used in re.findall(r"\barrears_[a-z_]+", alert["expr"]):
            assert used in names, f"{alert['alert']} uses unknown metric {used}"
        assert f"### {alert['alert']}\n" in text, f"docs/operations.md lacks a runbook for {alert['alert']}"
        assert alert["annotations"]["runbook_url"].endswith("#" + alert["alert"].lower())
    # Aggregations group only by labels the metric has, or that the scrape adds.
    scrape_labels = {"namespace", "pod", "container", "job", "instance"}
    for alert in alerts:
        for by, metric in re.findall(r"by \(([^)]*)\) \((?:\w+\()?(arrears_[a-z_]+)", alert["expr"]):
            wanted = {label.strip() for label in by.split(",")} - scrape_labels
            assert wanted <= _labelnames(metric), f"{alert['alert']}: {metric} has no label(s) {wanted}"
    dashboard = json.loads(of_kind(docs, "ConfigMap")["arrears-grafana-dashboard"]["data"]["arrears.json"])
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for used in re.findall(r"\barrears_[a-z_]+", target["expr"]):
                assert used in names, f"dashboard panel {panel['title']} uses unknown metric {used}"
