"""Drives assistd with the real Microsoft Graph Python SDK (msgraph-beta-sdk).

The SDK is used unchanged: only the request adapter's base URL points at a local
assistd, and its httpx client trusts the server's self-signed certificate (TLS is
verified, not switched off). Every test starts its own server on free ports in a
temporary data directory and stops it with SIGTERM, expecting exit status 0.

Run through tests/sdk/run.sh, which sets ASSISTD_BIN and installs requirements.txt.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    AnonymousAuthenticationProvider,
    AuthenticationProvider,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.kiota_client_factory import DEFAULT_CONNECTION_TIMEOUT, DEFAULT_REQUEST_TIMEOUT
from msgraph_beta import GraphRequestAdapter, GraphServiceClient
from msgraph_beta import graph_request_adapter as sdk_adapter_module
from msgraph_beta.generated.device_management.remote_assistance_settings.remote_assistance_settings_request_builder import (
    RemoteAssistanceSettingsRequestBuilder,
)
from msgraph_beta.generated.models.o_data_errors.o_data_error import ODataError
from msgraph_beta.generated.models.remote_assistance_settings import RemoteAssistanceSettings
from msgraph_beta.generated.models.remote_assistance_state import RemoteAssistanceState
from msgraph_core import GraphClientFactory

READ = "DeviceManagementServiceConfig.Read.All"
READ_WRITE = "DeviceManagementServiceConfig.ReadWrite.All"
TENANT_A = "11111111-1111-4111-8111-111111111111"
TENANT_B = "22222222-2222-4222-8222-222222222222"
READY_TIMEOUT_S = 20.0


def _assistd_bin() -> str:
    default = Path(__file__).resolve().parents[2] / "target" / "debug" / "assistd"
    path = os.environ.get("ASSISTD_BIN", str(default))
    if not os.access(path, os.X_OK):
        pytest.fail(f"assistd binary not found at {path}; build it or set ASSISTD_BIN")
    return path


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StaticToken(AccessTokenProvider):
    def __init__(self, tok: str) -> None:
        self.tok = tok

    async def get_authorization_token(self, uri, additional_authentication_context=None) -> str:
        return self.tok

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator(["127.0.0.1"])


@dataclass
class Server:
    bin: str
    data_dir: Path
    port: int
    metrics_port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/beta"

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def token(self, tenant: str, roles: list[str] | None, user: str = "admin@contoso.com") -> str:
        cmd = [self.bin, "token", "--data-dir", str(self.data_dir), "--tenant", tenant, "--user", user]
        if roles:
            cmd += ["--roles", ",".join(roles)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)
        tok = out.stdout.strip()
        assert tok.count(".") == 2, f"not a JWT: {out.stdout!r} {out.stderr!r}"
        return tok

    def client(self, auth: AuthenticationProvider) -> GraphServiceClient:
        """A GraphServiceClient as GraphRequestAdapter builds one by default (HTTP/2 httpx
        client, the SDK's default middleware and options), except for the base URL and
        the CA it trusts. Must be called inside the event loop that uses it."""
        ctx = ssl.create_default_context(cafile=str(self.cert_path))
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(DEFAULT_REQUEST_TIMEOUT, connect=DEFAULT_CONNECTION_TIMEOUT),
            http2=True,
            verify=ctx,
        )
        http = GraphClientFactory.create_with_default_middleware(
            api_version=sdk_adapter_module.apiVersion, client=http, options=sdk_adapter_module.options
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = self.base_url
        return GraphServiceClient(request_adapter=adapter)

    def client_with_token(self, tok: str) -> GraphServiceClient:
        return self.client(BaseBearerTokenAuthenticationProvider(StaticToken(tok)))


def _wait_ready(proc: subprocess.Popen, server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://127.0.0.1:{server.metrics_port}/readyz"
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"assistd exited early with {proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200 and "assistd: serving https://" in server.log() and server.cert_path.exists():
                    return
                last = f"status {resp.status}"
        except (urllib.error.URLError, OSError) as e:
            last = repr(e)
        time.sleep(0.1)
    pytest.fail(f"assistd not ready within {READY_TIMEOUT_S}s ({last}):\n{server.log()}")


@pytest.fixture
def server(tmp_path: Path):
    bin_path = _assistd_bin()
    data_dir = tmp_path / "data"
    port = _free_tcp_port()
    metrics_port = _free_tcp_port()
    while metrics_port == port:
        metrics_port = _free_tcp_port()
    srv = Server(bin_path, data_dir, port, metrics_port, tmp_path / "assistd.log")
    env = dict(os.environ)
    env.setdefault("ASSIST_LOG", "info")
    with open(srv.log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                bin_path, "serve",
                "--data-dir", str(data_dir),
                "--listen", f"127.0.0.1:{port}",
                "--quic-listen", f"127.0.0.1:{port}",
                "--metrics-listen", f"127.0.0.1:{metrics_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        _wait_ready(proc, srv)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"assistd did not stop within 15s of SIGTERM:\n{srv.log()}")
    assert proc.returncode == 0, f"assistd exited with {proc.returncode} after SIGTERM:\n{srv.log()}"


def _select(*props: str) -> RequestConfiguration:
    qp = RemoteAssistanceSettingsRequestBuilder.RemoteAssistanceSettingsRequestBuilderGetQueryParameters(
        select=list(props)
    )
    return RequestConfiguration(query_parameters=qp)


def _assert_defaults(s: RemoteAssistanceSettings | None) -> None:
    assert isinstance(s, RemoteAssistanceSettings)
    assert s.remote_assistance_state == RemoteAssistanceState.Disabled
    assert s.allow_sessions_to_unenrolled_devices is False
    assert s.block_chat is False


def _assert_odata_error(exc: ODataError, status: int, code: str) -> None:
    assert exc.response_status_code == status, exc
    assert exc.error is not None, "ODataError without a parsed error body"
    assert exc.error.code == code
    assert exc.error.message, "Graph error without a message"
    assert exc.error.inner_error is not None, "Graph error without innerError"
    assert exc.error.inner_error.request_id, "innerError without request-id"
    assert exc.error.inner_error.date is not None, "innerError without date"


def test_get_defaults_on_fresh_tenant(server: Server):
    tok = server.token(TENANT_A, [READ])

    async def run():
        client = server.client_with_token(tok)
        return await client.device_management.remote_assistance_settings.get()

    _assert_defaults(asyncio.run(run()))


def test_patch_then_get(server: Server):
    tok = server.token(TENANT_A, [READ_WRITE])

    async def run():
        client = server.client_with_token(tok)
        body = RemoteAssistanceSettings(
            remote_assistance_state=RemoteAssistanceState.Enabled,
            block_chat=True,
        )
        patched = await client.device_management.remote_assistance_settings.patch(body)
        fetched = await client.device_management.remote_assistance_settings.get()
        return patched, fetched

    patched, fetched = asyncio.run(run())
    assert isinstance(patched, RemoteAssistanceSettings), "PATCH returned no parsed entity"
    assert patched.remote_assistance_state == RemoteAssistanceState.Enabled
    assert patched.block_chat is True
    assert isinstance(fetched, RemoteAssistanceSettings)
    assert fetched.remote_assistance_state == RemoteAssistanceState.Enabled
    assert fetched.block_chat is True
    assert fetched.allow_sessions_to_unenrolled_devices is False


def test_select_through_request_configuration(server: Server):
    tok = server.token(TENANT_A, [READ])

    async def run():
        client = server.client_with_token(tok)
        return await client.device_management.remote_assistance_settings.get(
            request_configuration=_select("blockChat")
        )

    s = asyncio.run(run())
    assert isinstance(s, RemoteAssistanceSettings)
    assert s.block_chat is False
    assert s.remote_assistance_state is None
    assert s.allow_sessions_to_unenrolled_devices is None


def test_unauthenticated_is_401(server: Server):
    async def run(client: GraphServiceClient):
        with pytest.raises(ODataError) as ei:
            await client.device_management.remote_assistance_settings.get()
        return ei.value

    async def anonymous():
        return await run(server.client(AnonymousAuthenticationProvider()))

    async def garbage():
        return await run(server.client_with_token("not.a-real.token"))

    _assert_odata_error(asyncio.run(anonymous()), 401, "InvalidAuthenticationToken")
    _assert_odata_error(asyncio.run(garbage()), 401, "InvalidAuthenticationToken")


def test_missing_permission_is_403(server: Server):
    tok = server.token(TENANT_A, None)

    async def run():
        client = server.client_with_token(tok)
        with pytest.raises(ODataError) as ei:
            await client.device_management.remote_assistance_settings.get()
        return ei.value

    _assert_odata_error(asyncio.run(run()), 403, "Forbidden")


def test_tenants_are_isolated(server: Server):
    tok_a = server.token(TENANT_A, [READ_WRITE])
    tok_b = server.token(TENANT_B, [READ], user="admin@fabrikam.com")

    async def run():
        a = server.client_with_token(tok_a)
        b = server.client_with_token(tok_b)
        await a.device_management.remote_assistance_settings.patch(
            RemoteAssistanceSettings(
                remote_assistance_state=RemoteAssistanceState.Enabled,
                allow_sessions_to_unenrolled_devices=True,
                block_chat=True,
            )
        )
        seen_by_a = await a.device_management.remote_assistance_settings.get()
        seen_by_b = await b.device_management.remote_assistance_settings.get()
        return seen_by_a, seen_by_b

    seen_by_a, seen_by_b = asyncio.run(run())
    assert seen_by_a.remote_assistance_state == RemoteAssistanceState.Enabled
    assert seen_by_a.allow_sessions_to_unenrolled_devices is True
    assert seen_by_a.block_chat is True
    _assert_defaults(seen_by_b)
