"""Emulated long-running operations as the SDK's pollers and raw clients see them.

The server runs in the `arm` profile with a provisioning delay of a few seconds, long enough
to observe an operation while it runs. Checks that depend on observing it in time measure the
time since the write and hold whenever the observation came before the deadline.
"""

import time
import uuid
from datetime import datetime

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.mgmt.containerservice.models import ManagedCluster
from azure.mgmt.core.polling.arm_polling import ARMPolling

from conftest import RESOURCE_GROUP, cluster_body, cluster_path, pool_body, unique_name
from recorder import Recorder


class FirstResponseOnly(ARMPolling):
    """A polling method that stops after the first response, like a client process that saved
    its continuation token and exited. Unlike `polling=False`, it can issue that token."""

    def run(self):
        pass


def running_window(server, started):
    """Whether a read issued now still falls before the operation's deadline, with a margin for
    the request's own time."""
    return time.monotonic() - started < server.delay_seconds - 0.5


def test_poller_follows_operation_to_succeeded(arm_delayed):
    client = arm_delayed.client()
    name = unique_name()

    started = time.monotonic()
    recorder = Recorder()
    poller = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), raw_response_hook=recorder
    )
    if running_window(arm_delayed, started):
        assert not poller.done()
        assert client.managed_clusters.get(RESOURCE_GROUP, name).provisioning_state == "Creating"
    cluster = poller.result()

    assert time.monotonic() - started >= arm_delayed.delay_seconds - 0.1
    assert cluster.provisioning_state == "Succeeded"
    assert poller.status() == "Succeeded"
    first = recorder.first()
    assert (first.method, first.status) == ("PUT", 201)
    # The poller read the operation-status URL, then the resource once more.
    polls = recorder.paths_containing("/operations/")
    assert polls, "the poller never read the operation status"
    assert polls[-1].status == 200
    assert recorder.exchanges[-1].method == "GET"
    assert recorder.exchanges[-1].path == cluster_path(name)


def test_initial_response_shows_operation(arm_delayed):
    client = arm_delayed.client()
    name = unique_name()

    # polling=False returns the first response's resource without waiting.
    accepted = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), polling=False
    ).result()
    assert accepted.provisioning_state == "Creating"
    assert [profile.provisioning_state for profile in accepted.agent_pool_profiles] == ["Creating"]

    updated = wait_then(arm_delayed, lambda: client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), polling=False).result())
    assert isinstance(updated, ManagedCluster)
    assert updated.provisioning_state == "Updating"
    # The eTag rotates when the write is accepted, not when the operation ends.
    assert updated.e_tag != accepted.e_tag
    assert client.managed_clusters.get(RESOURCE_GROUP, name).e_tag == updated.e_tag


def test_operation_status_and_result_urls(arm_delayed):
    path = cluster_path(unique_name())
    created = arm_delayed.raw("PUT", path, json=cluster_body())
    arm_delayed.wait_for_operation(created)

    started = time.monotonic()
    deleted = arm_delayed.raw("DELETE", path)
    assert deleted.status_code == 202
    status_url = deleted.headers["Azure-AsyncOperation"]
    result_url = deleted.headers["Location"]
    assert int(deleted.headers["Retry-After"]) >= 1
    assert "/providers/Microsoft.ContainerService/locations/westeurope/operations/" in status_url
    assert "/operationresults/" in result_url

    status = arm_delayed.raw_url("GET", status_url)
    result = arm_delayed.raw_url("GET", result_url)
    resource = arm_delayed.raw("GET", path)
    if running_window(arm_delayed, started):
        assert status.status_code == 200
        body = status.json()
        assert set(body) == {"id", "name", "status", "startTime", "endTime"}
        assert body["status"] == "InProgress"
        assert body["endTime"] is None
        assert body["id"].endswith("/operations/" + body["name"])
        assert result.status_code == 202
        assert resource.json()["properties"]["provisioningState"] == "Deleting"

    final = arm_delayed.wait_for_operation(deleted)
    assert final["status"] == "Succeeded"
    start = datetime.fromisoformat(final["startTime"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(final["endTime"].replace("Z", "+00:00"))
    assert (end - start).total_seconds() == pytest.approx(arm_delayed.delay_seconds, abs=0.01)
    assert arm_delayed.raw_url("GET", result_url).status_code == 204
    assert arm_delayed.raw("GET", path).status_code == 404


def test_write_during_operation_is_rejected(arm_delayed):
    client = arm_delayed.client()
    name = unique_name()
    client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), polling=False
    ).result()

    started = time.monotonic()
    rejected = []
    # The SDK maps 409 to ResourceExistsError.
    for write in (
        lambda: client.managed_clusters.begin_create_or_update(
            RESOURCE_GROUP, name, cluster_body(), polling=False).result(),
        lambda: client.managed_clusters.begin_update_tags(
            RESOURCE_GROUP, name, {"tags": {"x": "y"}}, polling=False).result(),
        lambda: client.agent_pools.begin_create_or_update(
            RESOURCE_GROUP, name, "user1", pool_body(), polling=False).result(),
        lambda: client.managed_clusters.begin_delete(RESOURCE_GROUP, name, polling=False).result(),
    ):
        with pytest.raises(ResourceExistsError) as raised:
            write()
        rejected.append(raised.value)
    if running_window(arm_delayed, started):
        for error in rejected:
            assert error.status_code == 409
            assert error.error.code == "OperationNotAllowed"

    # Once the operation has ended, the same writes go through.
    time.sleep(arm_delayed.delay_seconds)
    client.agent_pools.begin_create_or_update(RESOURCE_GROUP, name, "user1", pool_body()).result()
    assert client.agent_pools.get(RESOURCE_GROUP, name, "user1").provisioning_state == "Succeeded"


def test_pool_delete_reads_deleting_until_gone(arm_delayed):
    client = arm_delayed.client()
    name = unique_name()
    client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(("system", "user1"))
    ).result()

    started = time.monotonic()
    poller = client.agent_pools.begin_delete(RESOURCE_GROUP, name, "user1")
    pool = client.agent_pools.get(RESOURCE_GROUP, name, "user1")
    cluster = client.managed_clusters.get(RESOURCE_GROUP, name)
    if running_window(arm_delayed, started):
        assert pool.provisioning_state == "Deleting"
        states = {p.name: p.provisioning_state for p in cluster.agent_pool_profiles}
        assert states == {"system": "Succeeded", "user1": "Deleting"}
        assert cluster.provisioning_state == "Succeeded"

    assert poller.result() is None
    with pytest.raises(ResourceNotFoundError):
        client.agent_pools.get(RESOURCE_GROUP, name, "user1")
    names = [p.name for p in client.managed_clusters.get(RESOURCE_GROUP, name).agent_pool_profiles]
    assert names == ["system"]


def test_restart_during_create_then_poller_resumes(arm_delayed):
    client = arm_delayed.client()
    name = unique_name()
    poller = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), polling=FirstResponseOnly()
    )
    token = poller.continuation_token()

    arm_delayed.restart_on_same_port()

    client = arm_delayed.client()
    resumed = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), continuation_token=token
    )
    cluster = resumed.result()
    assert resumed.status() == "Succeeded"
    assert cluster.provisioning_state == "Succeeded"
    assert client.managed_clusters.get(RESOURCE_GROUP, name).provisioning_state == "Succeeded"


def test_restart_during_delete_then_poller_resumes(arm_delayed):
    client = arm_delayed.client()
    name = unique_name()
    client.managed_clusters.begin_create_or_update(RESOURCE_GROUP, name, cluster_body()).result()

    recorder = Recorder()
    poller = client.managed_clusters.begin_delete(
        RESOURCE_GROUP, name, polling=FirstResponseOnly(), raw_response_hook=recorder
    )
    token = poller.continuation_token()
    status_url = recorder.first().headers["azure-asyncoperation"]

    arm_delayed.restart_on_same_port()

    client = arm_delayed.client()
    resumed = client.managed_clusters.begin_delete(RESOURCE_GROUP, name, continuation_token=token)
    assert resumed.result() is None
    assert resumed.status() == "Succeeded"
    with pytest.raises(ResourceNotFoundError):
        client.managed_clusters.get(RESOURCE_GROUP, name)
    assert arm_delayed.raw_url("GET", status_url).json()["status"] == "Succeeded"


def test_conditional_write_checks_etag_at_acceptance(arm_delayed):
    """A precondition is checked against the eTag current when the write arrives, even while
    an operation runs, so a stale eTag gets 412 rather than 409. The operation's end does not
    rotate the eTag again."""
    client = arm_delayed.client()
    name = unique_name()
    path = cluster_path(name)
    started = time.monotonic()
    accepted = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), polling=False
    ).result()

    stale = arm_delayed.raw("PUT", path, json=cluster_body(),
                            headers={"If-Match": f'"{uuid.uuid4()}"'})
    exists = arm_delayed.raw("PUT", path, json=cluster_body(), headers={"If-None-Match": "*"})
    current = arm_delayed.raw("PUT", path, json=cluster_body(),
                              headers={"If-Match": f'"{accepted.e_tag}"'})
    if running_window(arm_delayed, started):
        assert stale.status_code == 412
        assert exists.status_code == 412
        assert current.status_code == 409
        assert current.json()["error"]["code"] == "OperationNotAllowed"
        assert int(current.headers["Retry-After"]) >= 1

    time.sleep(arm_delayed.delay_seconds)
    assert client.managed_clusters.get(RESOURCE_GROUP, name).e_tag == accepted.e_tag
    updated = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), etag=accepted.e_tag,
        match_condition=MatchConditions.IfNotModified,
    ).result()
    assert updated.e_tag != accepted.e_tag


def wait_then(server, action):
    """Waits out one operation, then runs `action`."""
    time.sleep(server.delay_seconds + 0.2)
    return action()
