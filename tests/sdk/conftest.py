"""Harness of the client compatibility suite: runs the real akstore binary on a temporary
database and a free port on 127.0.0.1, and builds official SDK clients pointed at it.

The binary comes from $AKSTORE_BIN, which tests/sdk/run sets. Each test gets its own server
and database file, so tests share no state and may run in any order.
"""

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.containerservice import ContainerServiceClient

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
API_VERSION = "2026-08-01"
RESOURCE_GROUP = "rg-sdk"

# Length of the emulated long-running operations in the delayed `arm` runs. Long enough that a
# read right after a write still finds the operation running, and short enough to keep the
# suite fast, because each long-running call waits about this long.
DELAY_SECONDS = 1

# Items per list page on every test server, small so that lists span several pages.
PAGE_SIZE = 3

# How long the binary may take to start listening.
START_TIMEOUT_SECONDS = 30

# How long a raw-HTTP helper waits for an operation before failing the test.
OPERATION_TIMEOUT_SECONDS = 30


class StaticTokenCredential:
    """A credential stand-in: akstore does not validate tokens, so no real identity is
    needed."""

    def __init__(self, token="akstore-test-token"):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


class StaticBearerPolicy(SansIOHTTPPolicy):
    """Sets `Authorization: Bearer <token>` on every request. The SDK's default bearer policy
    rejects plain-http URLs, which a local akstore serves."""

    def __init__(self, token="akstore-test-token"):
        super().__init__()
        self.token = token

    def on_request(self, request):
        request.http_request.headers["Authorization"] = f"Bearer {self.token}"


class Akstore:
    """One `akstore serve` process on a database file that outlives restarts."""

    def __init__(self, directory: Path, profile: str, delay_seconds: float = 0):
        self.directory = directory
        self.data = directory / "akstore.redb"
        self.log_path = directory / "akstore.log"
        self.profile = profile
        self.delay_seconds = delay_seconds
        self.process = None
        self.port = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> "Akstore":
        """Starts the server; port 0 lets the binary pick a free port."""
        args = [
            os.environ["AKSTORE_BIN"],
            "serve",
            "--data", str(self.data),
            "--listen", f"127.0.0.1:{port}",
            "--profile", self.profile,
            "--page-size", str(PAGE_SIZE),
        ]
        if self.delay_seconds:
            args += ["--provisioning-delay", f"{int(self.delay_seconds * 1000)}ms"]
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("AKSTORE_") and k != "FAILPOINTS"
        }
        env.setdefault("RUST_LOG", "info")
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        self.port = self._wait_for_port()
        return self

    def stop(self) -> int:
        """Sends SIGTERM and waits for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        """Sends SIGKILL, as a crash would end the process."""
        self.process.kill()
        self.process.wait(timeout=30)

    def restart_on_same_port(self) -> None:
        """Kills the server and starts it again on the same file and port, so URLs handed out
        before the restart stay valid."""
        port = self.port
        self.kill()
        self.start(port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **kwargs) -> ContainerServiceClient:
        """An SDK client for this server: plain-http authentication, short polling interval,
        and no retries, so a failure shows at once."""
        kwargs.setdefault("polling_interval", 0.1)
        kwargs.setdefault("retry_total", 0)
        return ContainerServiceClient(
            credential=StaticTokenCredential(),
            subscription_id=SUBSCRIPTION,
            base_url=self.base_url,
            authentication_policy=StaticBearerPolicy(),
            **kwargs,
        )

    def url(self, path: str) -> str:
        """Absolute URL of an ARM path, with the api-version."""
        separator = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{separator}api-version={API_VERSION}"

    def raw(self, method: str, path: str, **kwargs) -> requests.Response:
        """A raw HTTP request to an ARM path, as a client without the SDK sends it."""
        headers = {"Authorization": "Bearer akstore-test-token"}
        headers.update(kwargs.pop("headers", {}))
        return requests.request(method, self.url(path), headers=headers, timeout=30, **kwargs)

    def raw_url(self, method: str, url: str, **kwargs) -> requests.Response:
        """A raw HTTP request to an absolute URL the server handed out, such as an operation's."""
        headers = {"Authorization": "Bearer akstore-test-token"}
        headers.update(kwargs.pop("headers", {}))
        return requests.request(method, url, headers=headers, timeout=30, **kwargs)

    def wait_for_operation(self, response: requests.Response) -> dict:
        """Polls the `Azure-AsyncOperation` URL of a raw response until its status is terminal,
        honouring `Retry-After`, and returns the final status body. A response without the
        header finished at once and returns None."""
        url = response.headers.get("Azure-AsyncOperation")
        if url is None:
            return None
        deadline = time.monotonic() + OPERATION_TIMEOUT_SECONDS
        while True:
            status = self.raw_url("GET", url)
            assert status.status_code == 200, status.text
            body = status.json()
            if body["status"] != "InProgress":
                return body
            assert time.monotonic() < deadline, f"operation still running: {body}"
            time.sleep(float(status.headers.get("Retry-After", "1")))

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        pattern = re.compile(r"listening addr=127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            matches = pattern.findall(self.log())
            # The log file is appended across restarts: the newest line belongs to this start.
            if matches and self.process.poll() is None and self._ready(int(matches[-1])):
                return int(matches[-1])
            if self.process.poll() is not None:
                raise RuntimeError(f"akstore exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"akstore did not start listening:\n{self.log()}")

    @staticmethod
    def _ready(port: int) -> bool:
        # The server listens before its database is open; /readyz answers 200 once it serves.
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False


def cluster_path(name: str, resource_group: str = RESOURCE_GROUP) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.ContainerService/managedClusters/{name}"
    )


def cluster_body(pools=("nodepool1",), tags=None) -> dict:
    """A managed cluster as a client creates it, with the given agent pools."""
    body = {
        "location": "westeurope",
        "properties": {
            "kubernetesVersion": "1.33",
            "dnsPrefix": "sdk",
            "agentPoolProfiles": [
                {"name": name, "count": 1, "vmSize": "Standard_D2s_v3", "mode": "System"}
                for name in pools
            ],
        },
    }
    if tags is not None:
        body["tags"] = tags
    return body


def pool_body(count: int = 1) -> dict:
    return {"properties": {"count": count, "vmSize": "Standard_D2s_v3", "mode": "User"}}


def unique_name(prefix: str = "c") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _server(tmp_path, request, profile, delay_seconds):
    server = Akstore(tmp_path, profile, delay_seconds).start()
    yield server
    if server.process.poll() is None:
        server.kill()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- akstore log ({profile}, delay {delay_seconds} s) ---\n{server.log()}")


@pytest.fixture(params=[0, DELAY_SECONDS], ids=["arm-nodelay", f"arm-delay{DELAY_SECONDS}s"])
def arm(tmp_path, request):
    """An `arm`-profile server, once without and once with emulated long-running operations."""
    yield from _server(tmp_path, request, "arm", request.param)


@pytest.fixture
def arm_delayed(tmp_path, request):
    """An `arm`-profile server whose operations run long enough to observe them running."""
    yield from _server(tmp_path, request, "arm", 3)


@pytest.fixture
def documented(tmp_path, request):
    """A `documented`-profile server."""
    yield from _server(tmp_path, request, "documented", 0)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, so fixtures can print the server log of a
    failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
