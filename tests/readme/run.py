#!/usr/bin/env python3
"""Runs README.md's shell commands as written, so the README cannot drift from the code.

The convention (also in README.md's "Contributing" note):

* Every fenced ```sh block of README.md is run, in the order of the file, by one `bash` with
  `set -euo pipefail` (so variables set by one block, such as `. ./demo.env`, reach the next).
  Use ```sh only for commands that run; ```text (or ```toml, ...) for output and illustrations.
* An HTML comment on the line right before the opening fence changes that:
  - `<!-- readme-test: skip REASON -->`: the block is not run (`./test.sh` itself, interactive
    or graphical steps, repeats of earlier commands). Say why.
  - `<!-- readme-test: typed (…) -->`: one terminal of the README's two-terminal session
    ("Try a Remote Help session"), which a person types into. At the first such block the test plays
    that session itself (below); the others are part of it and not run again.
  - `<!-- readme-test: background -->`: the block is a long-running server. It is started in the
    background, the test waits until https://localhost:8443 and http://127.0.0.1:9090/readyz
    answer, runs the remaining blocks, then sends it SIGTERM and expects it to exit 0 promptly.
* The blocks run from a fresh working directory, target/readme-test/work (inside the repository,
  so `cargo` finds the workspace and its built target/; `scripts` there links to the repository's
  scripts/), so `./assist-data` and `demo.env` are new and a developer's own are never touched.
  ASSIST_* variables of the calling environment are removed.
* The README's ports (8443, 9090) are used as written. When the machine allows it, the test runs
  in a private network namespace (`unshare --net --map-root-user`), so a developer's running
  server, or another test, on those ports does not clash; otherwise the ports must be free.
* The session is played with the tokens the README produced (demo.env): `assist helper` and
  `assist sharer` (the binaries `cargo run --bin assist` runs) driven through their standard input
  as a person types, checking that chat gets through and that both exit 0 once the session ends.

Usage: python3 tests/readme/run.py   (./test.sh runs it; needs curl, python3 and a built assistd)
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "target" / "readme-test" / "work"
MARKER = re.compile(r"^<!--\s*readme-test:\s*(skip|background|typed)\b(.*?)-->\s*$")
HTTPS = "https://localhost:8443"
READY = "http://127.0.0.1:9090/readyz"
IN_NETNS = "ASSIST_README_TEST_NETNS"


class Block:
    def __init__(self, line: int, text: str, mode: str, note: str) -> None:
        self.line, self.text, self.mode, self.note = line, text, mode, note


def extract_blocks(markdown: str) -> list[Block]:
    """The ```sh blocks with their marker ('run', 'skip' or 'background')."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = lines[i].strip()
        if opening.startswith("```"):
            lang = opening[3:].strip()
            indent = len(lines[i]) - len(lines[i].lstrip())
            start = i
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
                i += 1
            if lang == "sh":
                mode, note = "run", ""
                prev = lines[start - 1].strip() if start > 0 else ""
                m = MARKER.match(prev)
                if m:
                    mode, note = m.group(1), m.group(2).strip()
                blocks.append(Block(start + 1, "\n".join(body) + "\n", mode, note))
        i += 1
    return blocks


def fail(msg: str) -> None:
    print(f"README test FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSIST_")}
    env.pop("DISPLAY", None)
    return env


def wait_ready(server: subprocess.Popen, cafile: Path, deadline_s: float) -> None:
    """Waits for /readyz and the HTTPS listener; the first `cargo run` may still be building."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if server.poll() is not None:
            fail(f"the background server exited early with {server.returncode}")
        try:
            with urllib.request.urlopen(READY, timeout=2) as r:
                if r.status == 200 and cafile.is_file():
                    ctx = ssl.create_default_context(cafile=str(cafile))
                    with urllib.request.urlopen(HTTPS + "/helper/", timeout=5, context=ctx) as h:
                        if h.status == 200:
                            return
        except OSError:
            pass
        time.sleep(0.5)
    fail(f"the server did not become ready within {deadline_s:.0f}s")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (cargo and assistd); it must drain and exit 0."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        rc = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        fail("the server did not stop within 30s of SIGTERM")
    if rc != 0:
        fail(f"the server exited {rc} after SIGTERM (expected 0)")


class Terminal:
    """One of the README's terminals: a CLI process, its output read line by line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, cwd=WORK, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
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
            print(f"  [{self.name}] {line}")
            m = re.search(pattern, line)
            if m:
                return m
        fail(f"{self.name} never printed /{pattern}/; it printed:\n" + "\n".join(self.seen))
        raise AssertionError  # unreachable

    def type(self, text: str) -> None:
        print(f"  [{self.name}] > {text}")
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def exits_zero(self, timeout: float = 15) -> None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail(f"{self.name} kept running after the session ended")
        if rc != 0:
            fail(f"{self.name} exited {rc} after the session ended (expected 0)")


def play_two_terminal_session(env: dict[str, str]) -> None:
    """The README's "Try a Remote Help session", typed as the README says."""
    demo = {}
    for line in (WORK / "demo.env").read_text().splitlines():
        key, _, value = line.partition("=")
        demo[key] = value
    for key in ("HELPER_TOKEN", "SHARER_TOKEN"):
        if not demo.get(key, "").count(".") == 2:
            fail(f"demo.env has no {key} (scripts/demo-tenant.sh wrote: {demo})")
    assist = str(REPO / "target" / "debug" / "assist")
    print("==> the two-terminal session, scripted")
    helper = Terminal("helper", [assist, "helper", "--token", demo["HELPER_TOKEN"]], env)
    code = helper.expect(r"Your code is (\S+)").group(1)
    sharer = Terminal(
        "sharer", [assist, "sharer", "--token", demo["SHARER_TOKEN"], "--code", code], env
    )
    sharer.expect(r"Joined\. The other side: Helen")
    helper.expect(r"Joined\. The other side: Sam")
    helper.type("mode fullControl")
    helper.expect(r"Warnings:")
    helper.type("ack")
    sharer.expect(r"asks for fullControl")
    sharer.type("allow")
    helper.expect(r"Session active in fullControl \(chat on\)")
    sharer.expect(r"Session active in fullControl \(chat on\)")
    sharer.type("chat hello from the README")
    helper.expect(r"\] hello from the README")
    helper.type("end")
    helper.expect(r"Session ended")
    sharer.expect(r"Session ended")
    helper.exits_zero()
    sharer.exits_zero()


def run_in_shell(shell: subprocess.Popen, b: Block) -> None:
    """Sources the block in the shared shell (stdin from /dev/null); fails if the shell exits."""
    assert shell.stdin is not None
    path = WORK.parent / f"block-{b.line}.sh"
    done = WORK.parent / f"block-{b.line}.done"
    path.write_text(b.text)
    shell.stdin.write(f". {path} </dev/null\ntouch {done}\n")
    shell.stdin.flush()
    end = time.monotonic() + 600
    while not done.exists():
        if shell.poll() is not None:
            fail(f"README.md:{b.line}: the block failed (exit {shell.returncode})")
        if time.monotonic() > end:
            fail(f"README.md:{b.line}: the block did not finish within 600s")
        time.sleep(0.1)


def main() -> None:
    blocks = extract_blocks((REPO / "README.md").read_text())
    for mode in ("run", "background", "typed"):
        if not any(b.mode == mode for b in blocks):
            fail(f"README.md has no ```sh block marked {mode}")
    if os.environ.get(IN_NETNS) != "1":
        # Build first, outside the timed waits (a no-op when ./test.sh has just built).
        subprocess.run(["cargo", "build", "-q", "--locked", "-p", "assistd", "-p", "assist-cli",
                        "--bins"],
                       cwd=REPO, check=True)
    if os.environ.get(IN_NETNS) != "1" and shutil.which("unshare") and shutil.which("ip"):
        probe = subprocess.run(
            ["unshare", "--net", "--map-root-user", "ip", "link", "set", "lo", "up"],
            capture_output=True,
        )
        if probe.returncode == 0:
            print("==> README test in a private network namespace (ports 8443/9090 as written)")
            script = "ip link set lo up && exec " + " ".join(
                [sys.executable, str(Path(__file__).resolve())]
            )
            env = dict(os.environ, **{IN_NETNS: "1"})
            sys.exit(subprocess.run(
                ["unshare", "--net", "--map-root-user", "sh", "-c", script], env=env
            ).returncode)

    if os.environ.get(IN_NETNS) != "1":
        # Sharing the machine's network: the README's ports must be free.
        import socket
        for port in (8443, 9090):
            with socket.socket() as probe_socket:
                try:
                    probe_socket.bind(("127.0.0.1", port))
                except OSError:
                    fail(f"port {port} is in use (a running assistd?) and no private network "
                         "namespace is available (unshare): stop it and run again")
    if WORK.parent.exists():
        shutil.rmtree(WORK.parent)
    WORK.mkdir(parents=True)
    (WORK / "scripts").symlink_to(REPO / "scripts")
    env = clean_env()

    server = None
    played = False
    logs = Path(tempfile.mkdtemp(prefix="readme-test-"))
    # One shell for every foreground block, so variables carry over from block to block.
    shell = subprocess.Popen(["bash"], cwd=WORK, env=env, stdin=subprocess.PIPE, text=True)
    assert shell.stdin is not None
    shell.stdin.write("set -euo pipefail\n")
    try:
        for b in blocks:
            if b.mode == "skip":
                print(f"==> README.md:{b.line}: skipped {b.note or '(no reason given)'}")
                continue
            if b.mode == "typed":
                if played:
                    print(f"==> README.md:{b.line}: typed, part of the session played above")
                else:
                    print(f"==> README.md:{b.line}: typed: playing the two-terminal session")
                    play_two_terminal_session(env)
                    played = True
                continue
            print(f"==> README.md:{b.line}: {b.mode}\n{b.text.rstrip()}")
            script = "set -euo pipefail\n" + b.text
            if b.mode == "background":
                if server is not None:
                    fail(f"README.md:{b.line}: a second background block while one runs")
                log = open(logs / "server.log", "w")
                server = subprocess.Popen(
                    ["bash", "-c", script], cwd=WORK, env=env, stdout=log, stderr=log,
                    start_new_session=True,
                )
                wait_ready(server, WORK / "assist-data" / "tls" / "cert.pem", 600)
                continue
            run_in_shell(shell, b)
        if server is None:
            fail("no server was started")
    finally:
        if shell.poll() is None:
            shell.kill()
        if server is not None and server.poll() is None:
            stop_server(server)
            server = None
        if server is not None:
            print((logs / "server.log").read_text()[-4000:], file=sys.stderr)
    print("README test: every ```sh block ran as written")


if __name__ == "__main__":
    main()
