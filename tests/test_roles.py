"""case_manager's image runs as two Deployments (deploy/k8s): ARREARS_ROLE=api serves the case API and
runs no consumer and no timer; ARREARS_ROLE=worker consumes and sweeps and serves only probes and
metrics. Both are real processes on the real broker and database here, and both stop cleanly on SIGTERM
within the pod's termination grace period."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from arrears_dev import k8s
from arrears_dev.stack import StackPorts, free_port, service_env, start_service
from tests.test_e2e_flow import _ready, wait_until

pytestmark = pytest.mark.e2e
GRACE = 75  # terminationGracePeriodSeconds of the Deployments


def _start(role: str, database_url: str, broker: str, logs: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    ports = StackPorts(broker=int(broker.rsplit(":", 1)[1]), case_manager=port)
    env = service_env(database_url, ports, {"ARREARS_ROLE": role, "ARREARS_CASES_SWEEP_SECONDS": "1"})
    return start_service("case_manager", env, logs / role), port


def test_api_and_worker_roles_split_case_manager_and_stop_on_sigterm(
    database_url: str, broker: str, tmp_path: Path
) -> None:
    procs = {role: _start(role, database_url, broker, tmp_path) for role in ("api", "worker")}
    try:
        for role, (proc, port) in procs.items():
            wait_until(lambda p=port: _ready(f"http://127.0.0.1:{p}/readyz"), 90, f"{role} ready")  # type: ignore[misc]
            assert proc.poll() is None
        api_paths = httpx.get(f"http://127.0.0.1:{procs['api'][1]}/openapi.json", timeout=5).json()["paths"]
        worker = f"http://127.0.0.1:{procs['worker'][1]}"
        worker_paths = httpx.get(f"{worker}/openapi.json", timeout=5).json()["paths"]
        assert any(p.startswith("/v1/") for p in api_paths)
        assert not any(p.startswith("/v1/") for p in worker_paths), "the worker serves no case API"
        metrics = httpx.get(f"{worker}/metrics", timeout=5).text
        assert "arrears_timers_due" in metrics  # the worker's sweeper ran
        assert "arrears_timers_fired_total" in metrics
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for role, (proc, _) in procs.items():
            try:
                codes[role] = proc.wait(GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[role] = proc.wait(5)
    # uvicorn re-raises the SIGTERM it handled once its shutdown is complete, so a clean stop exits by
    # that signal; a kill after the grace period would be SIGKILL.
    assert set(codes.values()) <= {0, -signal.SIGTERM}, codes
    for role in ("api", "worker"):
        log = (tmp_path / role / "case_manager.log").read_text()
        assert "Application shutdown complete." in log, f"{role} did not finish its shutdown"
        assert "Traceback" not in log, log[-2000:]


def test_the_worker_role_is_what_the_manifests_run() -> None:
    roles = {w.name: w.role for w in k8s.WORKLOADS if w.service == "case_manager"}
    assert roles == {"case-manager-api": "api", "case-manager-worker": "worker"}
