"""The chart's RBAC, proven against what the operator does rather than guessed.

The emulator records every request the operator makes (`AdbmEmulator.api_calls`: verb, group,
resource, subresource, namespace) in every test of the emulator suite. Against those calls, the
Roles the chart renders are evaluated the way Kubernetes' RBAC authorizer does (rbac/v1
`RuleAllows`: group, resource or `resource/subresource`, verb; a Role only in its own namespace):
every call must be granted in the mode it ran in, and every verb a rule grants must have been
used by some call of that mode. Discovery (`/api`, `/apis/...`) is granted to every
authenticated user by the `system:discovery` ClusterRole, so it must stay within that.

The chart's table is also checked against the operator's one table of kinds
(`adbm_operator.kinds.grants()`): every verb the table declares is granted, and nothing else,
each in the scope (namespaced or cluster) the kind has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kmock as kmock_lib
import pytest
import yaml

from adbm_operator import kinds
from tests.chart import helm
from tests.operator.conftest import CALLS_FILE_ENV, RECORDING
from tests.operator.emulator import AdbmEmulator, ApiCall, api_call, register_standard_resources

ROOT = Path(__file__).parents[2]
RULES_TABLE = ROOT / "charts" / "adbm-operator" / "files" / "rbac.yaml"
# The modules whose tests run the operator; the proof needs every one of their tests.
EMULATOR_SUITE = [
    "tests/operator/test_operator.py",
    "tests/operator/test_deployed.py",
    "tests/operator/test_operator_database.py",
]
WATCHED = "payments"  # the namespace test_deployed.py installs the namespaced mode for
# kube-apiserver's bootstrap policy: what `system:discovery` lets any authenticated user GET.
DISCOVERY = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/healthz", "/livez", "/readyz")


def rules_of(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[Any]:
    return [
        rule
        for obj in objects
        if obj["kind"] == kind and obj["metadata"].get("namespace") == namespace
        for rule in obj.get("rules", [])
    ]


def allows(rules: Iterable[dict[str, Any]], call: ApiCall) -> bool:
    """rbac/v1 RuleAllows, without wildcards (the chart has none: a test says so)."""
    resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    return any(
        call.group in rule["apiGroups"]
        and resource in rule["resources"]
        and call.verb in rule["verbs"]
        and not rule.get("resourceNames")
        for rule in rules
    )


def granted_verbs(rules: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def used(calls: Iterable[ApiCall]) -> set[tuple[str, str, str]]:
    return {
        (c.verb, c.group, f"{c.resource}/{c.subresource}" if c.subresource else c.resource)
        for c in calls
        if c.resource
    }


def clusterwide(calls: set[ApiCall]) -> bool:
    """Whether a run watched BackendServices in every namespace (`-A`)."""
    return ApiCall("watch", "adbm.io", "backendservices") in calls


def recorded_calls() -> list[set[ApiCall]]:
    """The calls of each test of the emulator suite: this session's, or, when this session did
    not run all of it, those of a run of just the suite."""
    if RECORDING.complete(EMULATOR_SUITE):
        return [
            calls
            for test, calls in RECORDING.calls.items()
            if test.split("::")[0] in EMULATOR_SUITE
        ]
    target = Path(os.environ.get("TMPDIR", "/tmp")) / f"adbm-api-calls-{os.getpid()}.json"
    env = {**os.environ, CALLS_FILE_ENV: str(target)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *EMULATOR_SUITE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"the emulator suite failed:\n{result.stdout[-3000:]}"
    dump = json.loads(target.read_text())
    target.unlink()
    return [{ApiCall(*call) for call in calls} for calls in dump.values()]


@pytest.fixture(scope="module")
def runs() -> list[set[ApiCall]]:
    calls = recorded_calls()
    assert calls, "the emulator suite recorded no API call"
    return calls


@pytest.fixture(scope="module")
def all_namespaces() -> list[dict[str, Any]]:
    return helm.template()


@pytest.fixture(scope="module")
def some_namespaces() -> list[dict[str, Any]]:
    return helm.template("--set", f"watchNamespaces[0]={WATCHED}")


@pytest.mark.after_emulator_suite
def test_every_call_of_a_cluster_wide_run_is_granted_and_every_grant_used(
    runs: list[set[ApiCall]], all_namespaces: list[dict[str, Any]]
) -> None:
    rules = rules_of(all_namespaces, "ClusterRole")
    calls = set().union(*(run for run in runs if clusterwide(run)))
    assert calls, "no emulator test ran the operator cluster-wide"
    denied = sorted(str(c) for c in calls if c.resource and not allows(rules, c))
    assert denied == [], "calls the chart's ClusterRole does not grant"
    # The reconcile's verbs do not depend on what the operator watches: a path only the
    # namespaced tests drive (deleting an old image's Job) uses its grant in this mode too.
    # (Not their denials: a namespaced run also peers and watches namespaces its own way.)
    everywhere = set().union(*runs)
    assert sorted(granted_verbs(rules) - used(everywhere)) == [], "granted, never used"


@pytest.mark.after_emulator_suite
def test_every_call_of_a_namespaced_run_is_granted_and_every_grant_used(
    runs: list[set[ApiCall]], some_namespaces: list[dict[str, Any]]
) -> None:
    cluster_rules = rules_of(some_namespaces, "ClusterRole")
    role_rules = rules_of(some_namespaces, "Role", WATCHED)
    assert role_rules, f"no Role in {WATCHED}"
    in_namespace, cluster_scoped = set(), set()
    for run in (run for run in runs if not clusterwide(run)):
        # Another test's namespace stands for WATCHED: the Role is the same in every one.
        for call in (c for c in run if c.resource):
            if call.namespace is None:
                cluster_scoped.add(call)
            else:
                in_namespace.add(call._replace(namespace=WATCHED))
    assert in_namespace, "no emulator test ran the operator on a list of namespaces"
    denied = [c for c in cluster_scoped if not allows(cluster_rules, c)]
    denied += [c for c in in_namespace if not allows(role_rules + cluster_rules, c)]
    assert sorted(map(str, denied)) == [], "calls the chart's Roles do not grant"
    assert sorted(granted_verbs(role_rules) - used(in_namespace)) == [], "Role: never used"
    assert sorted(granted_verbs(cluster_rules) - used(cluster_scoped)) == [], "never used"


@pytest.mark.after_emulator_suite
def test_discovery_stays_within_what_every_authenticated_user_may_read(
    runs: list[set[ApiCall]],
) -> None:
    for call in {c for run in runs for c in run if not c.resource}:
        assert call.verb == "get", call
        assert any(
            call.path == p or (p.endswith("/*") and call.path.startswith(p[:-1])) for p in DISCOVERY
        ), call


# The chart's table against the operator's table of kinds: one truth, written in two places.


def table_grants() -> dict[tuple[str, str, bool], set[str]]:
    """(group, resource, namespaced) -> verbs, over every mode of the chart's table."""
    table = yaml.safe_load(RULES_TABLE.read_text())
    assert set(table) == {"namespaced", "cluster"}
    verbs: dict[tuple[str, str, bool], set[str]] = {}
    for scope, rules in table.items():
        for rule in rules:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    key = (group, resource, scope == "namespaced")
                    verbs.setdefault(key, set()).update(rule["verbs"])
    return verbs


def test_the_charts_table_grants_every_verb_of_the_kinds_table_and_nothing_else() -> None:
    wanted: dict[tuple[str, str, bool], set[str]] = {}
    for grant in kinds.grants():
        wanted.setdefault((grant.group, grant.resource, grant.namespaced), set()).update(
            grant.verbs
        )
    assert wanted, "the kinds table lists what the operator calls"
    assert table_grants() == wanted


def test_each_kind_is_granted_in_the_scope_it_has() -> None:
    granted_at = table_grants()
    for kind in kinds.ALL:
        assert (kind.group, kind.plural, kind.namespaced) in granted_at, kind
        assert (kind.group, kind.plural, not kind.namespaced) not in granted_at, kind


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--set", f"watchNamespaces[0]={WATCHED}"),
        ("--set", "peering.enabled=false", "--set", "replicaCount=1"),
    ],
)
def test_every_mode_renders_the_kinds_table_in_full(args: tuple[str, ...]) -> None:
    # The mode conditions of the chart's table (`when`, `peering`) apply to Kopf's rules only.
    objects = helm.template(*args)
    rules = rules_of(objects, "ClusterRole")
    if args and args[1].startswith("watchNamespaces"):
        rules += rules_of(objects, "Role", WATCHED)
    rendered = granted_verbs(rules)
    for grant in kinds.grants():
        if grant in kinds.KOPF:
            continue
        for verb in grant.verbs:
            assert (verb, grant.group, grant.resource) in rendered, (args, grant, verb)


# The chart's rules in general: no wildcards, no escalation, Secrets never changed.


def test_no_wildcards_and_no_privilege_escalation_verbs(
    all_namespaces: list[dict[str, Any]], some_namespaces: list[dict[str, Any]]
) -> None:
    for objects in (all_namespaces, some_namespaces):
        for obj in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
            for rule in obj["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], (obj["kind"], rule)
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_a_list_of_namespaces_gets_a_role_in_each_and_no_cluster_wide_namespaced_grant() -> None:
    objects = helm.template("--set", "watchNamespaces={shop,payments}")
    for namespace in ("shop", "payments"):
        assert rules_of(objects, "Role", namespace)
        binding = helm.one(
            [o for o in objects if o["metadata"].get("namespace") == namespace], "RoleBinding"
        )
        assert binding["roleRef"]["kind"] == "Role"
    cluster = {r for rule in rules_of(objects, "ClusterRole") for r in rule["resources"]}
    assert cluster == {"customresourcedefinitions", "namespaces"}


def granted(group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules_of(helm.template(), "ClusterRole"):
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_every_managed_kind_can_be_applied_watched_and_pruned() -> None:
    assert kinds.APPLIED, "the table lists the applied kinds"
    for kind in kinds.APPLIED:
        assert {"get", "list", "watch", "create", "patch", "delete"} <= granted(
            kind.group, kind.plural
        ), kind


def test_every_kind_in_the_table_gets_the_verbs_it_lists() -> None:
    for kind in kinds.ALL:
        assert kind.verbs <= granted(kind.group, kind.plural), kind


def test_secrets_are_never_deleted_and_jobs_never_changed() -> None:
    # The operator creates its generated Secrets once, applies the two it derives for the
    # database, and never deletes a Secret (garbage collection removes its own with the
    # BackendService). A migration Job is created once per image and never patched.
    assert granted("", "secrets") == {"get", "list", "watch", "create", "patch"}
    assert granted("", "secrets") == kinds.SECRET.verbs
    # Jobs of earlier images are deleted once the current one succeeded.
    jobs = {"get", "list", "watch", "create", "delete"}
    assert granted("batch", "jobs") == jobs == kinds.JOB.verbs
    assert "patch" in granted("adbm.io", "backendservices/status")
    assert "delete" not in granted("adbm.io", "backendservices")
    bsvc = kinds.BACKEND_SERVICE
    assert {"get", "list", "watch", "patch"} <= granted("adbm.io", bsvc.plural)


# The recorder itself: requests mapped to RBAC attributes as the API server maps them.


def request(method: str, namespace: str | None, name: str | None, **params: str) -> Any:
    return kmock_lib.Request(
        method=method,
        params=params,
        resource=kmock_lib.resource("apps", "v1", "deployments"),
        namespace=namespace,
        name=name,
    )


@pytest.mark.parametrize(
    ("method", "namespace", "name", "params", "verb"),
    [
        ("GET", "shop", "api", {}, "get"),
        ("GET", "shop", None, {}, "list"),
        ("GET", None, None, {}, "list"),
        ("GET", "shop", None, {"watch": "true"}, "watch"),
        ("GET", None, None, {"watch": "1"}, "watch"),
        ("GET", "shop", None, {"watch": "false"}, "list"),
        ("POST", "shop", None, {}, "create"),
        ("PUT", "shop", "api", {}, "update"),
        ("PATCH", "shop", "api", {}, "patch"),
        ("DELETE", "shop", "api", {}, "delete"),
        ("DELETE", "shop", None, {}, "deletecollection"),
    ],
)
def test_requests_map_to_the_verbs_rbac_checks(
    method: str, namespace: str | None, name: str | None, params: dict[str, str], verb: str
) -> None:
    call = api_call(request(method, namespace, name, **params))
    assert call == ApiCall(verb, "apps", "deployments", "", namespace)


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": AdbmEmulator}


async def test_an_apply_that_creates_is_also_a_create_and_only_credentials_are_recorded(
    kmock: kmock_lib.RawHandler,
) -> None:
    assert isinstance(kmock, AdbmEmulator)
    register_standard_resources(kmock)
    path = "/api/v1/namespaces/shop/configmaps/settings"
    apply = {"Content-Type": "application/apply-patch+yaml", "Authorization": "Bearer t"}
    body = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}'
    configmaps = ("", "configmaps", "", "shop")
    async with kmock.patch(path, params={"fieldManager": "m"}, data=body, headers=apply) as r:
        assert r.status == 201
    assert kmock.api_calls == {ApiCall("patch", *configmaps), ApiCall("create", *configmaps)}
    kmock.api_calls.clear()
    async with kmock.patch(path, params={"fieldManager": "m"}, data=body, headers=apply) as r:
        assert r.status == 200
    async with kmock.get(path) as r:  # no credentials: a test's own request
        assert r.status == 200
    assert kmock.api_calls == {ApiCall("patch", *configmaps)}
