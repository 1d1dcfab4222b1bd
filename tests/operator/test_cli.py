"""`adbm-operator render` and `adbm-operator crd` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adbm_operator import apidoc, cli, crd, model, specs

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_render_prints_exactly_the_children_the_operator_applies(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["render", "-f", str(example)]) == 0
    rendered = list(yaml.safe_load_all(capsys.readouterr().out))
    assert rendered == specs.render(model.parse(yaml.safe_load(example.read_text())))
    kinds = {obj["kind"] for obj in rendered}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_render_defaults_prints_the_object_with_every_default(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["render", "--defaults", "-f", str(example)]) == 0
    rendered = list(yaml.safe_load_all(capsys.readouterr().out))
    obj = model.parse(yaml.safe_load(example.read_text()))
    assert rendered == [model.with_computed_defaults(obj)]
    # Every spec default the API server applies, plus the values computed from the object.
    [body] = rendered
    assert {k: v for k, v in body["spec"].items() if k not in ("database", "redis")} == {
        k: v for k, v in model.with_defaults(obj)["spec"].items() if k not in ("database", "redis")
    }
    assert body["spec"]["database"]["appRole"] == specs.labels.app_role(obj)
    assert body["spec"]["redis"]["keyPrefix"] == model.redis_key_prefix(obj)


def test_render_defaults_shows_the_computed_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    body["metadata"] = {"name": "my-shop", "namespace": "team-a"}
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump(body))
    assert cli.main(["render", "--defaults", "-f", str(path)]) == 0
    [rendered] = yaml.safe_load_all(capsys.readouterr().out)
    assert rendered["spec"]["database"]["appRole"] == "my_shop_app"
    assert rendered["spec"]["redis"]["keyPrefix"] == "team-a:my-shop:"
    # What the user set is kept.
    body["spec"]["database"]["appRole"] = "shop_rw"
    body["spec"]["redis"]["keyPrefix"] = "x:"
    path.write_text(yaml.safe_dump(body))
    assert cli.main(["render", "--defaults", "-f", str(path)]) == 0
    [rendered] = yaml.safe_load_all(capsys.readouterr().out)
    assert rendered["spec"]["database"]["appRole"] == "shop_rw"
    assert rendered["spec"]["redis"]["keyPrefix"] == "x:"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_render_json(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", str(example), "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "List"
    assert out["items"] == specs.render(model.parse(yaml.safe_load(example.read_text())))


def test_render_reads_stdin_and_several_documents(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    both = "\n---\n".join(p.read_text() for p in EXAMPLES)
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(both))
    assert cli.main(["render", "--defaults", "-f", "-"]) == 0
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert sorted(names) == sorted(
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in EXAMPLES
    )


def test_invalid_spec_exits_2_with_every_problem_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    body["spec"]["replicas"] = 0
    body["spec"]["database"]["pool"] = {"maxSize": 500}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    assert cli.main(["render", "-f", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "BackendService 'shop' is invalid" in captured.err
    assert "spec.replicas: Input should be greater than or equal to 1" in captured.err
    assert "spec.database.pool.maxSize: Input should be less than or equal to 100" in captured.err
    assert "Traceback" not in captured.err


BUDGET_AND_FIELD = """\
apiVersion: adbm.io/v1alpha1
kind: BackendService
metadata: {name: shop}
spec:
  replicas: 3
  database: {name: shop, adminSecretRef: {name: pg}, pool: {maxSize: 8}}
  redis: {secretRef: {name: Bad_Name}}
  observability: {otelCollector: {endpoint: "tempo:4317"}}
  queue: {secretRef: {name: rabbit}, workers: [{name: mail, queues: [mail], replicas: 10}]}
"""

MANY_RULES = """\
apiVersion: adbm.io/v1alpha1
kind: BackendService
metadata: {name: other}
spec:
  replicas: 7
  database: {name: shop, adminSecretRef: {name: pg}, pool: {minSize: 20, maxSize: 15}}
  redis: {secretRef: {name: redis}}
  observability: {otelCollector: {endpoint: "tempo:4317"}}
  versioning:
    current: v1
    deprecated:
      - {version: v1, deprecatedAt: "2025-01-01T00:00:00Z", sunsetAt: "2024-01-01T00:00:00Z",
         link: "http://example.com"}
      - {version: v1, deprecatedAt: "2025-01-01T00:00:00Z", sunsetAt: "2026-01-01T00:00:00Z"}
"""


def test_render_lists_every_problem_with_its_numbers_and_list_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BUDGET_AND_FIELD + "---\n" + MANY_RULES)
    assert cli.main(["render", "-f", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"error: {path}: BackendService 'shop' is invalid:",
        f"  spec.redis.secretRef.name: String should match pattern '{model.DNS_SUBDOMAIN}'",
        # A field error elsewhere does not hide the budget, and the budget says its numbers.
        "  spec: API and worker replicas at their autoscaling maximum (3 + 10)"
        " \u00d7 pool.maxSize 8 = 104 connections exceed database.connectionBudget 100",
        # The second document is reported too, with what kube-apiserver 1.33 reports for it (it
        # adds the list-map's own "Duplicate value" for the repeated version): a broken item
        # hides neither the item's rules nor its list's.
        f"error: {path}: BackendService 'other' is invalid:",
        "  spec.database.pool: pool.minSize must not exceed pool.maxSize",
        "  spec.versioning.deprecated[0].link: String should match pattern '^https://'",
        "  spec.versioning.deprecated[0]: sunsetAt must not be before deprecatedAt",
        "  spec.versioning: the current version cannot be deprecated",
        "  spec.versioning: versioning.deprecated must not repeat a version",
        "  spec: API and worker replicas at their autoscaling maximum (7 + 0)"
        " \u00d7 pool.maxSize 15 = 105 connections exceed database.connectionBudget 100",
    ]


T0 = "2025-01-01T00:00:00Z"


def test_two_broken_rules_of_one_object_are_both_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    body["spec"]["versioning"] = {
        "current": "v1",
        "deprecated": [
            {
                "version": v,
                "deprecatedAt": "2025-01-01T00:00:00Z",
                "sunsetAt": "2026-01-01T00:00:00Z",
            }
            for v in ("v1", "v1")
        ],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    assert cli.main(["render", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "  spec.versioning: the current version cannot be deprecated\n" in err
    assert "  spec.versioning: versioning.deprecated must not repeat a version" in err


@pytest.mark.parametrize(
    ("loc", "written"),
    [
        (("spec", "versioning", "deprecated", 0, "link"), "spec.versioning.deprecated[0].link"),
        (("spec", "queue", "workers", 1), "spec.queue.workers[1]"),
        (("spec",), "spec"),
        ((), "(object)"),
    ],
)
def test_field_paths_are_written_as_in_yaml(loc: tuple[str | int, ...], written: str) -> None:
    assert cli.field_path(loc) == written


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "expected adbm.io/v1alpha1/BackendService",
        ),
        ("spec: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "document 1 is not a mapping"),
        ("", "no BackendService found"),
    ],
)
def test_bad_files_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "input.yaml"
    path.write_text(content)
    assert cli.main(["render", "-f", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", "/nonexistent/cr.yaml"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_crd_command_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd"]) == 0
    assert capsys.readouterr().out == crd.crd_yaml()


def test_console_script_is_installed() -> None:
    """The README's first command runs the installed entry point, not the module."""
    exe = Path(sys.executable).parent / "adbm-operator"
    result = subprocess.run(
        [str(exe), "render", "-f", str(ROOT / "examples" / "full.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "ConfigMap")
    assert config["data"]["ADBM_DB_POOL_MAX_SIZE"] == "8"
    assert "payments/payments: " in result.stderr
    assert "at most 136 database connections (pool.maxSize 8) of a budget of 200" in result.stderr


def test_readme_generated_sections_are_current() -> None:
    readme = (ROOT / "README.md").read_text()
    expected = apidoc.embed(readme, cli.readme_sections(ROOT))
    assert expected == readme, "run: adbm-operator docs --update README.md"


def test_field_reference_lists_every_spec_field_and_rule() -> None:
    reference = apidoc.field_reference()
    for path in (
        "spec.database.pool.maxSize",
        "spec.rateLimit.routes[].path",
        "spec.queue.workers[].autoscaling.scaler",
        "spec.versioning.deprecated[].sunsetAt",
        "spec.observability.serviceMonitor.labels",
    ):
        assert f"| `{path}` |" in reference
    assert "sunsetAt must not be before deprecatedAt" in reference
    assert "exceed database.connectionBudget" in reference


def test_field_reference_prints_exclusive_bounds() -> None:
    reference = apidoc.field_reference()
    row = next(
        r for r in reference.splitlines() if "| `spec.database.pool.acquireTimeoutSeconds` |" in r
    )
    assert "| > 0; ≤ 60 |" in row
    assert "True" not in reference
    assert apidoc._constraints({"minimum": 1, "exclusiveMaximum": True, "maximum": 5}) == (
        "≥ 1; < 5"
    )


def test_docs_update_rewrites_only_the_generated_sections(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / cli.RENDER_SAMPLE).write_text((ROOT / cli.RENDER_SAMPLE).read_text())
    readme = tmp_path / "README.md"
    parts = ["intro\n"]
    for section in cli.readme_sections(tmp_path):
        parts.append(f"{apidoc.begin(section)}\nstale\n{apidoc.end(section)}\nbetween\n")
    readme.write_text("".join(parts) + "outro\n")
    assert cli.main(["docs", "--update", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert text.count("between\n") == 2
    assert "stale" not in text and "spec.database.pool.maxSize" in text
    assert "kind: Deployment" in text
    readme.write_text("no markers\n")
    assert cli.main(["docs", "--update", str(readme)]) == 2
