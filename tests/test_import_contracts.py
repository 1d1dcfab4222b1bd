"""The import contracts in pyproject.toml cover the code as it is: a module added to the operator
is forbidden to the model without anyone remembering to list it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPERATOR = ROOT / "operator" / "adbm_operator"


def _contract(name: str) -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == name]
    return contract


def test_the_model_is_forbidden_every_other_module_of_the_operator() -> None:
    contract = _contract("The model imports nothing else of the operator")
    modules = {
        f"adbm_operator.{path.stem}"
        for path in OPERATOR.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    } - {"adbm_operator.model"}
    assert set(contract["forbidden_modules"]) == modules
