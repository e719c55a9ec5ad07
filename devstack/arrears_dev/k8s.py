"""Writes deploy/k8s/base from the code, so the manifests cannot drift from it.

Topics come from ``arrears_shared.topics``, consumer groups and ports from the table below (checked
against the services by tests/test_k8s.py), alerts and the dashboard from the metric names in
``arrears_shared.metrics``. Run ``python -m arrears_dev.k8s`` after changing any of them; the
test fails while the committed files differ from what this writes.

Everything here is plain data: the overlays under deploy/k8s/overlays patch it with kustomize.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arrears_shared.topics import ACCOUNTS, DELIVERIES, DLQ, EVENTS, INBOUND, LEDGER, NOTIFICATIONS, TOPICS

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"

PART_OF = "arrears"
KAFKA_CLUSTER = "arrears"  # Strimzi Kafka resource; its bootstrap Service is <name>-kafka-bootstrap
KAFKA_PORT = 9093  # the TLS listener; clients authenticate with SCRAM-SHA-512 as their KafkaUser
KAFKA_BOOTSTRAP = f"{KAFKA_CLUSTER}-kafka-bootstrap:{KAFKA_PORT}"
KAFKA_CA_SECRET = f"{KAFKA_CLUSTER}-cluster-ca-cert"  # created by Strimzi, key ca.crt
KAFKA_CA_DIR = "/etc/arrears/kafka-ca"
DB_CLUSTER = "arrears-db"  # CloudNativePG Cluster; its app Secret is <name>-app with key uri
UID = 10001
# Namespaces outside the app that reach it: where Prometheus runs, where the ingress controller runs,
# and where the OpenTelemetry collector listens. Overlays or the operator adjust them (docs/operations.md).
MONITORING_NS = "monitoring"
INGRESS_NS = "ingress-nginx"
OTEL_NS = "observability"
KEDA_NS = "keda"  # KEDA's operator reads consumer lag from the brokers


@dataclass(frozen=True)
class Workload:
    """One Deployment. case_manager runs as two: its API (HPA on CPU) and its worker (KEDA on lag)."""

    name: str
    service: str  # python package suffix: arrears_<service>
    port: int
    port_env: str
    role: str = "all"
    group: str | None = None
    topics: tuple[str, ...] = ()
    # Further consumer groups of the same process (not autoscaled on: low volume), as (group, topics).
    extra_consumers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    produces: tuple[str, ...] = ()  # topics its outbox relay publishes (the DLQ included)
    http_traffic: bool = True  # a Service, reachable from the ingress controller and in-cluster API clients
    autoscale: str = "keda"  # keda (lag, plus CPU when it also serves an API) or hpa (CPU)
    egress_internet_ports: tuple[int, ...] = ()
    secret_env: tuple[tuple[str, str, bool], ...] = ()  # (variable, key in Secret arrears-<name>, optional)
    extra_env: tuple[tuple[str, str], ...] = field(default=())

    @property
    def kafka_user(self) -> str:
        """The KafkaUser (and the Strimzi Secret with its password): one per service, shared by its Deployments."""
        return f"arrears-{self.service.replace('_', '-')}"

    @property
    def image(self) -> str:
        return f"arrears-{self.service.replace('_', '-')}"

    @property
    def module(self) -> str:
        return f"arrears_{self.service}.main"


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "ingest",
        "ingest",
        8001,
        "ARREARS_INGEST_PORT",
        group="arrears-ingest",
        topics=(INBOUND,),
        produces=(LEDGER, DLQ),
    ),
    Workload(
        "scoring",
        "scoring",
        8002,
        "ARREARS_SCORING_PORT",
        group="arrears-scoring",
        topics=(LEDGER,),
        extra_consumers=(("arrears-scoring-collections", (EVENTS,)),),
        produces=(ACCOUNTS, DLQ),
    ),
    Workload(
        "case-manager-api",
        "case_manager",
        8003,
        "ARREARS_CASES_PORT",
        role="api",
        autoscale="hpa",
        produces=(NOTIFICATIONS, EVENTS, DLQ),
    ),
    Workload(
        "case-manager-worker",
        "case_manager",
        8003,
        "ARREARS_CASES_PORT",
        role="worker",
        group="arrears-case-manager",
        topics=(ACCOUNTS, DELIVERIES),
        produces=(NOTIFICATIONS, EVENTS, DLQ),
        http_traffic=False,
    ),
    Workload(
        "notifier",
        "notifier",
        8004,
        "ARREARS_NOTIFIER_PORT",
        group="arrears-notifier",
        topics=(NOTIFICATIONS,),
        extra_consumers=(("arrears-notifier-cases", (EVENTS,)),),
        produces=(DELIVERIES, DLQ),
        egress_internet_ports=(25, 465, 587, 443),
        secret_env=(
            ("ARREARS_NOTIFIER_LINK_SECRET", "link-secret", False),
            ("ARREARS_SMS_AUTH_TOKEN", "sms-auth-token", False),
            ("ARREARS_SMTP_USERNAME", "smtp-username", True),
            ("ARREARS_SMTP_PASSWORD", "smtp-password", True),
        ),
    ),
)
SERVICES: tuple[str, ...] = ("ingest", "scoring", "case_manager", "notifier")


def labels(name: str, component: str = "server") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def selector(name: str, component: str = "server") -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}


def meta(name: str, component: str = "server", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "labels": labels(name, component)}
    out.update(extra)
    return out


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def common_env() -> list[dict[str, Any]]:
    return [
        {
            "name": "ARREARS_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": f"{DB_CLUSTER}-app", "key": "uri"}},
        },
    ]


def env_from(w: Workload | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"configMapRef": {"name": "arrears-config"}}]
    if w is not None:
        out.append({"configMapRef": {"name": f"arrears-{w.service.replace('_', '-')}-config"}})
    return out


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


TMP_VOLUME = {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108 - the container's own scratch space

CHECKOV_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_43=images are pinned by tag in the overlays; the release pipeline sets digests",
    "checkov.io/skip2": "CKV_K8S_35=pydantic-settings reads configuration from the environment only",
}


def deployment(w: Workload) -> dict[str, Any]:
    env = [
        *common_env(),
        {"name": "ARREARS_ROLE", "value": w.role},
        {"name": w.port_env, "value": str(w.port)},
        {"name": "OTEL_SERVICE_NAME", "value": f"arrears-{w.name}"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # Kafka over TLS, as this service's KafkaUser (KEDA's TriggerAuthentication reads the same).
        {"name": "ARREARS_KAFKA_SASL_USERNAME", "value": w.kafka_user},
        {
            "name": "ARREARS_KAFKA_SASL_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": w.kafka_user, "key": "password"}},
        },
        {"name": "ARREARS_KAFKA_SSL_CAFILE", "value": f"{KAFKA_CA_DIR}/ca.crt"},
    ]
    for var, key, optional in w.secret_env:
        env.append(
            {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": f"arrears-{w.name}", "key": key, "optional": optional}},
            }
        )
    for var, value in w.extra_env:
        env.append({"name": var, "value": value})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "timeoutSeconds": 3}
    container: dict[str, Any] = {
        "name": w.name,
        "image": w.image,
        "imagePullPolicy": "Always",
        "args": ["python", "-m", w.module, "serve"],
        "ports": [{"name": "http", "containerPort": w.port, "protocol": "TCP"}],
        "env": env,
        "envFrom": env_from(w),
        "resources": resources("100m", "256Mi", "1", "512Mi"),
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "timeoutSeconds": 3,
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        # Let endpoints and load balancers drop the pod before the server stops accepting requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "securityContext": container_security(),
        "volumeMounts": [TMP_MOUNT, {"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True}],
    }
    spec: dict[str, Any] = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector(w.name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": labels(w.name), "annotations": {"kubectl.kubernetes.io/default-container": w.name}},
            "spec": {
                "serviceAccountName": f"arrears-{w.name}",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                # Worst case: preStop 5 s + uvicorn's 20 s drain + consumers finishing their batch (up to 20 s)
                # + the relay flushing (up to 20 s), with room to spare.
                "terminationGracePeriodSeconds": 75,
                "securityContext": pod_security(),
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": key,
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector(w.name)},
                    }
                    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                ],
                "containers": [container],
                "volumes": [
                    TMP_VOLUME,
                    {
                        "name": "kafka-ca",
                        "secret": {"secretName": KAFKA_CA_SECRET, "items": [{"key": "ca.crt", "path": "ca.crt"}]},
                    },
                ],
            },
        },
    }
    # No spec.replicas: the HPA or KEDA owns the replica count, and `kubectl apply` must not reset it.
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(w.name, annotations=dict(CHECKOV_SKIPS)),
        "spec": spec,
    }


def service_account(name: str, component: str = "server") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(name, component),
        "automountServiceAccountToken": False,
    }


def service(w: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(w.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(w.name),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pdb(w: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(w.name),
        "spec": {
            # maxUnavailable (not minAvailable) so a single-replica dev install never blocks a node drain.
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector(w.name)},
        },
    }


def scaler(w: Workload) -> dict[str, Any]:
    if w.autoscale == "hpa":
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta(w.name),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
                "minReplicas": 1,
                "maxReplicas": 6,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            },
        }
    triggers: list[dict[str, Any]] = [
        {
            "type": "kafka",
            "metadata": {
                "bootstrapServers": KAFKA_BOOTSTRAP,
                "consumerGroup": w.group,
                "topic": topic,
                "lagThreshold": "500",
                "activationLagThreshold": "0",
                "offsetResetPolicy": "earliest",
                # Never more consumers than partitions: the extra ones would sit idle.
                "allowIdleConsumers": "false",
                "sasl": "scram_sha512",
                "tls": "enable",
            },
            "authenticationRef": {"name": w.name},
        }
        for topic in w.topics
    ]
    if w.http_traffic:
        triggers.append({"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}})
    partitions = min(t.partitions for t in TOPICS if t.name in w.topics)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(w.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
            # Never to zero: the pods also serve HTTP, and the case worker's timer sweeper must always run.
            "minReplicaCount": 1,
            "maxReplicaCount": partitions,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "advanced": {
                "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}
            },
            "triggers": triggers,
        },
    }


def trigger_authentication(w: Workload) -> dict[str, Any]:
    """KEDA reads the group's lag as the service's own KafkaUser (its ACLs allow describing its group)."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": meta(w.name),
        "spec": {
            "env": [{"parameter": "username", "name": "ARREARS_KAFKA_SASL_USERNAME", "containerName": w.name}],
            "secretTargetRef": [
                {"parameter": "password", "name": w.kafka_user, "key": "password"},
                {"parameter": "ca", "name": KAFKA_CA_SECRET, "key": "ca.crt"},
            ],
        },
    }


def kafka_users() -> list[dict[str, Any]]:
    """One KafkaUser per service with exactly the ACLs it needs: read its topics and its group, write what
    its outbox relay publishes."""
    users: dict[str, dict[str, Any]] = {}
    for w in WORKLOADS:
        acls = users.setdefault(w.kafka_user, {"read": set(), "write": set(), "groups": set()})
        acls["read"] |= set(w.topics)
        for extra_group, extra_topics in w.extra_consumers:
            acls["read"] |= set(extra_topics)
            acls["groups"].add(extra_group)
        acls["write"] |= set(w.produces)
        if w.group:
            acls["groups"].add(w.group)
    out = []
    for name, acls in users.items():
        rules: list[dict[str, Any]] = []
        for topic in sorted(acls["read"]):
            rules.append(
                {
                    "resource": {"type": "topic", "name": topic, "patternType": "literal"},
                    "operations": ["Read", "Describe"],
                }
            )
        for topic in sorted(acls["write"]):
            rules.append(
                {
                    "resource": {"type": "topic", "name": topic, "patternType": "literal"},
                    "operations": ["Write", "Describe"],
                }
            )
        for group in sorted(acls["groups"]):
            rules.append(
                {
                    "resource": {"type": "group", "name": group, "patternType": "literal"},
                    "operations": ["Read", "Describe"],
                }
            )
        out.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaUser",
                "metadata": {
                    "name": name,
                    "labels": {"strimzi.io/cluster": KAFKA_CLUSTER, "app.kubernetes.io/part-of": PART_OF},
                },
                "spec": {
                    "authentication": {"type": "scram-sha-512"},
                    "authorization": {"type": "simple", "acls": rules},
                },
            }
        )
    return out


def migration_job(svc: str) -> dict[str, Any]:
    name = f"{svc.replace('_', '-')}-migrate"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(name, "migration", annotations=dict(CHECKOV_SKIPS)),
        "spec": {
            "backoffLimit": 6,
            "activeDeadlineSeconds": 1800,
            # A finished Job is removed after a day, so the next `kubectl apply -k` creates it again with the
            # new image (a Job's template cannot be changed in place). Migrating to head is idempotent.
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels(name, "migration")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "serviceAccountName": f"arrears-{name}",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(),
                    "containers": [
                        {
                            "name": "migrate",
                            "image": f"arrears-{svc.replace('_', '-')}",
                            "imagePullPolicy": "Always",
                            "args": ["python", "-m", f"arrears_{svc}.main", "migrate"],
                            "env": common_env(),
                            "envFrom": [{"configMapRef": {"name": "arrears-config"}}],
                            "resources": resources("100m", "128Mi", "500m", "256Mi"),
                            "securityContext": container_security(),
                            "volumeMounts": [TMP_MOUNT],
                        }
                    ],
                    "volumes": [TMP_VOLUME],
                },
            },
        },
    }


def kafka_topics() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaTopic",
            "metadata": {
                "name": t.name.replace("_", "-"),
                "labels": {"strimzi.io/cluster": KAFKA_CLUSTER, "app.kubernetes.io/part-of": PART_OF},
                "annotations": {"arrears.dev/description": t.description},
            },
            "spec": {
                "topicName": t.name,
                "partitions": t.partitions,
                "replicas": 3,
                "config": {
                    "retention.ms": t.retention_ms,
                    "cleanup.policy": "delete",
                    "min.insync.replicas": 2,
                },
            },
        }
        for t in TOPICS
    ]


# ---------------------------------------------------------------------------------------------- network


def _peer_pods(match: dict[str, str]) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": match}}


def _peer_ns(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _tcp(*ports: int | str) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def network_policies() -> list[dict[str, Any]]:
    part_of = {"app.kubernetes.io/part-of": PART_OF}
    policies: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "arrears-default-deny", "labels": part_of},
            # Every Arrears pod (services and migration Jobs): nothing in, nothing out, unless allowed below.
            # The Kafka and PostgreSQL pods are the operators' and keep the policies their operators give them.
            "spec": {"podSelector": {"matchLabels": part_of}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "arrears-allow-dns-postgres-otel", "labels": part_of},
            "spec": {
                "podSelector": {"matchLabels": part_of},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                **_peer_ns("kube-system"),
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                    {"to": [_peer_pods({"cnpg.io/cluster": DB_CLUSTER})], "ports": _tcp(5432)},
                    {"to": [_peer_ns(OTEL_NS)], "ports": _tcp(4317, 4318)},
                ],
            },
        },
    ]
    for w in WORKLOADS:
        ingress: list[dict[str, Any]] = [{"from": [_peer_ns(MONITORING_NS)], "ports": _tcp("http")}]
        if w.http_traffic:
            ingress.append(
                {
                    "from": [_peer_ns(INGRESS_NS), _peer_pods({"arrears.dev/api-client": "true"})],
                    "ports": _tcp("http"),
                }
            )
        # Every service publishes through its outbox relay, so every one talks to the brokers.
        kafka = _peer_pods({"strimzi.io/cluster": KAFKA_CLUSTER, "strimzi.io/kind": "Kafka"})
        egress: list[dict[str, Any]] = [{"to": [kafka], "ports": _tcp(KAFKA_PORT)}]
        if w.egress_internet_ports:
            egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _tcp(*w.egress_internet_ports)})
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta(f"{w.name}-allow"),
                "spec": {
                    "podSelector": {"matchLabels": selector(w.name)},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": ingress,
                    "egress": egress,
                },
            }
        )
    return policies


# ---------------------------------------------------------------------------------------------- monitoring


def pod_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "arrears", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": "server"}
            },
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        },
    }


RUNBOOK = "https://github.com/arrears/arrears/blob/main/docs/operations.md#"


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": RUNBOOK + name.lower(),
        },
    }


ALERTS: tuple[dict[str, Any], ...] = (
    _alert(
        "ArrearsDeadLetters",
        "sum by (namespace, topic, kind) (increase(arrears_events_dead_lettered_total[15m])) > 0",
        "0m",
        "warning",
        "Messages from {{ $labels.topic }} are going to the DLQ",
        "{{ $value }} message(s) from {{ $labels.topic }} ({{ $labels.kind }}) went to collections.dlq.v1 in 15 minutes.",
    ),
    _alert(
        "ArrearsDeadLettersBurst",
        "sum by (namespace, topic) (increase(arrears_events_dead_lettered_total[15m])) > 50",
        "0m",
        "critical",
        "Many messages from {{ $labels.topic }} are going to the DLQ",
        "{{ $value }} messages dead-lettered in 15 minutes: likely a bad release or a producer sending a new shape.",
    ),
    _alert(
        "ArrearsOutboxStale",
        "max by (namespace, schema) (arrears_outbox_oldest_age_seconds) > 300",
        "5m",
        "critical",
        "The {{ $labels.schema }} outbox is not being published",
        "The oldest unpublished event in {{ $labels.schema }} is {{ $value | humanizeDuration }} old.",
    ),
    _alert(
        "ArrearsConsumerLag",
        "sum by (namespace, group) (arrears_consumer_lag) > 10000",
        "15m",
        "warning",
        "Consumer group {{ $labels.group }} is behind",
        "{{ $labels.group }} is {{ $value }} messages behind and has been for 15 minutes.",
    ),
    _alert(
        "ArrearsConsumerStalled",
        # consumed events carry the topic, not the group: match on the topic (each topic has one consumer group)
        "sum by (namespace, topic) (arrears_consumer_lag) > 0"
        " unless sum by (namespace, topic) (rate(arrears_events_consumed_total[10m])) > 0",
        "10m",
        "critical",
        "Nothing is being consumed from {{ $labels.topic }}",
        "{{ $labels.topic }} has unconsumed messages and none was consumed in 10 minutes.",
    ),
    _alert(
        "ArrearsDeliveryFailures",
        'sum by (namespace, channel) (rate(arrears_notifications_total{outcome="failed"}[30m]))'
        " / sum by (namespace, channel) (rate(arrears_notifications_total[30m])) > 0.1",
        "15m",
        "warning",
        "More than 10% of {{ $labels.channel }} notifications fail",
        "{{ $value | humanizePercentage }} of {{ $labels.channel }} notifications failed over 30 minutes.",
    ),
    _alert(
        "ArrearsTimersBehind",
        "max by (namespace) (arrears_timers_due) > 0 and max by (namespace) (arrears_timers_oldest_due_seconds) > 900",
        "10m",
        "warning",
        "Escalation timers are firing late",
        "The oldest due escalation timer is {{ $value | humanizeDuration }} late.",
    ),
    _alert(
        "ArrearsHighErrorRate",
        'sum by (namespace, container) (rate(arrears_http_request_duration_seconds_count{status=~"5.."}[5m]))'
        " / sum by (namespace, container) (rate(arrears_http_request_duration_seconds_count[5m])) > 0.05",
        "10m",
        "warning",
        "More than 5% of HTTP requests fail",
        "{{ $value | humanizePercentage }} of {{ $labels.container }} requests answered 5xx over 5 minutes.",
    ),
    _alert(
        "ArrearsPodNotReady",
        'sum by (namespace, pod) (kube_pod_status_ready{condition="false", pod=~"(ingest|scoring|case-manager-.*|notifier)-.*"}) > 0',
        "10m",
        "warning",
        "{{ $labels.pod }} is not ready",
        "{{ $labels.pod }} has failed its readiness probe (database or broker unreachable) for 10 minutes.",
    ),
)


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "arrears", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {"groups": [{"name": "arrears", "rules": list(ALERTS)}]},
    }


def dashboard() -> dict[str, Any]:
    panels: list[tuple[str, str, str]] = [
        (
            "Events consumed by type and outcome",
            "sum by (type, outcome) (rate(arrears_events_consumed_total[5m]))",
            "ops",
        ),
        ("Events produced by topic", "sum by (topic) (rate(arrears_events_produced_total[5m]))", "ops"),
        (
            "Dead-lettered by topic and kind",
            "sum by (topic, kind) (increase(arrears_events_dead_lettered_total[1h]))",
            "short",
        ),
        ("Handler retries", "sum by (topic) (rate(arrears_consumer_retries_total[5m]))", "ops"),
        ("Consumer lag by group", "sum by (group) (arrears_consumer_lag)", "short"),
        (
            "Consumer batch time p95",
            "histogram_quantile(0.95, sum by (group, le) (rate(arrears_consumer_batch_seconds_bucket[5m])))",
            "s",
        ),
        ("Outbox backlog", "max by (schema) (arrears_outbox_backlog)", "short"),
        ("Outbox oldest age", "max by (schema) (arrears_outbox_oldest_age_seconds)", "s"),
        ("Timers due", "max (arrears_timers_due)", "short"),
        ("Timers fired", "sum (rate(arrears_timers_fired_total[5m]))", "ops"),
        (
            "Notifications by channel and outcome",
            "sum by (channel, outcome) (rate(arrears_notifications_total[5m]))",
            "ops",
        ),
        (
            "HTTP latency p95 by route",
            "histogram_quantile(0.95, sum by (route, le) (rate(arrears_http_request_duration_seconds_bucket[5m])))",
            "s",
        ),
        (
            "HTTP 5xx ratio",
            'sum (rate(arrears_http_request_duration_seconds_count{status=~"5.."}[5m]))'
            " / sum (rate(arrears_http_request_duration_seconds_count[5m]))",
            "percentunit",
        ),
    ]
    out = []
    for i, (title, expr, unit) in enumerate(panels):
        out.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        "expr": expr,
                        "legendFormat": "__auto",
                    }
                ],
            }
        )
    return {
        "title": "Arrears",
        "uid": "arrears-overview",
        "tags": ["arrears"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            ]
        },
        "panels": out,
    }


# ---------------------------------------------------------------------------------------------- platform


def postgres_cluster() -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": DB_CLUSTER, "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {
            "instances": 3,
            "imageName": "ghcr.io/cloudnative-pg/postgresql:17.6",
            "primaryUpdateStrategy": "unsupervised",
            "bootstrap": {"initdb": {"database": "app", "owner": "app"}},
            "postgresql": {"parameters": {"max_connections": "200", "timezone": "UTC"}},
            "storage": {"size": "20Gi"},
            "resources": resources("500m", "1Gi", "2", "2Gi"),
            "affinity": {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname"},
        },
    }


def kafka_cluster() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaNodePool",
            "metadata": {"name": "dual-role", "labels": {"strimzi.io/cluster": KAFKA_CLUSTER}},
            "spec": {
                "replicas": 3,
                "roles": ["controller", "broker"],
                "storage": {
                    "type": "jbod",
                    "volumes": [
                        {
                            "id": 0,
                            "type": "persistent-claim",
                            "size": "50Gi",
                            "deleteClaim": False,
                            "kraftMetadata": "shared",
                        }
                    ],
                },
                "resources": resources("500m", "2Gi", "2", "2Gi"),
            },
        },
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "Kafka",
            "metadata": {
                "name": KAFKA_CLUSTER,
                "annotations": {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"},
            },
            "spec": {
                "kafka": {
                    "listeners": [
                        {
                            "name": "tls",
                            "port": KAFKA_PORT,
                            "type": "internal",
                            "tls": True,
                            "authentication": {"type": "scram-sha-512"},
                            # Strimzi turns these into the NetworkPolicy of the brokers' listener.
                            "networkPolicyPeers": [
                                {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}}},
                                _peer_ns(KEDA_NS),
                            ],
                        }
                    ],
                    "authorization": {"type": "simple"},
                    "config": {
                        "offsets.topic.replication.factor": 3,
                        "transaction.state.log.replication.factor": 3,
                        "transaction.state.log.min.isr": 2,
                        "default.replication.factor": 3,
                        "min.insync.replicas": 2,
                        "auto.create.topics.enable": False,
                    },
                },
                "entityOperator": {"topicOperator": {}, "userOperator": {}},
            },
        },
    ]


# ---------------------------------------------------------------------------------------------- output


def _dump(docs: list[dict[str, Any]]) -> str:
    header = "# Generated by `python -m arrears_dev.k8s` from the code; edit the generator, not this file.\n"
    return header + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)


def render() -> dict[str, str]:
    """Every generated file under deploy/k8s/base, by path relative to it."""
    files: dict[str, str] = {}
    for w in WORKLOADS:
        docs = [service_account(f"arrears-{w.name}"), deployment(w)]
        if w.http_traffic:
            docs.append(service(w))
        docs += [pdb(w), scaler(w)]
        if w.autoscale == "keda":
            docs.append(trigger_authentication(w))
        files[f"{w.name}.yaml"] = _dump(docs)
    jobs: list[dict[str, Any]] = []
    for svc in SERVICES:
        name = f"{svc.replace('_', '-')}-migrate"
        jobs += [service_account(f"arrears-{name}", "migration"), migration_job(svc)]
    files["migrations.yaml"] = _dump(jobs)
    files["kafka-topics.yaml"] = _dump(kafka_topics())
    files["kafka-users.yaml"] = _dump(kafka_users())
    files["network-policies.yaml"] = _dump(network_policies())
    files["monitoring.yaml"] = _dump([pod_monitor(), prometheus_rule()])
    files["grafana-dashboard.json"] = json.dumps(dashboard(), indent=2) + "\n"
    files["platform/postgres.yaml"] = _dump([postgres_cluster()])
    files["platform/kafka.yaml"] = _dump(kafka_cluster())
    files["platform/kustomization.yaml"] = _dump(
        [
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["kafka.yaml", "postgres.yaml"],
            }
        ]
    )
    files["kustomization.yaml"] = _dump(
        [
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "labels": [{"pairs": {"app.kubernetes.io/part-of": PART_OF}, "includeSelectors": False}],
                "resources": [
                    *(f"{w.name}.yaml" for w in WORKLOADS),
                    "migrations.yaml",
                    "kafka-topics.yaml",
                    "kafka-users.yaml",
                    "network-policies.yaml",
                    "monitoring.yaml",
                ],
                "configMapGenerator": [
                    {
                        "name": "arrears-config",
                        "literals": [
                            f"ARREARS_KAFKA_BOOTSTRAP_SERVERS={KAFKA_BOOTSTRAP}",
                            "ARREARS_KAFKA_ENABLE_IDEMPOTENCE=true",
                            "ARREARS_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
                            "ARREARS_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
                            "ARREARS_HTTP_HOST=0.0.0.0",
                            "ARREARS_LOG_LEVEL=INFO",
                            "ARREARS_DATABASE_POOL_SIZE=10",
                        ],
                    },
                    *({"name": f"arrears-{svc.replace('_', '-')}-config", "literals": []} for svc in SERVICES),
                    {
                        "name": "arrears-grafana-dashboard",
                        "files": ["arrears.json=grafana-dashboard.json"],
                        "options": {"labels": {"grafana_dashboard": "1"}, "disableNameSuffixHash": True},
                    },
                ],
            }
        ]
    )
    return files


def stale(base: Path = BASE) -> list[Path]:
    """Generated files that are missing or differ from what :func:`render` writes."""
    return [
        base / rel for rel, text in render().items() if not (base / rel).is_file() or (base / rel).read_text() != text
    ]


def write(base: Path = BASE) -> list[Path]:
    written = stale(base)
    files = render()
    for path in written:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[str(path.relative_to(base))])
    return written


def main() -> None:
    if "--check" in sys.argv[1:]:
        out_of_date = stale()
        for path in out_of_date:
            print(f"out of date: {path.relative_to(ROOT)} (run python -m arrears_dev.k8s)")
        sys.exit(1 if out_of_date else 0)
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
