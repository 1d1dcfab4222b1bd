"""Layering: the reference service never imports the operator, and the operator uses only the
service's shared, HTTP-free modules (the policy document, the RLS plan/apply/verify, and the log
schema every ADBM process writes)."""

from __future__ import annotations

import ast
from pathlib import Path

from reference_service.db import migrate, rls

ROOT = Path(__file__).parents[2]
OPERATOR_MAY_IMPORT = {
    "reference_service.policy",
    "reference_service.db.rls",
    "reference_service.db.schema",
    "reference_service.observability.logging",
}


def _imports(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_service_never_imports_the_operator() -> None:
    offenders = {
        path: sorted(n for n in names if n.split(".")[0] == "adbm_operator")
        for path, names in _imports(ROOT / "reference_service").items()
    }
    assert {p: n for p, n in offenders.items() if n} == {}


def test_the_operator_imports_only_the_services_shared_modules() -> None:
    def allowed(name: str) -> bool:
        # `from reference_service.db import rls` names the package and the module.
        return any(
            name == m or m.startswith(name + ".") or name.startswith(m + ".")
            for m in OPERATOR_MAY_IMPORT
        )

    offenders = {
        path: sorted(n for n in names if n.split(".")[0] == "reference_service" and not allowed(n))
        for path, names in _imports(ROOT / "operator" / "adbm_operator").items()
    }
    assert {p: n for p, n in offenders.items() if n} == {}


def test_rls_and_migrate_serialise_on_one_advisory_lock() -> None:
    assert rls.LOCK == migrate.MIGRATION_LOCK
