#!/usr/bin/env python3
"""Every metric a panel of deploy/grafana/assist.json queries exists in a live assistd's /metrics.

Starts target/debug/assistd (embedded defaults, a temporary data directory, free loopback ports,
the Kubernetes base's assistd.toml as its configuration file, so that file is also checked to
be accepted), drives a little traffic so that the labelled series appear (the demo tenant and one
helper/sharer session with the `assist` CLI, one WSS+QUIC relay pair with assist-loadgen, one
relay join with a bad ticket), scrapes /metrics, and fails on any metric name a PromQL expression
names that is missing, and on any `by (...)` label that none of the expression's metrics carry.

Usage: python3 tests/deploy/dashboard_metrics.py   (tests/deploy/run.sh runs it; needs
target/debug/{assistd,assist,assist-loadgen}, curl and python3)
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from ports import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ASSIST_BIN_DIR", REPO / "target" / "debug"))
DASHBOARD = REPO / "deploy" / "grafana" / "assist.json"
CONFIG = REPO / "deploy" / "kubernetes" / "base" / "assistd.toml"

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "offset", "bool", "inf", "nan"}


def fail(msg: str) -> None:
    print(f"FAIL dashboard metrics: {msg}")
    print("dashboard metrics: 0 passed, 1 failed")
    sys.exit(1)


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels: list) -> None:
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((\w+)", q or "")
        if m:
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, `by`/`without` labels) of a PromQL expression."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)            # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                         # range selectors
    labels: set[str] = set()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", e):
        labels |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS or word.startswith("$"):
            continue
        if e[m.start() - 1:m.start()] == "$":
            continue  # a Grafana variable like $__rate_interval
        names.add(word)
    labels.discard("le")  # histogram buckets' label, on every _bucket series
    return names, labels


def scrape(url: str) -> dict[str, set[str]]:
    """Sample name -> the label names its samples carry."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s", line)
        if m:
            labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=\"", m.group(3) or ""))
            series.setdefault(m.group(1), set()).update(labels)
    return series


class Terminal:
    """A CLI process, its output read line by line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.05, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        self.proc.kill()
        fail(f"{self.name} never printed /{pattern}/; it printed:\n" + "\n".join(self.seen))
        raise AssertionError

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def traffic(data: Path, port: int, env: dict[str, str]) -> None:
    server = f"https://localhost:{port}"
    demo = subprocess.run(["bash", str(REPO / "scripts" / "demo-tenant.sh"), str(data), server],
                          env=dict(env, ASSISTD=str(BIN / "assistd")), capture_output=True,
                          text=True, timeout=60)
    if demo.returncode != 0:
        fail(f"scripts/demo-tenant.sh failed: {demo.stderr}")
    tokens = dict(line.split("=", 1) for line in demo.stdout.split() if "=" in line)
    cli = [str(BIN / "assist")]
    common = ["--server", server, "--data-dir", str(data)]
    helper = Terminal("helper", cli + ["helper", *common, "--token", tokens["HELPER_TOKEN"]], env)
    code = helper.expect(r"Your code is (\S+)").group(1)
    sharer = Terminal("sharer", cli + ["sharer", *common, "--token", tokens["SHARER_TOKEN"],
                                       "--code", code], env)
    sharer.expect(r"Joined\.")
    helper.expect(r"Joined\.")
    helper.type("mode fullControl")
    helper.expect(r"Warnings:")
    helper.type("ack")
    sharer.expect(r"asks for fullControl")
    sharer.type("allow")
    helper.expect(r"Session active")
    helper.type("end")
    helper.expect(r"Session ended")
    sharer.expect(r"Session ended")
    helper.stop()
    sharer.stop()
    # One relay pair, the helper over QUIC and the sharer over WSS, for a second of traffic.
    load = subprocess.run(
        [str(BIN / "assist-loadgen"), "relay", "--data-dir", str(data),
         "--addr", f"127.0.0.1:{port}", "--transport", "mixed", "--pairs", "1",
         "--frame-bytes", "1024", "--fps", "10", "--input-hz", "10",
         "--duration", "1s", "--warmup", "0s"],
        env=env, capture_output=True, text=True, timeout=60)
    if load.returncode != 0:
        fail(f"assist-loadgen relay failed: {load.stdout}{load.stderr}")
    # One join with a bad ticket (assist_relay_joins_rejected_total).
    ctx = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /v1/relay?ticket=not.a.ticket HTTP/1.1\r\nHost: localhost\r\n"
                      b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            status = s.recv(64).split(b"\r\n", 1)[0]
            if b" 101 " in status:
                fail("a relay join with a bad ticket was admitted")


def main() -> int:
    for b in ("assistd", "assist", "assist-loadgen"):
        if not (BIN / b).exists():
            fail(f"no {BIN / b} (cargo build -p assistd -p assist-loadgen --bins)")
    exprs = expressions(json.loads(DASHBOARD.read_text()))
    if not exprs:
        fail(f"{DASHBOARD} has no PromQL expressions")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSIST_")}
    try:
        port, mport = free_port(), free_port()
    except RuntimeError as e:
        fail(str(e))
    with tempfile.TemporaryDirectory(prefix="assist-dashboard-") as tmp:
        data = Path(tmp) / "data"
        proc = subprocess.Popen(
            [str(BIN / "assistd"), "serve", "--config", str(CONFIG), "--data-dir", str(data),
             "--listen", f"127.0.0.1:{port}", "--quic-listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{mport}", "--log", "warn"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "assistd.log", "w"))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/readyz", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        fail("assistd did not become ready:\n"
                             + (Path(tmp) / "assistd.log").read_text()[-2000:])
                    time.sleep(0.2)
            traffic(data, port, env)
            series = scrape(f"http://127.0.0.1:{mport}/metrics")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    passed, failed = 0, 0
    for title, expr in exprs:
        names, labels = metric_names(expr)
        missing = sorted(n for n in names if n not in series)
        have = set().union(*(series.get(n, set()) for n in names)) if names else set()
        absent = sorted(labels - have - {"instance", "job"})
        if not names:
            print(f"FAIL {title}: no metric in `{expr}`")
            failed += 1
        elif missing or absent:
            print(f"FAIL {title}: missing metrics {missing}, labels {absent} in `{expr}`")
            failed += 1
        else:
            print(f"ok   {title}: {', '.join(sorted(names))}")
            passed += 1
    print(f"dashboard metrics: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
