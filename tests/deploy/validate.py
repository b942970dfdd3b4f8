#!/usr/bin/env python3
"""Validates deploy/: Kubernetes manifests and rendered overlays, and the compose file.

* Every manifest a kustomization lists under `resources` (not its patches, which are partial
  objects) and every overlay's rendered output (`kubectl kustomize`, or `kustomize build`)
  validates against the Kubernetes schemas of kubernetes-validate (strict: unknown fields are
  errors), for the oldest and newest versions checked here. ServiceMonitor, a CRD, is checked
  against tests/deploy/schemas/servicemonitor.json.
* Rendered overlays also hold together: for every assistd workload, terminationGracePeriodSeconds
  is shutdown_grace_secs (the ConfigMap's, or ASSIST_SHUTDOWN_GRACE_SECS) + 5, the probes ask
  /healthz and /readyz on the container's metrics port, NetworkPolicies admit that port from the
  monitoring namespace only, and a PodDisruptionBudget and a ServiceMonitor cover it; every
  Service selects pods and targets a named container port of theirs. Cluster overlays
  (ASSIST_ROLE set) also: URLs from Secret keys that exist, ASSIST_KEYS_* files of the mounted
  Secret, relay nodes without a database, a LoadBalancer Service per relay pod on the port and
  name its relay address gives, brokers with 2+ replicas.
* deploy/compose.yaml validates against the Compose Specification's schema (vendored,
  tests/deploy/schemas/README.md) and its stop_grace_period covers shutdown_grace_secs; its
  `cluster` profile's nodes, key files, published relay ports, HAProxy, Prometheus and Grafana
  files agree with each other (`haproxy -c` when haproxy is installed).

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


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions, or a Service's plain map)."""
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector
                         and "matchLabels" not in selector else {})
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in selector.get("matchExpressions", []):
        has, value = e["key"] in labels, labels.get(e["key"])
        if not {"In": has and value in e.get("values", []),
                "NotIn": not has or value not in e.get("values", []),
                "Exists": has, "DoesNotExist": not has}[e["operator"]]:
            return False
    return True


def pod_labels(workload: dict) -> list[dict]:
    """The labels of each pod a workload makes: a StatefulSet's pods also carry their names
    (statefulset.kubernetes.io/pod-name, <name>-<ordinal>), which per-pod Services select."""
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    if workload["kind"] != "StatefulSet":
        return [labels]
    name = workload["metadata"]["name"]
    return [{**labels, "statefulset.kubernetes.io/pod-name": f"{name}-{i}"}
            for i in range(workload["spec"].get("replicas", 1))]


def is_assistd(workload: dict) -> bool:
    return any(c.get("image", "").split("/")[-1].split(":")[0] == "assistd"
               for c in workload["spec"]["template"]["spec"]["containers"])


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def admits_metrics_from_monitoring_only(policies: list[dict], labels: dict, port: int) -> tuple[
        bool, str]:
    """NetworkPolicies add up: the pod's metrics port is private when at least one policy
    selects the pod for Ingress and no rule of any policy selecting it admits that port from
    anything but the namespace named monitoring."""
    mine = [np for np in policies if selects(np["spec"].get("podSelector", {}), labels)
            and "Ingress" in np["spec"].get("policyTypes", ["Ingress"])]
    if not mine:
        return False, "no NetworkPolicy selects the pod"
    for np in mine:
        for rule in np["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(pp.get("port") in (port, "metrics")
                                 and pp.get("protocol", "TCP") == "TCP" for pp in ports):
                continue
            peers = rule.get("from")
            ok = bool(peers) and all(
                f.get("namespaceSelector", {}).get("matchLabels", {}).get(
                    "kubernetes.io/metadata.name") == "monitoring"
                and "ipBlock" not in f and "podSelector" not in f for f in peers)
            if not ok:
                return False, f"NetworkPolicy/{np['metadata']['name']} rule {json.dumps(rule)}"
    return True, ""


def check_rendered(overlay: Path, objs: list[dict]) -> None:
    rel = overlay.relative_to(REPO)
    for obj in objs:
        validate_object(f"{rel} (rendered)", obj)
    by_kind: dict[str, list[dict]] = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], []).append(obj)
    conf = toml_of(by_kind.get("ConfigMap", []))
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []) + by_kind.get(
        "DaemonSet", [])
    assistds = [w for w in workloads if is_assistd(w)]
    check(f"{rel}: runs assistd", bool(assistds), str([w["metadata"]["name"] for w in workloads]))
    for dep in assistds:
        pod = dep["spec"]["template"]["spec"]
        name = f"{rel}: {dep['kind']}/{dep['metadata']['name']}"
        for c in pod["containers"]:
            ports = {p["name"]: p for p in c.get("ports", [])}
            env = env_of(c)
            # ASSIST_SHUTDOWN_GRACE_SECS overrides the file's shutdown_grace_secs.
            grace = int(env.get("ASSIST_SHUTDOWN_GRACE_SECS", {}).get(
                "value", conf.get("shutdown_grace_secs", 10)))
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            check(f"{name} terminationGracePeriodSeconds = shutdown_grace_secs + {GRACE_MARGIN}",
                  tgps == grace + GRACE_MARGIN,
                  f"terminationGracePeriodSeconds {tgps}, shutdown_grace_secs {grace}")
            metrics_port = int(env.get("ASSIST_METRICS_LISTEN", {}).get(
                "value", ":9090").rsplit(":", 1)[1])
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
            for labels in pod_labels(dep)[:1]:
                ok, why = admits_metrics_from_monitoring_only(
                    by_kind.get("NetworkPolicy", []), labels, metrics_port)
                check(f"{name}: a NetworkPolicy admits its metrics port from the monitoring "
                      "namespace only", ok, why)
        check(f"{name}: a PodDisruptionBudget covers it",
              any(selects(pdb["spec"]["selector"], pod_labels(dep)[0])
                  for pdb in by_kind.get("PodDisruptionBudget", [])), "")
        monitored = [s for s in by_kind.get("Service", [])
                     for sm in by_kind.get("ServiceMonitor", [])
                     if selects(sm["spec"]["selector"], s["metadata"].get("labels", {}))
                     and any(p["name"] == "metrics" for p in s["spec"]["ports"])
                     and all(selects(s["spec"]["selector"], pl) for pl in pod_labels(dep))]
        check(f"{name}: a ServiceMonitor scrapes its metrics port (through a Service)",
              bool(monitored), "")
    for svc in by_kind.get("Service", []):
        targets = [(w, pl) for w in workloads for pl in pod_labels(w)
                   if selects(svc["spec"].get("selector", {}), pl)]
        check(f"{rel}: Service/{svc['metadata']['name']} selects pods", bool(targets),
              json.dumps(svc["spec"].get("selector")))
        for p in svc["spec"]["ports"]:
            for w, _ in targets[:1]:
                cports = {cp["name"]: cp for c in w["spec"]["template"]["spec"]["containers"]
                          for cp in c.get("ports", [])}
                target = cports.get(p.get("targetPort"))
                check(f"{rel}: Service/{svc['metadata']['name']} port {p['name']} targets a named "
                      f"{p.get('protocol', 'TCP')} container port of {w['metadata']['name']}",
                      target is not None
                      and target.get("protocol", "TCP") == p.get("protocol", "TCP"),
                      f"targetPort {p.get('targetPort')} of {sorted(cports)}")
    check(f"{rel}: has a ServiceMonitor, a PodDisruptionBudget and a NetworkPolicy",
          all(by_kind.get(k) for k in ("ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy")),
          str(sorted(by_kind)))
    if any("ASSIST_ROLE" in env_of(c) for w in assistds
           for c in w["spec"]["template"]["spec"]["containers"]):
        check_cluster_rendered(rel, by_kind, assistds)


def secret_keys(by_kind: dict[str, list[dict]]) -> dict[str, set[str]]:
    return {s["metadata"]["name"]: set(s.get("data", {})) | set(s.get("stringData", {}))
            for s in by_kind.get("Secret", [])}


def check_cluster_rendered(rel: Path, by_kind: dict[str, list[dict]],
                           assistds: list[dict]) -> None:
    """Cluster mode: roles, the Secrets' keys, the shared key files and the relays' addresses."""
    secrets = secret_keys(by_kind)
    roles: dict[str, list[dict]] = {}
    for w in assistds:
        pod = w["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = env_of(c)
        name = f"{rel}: {w['kind']}/{w['metadata']['name']}"
        role = env.get("ASSIST_ROLE", {}).get("value", "all")
        roles.setdefault(role, []).append(w)
        check(f"{name}: role {role} is one of all, broker, relay",
              role in ("all", "broker", "relay"), role)
        needed = ["ASSIST_CLUSTER_REDIS_URL"] + (["ASSIST_STORE_URL"] if role != "relay" else [])
        for var in needed:
            ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
            check(f"{name}: {var} comes from a key of a Secret in the output",
                  ref.get("key") in secrets.get(ref.get("name"), set()), json.dumps(env.get(var)))
        if role == "relay":
            check(f"{name}: a relay node has no database", "ASSIST_STORE_URL" not in env, "")
        node_id = env.get("ASSIST_CLUSTER_NODE_ID", {})
        check(f"{name}: ASSIST_CLUSTER_NODE_ID is the pod's name",
              node_id.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
              or (node_id.get("value") == "$(POD_NAME)"
                  and env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get(
                      "fieldPath") == "metadata.name"), json.dumps(node_id))
        # The shared key files: each ASSIST_KEYS_* path is a key of the Secret mounted there.
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for var in ("ASSIST_KEYS_RELAY_TICKET_FILE", "ASSIST_KEYS_SIGNAL_CODE_FILE",
                    "ASSIST_KEYS_DEV_ISSUER_FILE"):
            path = env.get(var, {}).get("value", "")
            found = None
            for m in c.get("volumeMounts", []):
                secret = volumes.get(m["name"], {}).get("secret", {}).get("secretName")
                if secret and path.startswith(m["mountPath"].rstrip("/") + "/"):
                    found = (secret, path[len(m["mountPath"].rstrip("/")) + 1:])
            check(f"{name}: {var} is a file of a mounted Secret",
                  found is not None and found[1] in secrets.get(found[0], set()),
                  f"{path}: {found}")
        if role == "relay":
            check_relay_addresses(name, w, env, by_kind)
    brokers = roles.get("broker", []) + roles.get("all", [])
    check(f"{rel}: brokers run 2 or more replicas",
          bool(brokers) and all(b["spec"].get("replicas", 1) >= 2 for b in brokers),
          str([(b["metadata"]["name"], b["spec"].get("replicas", 1)) for b in brokers]))
    check(f"{rel}: relay nodes exist (role relay or all)",
          bool(roles.get("relay") or roles.get("all")), str(sorted(roles)))


def check_relay_addresses(name: str, w: dict, env: dict, by_kind: dict[str, list[dict]]) -> None:
    """Each relay pod's tickets name its own address: a per-pod LoadBalancer Service with TCP
    (https) and UDP (quic) on the port ASSIST_RELAY_PUBLIC_ADDR names, and a DNS name per pod."""
    wss = env.get("ASSIST_RELAY_PUBLIC_ADDR", {}).get("value", "")
    quic = env.get("ASSIST_RELAY_PUBLIC_QUIC_ADDR", {}).get("value", "")
    check(f"{name}: ASSIST_RELAY_PUBLIC_ADDR and _QUIC_ADDR differ per pod ($(POD_NAME))",
          "$(POD_NAME)" in wss and "$(POD_NAME)" in quic, f"{wss!r} {quic!r}")
    order = [e["name"] for e in w["spec"]["template"]["spec"]["containers"][0].get("env", [])]
    check(f"{name}: POD_NAME is defined before the variables that use it",
          "POD_NAME" in order and all(order.index("POD_NAME") < i for i, e in enumerate(order)
                                      if "$(POD_NAME)" in str(env[e].get("value", ""))), "")
    for pl in pod_labels(w):
        pod = pl.get("statefulset.kubernetes.io/pod-name", w["metadata"]["name"])
        svcs = [s for s in by_kind.get("Service", [])
                if s["spec"].get("type") == "LoadBalancer"
                and s["spec"].get("selector", {}).get("statefulset.kubernetes.io/pod-name") == pod
                and selects(s["spec"]["selector"], pl)]
        ports = {(p.get("protocol", "TCP"), p["port"], p.get("targetPort"))
                 for s in svcs for p in s["spec"]["ports"]}
        wss_port = int(wss.rsplit(":", 1)[-1]) if wss[-1:].isdigit() else None
        quic_port = int(quic.rsplit(":", 1)[-1]) if quic[-1:].isdigit() else None
        check(f"{name}: pod {pod} has its own LoadBalancer Service with TCP {wss_port} -> https "
              f"and UDP {quic_port} -> quic",
              ("TCP", wss_port, "https") in ports and ("UDP", quic_port, "quic") in ports,
              str(sorted(ports, key=str)))
        hosts = {s["metadata"].get("annotations", {}).get(
            "external-dns.alpha.kubernetes.io/hostname") for s in svcs}
        want = wss.replace("$(POD_NAME)", pod).rsplit(":", 1)[0]
        check(f"{name}: pod {pod}'s Service is named {want} (external-dns)", want in hosts,
              str(hosts))


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
    check_compose_cluster(compose)


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR-default} with every VAR unset, as on a fresh machine."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "",
                  str(value))


def published(svc: dict) -> list[tuple[str, str, int, int]]:
    """(host ip, protocol, host port, container port) of a service's short-syntax ports."""
    out = []
    for spec in svc.get("ports", []):
        spec, _, proto = str(spec).partition("/")
        parts = spec.split(":")
        ip = parts[0] if len(parts) == 3 else ""
        out.append((ip, proto or "tcp", int(parts[-2]), int(parts[-1])))
    return out


def check_compose_cluster(compose: dict) -> None:
    """The `cluster` profile: nodes wired to PostgreSQL, Redis and the shared keys, each relay
    reachable on its own published ports, and the load balancer, Prometheus and Grafana
    pointing at every node."""
    services = compose.get("services", {})
    cluster = {n: s for n, s in services.items() if "cluster" in s.get("profiles", [])}
    check("compose: a `cluster` profile exists and the embedded service has no profile",
          bool(cluster) and not services.get("assistd", {}).get("profiles"), str(sorted(cluster)))
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            check(f"compose service {name}: depends on {dep}, which runs with the same profile",
                  dep in services and set(services[dep].get("profiles", []))
                  <= set(svc.get("profiles", [])), "")
    # Every service may run at once (compose starts those without a profile with any profile):
    # no host port twice, whatever address it is bound to.
    seen: dict[tuple[str, int], str] = {}
    for name, svc in services.items():
        for _, proto, host, _ in published(svc):
            check(f"compose service {name}: host port {host}/{proto} is not published twice",
                  (proto, host) not in seen, f"also by {seen.get((proto, host))}")
            seen[(proto, host)] = name
    env = {n: {k: interpolate(v) for k, v in (s.get("environment") or {}).items()}
           for n, s in cluster.items()}
    nodes = sorted(n for n in cluster if "ASSIST_CLUSTER_REDIS_URL" in env[n])
    check("compose cluster: three assistd nodes", len(nodes) == 3, str(nodes))
    keys_script = (DEPLOY / "compose" / "make-keys.sh").read_text()
    # The files make-keys.sh writes: ec_key NAME, and "$dir/NAME.tmp" renamed to NAME.
    key_files = set(re.findall(r"^\s*ec_key\s+(\S+)\s*$", keys_script, re.M)) | set(
        re.findall(r'"\$dir/([\w.-]+?)\.tmp"', keys_script))
    makers = [n for n, s in cluster.items()
              if any("make-keys.sh" in str(v) for v in s.get("volumes", []))]
    check("compose cluster: one service runs make-keys.sh", len(makers) == 1, str(makers))
    keys_volume = next((str(v).split(":")[0] for m in makers for v in cluster[m]["volumes"]
                        if not str(v).startswith(".")), None)
    addrs = {}
    for n in nodes:
        e, svc = env[n], cluster[n]
        for var, service, scheme in (("ASSIST_STORE_URL", "postgres", "postgres://"),
                                     ("ASSIST_CLUSTER_REDIS_URL", "redis", "redis://")):
            url = e.get(var, "")
            host = re.sub(r"^[a-z]+://(?:[^@/]*@)?", "", url).split(":")[0].split("/")[0]
            check(f"compose {n}: {var} is {scheme} to the {service} service",
                  url.startswith(scheme) and host == service and service in cluster, url)
        check(f"compose {n}: node id {e.get('ASSIST_CLUSTER_NODE_ID')} is its own",
              e.get("ASSIST_CLUSTER_NODE_ID") == n, "")
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes", [])}
        for var in ("ASSIST_KEYS_RELAY_TICKET_FILE", "ASSIST_KEYS_SIGNAL_CODE_FILE",
                    "ASSIST_KEYS_DEV_ISSUER_FILE", "ASSIST_TLS_CERT_FILE", "ASSIST_TLS_KEY_FILE"):
            path = e.get(var, "")
            d, _, f = path.rpartition("/")
            check(f"compose {n}: {var} is a file make-keys.sh makes in {keys_volume}",
                  mounts.get(d) == keys_volume and keys_volume is not None and f in key_files,
                  f"{path}; make-keys.sh makes {sorted(key_files)}")
        listen = int(e.get("ASSIST_LISTEN", ":8443").rsplit(":", 1)[1])
        ports = published(svc)
        for var, proto in (("ASSIST_RELAY_PUBLIC_ADDR", "tcp"),
                           ("ASSIST_RELAY_PUBLIC_QUIC_ADDR", "udp")):
            addr = e.get(var, "")
            port = int(addr.rsplit(":", 1)[1]) if addr[-1:].isdigit() else None
            check(f"compose {n}: {var} ({addr}) is its published {proto} port to {listen}",
                  any(pr == proto and h == port and c == listen for _, pr, h, c in ports),
                  str(ports))
            addrs.setdefault(var, []).append(addr)
    for var, values in addrs.items():
        check(f"compose cluster: each node has its own {var}", len(set(values)) == len(values),
              str(values))
    # Prometheus scrapes every node's metrics port.
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {t for sc in prom.get("scrape_configs", []) for st in sc.get("static_configs", [])
               for t in st.get("targets", [])}
    want = {f"{n}:{env[n].get('ASSIST_METRICS_LISTEN', ':9090').rsplit(':', 1)[1]}"
            for n in nodes}
    check("compose cluster: Prometheus scrapes every node's metrics port", targets == want,
          f"{sorted(targets)} != {sorted(want)}")
    # HAProxy: every node's HTTPS, health on /readyz at the metrics port.
    cfg = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    servers = set(re.findall(r"^\s*server\s+\S+\s+(\S+)", cfg, re.M))
    check("compose cluster: HAProxy balances every node's HTTPS port",
          servers == {f"{n}:8443" for n in nodes}, str(sorted(servers)))
    check("compose cluster: HAProxy checks /readyz on the metrics port",
          re.search(r"http-check send meth GET uri /readyz\b", cfg) is not None
          and re.search(r"default-server\s+check port 9090\b", cfg) is not None, "")
    lb = [n for n, s in cluster.items() if any("haproxy.cfg" in str(v)
                                               for v in s.get("volumes", []))]
    binds = {int(b) for b in re.findall(r"^\s*bind\s+:(\d+)", cfg, re.M)}
    check("compose cluster: the load balancer publishes the port HAProxy binds",
          len(lb) == 1 and {c for _, _, _, c in published(cluster[lb[0]])} == binds,
          f"{lb} {binds}")
    public = {env[n].get("ASSIST_PUBLIC_URL", "") for n in nodes}
    lb_ports = {str(h) for _, _, h, _ in published(cluster[lb[0]])} if lb else set()
    check("compose cluster: every node's ASSIST_PUBLIC_URL is the load balancer's port",
          len(public) == 1 and next(iter(public)).rsplit(":", 1)[-1] in lb_ports,
          f"{public} {lb_ports}")
    # Grafana: the Prometheus data source and the dashboard provisioned where it is mounted.
    graf = [n for n, s in cluster.items() if any("assist.json" in str(v)
                                                 for v in s.get("volumes", []))]
    check("compose cluster: Grafana mounts deploy/grafana/assist.json", len(graf) == 1, str(graf))
    if graf:
        mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in cluster[graf[0]]["volumes"]}
        ds = yaml.safe_load((DEPLOY / "compose" / "grafana" / "datasources.yaml").read_text())
        prom_svc = next((n for n, s in cluster.items()
                         if any("prometheus.yml" in str(v) for v in s.get("volumes", []))), "")
        check("compose cluster: Grafana's data source is the Prometheus service",
              any(d.get("type") == "prometheus" and d.get("url") == f"http://{prom_svc}:9090"
                  for d in ds.get("datasources", [])), str(ds))
        dash = yaml.safe_load((DEPLOY / "compose" / "grafana" / "dashboards.yaml").read_text())
        dirs = {pr.get("options", {}).get("path") for pr in dash.get("providers", [])}
        check("compose cluster: Grafana provisions the directory assist.json is mounted in",
              mounts.get("./grafana/assist.json", "").rsplit("/", 1)[0] in dirs, str(dirs))
        for f, kind in (("datasources.yaml", "datasources"), ("dashboards.yaml", "dashboards")):
            check(f"compose cluster: Grafana reads compose/grafana/{f} as {kind} provisioning",
                  mounts.get(f"./compose/grafana/{f}", "").startswith(
                      f"/etc/grafana/provisioning/{kind}/"), str(mounts))
    if shutil.which("haproxy"):
        out = subprocess.run(["haproxy", "-c", "-f", str(DEPLOY / "compose" / "haproxy.cfg")],
                             capture_output=True, text=True)
        check("deploy/compose/haproxy.cfg passes haproxy -c", out.returncode == 0,
              (out.stdout + out.stderr).strip())
    else:
        print("skip deploy/compose/haproxy.cfg: no haproxy to check it with (haproxy -c)")


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
