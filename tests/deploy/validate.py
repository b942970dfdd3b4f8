#!/usr/bin/env python3
"""Validates deploy/: Kubernetes manifests and rendered overlays, and the compose file.

* Every manifest a kustomization lists under `resources` (not its patches, which are partial
  objects) and every overlay's rendered output (`kubectl kustomize`, or `kustomize build`)
  validates against the Kubernetes schemas of kubernetes-validate (strict: unknown fields are
  errors), for the oldest and newest versions checked here. ServiceMonitor, a CRD, is checked
  against tests/deploy/schemas/servicemonitor.json.
* Rendered overlays also hold together: terminationGracePeriodSeconds is the ConfigMap's
  shutdown_grace_secs + 5, the probes ask /healthz and /readyz on the container's metrics port,
  every Service targets a named container port, and the NetworkPolicy admits the metrics port
  from the monitoring namespace only.
* deploy/compose.yaml validates against the Compose Specification's schema (vendored,
  tests/deploy/schemas/README.md) and its stop_grace_period covers shutdown_grace_secs.

Usage: python3 tests/deploy/validate.py   (tests/deploy/run.sh runs it in its venv, which has
kubernetes-validate, jsonschema and PyYAML). Prints one line per check and
"N passed, N failed" at the end; exits 1 on any failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
GRACE_MARGIN = 5

passed: list[str] = []
failed: list[str] = []


def check(name: str, ok: bool, why: str = "") -> None:
    if ok:
        passed.append(name)
        print(f"ok   {name}")
    else:
        failed.append(name)
        print(f"FAIL {name}: {why}")


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def validate_object(where: str, obj: dict) -> None:
    kind = obj.get("kind", "?")
    name = obj.get("metadata", {}).get("name", "?")
    label = f"{where}: {kind}/{name}"
    if kind == "ServiceMonitor":
        schema = json.loads((SCHEMAS / "servicemonitor.json").read_text())
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
        check(f"{label} (ServiceMonitor schema)", not errors,
              "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors))
        return
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            check(f"{label} (Kubernetes {version}, strict)", True)
        except kubernetes_validate.ValidationError as e:
            check(f"{label} (Kubernetes {version}, strict)", False,
                  f"{'.'.join(str(p) for p in e.path)}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            check(f"{label} (Kubernetes {version})", False, f"no schema: {e}")


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def renderer() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def check_manifest_files() -> None:
    """The files kustomizations list as resources, each on its own."""
    for k in kustomizations():
        spec = yaml.safe_load((k / "kustomization.yaml").read_text())
        for res in spec.get("resources", []):
            path = (k / res).resolve()
            if path.is_dir():
                continue  # a base: checked on its own and in the rendered overlays
            rel = path.relative_to(REPO)
            for obj in docs(path.read_text()):
                validate_object(str(rel), obj)


def toml_of(configmaps: list[dict]) -> dict:
    for cm in configmaps:
        if "assistd.toml" in cm.get("data", {}):
            return tomllib.loads(cm["data"]["assistd.toml"])
    return {}


def check_rendered(overlay: Path, objs: list[dict]) -> None:
    rel = overlay.relative_to(REPO)
    for obj in objs:
        validate_object(f"{rel} (rendered)", obj)
    by_kind: dict[str, list[dict]] = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], []).append(obj)
    conf = toml_of(by_kind.get("ConfigMap", []))
    grace = conf.get("shutdown_grace_secs", 10)
    for dep in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []) + by_kind.get(
            "DaemonSet", []):
        pod = dep["spec"]["template"]["spec"]
        name = f"{rel}: {dep['kind']}/{dep['metadata']['name']}"
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        check(f"{name} terminationGracePeriodSeconds = shutdown_grace_secs + {GRACE_MARGIN}",
              tgps == grace + GRACE_MARGIN,
              f"terminationGracePeriodSeconds {tgps}, shutdown_grace_secs {grace}")
        for c in pod["containers"]:
            ports = {p["name"]: p for p in c.get("ports", [])}
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            metrics_port = int(env.get("ASSIST_METRICS_LISTEN", ":9090").rsplit(":", 1)[1])
            check(f"{name} metrics port {metrics_port} is the container port 'metrics'",
                  ports.get("metrics", {}).get("containerPort") == metrics_port, str(ports))
            for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                                ("readinessProbe", "/readyz")):
                get = c.get(probe, {}).get("httpGet", {})
                check(f"{name} {probe} asks {path} on the metrics port",
                      get.get("path") == path and get.get("port") in ("metrics", metrics_port),
                      str(get))
            for mount in c.get("volumeMounts", []):
                check(f"{name} mount {mount['name']} has a volume",
                      any(v["name"] == mount["name"] for v in pod.get("volumes", [])), "")
    pod_ports = {}
    for dep in by_kind.get("Deployment", []):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for p in c.get("ports", []):
                pod_ports[p["name"]] = p
    for svc in by_kind.get("Service", []):
        for p in svc["spec"]["ports"]:
            target = pod_ports.get(p.get("targetPort"))
            check(f"{rel}: Service/{svc['metadata']['name']} port {p['name']} targets a named "
                  f"{p.get('protocol', 'TCP')} container port",
                  target is not None and target.get("protocol", "TCP") == p.get("protocol", "TCP"),
                  f"targetPort {p.get('targetPort')} of {sorted(pod_ports)}")
    for np in by_kind.get("NetworkPolicy", []):
        metrics_rules = [r for r in np["spec"].get("ingress", [])
                         if any(pp.get("port") == 9090 for pp in r.get("ports", []))]
        only_monitoring = bool(metrics_rules) and all(
            r.get("from") and all(
                f.get("namespaceSelector", {}).get("matchLabels", {}).get(
                    "kubernetes.io/metadata.name") == "monitoring" and "ipBlock" not in f
                for f in r["from"])
            for r in metrics_rules)
        open_rules = [r for r in np["spec"].get("ingress", []) if not r.get("from")]
        leaks = any(not r.get("ports") or any(pp.get("port") == 9090 for pp in r["ports"])
                    for r in open_rules)
        check(f"{rel}: NetworkPolicy/{np['metadata']['name']} admits the metrics port from the "
              "monitoring namespace only", only_monitoring and not leaks, json.dumps(np["spec"]))
    check(f"{rel}: has a ServiceMonitor, a PodDisruptionBudget and a NetworkPolicy",
          all(by_kind.get(k) for k in ("ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy")),
          str(sorted(by_kind)))


def check_overlays() -> None:
    render = renderer()
    overlays = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
    check("there is at least one overlay", bool(overlays), "deploy/kubernetes/overlays is empty")
    if render is None:
        # No renderer: the patches were not merged, so only the overlays' own resources (above)
        # were validated. Say so loudly rather than pass quietly.
        check("a kustomize renderer (kubectl or kustomize) is installed", False,
              "overlays not rendered; install kubectl (Debian: kubernetes-client is too old)")
        return
    for overlay in overlays:
        out = subprocess.run(render + [str(overlay)], capture_output=True, text=True)
        check(f"{overlay.relative_to(REPO)} renders ({' '.join(render)})", out.returncode == 0,
              out.stderr.strip())
        if out.returncode == 0:
            check_rendered(overlay, docs(out.stdout))


def duration_secs(s: str) -> float:
    total = 0.0
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", s):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    return total


def check_compose() -> None:
    path = DEPLOY / "compose.yaml"
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    compose = yaml.safe_load(path.read_text())
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(compose), key=str)
    check("deploy/compose.yaml validates against the Compose Specification schema", not errors,
          "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors))
    for name, svc in compose.get("services", {}).items():
        for vol in svc.get("volumes", []):
            src = str(vol).split(":", 1)[0]
            if src.startswith("."):
                check(f"compose service {name}: bind mount {src} exists",
                      (path.parent / src).exists(), "missing")
                if src.endswith(".toml"):
                    conf = tomllib.loads((path.parent / src).read_text())
                    grace = conf.get("shutdown_grace_secs", 10)
                    stop = duration_secs(svc.get("stop_grace_period", "10s"))
                    check(f"compose service {name}: stop_grace_period = shutdown_grace_secs + "
                          f"{GRACE_MARGIN}", stop == grace + GRACE_MARGIN,
                          f"stop_grace_period {stop}, shutdown_grace_secs {grace}")


def check_systemd() -> None:
    unit = DEPLOY / "systemd" / "assistd.service"
    text = unit.read_text()
    conf = tomllib.loads((DEPLOY / "systemd" / "assistd.toml").read_text())
    stop = re.search(r"^TimeoutStopSec=(\d+)$", text, re.M)
    grace = conf.get("shutdown_grace_secs", 10)
    check(f"deploy/systemd: TimeoutStopSec = shutdown_grace_secs + {GRACE_MARGIN}",
          bool(stop) and int(stop.group(1)) == grace + GRACE_MARGIN,
          f"TimeoutStopSec {stop and stop.group(1)}, shutdown_grace_secs {grace}")
    if not shutil.which("systemd-analyze"):
        print("skip deploy/systemd/assistd.service: no systemd-analyze")
        return
    binary = REPO / "target" / "debug" / "assistd"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "assistd.service"
        copy.write_text(text.replace("/usr/local/bin/assistd", str(binary)))
        out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                             text=True)
        # Lines about the host (no systemd running here) are not about the unit.
        complaints = [line for line in (out.stdout + out.stderr).splitlines()
                      if "assistd.service" in line]
        check("deploy/systemd/assistd.service passes systemd-analyze verify",
              out.returncode == 0 and not complaints, "\n".join(complaints) or out.stderr)


def check_dockerfile() -> None:
    """The parts of deploy/Dockerfile that tests/deploy/image.sh replaces or cannot see."""
    text = (DEPLOY / "Dockerfile").read_text()
    check("deploy/Dockerfile: the build stage's base is the public rust:*-bookworm image",
          re.search(r"^ARG RUST_IMAGE=rust:[0-9.]+-bookworm$", text, re.M) is not None, "")
    check("deploy/Dockerfile: the runtime base is the public debian:bookworm-slim image",
          "\nARG RUNTIME_IMAGE=debian:bookworm-slim\n" in text, "")
    check("deploy/Dockerfile: the build stage builds assistd --release --locked, stripped",
          "cargo build --release --locked -p assistd" in text
          and "CARGO_PROFILE_RELEASE_STRIP=true" in text, "")
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, re.M)
    check("deploy/Dockerfile: the last (default) stage is `runtime`, from the build stage",
          stages[-1:] == ["runtime"] and "COPY --from=build /out/assistd" in text, str(stages))
    ignore = (REPO / ".dockerignore").read_text().split()
    check(".dockerignore keeps target/ and .git/ out of the build context",
          "target/" in ignore and ".git/" in ignore, str(ignore))


def main() -> int:
    check_dockerfile()
    check_systemd()
    check_manifest_files()
    check_overlays()
    check_compose()
    print(f"deploy manifests: {len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
