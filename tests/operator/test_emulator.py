"""The test-side Kubernetes emulator keeps the API semantics the operator relies on.

Everything goes over HTTP, as the operator's clients would send it.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import kmock as kmock_lib
import kopf
import pytest
import yaml

from tests.operator.emulator import AdbmEmulator, register_standard_resources, vendored_crd

NS = "team-a"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
BACKENDS = f"/apis/adbm.io/v1alpha1/namespaces/{NS}/backendservices"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": AdbmEmulator}


@pytest.fixture
def emulator(kmock: kmock_lib.RawHandler) -> AdbmEmulator:
    assert isinstance(kmock, AdbmEmulator)
    register_standard_resources(kmock)
    return kmock


async def call(
    emulator: AdbmEmulator, method: str, url: str, expect: int = 200, **kwargs: Any
) -> dict[str, Any]:
    async with emulator.request(method, url, **kwargs) as response:
        data: dict[str, Any] = await response.json()
        assert response.status == expect, data
        return data


async def create(emulator: AdbmEmulator, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return await call(emulator, "POST", url, 201, json=body)


async def patch(
    emulator: AdbmEmulator, url: str, body: Any, expect: int = 200, headers: Any = None
) -> dict[str, Any]:
    return await call(emulator, "PATCH", url, expect, json=body, headers=headers or MERGE)


async def apply(
    emulator: AdbmEmulator, url: str, body: dict[str, Any], expect: int = 200, **params: str
) -> dict[str, Any]:
    return await call(
        emulator,
        "PATCH",
        url,
        expect,
        data=yaml.safe_dump(body),
        params={"fieldManager": "adbm", **params},
        headers={"Content-Type": "application/apply-patch+yaml"},
    )


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def backend(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "adbm.io/v1alpha1",
        "kind": "BackendService",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def owned_by(obj: dict[str, Any]) -> list[dict[str, Any]]:
    meta = obj["metadata"]
    ref = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"]}
    return [{**ref, "uid": meta["uid"], "controller": True}]


class Watch:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> Any:
        line = await asyncio.wait_for(self.response.content.readline(), timeout=3)
        return json.loads(line)

    async def take(self, count: int) -> list[tuple[str, str]]:
        return [(e["type"], e["object"]["metadata"].get("name")) for e in await self.events(count)]

    async def events(self, count: int) -> list[dict[str, Any]]:
        return [await self.next() for _ in range(count)]


@asynccontextmanager
async def watch(emulator: AdbmEmulator, url: str, **params: str) -> AsyncIterator[Watch]:
    async with emulator.get(url, params={"watch": "true", **params}) as response:
        assert response.status == 200
        yield Watch(response)


# Metadata stamping


async def test_create_stamps_server_metadata_and_fills_namespace_from_url(
    emulator: AdbmEmulator,
) -> None:
    created = await create(emulator, CONFIGMAPS, configmap("settings", level="debug"))

    meta = created["metadata"]
    assert meta["namespace"] == NS
    assert uuid.UUID(meta["uid"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["resourceVersion"].isdigit()
    assert meta["generation"] == 1
    assert (created["apiVersion"], created["kind"]) == ("v1", "ConfigMap")
    assert await call(emulator, "GET", f"{CONFIGMAPS}/settings") == created
    assert emulator.objects["v1/configmaps", NS, "settings"] == created


async def test_server_fields_in_the_body_are_ignored(emulator: AdbmEmulator) -> None:
    body = configmap("settings")
    body["metadata"] |= {"uid": "mine", "resourceVersion": "999", "generation": 7}

    created = await create(emulator, CONFIGMAPS, body)

    assert created["metadata"]["uid"] != "mine"
    assert created["metadata"]["generation"] == 1
    assert rv(created) == emulator.resource_version == 1


async def test_generate_name_makes_distinct_names(emulator: AdbmEmulator) -> None:
    # The shape Kopf posts its events in: no name, no apiVersion, no kind.
    event = {"metadata": {"namespace": NS, "generateName": "kopf-event-"}, "reason": "Logging"}
    url = f"/api/v1/namespaces/{NS}/events"

    first, second = await create(emulator, url, event), await create(emulator, url, event)

    names = {first["metadata"]["name"], second["metadata"]["name"]}
    assert len(names) == 2
    assert all(re.fullmatch(r"kopf-event-[a-z0-9]{5}", name) for name in names)


async def test_create_errors(emulator: AdbmEmulator) -> None:
    await create(emulator, CONFIGMAPS, configmap("settings"))

    await call(emulator, "POST", CONFIGMAPS, 409, json=configmap("settings"))
    await call(emulator, "POST", CONFIGMAPS, 422, json={"metadata": {}})
    elsewhere = {"metadata": {"name": "other", "namespace": "team-b"}}
    await call(emulator, "POST", CONFIGMAPS, 400, json=elsewhere)
    unknown = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors"
    await call(emulator, "POST", unknown, 404, json={"metadata": {"name": "x"}})


async def test_resource_version_rises_on_every_write_and_list_reports_it(
    emulator: AdbmEmulator,
) -> None:
    created = await create(emulator, CONFIGMAPS, configmap("one"))
    patched = await patch(emulator, f"{CONFIGMAPS}/one", {"data": {"k": "v"}})
    other = await create(emulator, DEPLOYMENTS, {"metadata": {"name": "api"}, "spec": {}})
    deleted = await call(emulator, "DELETE", f"{CONFIGMAPS}/one")

    assert rv(created) < rv(patched) < rv(other) < rv(deleted)
    listing = await call(emulator, "GET", CONFIGMAPS)
    assert listing["metadata"]["resourceVersion"] == str(rv(deleted))
    assert listing["items"] == []
    assert listing["kind"] == "ConfigMapList"


async def test_generation_bumps_only_when_the_spec_changes(emulator: AdbmEmulator) -> None:
    url = f"{BACKENDS}/shop"
    await create(emulator, BACKENDS, backend("shop", replicas=1))

    labelled = await patch(emulator, url, {"metadata": {"labels": {"team": "a"}}})
    with_status = await patch(emulator, f"{url}/status", {"status": {"phase": "Ready"}})
    scaled = await patch(emulator, url, {"spec": {"replicas": 2}})

    assert labelled["metadata"]["generation"] == 1
    assert with_status["metadata"]["generation"] == 1
    assert scaled["metadata"]["generation"] == 2


async def test_noop_patch_is_not_a_write(emulator: AdbmEmulator) -> None:
    created = await create(emulator, CONFIGMAPS, configmap("one", k="v"))

    patched = await patch(emulator, f"{CONFIGMAPS}/one", {"data": {"k": "v"}})

    assert rv(patched) == rv(created)
    assert emulator.changes == 1
    assert emulator.requests_by_verb == {"create": 1, "patch": 1}


# Watching


async def test_watch_from_a_resource_version_streams_only_newer_changes(
    emulator: AdbmEmulator,
) -> None:
    await create(emulator, CONFIGMAPS, configmap("a"))
    b = await create(emulator, CONFIGMAPS, configmap("b"))
    await patch(emulator, f"{CONFIGMAPS}/a", {"data": {"k": "v"}})

    async with watch(emulator, CONFIGMAPS, resourceVersion=str(rv(b))) as stream:
        await create(emulator, CONFIGMAPS, configmap("c"))
        await call(emulator, "DELETE", f"{CONFIGMAPS}/b")
        events = await stream.events(3)

    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("ADDED", "c"),
        ("DELETED", "b"),
    ]
    versions = [rv(e["object"]) for e in events]
    assert versions == sorted(versions) and versions[0] > rv(b)
    assert versions[-1] == emulator.resource_version


async def test_watch_without_a_version_replays_current_objects_then_streams(
    emulator: AdbmEmulator,
) -> None:
    await create(emulator, CONFIGMAPS, configmap("a"))
    await create(emulator, CONFIGMAPS, configmap("gone"))
    await call(emulator, "DELETE", f"{CONFIGMAPS}/gone")

    async with watch(emulator, CONFIGMAPS) as stream:
        assert await stream.take(1) == [("ADDED", "a")]
        await patch(emulator, f"{CONFIGMAPS}/a", {"data": {"k": "v"}})
        assert await stream.take(1) == [("MODIFIED", "a")]


async def test_initial_events_end_with_a_bookmark_when_asked(emulator: AdbmEmulator) -> None:
    await create(emulator, CONFIGMAPS, configmap("a"))

    async with watch(emulator, CONFIGMAPS, sendInitialEvents="true") as stream:
        added, bookmark = await stream.events(2)

    assert added["type"] == "ADDED"
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert bookmark["object"]["metadata"]["resourceVersion"] == str(emulator.resource_version)


async def test_nothing_is_lost_between_list_and_watch(emulator: AdbmEmulator) -> None:
    listing = await call(emulator, "GET", CONFIGMAPS)
    await create(emulator, CONFIGMAPS, configmap("between"))

    async with watch(emulator, CONFIGMAPS, **listing["metadata"]) as stream:
        assert await stream.take(1) == [("ADDED", "between")]


async def test_watch_started_amid_writes_sees_each_object_once(emulator: AdbmEmulator) -> None:
    names = [f"cm-{i}" for i in range(30)]
    writes = asyncio.gather(*(create(emulator, CONFIGMAPS, configmap(n)) for n in names))

    async with watch(emulator, CONFIGMAPS) as stream:
        seen = await stream.take(len(names))
        await writes
        await create(emulator, CONFIGMAPS, configmap("last"))
        seen += await stream.take(1)  # had anything been streamed twice, it would show here

    assert sorted(seen) == sorted([("ADDED", n) for n in [*names, "last"]])


async def test_watch_is_scoped_to_its_resource_and_namespace(emulator: AdbmEmulator) -> None:
    async with watch(emulator, CONFIGMAPS) as stream:
        await create(emulator, "/api/v1/namespaces/team-b/configmaps", configmap("elsewhere"))
        await create(emulator, DEPLOYMENTS, {"metadata": {"name": "api"}, "spec": {}})
        await create(emulator, CONFIGMAPS, configmap("here"))
        assert await stream.take(1) == [("ADDED", "here")]


# Patching


async def test_failed_json_patch_test_is_422_and_changes_nothing(emulator: AdbmEmulator) -> None:
    created = await create(emulator, CONFIGMAPS, configmap("one"))
    url = f"{CONFIGMAPS}/one"

    # What Kopf sends to add its finalizer: optimistic concurrency via a `test` op.
    stale: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["adbm.io/cleanup"]},
    ]
    error = await patch(emulator, url, stale, 422, JSON_PATCH)
    assert (error["kind"], error["code"], error["reason"]) == ("Status", 422, "Invalid")
    assert emulator.resource_version == rv(created)

    fresh = [{**stale[0], "value": created["metadata"]["resourceVersion"]}, stale[1]]
    patched = await patch(emulator, url, fresh, 200, JSON_PATCH)
    assert patched["metadata"]["finalizers"] == ["adbm.io/cleanup"]


async def test_merge_patch_deletes_nulls_and_replaces_lists(emulator: AdbmEmulator) -> None:
    body = {"metadata": {"name": "api"}, "spec": {"a": 1, "b": 2, "list": [1, 2]}}
    await create(emulator, DEPLOYMENTS, body)

    patched = await patch(emulator, f"{DEPLOYMENTS}/api", {"spec": {"a": None, "list": [3]}})

    assert patched["spec"] == {"b": 2, "list": [3]}


async def test_resource_version_in_a_patch_is_a_precondition(emulator: AdbmEmulator) -> None:
    created = await create(emulator, CONFIGMAPS, configmap("one"))
    url = f"{CONFIGMAPS}/one"

    stale = {"metadata": {"resourceVersion": "0"}, "data": {"k": "v"}}
    await patch(emulator, url, stale, 409)
    fresh = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    await patch(emulator, url, {**fresh, "data": {"k": "v"}})


async def test_patch_errors(emulator: AdbmEmulator) -> None:
    await create(emulator, CONFIGMAPS, configmap("one"))

    await patch(emulator, f"{CONFIGMAPS}/one", {}, 415, {"Content-Type": "application/json"})
    await patch(emulator, f"{CONFIGMAPS}/missing", {}, 404)
    await patch(emulator, f"{CONFIGMAPS}/one/status", {}, 404)  # ConfigMaps have no /status


# Server-side apply


async def test_apply_creates_then_merges(emulator: AdbmEmulator) -> None:
    url = f"{DEPLOYMENTS}/api"
    config = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}}

    created = await apply(emulator, url, {**config, "spec": {"replicas": 2}}, 201)
    await patch(emulator, url, {"metadata": {"annotations": {"by": "someone-else"}}})
    merged = await apply(emulator, url, {**config, "spec": {"replicas": 3, "paused": False}})

    assert created["metadata"]["namespace"] == NS
    assert created["metadata"]["generation"] == 1
    assert merged["spec"] == {"replicas": 3, "paused": False}
    assert merged["metadata"]["annotations"] == {"by": "someone-else"}
    assert merged["metadata"]["generation"] == 2
    assert emulator.requests_by_verb == {"apply": 2, "patch": 1}


async def test_apply_removes_what_the_manager_no_longer_applies(emulator: AdbmEmulator) -> None:
    url = f"{BACKENDS}/shop"
    await apply(emulator, url, backend("shop", replicas=2, image="a", tier="web"), 201)
    await apply(emulator, url, backend("shop", tier="web"), fieldManager="other")
    await patch(emulator, url, {"spec": {"patched": True}})

    result = await apply(emulator, url, backend("shop", image="b"))

    # replicas: dropped by its only applier; tier: still applied by another manager;
    # patched: set by a plain patch, which the apply does not own.
    assert result["spec"] == {"image": "b", "tier": "web", "patched": True}


async def test_apply_that_changes_nothing_is_not_a_write(emulator: AdbmEmulator) -> None:
    url = f"{BACKENDS}/shop"
    first = await apply(emulator, url, backend("shop", replicas=2), 201)

    async with watch(emulator, BACKENDS, resourceVersion=str(rv(first))) as stream:
        again = await apply(emulator, url, backend("shop", replicas=2))
        await patch(emulator, url, {"spec": {"replicas": 3}})
        (event,) = await stream.events(1)

    assert rv(again) == rv(first)
    assert again["metadata"]["generation"] == 1
    assert (event["type"], event["object"]["spec"]) == ("MODIFIED", {"replicas": 3})
    assert emulator.changes == 2
    assert emulator.requests_by_verb["apply"] == 2


async def test_apply_accepts_json_and_forced_applies(emulator: AdbmEmulator) -> None:
    body = json.dumps(backend("shop", replicas=1))
    created = await call(
        emulator,
        "PATCH",
        f"{BACKENDS}/shop",
        201,
        data=body,
        params={"fieldManager": "adbm", "force": "true"},
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert created["spec"] == {"replicas": 1}


async def test_apply_errors(emulator: AdbmEmulator) -> None:
    url = f"{BACKENDS}/shop"
    await apply(emulator, url, backend("shop"), 400, fieldManager="")
    await apply(emulator, url, backend("other"), 400)
    await apply(emulator, url, {**backend("shop"), "kind": "Deployment"}, 400)
    await apply(emulator, url, {"metadata": {"name": "shop"}}, 400)
    assert emulator.changes == 0


# The status subresource


async def test_status_writes_change_only_the_status(emulator: AdbmEmulator) -> None:
    url = f"{BACKENDS}/shop"
    await create(emulator, BACKENDS, {**backend("shop", replicas=1), "status": {"phase": "Fake"}})

    sneaky = {"spec": {"replicas": 9}, "metadata": {"labels": {"x": "y"}}}
    by_status = await patch(emulator, f"{url}/status", {**sneaky, "status": {"phase": "Ready"}})
    by_main = await patch(emulator, url, {"spec": {"replicas": 2}, "status": {"phase": "Lie"}})

    assert by_status["spec"] == {"replicas": 1}
    assert "labels" not in by_status["metadata"]
    assert by_status["status"] == {"phase": "Ready"}
    assert by_main["spec"] == {"replicas": 2}
    assert by_main["status"] == {"phase": "Ready"}


async def test_create_ignores_the_status_of_a_status_subresource(emulator: AdbmEmulator) -> None:
    created = await create(emulator, BACKENDS, {**backend("shop"), "status": {"phase": "Fake"}})
    assert "status" not in created


async def test_status_via_json_patch_and_apply(emulator: AdbmEmulator) -> None:
    url = f"{DEPLOYMENTS}/api"
    created = await create(emulator, DEPLOYMENTS, {"metadata": {"name": "api"}, "spec": {}})

    # How a test marks a Deployment available: the status is only writable through /status.
    available = {"type": "Available", "status": "True"}
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": str(rv(created))},
        {"op": "add", "path": "/status", "value": {"conditions": [available]}},
    ]
    patched = await patch(emulator, f"{url}/status", ops, 200, JSON_PATCH)
    config = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}}
    applied = await apply(emulator, f"{url}/status", {**config, "status": {"readyReplicas": 1}})
    reapplied = await apply(emulator, f"{url}/status", {**config, "status": {}})

    assert patched["status"] == {"conditions": [available]}
    assert applied["status"] == {"conditions": [available], "readyReplicas": 1}
    assert reapplied["status"] == {"conditions": [available]}
    assert reapplied["metadata"]["generation"] == 1


# Deletion, finalizers, garbage collection


async def test_finalizers_hold_the_deletion(emulator: AdbmEmulator) -> None:
    url = f"{BACKENDS}/shop"
    body = backend("shop")
    body["metadata"]["finalizers"] = ["adbm.io/cleanup"]
    await create(emulator, BACKENDS, body)

    marked = await call(emulator, "DELETE", url)
    again = await call(emulator, "DELETE", url)
    released = await patch(emulator, url, {"metadata": {"finalizers": None}})

    assert marked["metadata"]["deletionTimestamp"].endswith("Z")
    assert marked["metadata"]["generation"] == 2
    assert rv(again) == rv(marked)
    assert "finalizers" not in released["metadata"]
    await call(emulator, "GET", url, 404)
    assert [change.type for change in emulator.changelog] == [
        "ADDED",
        "MODIFIED",
        "MODIFIED",
        "DELETED",
    ]


async def test_deleting_an_owner_deletes_its_dependents_recursively(emulator: AdbmEmulator) -> None:
    owner = await create(emulator, BACKENDS, backend("shop"))
    child = await create(
        emulator, DEPLOYMENTS, {"metadata": {"name": "api", "ownerReferences": owned_by(owner)}}
    )
    grandchild = configmap("grandchild")
    grandchild["metadata"]["ownerReferences"] = owned_by(child)
    await create(emulator, CONFIGMAPS, grandchild)
    shared = configmap("shared")
    other_owner = await create(emulator, CONFIGMAPS, configmap("other-owner"))
    shared["metadata"]["ownerReferences"] = owned_by(owner) + owned_by(other_owner)
    await create(emulator, CONFIGMAPS, shared)
    await create(emulator, CONFIGMAPS, configmap("unrelated"))

    async with watch(
        emulator, CONFIGMAPS, resourceVersion=str(emulator.resource_version)
    ) as stream:
        await call(emulator, "DELETE", f"{BACKENDS}/shop")
        assert await stream.take(1) == [("DELETED", "grandchild")]

    await call(emulator, "GET", f"{DEPLOYMENTS}/api", 404)
    remaining = await call(emulator, "GET", CONFIGMAPS)
    assert {item["metadata"]["name"] for item in remaining["items"]} == {
        "other-owner",
        "shared",
        "unrelated",
    }
    assert [(c.type, c.object["metadata"]["name"]) for c in emulator.changelog[-3:]] == [
        ("DELETED", "shop"),
        ("DELETED", "api"),
        ("DELETED", "grandchild"),
    ]


async def test_dependents_with_finalizers_wait_for_them(emulator: AdbmEmulator) -> None:
    owner = await create(emulator, BACKENDS, backend("shop"))
    child = configmap("child")
    child["metadata"] |= {"ownerReferences": owned_by(owner), "finalizers": ["x/y"]}
    await create(emulator, CONFIGMAPS, child)

    await call(emulator, "DELETE", f"{BACKENDS}/shop")

    held = await call(emulator, "GET", f"{CONFIGMAPS}/child")
    assert "deletionTimestamp" in held["metadata"]
    await patch(emulator, f"{CONFIGMAPS}/child", {"metadata": {"finalizers": []}})
    await call(emulator, "GET", f"{CONFIGMAPS}/child", 404)


# Label selectors


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", {"web-prod", "web-dev"}),
        ("app==web", {"web-prod", "web-dev"}),
        ("app!=web", {"db", "bare"}),
        ("env", {"web-prod", "web-dev", "db"}),
        ("!env", {"bare"}),
        ("env in (prod, dev)", {"web-prod", "web-dev"}),
        ("env notin (prod)", {"web-dev", "db", "bare"}),
        ("app=web,env in (prod,staging)", {"web-prod"}),
        ("app in (web,db),!tier", {"web-prod", "web-dev", "db"}),
        ("", {"web-prod", "web-dev", "db", "bare"}),
    ],
)
async def test_label_selectors_filter_lists(
    emulator: AdbmEmulator, selector: str, expected: set[str]
) -> None:
    await create(emulator, CONFIGMAPS, configmap("web-prod", {"app": "web", "env": "prod"}))
    await create(emulator, CONFIGMAPS, configmap("web-dev", {"app": "web", "env": "dev"}))
    await create(emulator, CONFIGMAPS, configmap("db", {"app": "db", "env": "qa"}))
    await create(emulator, CONFIGMAPS, configmap("bare"))

    listing = await call(emulator, "GET", CONFIGMAPS, params={"labelSelector": selector})

    assert {item["metadata"]["name"] for item in listing["items"]} == expected


async def test_label_selectors_filter_watches(emulator: AdbmEmulator) -> None:
    await create(emulator, CONFIGMAPS, configmap("a", {"app": "web"}))
    await create(emulator, CONFIGMAPS, configmap("b", {"app": "db"}))

    async with watch(emulator, CONFIGMAPS, labelSelector="app=web") as stream:
        assert await stream.take(1) == [("ADDED", "a")]
        await patch(emulator, f"{CONFIGMAPS}/b", {"data": {"k": "v"}})  # unseen
        await patch(emulator, f"{CONFIGMAPS}/a", {"metadata": {"labels": {"app": "db"}}})
        await patch(emulator, f"{CONFIGMAPS}/b", {"metadata": {"labels": {"app": "web"}}})
        await patch(emulator, f"{CONFIGMAPS}/b", {"data": {"k": "w"}})
        await call(emulator, "DELETE", f"{CONFIGMAPS}/a")  # unseen
        await call(emulator, "DELETE", f"{CONFIGMAPS}/b")
        # Leaving the selection reads as a deletion, entering it as an addition.
        assert await stream.take(4) == [
            ("DELETED", "a"),
            ("ADDED", "b"),
            ("MODIFIED", "b"),
            ("DELETED", "b"),
        ]


async def test_invalid_selectors_and_unemulated_options_are_refused(
    emulator: AdbmEmulator,
) -> None:
    await create(emulator, CONFIGMAPS, configmap("one"))

    await call(emulator, "GET", CONFIGMAPS, 400, params={"labelSelector": "a in b"})
    watch_from_nowhere = {"watch": "true", "resourceVersion": "latest"}
    await call(emulator, "GET", CONFIGMAPS, 400, params=watch_from_nowhere)
    await call(emulator, "GET", "/apis/example.com/v1/things", 404, params={"watch": "true"})
    await call(emulator, "GET", CONFIGMAPS, 400, params={"fieldSelector": "metadata.name=one"})
    await call(emulator, "POST", CONFIGMAPS, 400, json=configmap("x"), params={"dryRun": "All"})
    orphan = {"propagationPolicy": "Orphan"}
    await call(emulator, "DELETE", f"{CONFIGMAPS}/one", 400, json=orphan)


# Resources, discovery, counters


async def test_installing_a_crd_serves_its_resource(emulator: AdbmEmulator) -> None:
    monitors = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors"
    await call(emulator, "GET", monitors, 404)
    await call(emulator, "GET", "/apis/monitoring.coreos.com/v1", 404)

    crd = await emulator.install_crd(vendored_crd("monitoring.coreos.com_servicemonitors.yaml"))

    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert (await call(emulator, "GET", monitors))["items"] == []
    groups = (await call(emulator, "GET", "/apis"))["groups"]
    assert "monitoring.coreos.com" in {group["name"] for group in groups}
    discovery = await call(emulator, "GET", "/apis/monitoring.coreos.com/v1")
    assert {r["name"] for r in discovery["resources"]} == {
        "servicemonitors",
        "servicemonitors/status",
    }
    assert await call(emulator, "GET", f"{CRDS}/servicemonitors.monitoring.coreos.com") == crd

    await call(emulator, "DELETE", f"{CRDS}/servicemonitors.monitoring.coreos.com")
    await call(emulator, "GET", monitors, 404)


async def test_a_crd_posted_over_http_is_served_too(emulator: AdbmEmulator) -> None:
    await create(emulator, CRDS, vendored_crd("keda.sh_scaledobjects.yaml"))

    scaled = {"metadata": {"name": "api"}, "spec": {"scaleTargetRef": {"name": "api"}}}
    created = await create(
        emulator, f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects", scaled
    )

    assert created["kind"] == "ScaledObject"


async def test_optional_resources_can_be_registered_up_front(kmock: kmock_lib.RawHandler) -> None:
    assert isinstance(kmock, AdbmEmulator)
    register_standard_resources(kmock, servicemonitors=True, keda=True)

    for path in [
        f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors",
        f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects",
        f"/apis/keda.sh/v1alpha1/namespaces/{NS}/triggerauthentications",
        BACKENDS,
        CRDS,
    ]:
        await call(kmock, "GET", path)


async def test_counters(emulator: AdbmEmulator) -> None:
    url = f"{BACKENDS}/shop"
    await create(emulator, BACKENDS, backend("shop"))
    await patch(emulator, url, {"spec": {"replicas": 1}})
    await patch(emulator, f"{url}/status", {"status": {"phase": "Ready"}})
    await apply(emulator, url, backend("shop", replicas=1))  # a no-op
    await patch(emulator, f"{url}/missing-subresource", {}, 404)
    await call(emulator, "GET", url)
    await call(emulator, "GET", BACKENDS)
    await call(emulator, "DELETE", url)

    assert emulator.requests_by_verb == {
        "create": 1,
        "patch": 1,
        "patch/status": 1,
        "apply": 1,
        "patch/missing-subresource": 1,
        "delete": 1,
    }
    assert emulator.writes == 6
    assert emulator.changes == 4
    assert [c.type for c in emulator.changelog] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]


async def test_a_reaction_answering_a_write_leaves_the_store_alone(
    emulator: AdbmEmulator,
) -> None:
    await create(emulator, CONFIGMAPS, configmap("one"))
    emulator[kmock_lib.action.UPDATE, kmock_lib.resource("v1/configmaps")] << 503

    async with emulator.patch(f"{CONFIGMAPS}/one", json={"data": {"k": "v"}}, headers=MERGE) as r:
        assert r.status == 503

    assert (await call(emulator, "GET", f"{CONFIGMAPS}/one"))["data"] == {}
    assert emulator.changes == 1


async def test_connections_are_not_kept_alive(emulator: AdbmEmulator) -> None:
    # Kopf, stopping, waits 5 s for tasks born after it started: idle server connections are such.
    async with emulator.get(CONFIGMAPS) as response:
        assert response.headers["Connection"] == "close"


# Kopf, the emulator's main client


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_kopf_handles_each_change_once_and_stops_promptly(emulator: AdbmEmulator) -> None:
    registry = kopf.OperatorRegistry()
    calls: list[str] = []
    url = f"{BACKENDS}/shop"

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"), insecure=True)

    @kopf.on.create("adbm.io", "v1alpha1", "backendservices", registry=registry)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        calls.append("create")
        kopf.info(body, reason="Created", message="posted as a v1 Event")
        patch.status["phase"] = "Ready"

    @kopf.on.update("adbm.io", "v1alpha1", "backendservices", registry=registry)
    def updated(**_: Any) -> None:
        calls.append("update")

    @kopf.on.delete("adbm.io", "v1alpha1", "backendservices", registry=registry)
    def deleted(**_: Any) -> None:  # a non-optional delete handler: Kopf adds its finalizer
        calls.append("delete")

    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.watching.reconnect_backoff = 0.01
    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry, settings=settings, standalone=True, namespaces=[NS], stop_flag=stop
        )
    )
    try:
        await create(emulator, BACKENDS, backend("shop", replicas=1))
        shop = emulator.objects["adbm.io/v1alpha1/backendservices", NS, "shop"]
        await until(lambda: shop.get("status", {}).get("phase") == "Ready")
        await until(lambda: bool(shop["metadata"].get("finalizers")))
        await patch(emulator, url, {"spec": {"replicas": 2}})
        await until(lambda: calls == ["create", "update"])
        await call(emulator, "DELETE", url)
        await until(lambda: shop.deleted)
    finally:
        stop.set()
        async with asyncio.timeout(3):  # without keep-alive connections, Kopf stops at once
            await operator

    assert calls == ["create", "update", "delete"]
    assert emulator.requests_by_verb["create"] == 2  # the BackendService and Kopf's Event
    assert not emulator.errors
