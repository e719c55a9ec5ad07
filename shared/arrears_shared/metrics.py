"""Prometheus metrics every service exposes on /metrics (the service label comes from the scrape job)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter(
    "arrears_events_consumed_total",
    "Events taken from Kafka, by topic, type and outcome (applied, duplicate, ignored, dead_lettered).",
    ["topic", "type", "outcome"],
)
PRODUCED = Counter("arrears_events_produced_total", "Events published from the outbox, by topic.", ["topic"])
DEAD_LETTERED = Counter(
    "arrears_events_dead_lettered_total",
    "Messages sent to the DLQ, by source topic and reason kind.",
    ["topic", "kind"],
)
RETRIES = Counter("arrears_consumer_retries_total", "Handler attempts that failed and were retried.", ["topic"])
CONSUMER_LAG = Gauge("arrears_consumer_lag", "Messages behind the partition end.", ["topic", "partition", "group"])
BATCH_SECONDS = Histogram(
    "arrears_consumer_batch_seconds",
    "Time to apply one consumed batch.",
    ["group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_BACKLOG = Gauge("arrears_outbox_backlog", "Rows in the outbox waiting to be published.", ["schema"])
OUTBOX_OLDEST_AGE = Gauge("arrears_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", ["schema"])
HTTP_LATENCY = Histogram(
    "arrears_http_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# case_manager's timer sweeper sets the two gauges on every sweep and counts what it fires.
TIMERS_DUE = Gauge("arrears_timers_due", "Escalation timers whose time has come and that have not fired yet.")
TIMERS_OLDEST_DUE = Gauge(
    "arrears_timers_oldest_due_seconds", "How late the oldest due, unfired escalation timer is (0 when none is due)."
)
TIMERS_FIRED = Counter("arrears_timers_fired_total", "Escalation timers fired by the sweeper.")
# notifier counts every delivery it finishes or defers, by channel (email, sms) and outcome
# (sent, failed, deferred, suppressed; delivered once provider callbacks report it).
NOTIFICATIONS = Counter(
    "arrears_notifications_total", "Notification delivery outcomes, by channel and outcome.", ["channel", "outcome"]
)
