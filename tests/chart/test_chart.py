"""charts/adbm-operator with the real `helm`: lint, every documented combination rendered and
validated for the oldest and the newest supported Kubernetes, values outside the schema refused,
one source for the CRD, and a container that runs the operator the way its CLI expects."""

from __future__ import annotations

import json
import shlex
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kopf._cogs.structs import references

import adbm_operator
from adbm_operator import cli, specs
from adbm_operator.model import parse
from adbm_operator.specs import pod
from tests.chart import helm
from tests.operator import validation

README = helm.CHART / "README.md"
# The one minimum (tests/operator/validation.py): what the README, Chart.yaml and this validate.
OLDEST, NEWEST = validation.MIN_K8S_VERSION, validation.K8S_VERSION
KOPF_KINDS = {"ClusterKopfPeering", "KopfPeering"}


def combinations() -> list[list[str]]:
    """The `helm install` lines of the chart README's Combinations section, as arguments."""
    section = README.read_text().split("## Combinations", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    prefix = ["helm", "install", "adbm", "charts/adbm-operator"]
    lines = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert all(line[:4] == prefix for line in lines), "each line installs the chart as adbm"
    return [line[4:] for line in lines]


COMBINATIONS = combinations()


def test_lint_strict_is_clean() -> None:
    result = helm.run("lint", "--strict", str(helm.CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_combinations_are_documented() -> None:
    assert len(COMBINATIONS) >= 6
    assert [] in COMBINATIONS, "the defaults are one of them"


def pod_security_problems(pod_spec: dict[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard (pod-security-admission's policy checks)."""
    problems = []
    pod_ctx = pod_spec.get("securityContext", {})
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        ctx = c.get("securityContext", {})
        name = c["name"]
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities must drop ALL")
        if set(ctx.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: only NET_BIND_SERVICE may be added")
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        if c.get("ports") and any("hostPort" in p for p in c["ports"]):
            problems.append(f"{name}: hostPort")
    allowed_volumes = {"emptyDir", "configMap", "secret", "projected", "downwardAPI", "csi"}
    for volume in pod_spec.get("volumes", []):
        if not (set(volume) - {"name"}) <= allowed_volumes:
            problems.append(f"volume {volume['name']}: type not allowed")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(field)
    return problems


@pytest.mark.parametrize("args", COMBINATIONS, ids=lambda a: " ".join(a) or "defaults")
def test_every_combination_renders_valid_objects(args: list[str]) -> None:
    objects = helm.template(*args, include_crds=True)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "CustomResourceDefinition"} <= kinds
    for obj in objects:
        if obj["kind"] in KOPF_KINDS:
            assert set(obj) == {"apiVersion", "kind", "metadata"}, obj
            continue
        if (obj["apiVersion"], obj["kind"]) in validation.CRD_FILES:
            validation.validate(obj)  # the vendored prometheus-operator CRD's schema
            continue
        for version in (OLDEST, NEWEST):
            kubernetes_validate.validate(obj, version, strict=True)
        if obj["apiVersion"] in validation.CORE_API_VERSIONS:
            validation.validate(obj)  # plus the API server's checks no schema expresses
        meta = obj["metadata"]
        assert validation.DNS_SUBDOMAIN.match(meta["name"]), meta["name"]
    deployment = helm.one(objects, "Deployment")
    assert pod_security_problems(deployment["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=0"], "values don't meet the specifications"),
        (["--set", "unknown=1"], "values don't meet the specifications"),
        (["--set", "image.pullPolicy=Sometimes"], "values don't meet the specifications"),
        (["--set", "watchNamespaces[0]=Not_A_Namespace"], "values don't meet the specifications"),
        (["--set", "metrics.port=70000"], "values don't meet the specifications"),
        (["--set", "resources.requests.cpu=lots"], "values don't meet the specifications"),
        (
            ["--set", "metrics.serviceMonitor.interval=often"],
            "values don't meet the specifications",
        ),
        (["--set", "peering.enabled=false"], "values don't meet the specifications"),
        (["--set", "crds.create=maybe"], "values don't meet the specifications"),
        (["--set", "metrics.port=8081"], "metrics.port and livenessPort must differ"),
        (
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
    ],
)
def test_values_outside_the_schema_are_refused(args: list[str], message: str) -> None:
    result = helm.run("template", "adbm", str(helm.CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(prefix + key)
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{prefix}{key} is open"
            paths |= _schema_paths(sub, f"{prefix}{key}.")
    return paths


def _value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        paths.add(prefix + key)
        if isinstance(value, dict) and value:
            paths |= _value_paths(value, f"{prefix}{key}.")
    return paths


def test_the_schema_covers_every_value() -> None:
    schema = json.loads((helm.CHART / "values.schema.json").read_text())
    values = yaml.safe_load((helm.CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    free_form = {"podAnnotations", "podLabels", "nodeSelector", "affinity"}
    free_form |= {"serviceAccount.annotations", "metrics.serviceMonitor.labels"}
    value_paths = {
        p for p in _value_paths(values) if "." not in p or p.rsplit(".", 1)[0] not in free_form
    }
    # A CPU limit is allowed, not set by default: throttling an operator hurts more than it helps.
    assert _schema_paths(schema) - value_paths == {"resources.limits.cpu"}
    assert value_paths <= _schema_paths(schema)


def test_versions_follow_the_package() -> None:
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == adbm_operator.__version__
    image = helm.one(helm.template(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert image["image"] == f"adbm/operator:{adbm_operator.__version__}"


def test_the_crd_is_the_repository_crd_kept_on_uninstall() -> None:
    link = helm.CHART / "files" / "backendservice.yaml"
    assert link.is_symlink(), "one source: files/backendservice.yaml links to crds/"
    assert link.resolve() == (helm.ROOT / "crds" / "backendservice.yaml").resolve()
    rendered = helm.one(helm.template(), "CustomResourceDefinition", "backendservices.adbm.io")
    source = yaml.safe_load((helm.ROOT / "crds" / "backendservice.yaml").read_text())
    meta = rendered["metadata"]
    assert meta["annotations"].pop("helm.sh/resource-policy") == "keep"
    assert meta["labels"].pop("app.kubernetes.io/managed-by") == "Helm"
    for label in list(meta["labels"]):
        if label.startswith(("app.kubernetes.io/", "helm.sh/")):
            del meta["labels"][label]
    for field in ("annotations", "labels"):
        if not meta[field]:
            del meta[field]
    assert rendered == source
    off = helm.template("--set", "crds.create=false")
    assert not [o for o in off if o["kind"] == "CustomResourceDefinition"]


def test_the_peering_crds_are_the_ones_kopf_looks_for() -> None:
    crds = [d for d in yaml.safe_load_all((helm.CHART / "crds" / "kopf-peering.yaml").read_text())]
    served = {
        (f"{c['spec']['group']}/{v['name']}", c["spec"]["names"]["plural"], c["spec"]["scope"])
        for c in crds
        for v in c["spec"]["versions"]
        if v["served"]
    }
    cluster, namespaced = references.CLUSTER_PEERINGS_K, references.NAMESPACED_PEERINGS_K
    assert served == {
        (f"{cluster.group}/{cluster.version}", cluster.any_name, "Cluster"),
        (f"{namespaced.group}/{namespaced.version}", namespaced.any_name, "Namespaced"),
    }


def container_args(*args: str) -> list[str]:
    deployment = helm.one(helm.template(*args), "Deployment")
    found: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return found


@pytest.mark.parametrize("args", COMBINATIONS, ids=lambda a: " ".join(a) or "defaults")
def test_the_container_runs_what_the_cli_accepts(args: list[str]) -> None:
    parsed = cli.build_parser().parse_args(container_args(*args))
    assert parsed.command == "run"
    deployment = helm.one(helm.template(*args), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in spec["containers"][0]["ports"]}
    assert ports == {"metrics": parsed.metrics_port, "healthz": parsed.liveness_port}
    if deployment["spec"]["replicas"] > 1:
        assert parsed.peering is not None
    assert spec["securityContext"]["runAsUser"] == pod.RUN_AS_USER


def test_scope_and_peering_arguments() -> None:
    assert container_args()[:4] == [
        "run",
        "--all-namespaces",
        "--peering=adbm-operator",
        "--priority=random",
    ]
    listed = container_args("--set", "watchNamespaces={shop,payments}")
    assert listed[:3] == ["run", "--namespace=shop", "--namespace=payments"]
    standalone = container_args("--set", "replicaCount=1", "--set", "peering.enabled=false")
    assert not [a for a in standalone if a.startswith(("--peering", "--priority"))]
    objects = helm.template("--set", "watchNamespaces={shop,payments}")
    peerings = [o for o in objects if o["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["payments", "shop"]
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]


def test_service_monitor_only_where_prometheus_operator_is_installed() -> None:
    assert not [o for o in helm.template() if o["kind"] == "ServiceMonitor"]
    capable = helm.template("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    monitor = helm.one(capable, "ServiceMonitor")
    service = helm.one(capable, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


# Which Kubernetes the chart needs: what the pods the operator renders use, enabled by default.
# Each feature's field, and the release where its feature gate became on by default (beta).
FEATURES = {
    "lifecycle.preStop.sleep (PodLifecycleSleepAction)": ("1.30", '"sleep"'),
    "initContainers[].restartPolicy (SidecarContainers)": ("1.29", '"restartPolicy": "Always"'),
    "topologySpreadConstraints[].matchLabelKeys": ("1.27", '"matchLabelKeys"'),
}


def rendered_children() -> list[dict[str, Any]]:
    examples = sorted((helm.ROOT / "examples").glob("*.yaml"))
    return [c for e in examples for c in specs.render(parse(yaml.safe_load(e.read_text())))]


def test_kube_version_is_what_the_rendered_objects_need() -> None:
    children = rendered_children()
    text = json.dumps(children)
    needed = max(
        (version for version, marker in FEATURES.values() if marker in text),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={needed}.0-0" == f">={OLDEST}-0"
    assert f"{needed}.0" == OLDEST
    assert f"Kubernetes {needed} or newer" in README.read_text()
    for child in children:
        if (child["apiVersion"], child["kind"]) not in validation.CRD_FILES:
            kubernetes_validate.validate(child, OLDEST, strict=True)
    assert helm.run("template", "adbm", str(helm.CHART), "--kube-version", "1.29.0").returncode
    ok = helm.run("template", "adbm", str(helm.CHART), "--kube-version", OLDEST)
    assert ok.returncode == 0, ok.stderr


def test_notes_say_how_to_check_and_what_to_apply_next() -> None:
    result = helm.run("install", "adbm", str(helm.CHART), "--dry-run=client", "-n", "adbm-system")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "rollout status deployment/adbm-operator" in notes
    assert "kubectl apply -f examples/minimal.yaml" in notes


def test_readme_install_path() -> None:
    readme = (helm.ROOT / "README.md").read_text()
    assert "helm install adbm charts/adbm-operator" in readme
    assert readme.index("helm install adbm charts/adbm-operator") < readme.index(
        "kubectl apply -f examples/minimal.yaml"
    )


def test_priority_random_gives_each_replica_its_own_and_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    drawn = {cli.build_parser().parse_args(["run", "-A", "--priority=random"]).priority}
    drawn |= {cli.build_parser().parse_args(["run", "-A", "--priority=random"]).priority}
    assert len(drawn) == 2 and all(p > 0 for p in drawn)
    assert cli.build_parser().parse_args(["run", "-A", "--priority=7"]).priority == 7
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["run", "-A", "--priority=high"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not an integer or 'random': 'high'" in err and "Traceback" not in err
