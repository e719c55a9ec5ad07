"""Offline validation of everything Arrears ships to a cluster (``make lint`` runs it; no cluster needed).

1. ``kubectl kustomize`` renders every overlay under deploy/k8s/overlays.
2. ``kubernetes-validate --strict`` checks each rendered document against the Kubernetes schemas that
   package ships (custom resources: KafkaTopic, Cluster, ScaledObject... have no schema there and are
   checked by tests/test_k8s.py instead).
3. ``checkov --skip-download`` scans each rendered overlay and the Dockerfile; zero failed checks. Each
   skip is written next to what it skips, with its reason (docs/operations.md lists them).
4. ``hadolint`` checks the Dockerfile.

The validators live in their own virtualenv (``.venv-lint``, from constraints-lint.txt): checkov pins
libraries of its own that the services must not inherit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
DOCKERFILE = ROOT / "Dockerfile"


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())


def render(overlay: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit("kubectl is needed to render deploy/k8s (kubectl kustomize); install it first")
    return subprocess.run([kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True).stdout


def _tool(bin_dir: Path, name: str) -> str:
    path = bin_dir / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found in {bin_dir} or on PATH: run `make lint` (it installs .venv-lint)")
    return found


def _run(step: str, argv: list[str]) -> bool:
    print(f"--- {step}", flush=True)
    # checkov reaches for the network unless told not to; keep it offline whatever the environment says.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(argv, check=False, env=env)
    if result.returncode != 0:
        print(f"FAILED: {step} (exit {result.returncode})", flush=True)
    return result.returncode == 0


def main() -> None:
    lint_bin = Path(os.environ.get("ARREARS_LINT_BIN", ROOT / ".venv-lint" / "bin"))
    dev_bin = Path(sys.executable).parent
    ok = True
    with tempfile.TemporaryDirectory(prefix="arrears-k8s-") as tmp:
        for overlay in overlays():
            out = Path(tmp) / f"{overlay.name}.yaml"
            out.write_text(render(overlay))
            print(f"--- kubectl kustomize {overlay.relative_to(ROOT)}: {out.stat().st_size} bytes", flush=True)
            ok &= _run(
                f"kubernetes-validate --strict ({overlay.name})",
                [_tool(lint_bin, "kubernetes-validate"), "--strict", "--quiet", "--no-warn", str(out)],
            )
            ok &= _run(
                f"checkov kubernetes ({overlay.name})",
                [
                    _tool(lint_bin, "checkov"),
                    "--skip-download",
                    "--framework",
                    "kubernetes",
                    "--compact",
                    "--quiet",
                    "-f",
                    str(out),
                ],
            )
    ok &= _run(
        "checkov dockerfile",
        [
            _tool(lint_bin, "checkov"),
            "--skip-download",
            "--framework",
            "dockerfile",
            "--compact",
            "--quiet",
            "-f",
            str(DOCKERFILE),
        ],
    )
    ok &= _run("hadolint", [_tool(dev_bin, "hadolint"), str(DOCKERFILE)])
    if not ok:
        raise SystemExit(1)
    print("deploy lint: all overlays render and pass kubernetes-validate, checkov and hadolint", flush=True)


if __name__ == "__main__":
    main()
