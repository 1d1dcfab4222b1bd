"""A Kubernetes API emulator for operator tests: kmock's emulator plus the semantics adbm relies on.

Select it in a test module with::

    @pytest.fixture
    def kmock_options() -> dict[str, Any]:
        return {"cls": AdbmEmulator}

then call `register_standard_resources(kmock)` before the operator starts. On top of
`kmock.KubernetesEmulator` it adds, following the Kubernetes API documentation:

- metadata stamping: `uid`, `creationTimestamp`, one global rising `resourceVersion` bumped by
  every write, `generation` (1 on create; +1 on any change outside `metadata`, and outside `status`
  where that is a subresource: the CRD rule, for every resource; +1 when `deletionTimestamp` is
  set), `namespace`, `apiVersion` and `kind` from the URL when absent, `generateName`;
  a write that changes nothing is no write (no new resourceVersion, no watch event);
- LIST returns the current resourceVersion; WATCH replays from `?resourceVersion=N` exactly the
  changes after N (or the current objects as ADDED, then a BOOKMARK if `sendInitialEvents=true`),
  and label selectors turn objects entering/leaving the selection into ADDED/DELETED;
- patches by Content-Type: JSON merge patch (RFC 7386), JSON patch (RFC 6902; a failed op is 422),
  server-side apply (create or merge; drops fields its field manager applied before and omits now),
  `metadata.resourceVersion` in a patch as a precondition (409), 415 for other content types;
- `/status` writes change only `.status`; other writes ignore `.status` where it is a subresource;
- background garbage collection of dependents (by `ownerReferences[].uid`), finalizers honoured;
- `labelSelector` (equality, existence, `in`, `notin`) on LIST and WATCH;
- requests to unregistered resources answer 404; creating a CustomResourceDefinition registers its
  served versions (and marks it Established), deleting it unregisters them;
- counters: `requests_by_verb`, `writes`, `changes`, `changelog`, `resource_version`;
- `api_calls`: every request that carried credentials (the operator's; a test's own client sends
  none), as RBAC authorizes it (`ApiCall`), for tests/operator/test_rbac.py.

Unlike kmock's own emulator, a test's reaction that answers a write (`kmock[...] << 503`) leaves
the store untouched, and no connection is kept alive (see `__call__`).

What it still does NOT emulate: validation (schemas, CEL, immutable fields), defaulting,
admission, real `managedFields` and field-ownership conflicts (every apply acts as `force=true`;
only the last config applied per field manager is kept, for pruning), strategic-merge list
semantics (a strategic merge patch is a JSON merge patch; apply replaces lists too), PUT,
delete-collection, `dryRun`, `fieldSelector`, Foreground/Orphan propagation (the last three answer
400 rather than being ignored), delete preconditions and grace periods, asynchronous GC (it runs
inside the deleting request; a dependent with another live owner is kept as is), the rule that no
finalizer may be added once deletion started, watch timeouts, periodic bookmarks and 410 Gone (the
change log is never compacted), CRD-deletion cascade, namespace lifecycle, RBAC. Objects put into
`kmock.objects` directly bypass all of the above. Product code must never branch on being run
against this emulator.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import copy
import datetime
import pathlib
import random
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple, NoReturn

import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml
from kmock import Response  # type: ignore[attr-defined]  # exported, if missing from __all__
from kmock._internal import parsing as _kmock_parsing

_parse_path = _kmock_parsing.parse_path


def _parse_namespace_path(path: str) -> Any:
    """kmock 0.8 reads `/api/v1/namespaces[/NAME]` as a namespace prefix with no resource, so
    listing or getting Namespace objects (Kopf does, to follow `--namespace`) fails with 500.
    In Kubernetes, `namespaces/NAME/PLURAL...` is a prefix only when a resource follows."""
    parts = path.strip("/").split("/")
    rest = parts[2:]
    namespace_object = len(rest) <= 2 or (len(rest) == 3 and rest[2] in ("status", "finalize"))
    if parts[:2] == ["api", "v1"] and rest[:1] == ["namespaces"] and namespace_object:
        return _kmock_parsing.ParsedPath(
            group="",
            version="v1",
            plural="namespaces",
            namespace=None,
            name=rest[1] if len(rest) >= 2 else None,
            subresource=rest[2] if len(rest) == 3 else None,
        )
    return _parse_path(path)


_kmock_parsing.parse_path = _parse_namespace_path

APPLY = "application/apply-patch+yaml"
MERGE = {"application/merge-patch+json", "application/strategic-merge-patch+json"}
JSON_PATCH = "application/json-patch+json"
CRD = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete", "deletecollection"}
# Set by the server only: ignored in bodies, kept across writes.
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
)
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' own generateName alphabet
DATA = pathlib.Path(__file__).parent / "data"
Key = tuple[kmock.resource, str | None, str]  # as in kmock.objects: resource, namespace, name


@attrs.frozen
class KubernetesInvalidError(kmock.KubernetesError):
    """422 Invalid: what the API server answers for a JSON patch that fails (e.g. a `test` op)."""

    status: int = 422
    reason: str = "Invalid"


class ApiCall(NamedTuple):
    """A request as the API server's RBAC authorizer sees it (apiserver's RequestInfo): the verb,
    API group, resource, subresource, and the namespace (None when cluster-wide or for a
    cluster-scoped resource); a non-resource request (discovery) has only `path`."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str | None = None
    path: str = ""


def api_call(request: kmock.Request) -> ApiCall:
    """The RBAC attributes of a request, by the rules of apiserver's requestinfo.go: GET is `get`,
    or `list` without a name, or `watch` with `?watch=true|1`; DELETE without a name is
    `deletecollection`; POST `create`, PUT `update`, PATCH (apply too) `patch`."""
    method = str(request.method.value)
    if request.resource is None or not request.resource.plural:
        return ApiCall(verb=method.lower(), path=request.url.path)
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
    if method in {"GET", "HEAD"}:
        watch = request.params.get("watch", "").lower() in {"true", "1"}
        verb = "watch" if watch else "get" if request.name else "list"
    elif method == "DELETE":
        verb = "delete" if request.name else "deletecollection"
    return ApiCall(
        verb,
        request.resource.group or "",
        request.resource.plural or "",
        request.subresource or "",
        request.namespace,
    )


class Change(NamedTuple):
    """One write as watch streams see it: `old` is the state before (None for ADDED)."""

    resource_version: int
    resource: kmock.resource
    type: str
    object: dict[str, Any]
    old: dict[str, Any] | None


def fail(status: int, reason: str, message: str) -> NoReturn:
    raise kmock.KubernetesError(status, reason, message)


def key_of(request: kmock.Request) -> Key:
    assert request.resource is not None and request.name is not None  # by kmock's routing
    return request.resource, request.namespace, request.name


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def prune(
    obj: dict[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], others: list[Any]
) -> None:
    """Drop what a manager applied before (`old`) but omits now (`new`), unless others apply it."""
    for key, value in old.items():
        if key not in obj or (key in new and not isinstance(new[key], dict)):
            continue  # already gone, or still applied as a whole value
        theirs = [other[key] for other in others if key in other]
        if isinstance(value, dict) and isinstance(obj[key], dict):
            mine = new.get(key) or {}
            prune(obj[key], value, mine, [t for t in theirs if isinstance(t, dict)])
            if not obj[key] and key not in new and not theirs:
                del obj[key]
        elif key not in new and not theirs:
            del obj[key]


SELECTOR_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
SELECTOR_SET = re.compile(rf"({SELECTOR_KEY})\s+(in|notin)\s*\(([^()]*)\)")
SELECTOR_EQUALITY = re.compile(rf"({SELECTOR_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)")
SELECTOR_EXISTS = re.compile(rf"(!?)\s*({SELECTOR_KEY})")
Requirement = tuple[str, frozenset[str] | None, bool]  # key, values (None: existence), negated


def parse_label_selector(text: str) -> list[Requirement]:
    requirements: list[Requirement] = []
    for part in filter(None, (p.strip() for p in re.split(r",(?![^()]*\))", text))):
        if match := SELECTOR_SET.fullmatch(part):
            values = frozenset(v.strip() for v in match[3].split(","))
            requirements.append((match[1], values, match[2] == "notin"))
        elif match := SELECTOR_EQUALITY.fullmatch(part):
            requirements.append((match[1], frozenset([match[3]]), match[2] == "!="))
        elif match := SELECTOR_EXISTS.fullmatch(part):
            requirements.append((match[2], None, match[1] == "!"))
        else:
            fail(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return requirements


def labels_match(requirements: list[Requirement], labels: Mapping[str, str]) -> bool:
    # A negated requirement (!=, notin, !key) also matches objects without the label at all.
    return all(
        (key in labels if values is None else labels.get(key) in values) != negated
        for key, values, negated in requirements
    )


@attrs.define(kw_only=True)
class AdbmEmulator(kmock.KubernetesEmulator):
    # Every write request received, by verb ("create", "patch", "apply", "delete", "update"),
    # suffixed with the subresource ("patch/status"): attempts count, failures and no-ops too.
    requests_by_verb: collections.Counter[str] = attrs.field(
        factory=collections.Counter, init=False
    )
    # Every actual state change, in order; a watch stream is a filtered view of this log.
    changelog: list[Change] = attrs.field(factory=list, init=False)
    api_calls: set[ApiCall] = attrs.field(factory=set, init=False)
    _cond: asyncio.Condition = attrs.field(init=False)
    # The last config applied per (uid, subresource, field manager): our stand-in for managedFields.
    _applied: dict[tuple[str, str, str], dict[str, Any]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # One lock for the store and the change log, so a watch's snapshot and log position agree.
        self._cond = asyncio.Condition(self._lock)

    @property
    def writes(self) -> int:
        return sum(self.requests_by_verb.values())

    @property
    def changes(self) -> int:
        return len(self.changelog)

    @property
    def resource_version(self) -> int:
        return self.changelog[-1].resource_version if self.changelog else 0

    async def install_crd(self, crd: Mapping[str, Any]) -> dict[str, Any]:
        """Create a CustomResourceDefinition as `kubectl apply` would: its resources get served."""
        request = kmock.Request(resource=CRD, data=copy.deepcopy(crd), action=kmock.action.CREATE)
        async with self._cond:
            return self._create(request, dict(request.data))

    async def __call__(self, raw_request: Any) -> Any:
        # No keep-alive: Kopf, when it stops, waits 5 s for every task created after it started,
        # and the server side of a test client's idle pooled connection is such a task.
        response = await super().__call__(raw_request)
        response.force_close()
        return response

    async def _handle(self, request: kmock.Request) -> Any:
        method = str(request.method.value)
        credentials = any(k.lower() == "authorization" for k in request.headers)
        if credentials:
            self.api_calls.add(api_call(request))
        if request.resource is not None and method in {"POST", "PUT", "PATCH", "DELETE"}:
            verb = {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method)
            verb = verb or ("apply" if content_type(request) == APPLY else "patch")
            self.requests_by_verb[
                f"{verb}/{request.subresource}" if request.subresource else verb
            ] += 1
        # Skip KubernetesEmulator._handle: it changes the store before any reaction runs. Here the
        # fallbacks below do the writes, so a test's reaction that answers a write (an injected
        # error, say) leaves the store untouched, as a real failed request would.
        response = await super(kmock.KubernetesEmulator, self)._handle(request)
        if credentials and getattr(response, "status", None) == 201 and method == "PATCH":
            # An apply that creates is authorized as a `create` too (apiserver's patch.go).
            self.api_calls.add(api_call(request)._replace(verb="create"))
        return response

    def _get_resources(self) -> list[kmock.resource]:
        # Discovery lists what is registered, not whatever objects happen to be stored.
        return super(kmock.KubernetesEmulator, self)._get_resources()

    def _info(self, request: kmock.Request) -> kmock.ResourceInfo:
        if request.resource is None or request.resource not in self.resources:
            raise kmock.KubernetesResourceNotFoundError()
        for param in ("dryRun", "fieldSelector"):
            if param in request.params:
                fail(400, "BadRequest", f"{param} is not emulated by {type(self).__name__}")
        return self.resources[request.resource]

    def _live(self, key: Key) -> dict[str, Any] | None:
        if key in self.objects and not self.objects[key].deleted:
            return copy.deepcopy(self.objects[key].raw)
        return None

    def _emit(
        self, key: Key, type_: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        rv = self.resource_version + 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
        self.changelog.append(Change(rv, key[0], type_, obj, old))
        self._cond.notify_all()
        if type_ == "DELETED":
            self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].history.append(obj)
        else:
            self.objects[key] = obj
        if key[0] == CRD:
            self._register_crd(obj, served=type_ != "DELETED")
        return obj

    def _register_crd(self, crd: dict[str, Any], *, served: bool) -> None:
        spec, names = crd.get("spec", {}), crd.get("spec", {}).get("names", {})
        for version in spec.get("versions", []):
            resource = kmock.resource(spec.get("group"), version["name"], names.get("plural"))
            if not served or not version.get("served", True):
                if resource in self.resources:
                    del self.resources[resource]
                continue
            self.resources[resource] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular"),
                namespaced=spec.get("scope") == "Namespaced",
                shortnames=names.get("shortNames", []),
                categories=names.get("categories", []),
                subresources=set(version.get("subresources") or {}),
                verbs=VERBS,
            )

    def _identify(self, request: kmock.Request, body: dict[str, Any]) -> Key:
        """Check or fill apiVersion, kind and namespace from the URL; return the object's key."""
        res, info = request.resource, self._info(request)
        assert res is not None  # checked by _info()
        api_version = f"{res.group}/{res.version}".lstrip("/")
        kind = info.kind or body.get("kind")
        body.setdefault("apiVersion", api_version)
        body.setdefault("kind", kind)
        if (body["apiVersion"], body["kind"]) != (api_version, kind):
            fail(400, "BadRequest", f"the body is not a {kind} of {api_version}")
        meta = body["metadata"] = dict(body.get("metadata") or {})
        namespaced = info.namespaced if info.namespaced is not None else bool(request.namespace)
        if namespaced and not request.namespace:
            fail(404, "NotFound", "a namespaced resource is written under /namespaces/<ns>/")
        if not namespaced:
            meta.pop("namespace", None)
        elif meta.setdefault("namespace", request.namespace) != request.namespace:
            fail(400, "BadRequest", "the namespace of the object does not match the URL's")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(NAME_CHARS, k=5))
        if not meta.get("name"):
            raise KubernetesInvalidError(message="metadata.name or generateName is required")
        if request.name is not None and meta["name"] != request.name:
            fail(400, "BadRequest", "the name of the object does not match the URL's")
        return res, request.namespace if namespaced else None, meta["name"]

    def _create(self, request: kmock.Request, body: dict[str, Any]) -> dict[str, Any]:
        key = self._identify(request, body)
        if self._live(key) is not None:
            fail(409, "AlreadyExists", f"{key[0].plural} {key[2]!r} already exists")
        meta = body["metadata"]
        for field in SERVER_FIELDS:
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if "status" in self.resources[key[0]].subresources:
            body.pop("status", None)
        if key[0] == CRD:  # the API server accepts the names and serves them at once
            conditions = [{"type": t, "status": "True"} for t in ("NamesAccepted", "Established")]
            body["status"] = {"acceptedNames": body.get("spec", {}).get("names", {})}
            body["status"]["conditions"] = conditions
        return self._emit(key, "ADDED", body, None)

    def _update(
        self, key: Key, old: dict[str, Any], new: dict[str, Any], sub: str
    ) -> dict[str, Any]:
        info = self.resources[key[0]]
        rv = new.get("metadata", {}).get("resourceVersion")
        if rv is not None and rv != old["metadata"].get("resourceVersion"):
            fail(409, "Conflict", "the object has been modified; apply to the latest version")
        if sub == "status":  # a /status write changes nothing but the status
            new = {**old, "status": new.get("status")}
        elif "status" in info.subresources:  # and other writes cannot change the status
            new = {**new, "status": old.get("status")}
        if new.get("status") is None:
            new.pop("status", None)
        meta = new["metadata"] = dict(new.get("metadata") or {})
        for field in (*SERVER_FIELDS, "name", "namespace"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        if new == old:
            return old  # a no-op is not a write: no new resourceVersion, no watch event
        ignored = {"metadata", "status"} if "status" in info.subresources else {"metadata"}
        if any(new.get(k) != old.get(k) for k in (set(new) | set(old)) - ignored):
            meta["generation"] = old["metadata"].get("generation", 0) + 1
        obj = self._emit(key, "MODIFIED", new, old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._delete_now(key)
        return obj

    def _delete(self, key: Key) -> dict[str, Any]:
        old = self._live(key)
        assert old is not None
        if old["metadata"].get("deletionTimestamp"):
            return old  # already being deleted: nothing changes
        if not old["metadata"].get("finalizers"):
            return self._delete_now(key)
        meta = dict(old["metadata"], deletionTimestamp=now(), deletionGracePeriodSeconds=0)
        if "generation" in meta:
            meta["generation"] += 1
        return self._emit(key, "MODIFIED", {**old, "metadata": meta}, old)

    def _delete_now(self, key: Key) -> dict[str, Any]:
        old = self._live(key)
        assert old is not None
        obj = self._emit(key, "DELETED", old, old)
        uid = old["metadata"].get("uid")
        self._applied = {k: v for k, v in self._applied.items() if k[0] != uid}
        live_uids = {
            o.get("metadata", {}).get("uid") for o in self.objects.values() if not o.deleted
        }
        # Background propagation: dependents with no other live owner go too (their own
        # finalizers and dependents included). Real GC does this asynchronously, later.
        for child_key, child in list(self.objects.items()):
            if child.deleted:  # maybe just now, by an earlier step of this same cascade
                continue
            owners = {ref.get("uid") for ref in child["metadata"].get("ownerReferences") or []}
            if uid in owners and not (owners - {uid}) & live_uids:
                self._delete(child_key)
        return obj

    def _apply(self, request: kmock.Request, sub: str) -> tuple[int, dict[str, Any]]:
        manager = request.params.get("fieldManager")
        if not manager:
            fail(400, "BadRequest", "fieldManager is required for apply requests")
        try:
            config = yaml.safe_load(request.text)
        except yaml.YAMLError as exc:
            fail(400, "BadRequest", f"the apply body is not YAML: {exc}")
        if not isinstance(config, dict) or not config.get("apiVersion") or not config.get("kind"):
            fail(400, "BadRequest", "an applied configuration needs apiVersion and kind")
        key = self._identify(request, config)
        meta = config["metadata"]
        rv = meta.pop("resourceVersion", None)
        for field in (*SERVER_FIELDS, "name", "namespace", "generateName"):
            meta.pop(field, None)
        managed = {k: v for k, v in config.items() if k not in {"apiVersion", "kind"}}
        if sub == "status":
            managed = {"status": config.get("status") or {}}
        elif "status" in self.resources[key[0]].subresources:
            managed.pop("status", None)
        old = self._live(key)
        if old is None:
            if sub:
                raise kmock.KubernetesObjectNotFoundError()
            body = {**managed, "apiVersion": config["apiVersion"], "kind": config["kind"]}
            body["metadata"] = {**meta, "name": key[2], "namespace": key[1]}
            obj = self._create(request, body)
            self._applied[obj["metadata"]["uid"], sub, manager] = managed
            return 201, obj
        if rv is not None and rv != old["metadata"].get("resourceVersion"):
            fail(409, "Conflict", "the object has been modified; apply to the latest version")
        uid = old["metadata"].get("uid", "")
        previous = self._applied.get((uid, sub, manager), {})
        others = [
            v for (u, s, m), v in self._applied.items() if (u, s) == (uid, sub) and m != manager
        ]
        new = merge_patch(old, managed)
        prune(new, previous, managed, others)
        self._applied[uid, sub, manager] = managed
        return 200, self._update(key, old, new, sub)

    async def _serve_create(self, request: kmock.Request) -> Response:
        self._info(request)
        if not isinstance(request.data, dict):
            fail(400, "BadRequest", "the body must be a JSON object")
        async with self._cond:
            return Response(status=201, payload=self._create(request, dict(request.data)))

    async def _serve_update(self, request: kmock.Request) -> Response:
        info = self._info(request)
        sub = request.subresource or ""
        if (sub and sub not in info.subresources) or sub not in {"", "status"}:
            raise kmock.KubernetesNotFoundError()
        ctype = content_type(request)
        async with self._cond:
            if ctype == APPLY:
                status, obj = self._apply(request, sub)
                return Response(status=status, payload=obj)
            key = key_of(request)
            if (old := self._live(key)) is None:
                raise kmock.KubernetesObjectNotFoundError()
            if ctype in MERGE and isinstance(request.data, dict):
                new = merge_patch(old, request.data)
            elif ctype == JSON_PATCH and isinstance(request.data, list):
                try:
                    new = jsonpatch.apply_patch(old, request.data)
                except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                    raise KubernetesInvalidError(message=str(exc)) from exc
            else:
                fail(415, "UnsupportedMediaType", f"unsupported patch: {ctype}")
            return Response(status=200, payload=self._update(key, old, new, sub))

    async def _serve_delete(self, request: kmock.Request) -> Response:
        self._info(request)
        options = request.data if isinstance(request.data, dict) else {}
        policy = options.get("propagationPolicy") or request.params.get("propagationPolicy")
        if policy not in {None, "Background"}:
            fail(400, "BadRequest", f"propagationPolicy={policy} is not emulated")
        async with self._cond:
            key = key_of(request)
            if request.subresource or self._live(key) is None:
                raise kmock.KubernetesObjectNotFoundError()
            return Response(status=200, payload=self._delete(key))

    def _visible(self, request: kmock.Request, selector: list[Requirement], obj: Any) -> bool:
        meta = (obj or {}).get("metadata", {})
        return bool(
            obj
            and request.namespace in {None, meta.get("namespace")}
            and request.name in {None, meta.get("name")}
            and labels_match(selector, meta.get("labels") or {})
        )

    def _current(self, request: kmock.Request, selector: list[Requirement]) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (res, _, _), obj in self.objects.items()
            if res == request.resource and not obj.deleted
            if self._visible(request, selector, obj.raw)
        ]

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        info, res = self._info(request), request.resource
        assert res is not None  # checked by _info()
        selector = parse_label_selector(request.params.get("labelSelector", ""))
        async with self._cond:
            return {
                "apiVersion": f"{res.group}/{res.version}".lstrip("/"),
                "kind": f"{info.kind or ''}List",
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": self._current(request, selector),
            }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        self._info(request)
        selector = parse_label_selector(request.params.get("labelSelector", ""))
        since = request.params.get("resourceVersion", "")
        if not since.isdigit() and since:
            fail(400, "BadRequest", f"invalid resourceVersion: {since!r}")
        # The snapshot and the log position are taken under the one lock that every write holds,
        # so no change falls between them and none is streamed twice.
        async with self._cond:
            initial: list[dict[str, Any]] = []
            if since and since != "0":  # exactly the changes after that version
                position = bisect.bisect_right(self.changelog, int(since), key=lambda c: c[0])
            else:  # "any version": the current state as ADDED, then the changes after it
                position = len(self.changelog)
                initial = [{"type": "ADDED", "object": o} for o in self._current(request, selector)]
                if request.params.get("sendInitialEvents") == "true":
                    end = {"k8s.io/initial-events-end": "true"}
                    meta = {"resourceVersion": str(self.resource_version), "annotations": end}
                    initial.append({"type": "BOOKMARK", "object": {"metadata": meta}})
        yield b""  # send the headers now, even if nothing happens for a while
        for event in initial:
            yield event
        while True:
            async with self._cond:
                while len(self.changelog) <= position:
                    await self._cond.wait()
                batch, position = self.changelog[position:], len(self.changelog)
            for change in batch:
                if change.resource != request.resource:
                    continue
                after = self._visible(request, selector, change.object)
                before = change.type != "ADDED" and self._visible(request, selector, change.old)
                if change.type != "MODIFIED":
                    kind = change.type if after else None
                else:  # entering or leaving a label selection is an ADDED or DELETED to the watcher
                    kind = "MODIFIED" if after and before else "ADDED" if after else None
                    kind = kind or ("DELETED" if before else None)
                if kind:
                    yield {"type": kind, "object": change.object}


def content_type(request: kmock.Request) -> str:
    header = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
    return header.split(";")[0].strip()


def register_standard_resources(
    emulator: kmock.KubernetesScaffold, *, servicemonitors: bool = False, keda: bool = False
) -> None:
    """Register the built-in kinds and adbm's own; optionally the third-party CRDs it uses.

    To emulate installing a CRD mid-test instead, use `AdbmEmulator.install_crd(vendored_crd(...))`.
    """
    with warnings.catch_warnings():  # kmock 0.8 reads its bundle with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        emulator.resources.load_bundled()
    emulator.resources["apps/v1/deployments"].subresources.add("status")

    def custom(kind: str) -> kmock.ResourceInfo:
        verbs = {"list", "watch", "get", "patch", "create", "delete"}
        return kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=True, verbs=verbs, subresources={"status"}
        )

    emulator.resources["adbm.io/v1alpha1/backendservices"] = custom("BackendService")
    if servicemonitors:
        emulator.resources["monitoring.coreos.com/v1/servicemonitors"] = custom("ServiceMonitor")
    if keda:
        emulator.resources["keda.sh/v1alpha1/scaledobjects"] = custom("ScaledObject")
        emulator.resources["keda.sh/v1alpha1/triggerauthentications"] = custom(
            "TriggerAuthentication"
        )


def vendored_crd(filename: str) -> dict[str, Any]:
    """A CRD from tests/operator/data, e.g. `monitoring.coreos.com_servicemonitors.yaml`."""
    crd: dict[str, Any] = yaml.safe_load((DATA / filename).read_text())
    return crd
