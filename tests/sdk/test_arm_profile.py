"""The official SDK's conditional writes, lists and pollers against the `arm` profile.

Every test runs twice: with no provisioning delay, where each call finishes after one request,
and with a delay, where each write is a long-running operation the SDK's poller follows.
The status of each first request is read through a response hook, so a test fails if akstore
returns a status the table does not give, even where the SDK would accept it.
"""

import uuid

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from conftest import RESOURCE_GROUP, PAGE_SIZE, cluster_body, cluster_path, pool_body, unique_name
from recorder import Recorder


def create_cluster(client, name, pools=("nodepool1",), resource_group=RESOURCE_GROUP):
    poller = client.managed_clusters.begin_create_or_update(
        resource_group, name, cluster_body(pools), match_condition=MatchConditions.IfMissing
    )
    return poller.result()


def pool_etags(client, name):
    return {pool.name: pool.e_tag for pool in client.agent_pools.list(RESOURCE_GROUP, name)}


def assert_long_running_headers(server, exchange):
    """A first response carries polling headers exactly when operations are emulated."""
    if server.delay_seconds:
        assert exchange.headers["azure-asyncoperation"].startswith(server.base_url + "/")
        assert int(exchange.headers["retry-after"]) >= 1
    else:
        assert "azure-asyncoperation" not in exchange.headers
        assert "location" not in exchange.headers


def test_create_if_missing_then_repeat(arm):
    client = arm.client()
    name = unique_name()

    recorder = Recorder()
    poller = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP,
        name,
        cluster_body(),
        match_condition=MatchConditions.IfMissing,
        raw_response_hook=recorder,
    )
    cluster = poller.result()
    assert recorder.first().status == 201
    assert_long_running_headers(arm, recorder.first())
    assert poller.status() == "Succeeded"
    assert cluster.provisioning_state == "Succeeded"
    assert uuid.UUID(cluster.e_tag)

    with pytest.raises(ResourceExistsError) as raised:
        client.managed_clusters.begin_create_or_update(
            RESOURCE_GROUP, name, cluster_body(), match_condition=MatchConditions.IfMissing
        ).result()
    assert raised.value.status_code == 412
    assert raised.value.error.code == "PreconditionFailed"
    assert client.managed_clusters.get(RESOURCE_GROUP, name).e_tag == cluster.e_tag


def test_update_with_current_etag(arm):
    client = arm.client()
    name = unique_name()
    created = create_cluster(client, name)

    recorder = Recorder()
    body = cluster_body()
    body["properties"]["kubernetesVersion"] = "1.34"
    updated = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP,
        name,
        body,
        etag=created.e_tag,
        match_condition=MatchConditions.IfNotModified,
        raw_response_hook=recorder,
    ).result()

    assert recorder.first().status == 200
    assert recorder.first().headers["etag"].strip('"') == updated.e_tag
    assert updated.e_tag != created.e_tag
    assert updated.kubernetes_version == "1.34"
    assert updated.provisioning_state == "Succeeded"
    assert client.managed_clusters.get(RESOURCE_GROUP, name).e_tag == updated.e_tag


def test_update_with_stale_etag(arm):
    client = arm.client()
    name = unique_name()
    created = create_cluster(client, name)
    current = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), etag=created.e_tag,
        match_condition=MatchConditions.IfNotModified,
    ).result()

    with pytest.raises(ResourceModifiedError) as raised:
        client.managed_clusters.begin_create_or_update(
            RESOURCE_GROUP, name, cluster_body(), etag=created.e_tag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
    assert raised.value.status_code == 412
    assert raised.value.error.code == "PreconditionFailed"
    assert client.managed_clusters.get(RESOURCE_GROUP, name).e_tag == current.e_tag


def test_if_present_on_missing_cluster(arm):
    client = arm.client()
    name = unique_name()

    with pytest.raises(ResourceNotFoundError) as raised:
        client.managed_clusters.begin_create_or_update(
            RESOURCE_GROUP, name, cluster_body(), match_condition=MatchConditions.IfPresent
        ).result()
    assert raised.value.status_code == 412

    with pytest.raises(ResourceNotFoundError) as missing:
        client.managed_clusters.get(RESOURCE_GROUP, name)
    assert missing.value.status_code == 404


def test_update_tags_with_current_and_stale_etag(arm):
    client = arm.client()
    name = unique_name()
    created = create_cluster(client, name)

    recorder = Recorder()
    tagged = client.managed_clusters.begin_update_tags(
        RESOURCE_GROUP,
        name,
        {"tags": {"team": "platform"}},
        etag=created.e_tag,
        match_condition=MatchConditions.IfNotModified,
        raw_response_hook=recorder,
    ).result()
    assert recorder.first().method == "PATCH"
    assert recorder.first().status == 200
    assert_long_running_headers(arm, recorder.first())
    assert tagged.tags == {"team": "platform"}
    assert tagged.e_tag != created.e_tag
    # A PATCH of tags keeps the rest of the cluster.
    assert tagged.kubernetes_version == "1.33"

    with pytest.raises(ResourceModifiedError) as raised:
        client.managed_clusters.begin_update_tags(
            RESOURCE_GROUP, name, {"tags": {"team": "other"}}, etag=created.e_tag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
    assert raised.value.status_code == 412
    assert client.managed_clusters.get(RESOURCE_GROUP, name).tags == {"team": "platform"}


def test_agent_pool_writes_keep_cluster_etag(arm):
    client = arm.client()
    name = unique_name()
    cluster = create_cluster(client, name, pools=("system",))
    system_etag = pool_etags(client, name)["system"]

    recorder = Recorder()
    created = client.agent_pools.begin_create_or_update(
        RESOURCE_GROUP, name, "user1", pool_body(1),
        match_condition=MatchConditions.IfMissing, raw_response_hook=recorder,
    ).result()
    assert recorder.first().status == 201
    assert created.provisioning_state == "Succeeded"
    assert uuid.UUID(created.e_tag)

    recorder = Recorder()
    updated = client.agent_pools.begin_create_or_update(
        RESOURCE_GROUP, name, "user1", pool_body(3), etag=created.e_tag,
        match_condition=MatchConditions.IfNotModified, raw_response_hook=recorder,
    ).result()
    assert recorder.first().status == 200
    assert updated.count == 3
    assert updated.e_tag != created.e_tag

    with pytest.raises(ResourceModifiedError) as stale_update:
        client.agent_pools.begin_create_or_update(
            RESOURCE_GROUP, name, "user1", pool_body(5), etag=created.e_tag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
    assert stale_update.value.status_code == 412

    with pytest.raises(ResourceModifiedError) as stale_delete:
        client.agent_pools.begin_delete(
            RESOURCE_GROUP, name, "user1", etag=created.e_tag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
    assert stale_delete.value.status_code == 412
    assert client.agent_pools.get(RESOURCE_GROUP, name, "user1").e_tag == updated.e_tag

    recorder = Recorder()
    client.agent_pools.begin_delete(
        RESOURCE_GROUP, name, "user1", etag=updated.e_tag,
        match_condition=MatchConditions.IfNotModified, raw_response_hook=recorder,
    ).result()
    assert recorder.first().status == 202
    with pytest.raises(ResourceNotFoundError):
        client.agent_pools.get(RESOURCE_GROUP, name, "user1")

    # Pool writes rotate only the pool's own eTag.
    after = client.managed_clusters.get(RESOURCE_GROUP, name)
    assert after.e_tag == cluster.e_tag
    assert pool_etags(client, name) == {"system": system_etag}


def test_cluster_update_rotates_every_pool_etag(arm):
    client = arm.client()
    name = unique_name()
    cluster = create_cluster(client, name, pools=("system", "user1"))
    client.agent_pools.begin_create_or_update(
        RESOURCE_GROUP, name, "user2", pool_body(2), match_condition=MatchConditions.IfMissing
    ).result()
    before = pool_etags(client, name)
    assert set(before) == {"system", "user1", "user2"}
    cluster = client.managed_clusters.get(RESOURCE_GROUP, name)

    updated = client.managed_clusters.begin_update_tags(
        RESOURCE_GROUP, name, {"tags": {"rotated": "yes"}}, etag=cluster.e_tag,
        match_condition=MatchConditions.IfNotModified,
    ).result()

    after = pool_etags(client, name)
    assert set(after) == set(before)
    for pool in before:
        assert after[pool] != before[pool], f"pool {pool} kept its eTag"
    # The cluster's agentPoolProfiles repeat each pool's eTag, as the SDK's models show it.
    profiles = {profile.name: profile.e_tag for profile in updated.agent_pool_profiles}
    assert profiles == after
    assert updated.e_tag != cluster.e_tag

    # An eTag read before the rotation no longer matches.
    with pytest.raises(ResourceModifiedError):
        client.agent_pools.begin_create_or_update(
            RESOURCE_GROUP, name, "user2", pool_body(4), etag=before["user2"],
            match_condition=MatchConditions.IfNotModified,
        ).result()


def test_delete_with_stale_and_current_etag(arm):
    client = arm.client()
    name = unique_name()
    created = create_cluster(client, name)
    current = client.managed_clusters.begin_update_tags(
        RESOURCE_GROUP, name, {"tags": {"a": "b"}}
    ).result()

    with pytest.raises(ResourceModifiedError) as stale:
        client.managed_clusters.begin_delete(
            RESOURCE_GROUP, name, etag=created.e_tag, match_condition=MatchConditions.IfNotModified
        ).result()
    assert stale.value.status_code == 412
    assert client.managed_clusters.get(RESOURCE_GROUP, name).e_tag == current.e_tag

    recorder = Recorder()
    poller = client.managed_clusters.begin_delete(
        RESOURCE_GROUP, name, etag=current.e_tag, match_condition=MatchConditions.IfNotModified,
        raw_response_hook=recorder,
    )
    assert poller.result() is None
    assert poller.status() == "Succeeded"
    first = recorder.first()
    assert first.status == 202
    if arm.delay_seconds:
        assert first.headers["location"].startswith(arm.base_url + "/")
        assert first.headers["azure-asyncoperation"].startswith(arm.base_url + "/")
    with pytest.raises(ResourceNotFoundError):
        client.managed_clusters.get(RESOURCE_GROUP, name)
    with pytest.raises(ResourceNotFoundError):
        client.agent_pools.get(RESOURCE_GROUP, name, "nodepool1")


def test_delete_of_missing_resources(arm):
    client = arm.client()
    name = unique_name()

    recorder = Recorder()
    poller = client.managed_clusters.begin_delete(RESOURCE_GROUP, name, raw_response_hook=recorder)
    assert poller.result() is None
    assert recorder.first().status == 204

    create_cluster(client, name)
    recorder = Recorder()
    client.agent_pools.begin_delete(
        RESOURCE_GROUP, name, "missing1", etag=str(uuid.uuid4()),
        match_condition=MatchConditions.IfNotModified, raw_response_hook=recorder,
    ).result()
    assert recorder.first().status == 204


def test_lists_follow_next_link(arm):
    client = arm.client()
    in_group = sorted(unique_name() for _ in range(2 * PAGE_SIZE + 1))
    elsewhere = sorted(unique_name() for _ in range(2))

    # Started together: each cluster's operation runs on its own cluster.
    pollers = [
        client.managed_clusters.begin_create_or_update(RESOURCE_GROUP, name, cluster_body())
        for name in in_group
    ] + [
        client.managed_clusters.begin_create_or_update("rg-other", name, cluster_body())
        for name in elsewhere
    ]
    for poller in pollers:
        poller.result()

    recorder = Recorder()
    listed = [c.name for c in client.managed_clusters.list_by_resource_group(
        RESOURCE_GROUP, raw_response_hook=recorder)]
    assert sorted(listed) == in_group
    assert len(recorder.exchanges) == 3, "the SDK should have read three pages"
    assert all(exchange.status == 200 for exchange in recorder.exchanges)

    recorder = Recorder()
    everything = [c.name for c in client.managed_clusters.list(raw_response_hook=recorder)]
    assert sorted(everything) == sorted(in_group + elsewhere)
    assert len(recorder.exchanges) == 3

    # Pools page the same way.
    name = in_group[0]
    pools = [f"p{i}" for i in range(PAGE_SIZE + 1)]
    # One pool at a time: with emulated operations, a second pool write on the same cluster
    # is rejected while the first one runs.
    for pool in pools:
        client.agent_pools.begin_create_or_update(RESOURCE_GROUP, name, pool, pool_body()).result()
    recorder = Recorder()
    listed_pools = [pool.name for pool in client.agent_pools.list(
        RESOURCE_GROUP, name, raw_response_hook=recorder)]
    assert sorted(listed_pools) == sorted(pools + ["nodepool1"])
    assert len(recorder.exchanges) == 2


def test_unquoted_if_match_as_older_sdks_send_it(arm):
    """SDK 40.x and the aks-preview CLI extension send If-Match values without quotes."""
    path = cluster_path(unique_name())

    created = arm.raw("PUT", path, json=cluster_body(), headers={"If-None-Match": "*"})
    assert created.status_code == 201, created.text
    arm.wait_for_operation(created)
    first_etag = created.json()["eTag"]

    updated = arm.raw("PUT", path, json=cluster_body(tags={"v": "2"}),
                      headers={"If-Match": first_etag})
    assert updated.status_code == 200, updated.text
    arm.wait_for_operation(updated)
    second_etag = updated.json()["eTag"]
    assert second_etag != first_etag

    stale = arm.raw("PUT", path, json=cluster_body(tags={"v": "3"}),
                    headers={"If-Match": first_etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "PreconditionFailed"

    patched = arm.raw("PATCH", path, json={"tags": {"v": "4"}}, headers={"if-match": second_etag})
    assert patched.status_code == 200, patched.text
    arm.wait_for_operation(patched)
    third_etag = patched.json()["eTag"]
    assert third_etag != second_etag

    stale_delete = arm.raw("DELETE", path, headers={"IF-MATCH": second_etag})
    assert stale_delete.status_code == 412

    deleted = arm.raw("DELETE", path, headers={"If-Match": third_etag})
    assert deleted.status_code == 202
    arm.wait_for_operation(deleted)
    assert arm.raw("GET", path).status_code == 404


def test_request_id_headers(arm):
    client_request_id = str(uuid.uuid4())
    response = arm.raw("GET", cluster_path(unique_name()),
                       headers={"X-MS-Client-Request-Id": client_request_id})
    assert response.status_code == 404
    assert uuid.UUID(response.headers["x-ms-request-id"])
    assert response.headers["x-ms-correlation-request-id"] == client_request_id

    # The SDK sends a fresh x-ms-client-request-id with every call.
    recorder = Recorder()
    create_cluster_with_hook = arm.client().managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, unique_name(), cluster_body(), raw_response_hook=recorder
    )
    create_cluster_with_hook.result()
    for exchange in recorder.exchanges:
        assert uuid.UUID(exchange.headers["x-ms-request-id"])
        assert exchange.headers["x-ms-correlation-request-id"]
    request_ids = {exchange.headers["x-ms-request-id"] for exchange in recorder.exchanges}
    assert len(request_ids) == len(recorder.exchanges)


def test_errors_have_arm_shape(arm):
    """A request akstore rejects gets an ARM error body the SDK turns into an error model."""
    client = arm.client()
    with pytest.raises(HttpResponseError) as raised:
        client.managed_clusters.begin_create_or_update(
            RESOURCE_GROUP, unique_name(), {"properties": {}}
        ).result()
    assert raised.value.status_code == 400
    assert raised.value.error.code == "LocationRequired"
    assert raised.value.error.message
