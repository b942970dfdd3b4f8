#!/usr/bin/env python3
"""Writes deploy/grafana/assist.json, the Grafana dashboard over assistd's metrics.

Edit the panels here and run `python3 scripts/grafana-dashboard.py`; tests/deploy/run.sh checks
that every metric a panel queries exists in a running server's /metrics.
"""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "assist.json"
SEL = 'instance=~"$instance"'
RI = "$__rate_interval"
panels = []
y = 0


def row(title):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": len(panels) + 1})
    y += 1


def ts(title, desc, targets, unit="short", x=0, w=12, stack=False):
    panels.append({
        "type": "timeseries", "title": title, "description": desc, "id": len(panels) + 1,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {
            "stacking": {"mode": "normal" if stack else "none"}, "fillOpacity": 10}},
            "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"datasource": {"type": "prometheus", "uid": "${datasource}"},
                     "expr": e, "legendFormat": l, "refId": chr(65 + i)}
                    for i, (e, l) in enumerate(targets)],
    })


def pair(left, right):
    global y
    ts(*left[:3], **dict(left[3] if len(left) > 3 else {}, x=0, w=12))
    ts(*right[:3], **dict(right[3] if len(right) > 3 else {}, x=12, w=12))
    y += 8


row("Sessions")
pair(("Sessions by state",
      "Sessions the broker holds, by state: pending (a code not yet redeemed, a launch not yet "
      "answered), joined (no mode granted yet), active (a mode granted); and the relay's "
      "sessions (at least one leg: waiting for the peer, or paired).",
      [(f"sum by (state) (assist_signal_sessions_by_state{{{SEL}}})", "{{state}}"),
       (f"sum(assist_relay_sessions_active{{{SEL}}})", "relay")]),
     ("Active sessions by mode", "Active sessions the brokers hold, by the mode in force.",
      [(f"sum by (mode) (assist_signal_active_sessions{{{SEL}}})", "{{mode}}")],
      {"stack": True}))
pair(("Sessions started by mode", "Sessions that became active per second, by first mode.",
      [(f"sum by (mode) (rate(assist_signal_sessions_started_total{{{SEL}}}[{RI}]))",
        "{{mode}}")], {"unit": "ops", "stack": True}),
     ("Sessions ended by reason", "Active sessions that ended per second, by reason.",
      [(f"sum by (reason) (rate(assist_signal_sessions_ended_total{{{SEL}}}[{RI}]))",
        "{{reason}}")], {"unit": "ops", "stack": True}))
row("Pairing")


def pairing_q(q, metric):
    return (f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{SEL}}}[{RI}])))")


pair(("Pairing latency",
      "Time to active (the first mode granted and the relay tickets issued), p50 and p99: from "
      "the session's creation (code issued or launch sent; includes the person typing the code "
      "and consenting), and from the sharer joining (policy decision, consent, tickets).",
      [(pairing_q(0.5, "assist_signal_pairing_seconds"), "created → active p50"),
       (pairing_q(0.99, "assist_signal_pairing_seconds"), "created → active p99"),
       (pairing_q(0.5, "assist_signal_join_to_active_seconds"), "joined → active p50"),
       (pairing_q(0.99, "assist_signal_join_to_active_seconds"), "joined → active p99")],
      {"unit": "s"}),
     ("Policy decisions by result",
      "Mode requests decided per second: allow, or the deny reason.",
      [(f"sum by (result) (rate(assist_signal_decisions_total{{{SEL}}}[{RI}]))", "{{result}}")],
      {"unit": "ops", "stack": True}))
pair(("Pairing: legs closed by code",
      "Relay legs closed per second by close code. peerTimeout: the first leg waited "
      "relay.pair_timeout_secs and its peer never came (a failed pairing).",
      [(f"sum by (code) (rate(assist_relay_closes_total{{{SEL}}}[{RI}]))", "{{code}}")],
      {"unit": "ops", "stack": True}),
     ("Pairing: joins refused by reason", "Relay joins refused per second (bad or used ticket, "
      "node full, shutting down).",
      [(f"sum by (reason) (rate(assist_relay_joins_rejected_total{{{SEL}}}[{RI}]))",
        "{{reason}}")], {"unit": "ops", "stack": True}))
row("Relay")
pair(("Relay bytes by channel", "Frame bytes forwarded per second, by channel.",
      [(f"sum by (channel) (rate(assist_relay_bytes_total{{{SEL}}}[{RI}]))", "{{channel}}")],
      {"unit": "Bps", "stack": True}),
     ("Relay frames by channel", "Frames forwarded per second, by channel.",
      [(f"sum by (channel) (rate(assist_relay_frames_total{{{SEL}}}[{RI}]))", "{{channel}}")],
      {"unit": "ops", "stack": True}))
pair(("Frames dropped by reason",
      "Frames not forwarded per second: congestion (stale screen frames), mode, chatBlocked, "
      "direction.",
      [(f"sum by (reason) (rate(assist_relay_frames_dropped_total{{{SEL}}}[{RI}]))",
        "{{reason}}")], {"unit": "ops", "stack": True}),
     ("Relay queue depth and forward latency",
      "Frames waiting in relay queues (all sessions), and how long the oldest frame of each "
      "written batch waited in the relay (p50, p99).",
      [(f"sum by (instance) (assist_relay_queued_frames{{{SEL}}})", "queued {{instance}}"),
       (f"histogram_quantile(0.5, sum by (le) (rate(assist_relay_forward_latency_seconds_bucket{{{SEL}}}[{RI}])))",
        "forward p50 (s)"),
       (f"histogram_quantile(0.99, sum by (le) (rate(assist_relay_forward_latency_seconds_bucket{{{SEL}}}[{RI}])))",
        "forward p99 (s)")]))
pair(("Legs per transport", "Connected relay legs, by transport (wss, quic).",
      [(f"sum by (transport) (assist_relay_legs_active{{{SEL}}})", "{{transport}}")],
      {"stack": True}),
     ("Keyframe requests", "Keyframe requests sent to sharers per second.",
      [(f"sum(rate(assist_relay_keyframe_requests_total{{{SEL}}}[{RI}]))", "keyframes")],
      {"unit": "ops"}))
row("Store")
pair(("Records writer queue",
      "Session records, audit events and relay counters waiting for the records writer "
      "(bounded at 100,000; it grows while the store is slow or unavailable), and writes dropped "
      "per second by kind and reason (queueFull: heartbeats go first; refused: the store "
      "refused the write).",
      [(f"sum by (instance) (assist_store_write_queue_depth{{{SEL}}})", "queued {{instance}}"),
       (f"sum by (kind, reason) (rate(assist_store_writes_dropped_total{{{SEL}}}[{RI}]))",
        "dropped/s {{kind}} {{reason}}")]),
     ("Records writer batches",
      "Batches tried per second by result (ok; retry: the store was unavailable or busy and the "
      "batch is held; error: refused, written one by one), and the time to commit one (p50, "
      "p99).",
      [(f"sum by (result) (rate(assist_store_write_batches_total{{{SEL}}}[{RI}]))",
        "{{result}}/s"),
       (f"histogram_quantile(0.5, sum by (le) (rate(assist_store_write_batch_seconds_bucket{{{SEL}}}[{RI}])))",
        "commit p50 (s)"),
       (f"histogram_quantile(0.99, sum by (le) (rate(assist_store_write_batch_seconds_bucket{{{SEL}}}[{RI}])))",
        "commit p99 (s)")]))
row("Server")
pair(("CPU", "CPU seconds per second of each assistd process (process collector).",
      [(f"rate(process_cpu_seconds_total{{{SEL}}}[{RI}])", "{{instance}}")],
      {"unit": "percentunit"}),
     ("Memory (RSS)", "Resident memory of each assistd process.",
      [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")], {"unit": "bytes"}))
pair(("Connections", "TCP connections open by listener, signalling connections, and "
      "connections refused at accept by reason.",
      [(f"sum by (listener) (assist_connections_open{{{SEL}}})", "open {{listener}}"),
       (f"sum(assist_signal_connections{{{SEL}}})", "signalling"),
       (f"sum by (listener, reason) (rate(assist_connections_refused_total{{{SEL}}}[{RI}]))",
        "refused/s {{listener}} {{reason}}")]),
     ("Open files", "File descriptors in use and the limit.",
      [(f"process_open_fds{{{SEL}}}", "open {{instance}}"),
       (f"process_max_fds{{{SEL}}}", "limit {{instance}}")]))
pair(("HTTP requests by status", "Requests answered per second, by status.",
      [(f"sum by (status) (rate(assist_http_requests_total{{{SEL}}}[{RI}]))", "{{status}}")],
      {"unit": "reqps", "stack": True}),
     ("HTTP latency p99 by route", "99th percentile time to answer, by route template.",
      [(f"histogram_quantile(0.99, sum by (le, route) (rate(assist_http_request_duration_seconds_bucket{{{SEL}}}[{RI}])))",
        "{{route}}"),
       (f"sum(rate(assist_log_lines_dropped_total{{{SEL}}}[{RI}]))", "log lines dropped/s")],
      {"unit": "s"}))

dashboard = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                  "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "title": "Assist", "uid": "assist", "tags": ["assist"], "timezone": "browser",
    "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "description": "assistd: sessions, decisions, pairing, relay traffic, store writes, server. "
                   "Generated by scripts/grafana-dashboard.py.",
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
        {"name": "instance", "label": "Instance", "type": "query",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(assist_signal_sessions, instance)", "refId": "instance"},
         "definition": "label_values(assist_signal_sessions, instance)",
         "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2, "current": {},
         "hide": 0}]},
    "annotations": {"list": []},
    "panels": panels,
}
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(dashboard, indent=2) + "\n")
print(f"wrote {OUT} ({len(panels)} panels)")
