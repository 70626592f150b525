"""Which SDK calls work against the `documented` profile, which follows the status table of the
AKS ETag documentation.

Creates, updates, tag updates and pool writes behave as in the `arm` profile. DELETE of an
existing resource returns 200, as the documentation's table lists, and the SDK (which accepts
only 202 or 204) raises on it although the resource is deleted.
"""

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from conftest import RESOURCE_GROUP, cluster_body, cluster_path, pool_body, unique_name
from recorder import Recorder


def test_writes_succeed_through_sdk(documented):
    client = documented.client()
    name = unique_name()

    recorder = Recorder()
    created = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), match_condition=MatchConditions.IfMissing,
        raw_response_hook=recorder,
    ).result()
    assert recorder.first().status == 201
    assert "azure-asyncoperation" not in recorder.first().headers
    assert len(recorder.exchanges) == 1, "a write finishes after one request"

    with pytest.raises(ResourceExistsError):
        client.managed_clusters.begin_create_or_update(
            RESOURCE_GROUP, name, cluster_body(), match_condition=MatchConditions.IfMissing
        ).result()

    updated = client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(), etag=created.e_tag,
        match_condition=MatchConditions.IfNotModified,
    ).result()
    assert updated.e_tag != created.e_tag

    with pytest.raises(ResourceModifiedError):
        client.managed_clusters.begin_update_tags(
            RESOURCE_GROUP, name, {"tags": {"a": "b"}}, etag=created.e_tag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
    tagged = client.managed_clusters.begin_update_tags(
        RESOURCE_GROUP, name, {"tags": {"a": "b"}}, etag=updated.e_tag,
        match_condition=MatchConditions.IfNotModified,
    ).result()
    assert tagged.tags == {"a": "b"}

    pool = client.agent_pools.begin_create_or_update(
        RESOURCE_GROUP, name, "user1", pool_body(), match_condition=MatchConditions.IfMissing
    ).result()
    pool = client.agent_pools.begin_create_or_update(
        RESOURCE_GROUP, name, "user1", pool_body(2), etag=pool.e_tag,
        match_condition=MatchConditions.IfNotModified,
    ).result()
    assert pool.count == 2
    assert client.managed_clusters.get(RESOURCE_GROUP, name).e_tag == tagged.e_tag

    # Lists and deletes of missing resources work as in the arm profile.
    assert [c.name for c in client.managed_clusters.list_by_resource_group(RESOURCE_GROUP)] == [name]
    recorder = Recorder()
    client.managed_clusters.begin_delete(RESOURCE_GROUP, unique_name(), raw_response_hook=recorder).result()
    assert recorder.first().status == 204


def test_delete_answers_200_which_sdk_rejects(documented):
    client = documented.client()
    name = unique_name()
    client.managed_clusters.begin_create_or_update(
        RESOURCE_GROUP, name, cluster_body(("system", "user1"))
    ).result()

    with pytest.raises(HttpResponseError) as pool_delete:
        client.agent_pools.begin_delete(RESOURCE_GROUP, name, "user1").result()
    assert pool_delete.value.status_code == 200
    # The delete was applied all the same.
    with pytest.raises(ResourceNotFoundError):
        client.agent_pools.get(RESOURCE_GROUP, name, "user1")

    with pytest.raises(HttpResponseError) as cluster_delete:
        client.managed_clusters.begin_delete(RESOURCE_GROUP, name).result()
    assert cluster_delete.value.status_code == 200
    with pytest.raises(ResourceNotFoundError):
        client.managed_clusters.get(RESOURCE_GROUP, name)


def test_raw_delete_answers_200(documented):
    path = cluster_path(unique_name())
    created = documented.raw("PUT", path, json=cluster_body(), headers={"If-None-Match": "*"})
    assert created.status_code == 201
    assert "Azure-AsyncOperation" not in created.headers

    stale = documented.raw("DELETE", path, headers={"If-Match": '"0"'})
    assert stale.status_code == 412
    deleted = documented.raw("DELETE", path, headers={"If-Match": f'"{created.json()["eTag"]}"'})
    assert deleted.status_code == 200
    assert "Location" not in deleted.headers
    assert documented.raw("DELETE", path).status_code == 204
