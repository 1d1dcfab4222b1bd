"""The committed pacts under `pacts/`, and how consumer tests keep them in step.

Each consumer module writes its interactions into a scratch directory (one `Pact` per test,
merged by the core into one file) and, once all its tests ran, compares that file with the
committed one: a consumer change that changes the contract fails until the committed file is
regenerated (`ADBM_UPDATE_PACTS=1`) and, with it, verified against its provider.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACT_DIR = Path(__file__).parent / "pacts"


def pact_file(consumer: str, provider: str) -> Path:
    return PACT_DIR / f"{consumer}-{provider}.json"


def provider_of(path: Path) -> str:
    name: str = json.loads(path.read_text())["provider"]["name"]
    return name


def stable(path: Path) -> str:
    """The pact without what changes from run to run or machine to machine (the core's version)."""
    document = json.loads(path.read_text())
    document.get("metadata", {}).pop("pactRust", None)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


@contextmanager
def reproduced(out: Path, committed: Path) -> Iterator[Path]:
    """Yields `out`, the directory the consumer tests write into; afterwards the pact written
    there must be the committed one (rewritten first with `ADBM_UPDATE_PACTS=1`)."""
    yield out
    written = out / committed.name
    if os.environ.get("ADBM_UPDATE_PACTS") == "1":
        committed.parent.mkdir(exist_ok=True)
        committed.write_text(stable(written))
    current = committed.read_text() if committed.exists() else ""
    assert stable(written) == current, (
        f"the consumer's contract changed: regenerate {committed} with ADBM_UPDATE_PACTS=1"
        " and run its provider verification"
    )
