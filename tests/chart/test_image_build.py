"""Both Dockerfiles' build stage played without a Docker engine: the build context that
`.dockerignore` leaves, the stage's COPY instructions and its `pip wheel`, then the image's
entrypoint run from that wheel alone.

There is no Docker engine on this machine, so `docker build` never runs here (the kind suite
builds the images where it can). What a build can still get wrong is checked for real: a COPY
whose source `.dockerignore` drops, a package, migration or Lua script missing from the wheel
(package data), a console script that does not start, migrations that do not apply. The context
follows BuildKit's `.dockerignore` rules (moby/patternmatcher: the last matching pattern wins, a
pattern also matches every path under what it names, `**` spans directories), encoded below.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.chart import helm
from tests.chart.test_dockerfiles import OPERATOR, SERVICE, entrypoint, stages

ROOT = helm.ROOT
PACKAGES = ("adbm_operator", "reference_service")
# Files a package ships, as the build's package data declares them (pyproject.toml).
SHIPPED = {".py", ".sql", ".lua", ".j2", ".typed"}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's translation of one pattern (after filepath.Clean)."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(.*/)?"  # `**/` is zero or more directories
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char in "[\\":
            raise ValueError(f".dockerignore pattern {pattern!r}: classes and escapes not encoded")
        else:
            out += re.escape(char)
        i += 1
    return re.compile(f"^{out}$")


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        cleaned = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((exclusion, _pattern_regex(cleaned)))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    parents = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for exclusion, regex in rules:
        if any(regex.match(path) for path in parents):
            verdict = not exclusion
    return verdict


def context(into: Path) -> Path:
    """The files a `docker build .` at the repository root sends, copied into `into`."""
    rules = dockerignore()
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for relative in tracked:
        source = ROOT / relative
        if source.is_file() and not ignored(relative, rules):
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def build_stage(dockerfile: Path, ctx: Path, workdir: Path) -> list[str]:
    """Apply the build stage's WORKDIR-relative COPY instructions; return its RUN lines."""
    build, _ = stages(dockerfile)
    runs: list[str] = []
    for instruction in build:
        kind, value = instruction["instruction"], instruction["value"]
        if kind == "COPY":
            *sources, dest = value.split()
            assert not any(s.startswith("--") for s in sources), f"COPY flags not played: {value}"
            for source in sources:
                found = ctx / source
                assert found.exists(), f"{dockerfile.name}: COPY {source}: not in the context"
                target = workdir / dest if dest.endswith("/") or len(sources) > 1 else workdir
                if found.is_dir():
                    shutil.copytree(found, workdir / dest, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(found, target / found.name)
        elif kind == "RUN":
            runs.append(value)
    return runs


def source_files(package: str) -> set[str]:
    base = ROOT / ("operator" if package == "adbm_operator" else ".") / package
    return {
        str(p.relative_to(base.parent))
        for p in base.rglob("*")
        if p.is_file() and p.suffix in SHIPPED and "__pycache__" not in p.parts
    }


def build(dockerfile: Path, tmp: Path) -> Path:
    """The wheel the Dockerfile's build stage makes."""
    ctx = context(tmp / "context")
    src = tmp / "src"
    src.mkdir()
    runs = build_stage(dockerfile, ctx, src)
    assert any("pip wheel --no-deps --wheel-dir /wheels ." in run for run in runs)
    # The same `pip wheel` without the network: the build requirements come from the dev extra.
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "-q", "--wheel-dir", str(tmp / "wheels"), "."),
        ],
        cwd=src,
        check=True,
        capture_output=True,
    )
    (built,) = (tmp / "wheels").glob("adbm-*.whl")
    return built


@pytest.fixture(scope="module", params=[OPERATOR, SERVICE], ids=lambda p: p.parent.name)
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dockerfile: Path = request.param
    return dockerfile


@pytest.fixture(scope="module")
def wheel(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(image, tmp_path_factory.mktemp(image.parent.name))


def test_the_wheel_holds_every_file_both_packages_ship(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        missing = source_files(package) - names
        assert not missing, f"{wheel.name} lacks {sorted(missing)[:5]}"


@pytest.fixture()
def unpacked(wheel: Path, tmp_path: Path) -> Path:
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    return tmp_path / "site"


def _run_from(site: Path, module: str, *args: str, env: dict[str, str] | None = None) -> str:
    """A console script as the image runs it: the wheel's code only, never this checkout's."""
    script = f"import sys, {module} as m; sys.argv[0] = 'entrypoint'; sys.exit(m.main())"
    result = subprocess.run(
        [sys.executable, "-P", "-c", script, *args],
        cwd=site,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _where(site: Path, package: str) -> str:
    script = f"import {package}; print({package}.__file__)"
    return subprocess.run(
        [sys.executable, "-P", "-c", script],
        cwd=site,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_the_entrypoint_starts_from_the_wheel(image: Path, unpacked: Path) -> None:
    command = entrypoint(image)[0]
    module = {"adbm-operator": "adbm_operator.cli", "adbm-service": "reference_service.cli"}
    package = module[command].split(".")[0]
    assert _where(unpacked, package).startswith(str(unpacked)), "the checkout was imported"
    assert "usage" in _run_from(unpacked, module[command], "--help").lower()


@pytest.fixture()
def scratch_database() -> Iterator[tuple[str, str]]:
    """A database and a role name of this test's own: (admin URI, app role)."""
    name = f"adbm_image_{os.getpid()}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'DROP ROLE IF EXISTS "{name}_app"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}", f"{name}_app"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{name}_app"')


def test_the_service_image_migrates_from_its_own_wheel(
    tmp_path: Path, scratch_database: tuple[str, str]
) -> None:
    # The migration Job runs the reference-service image (`spec.image`).
    site = tmp_path / "site"
    zipfile.ZipFile(build(SERVICE, tmp_path / "build")).extractall(site)
    admin, role = scratch_database
    app_url = admin.replace("postgres@", f"{role}:pw@")
    output = _run_from(
        site,
        "reference_service.cli",
        "migrate",
        "--admin-url",
        admin,
        env={"ADBM_ENVIRONMENT": "development", "ADBM_DATABASE_URL": app_url},
    )
    with psycopg.connect(admin) as conn:
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    shipped = {p.stem for p in (ROOT / "reference_service" / "db" / "migrations").glob("*.sql")}
    assert applied == shipped, output


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("pyproject.toml", True),
        ("reference_service/cli.py", True),
        ("reference_service/db/migrations/0001_core.sql", True),
        ("operator/adbm_operator/cli.py", True),
        ("operator/Dockerfile", False),
        ("clients/python/adbm_client/client.py", False),
        ("tests/conftest.py", False),
        ("reference_service/__pycache__/cli.cpython-311.pyc", False),
    ],
)
def test_the_context_rules_as_buildkit_reads_them(path: str, sent: bool) -> None:
    assert ignored(path, dockerignore()) is not sent
