"""Row helpers: audit fields, optimistic versions, soft delete and keyset pages, against the
real database as the app role (so under RLS, with no tenant condition in any statement)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from reference_service.db import repository
from reference_service.db.pool import Database, Statement
from reference_service.db.repository import NotFound, StaleVersion
from tests.reference_service.conftest import Tenants

MakeDatabase = Callable[..., Awaitable[Database]]


async def _rows(conn: AsyncConnection[Any], statement: Statement) -> list[dict[str, Any]]:
    """What the product runs through `Database.read`, run on a transaction's connection."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement.query, statement.params)
        return await cur.fetchall()


async def _get(conn: AsyncConnection[Any], table: str, row_id: uuid.UUID) -> dict[str, Any]:
    """The live row `Table.get` reads (the same statement), or NotFound as it raises."""
    rows = await _rows(conn, repository.select_one(table, row_id))
    if not rows:
        raise NotFound(table, row_id)
    return rows[0]


async def _page(conn: AsyncConnection[Any], table: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The rows `Table.page` reads (the same statement)."""
    return await _rows(conn, repository.select_page(table, **kwargs))


def _account(tenant: uuid.UUID, name: str = "acc", balance: int = 0) -> dict[str, Any]:
    return {"tenant_id": tenant, "name": name, "currency": "EUR", "balance_minor": balance}


async def _create(database: Database, tenant: uuid.UUID, **kw: Any) -> dict[str, Any]:
    async with database.transaction(tenant) as conn:
        return await repository.insert(conn, "accounts", _account(tenant, **kw), actor="alice")


async def test_insert_fills_the_audit_columns(database: Database, tenants: Tenants) -> None:
    before = datetime.now(UTC)
    row = await _create(database, tenants.a, name="first", balance=10)
    assert row["id"].version == 7
    assert row["tenant_id"] == tenants.a
    assert (row["name"], row["currency"], row["balance_minor"]) == ("first", "EUR", 10)
    assert row["created_by"] == row["updated_by"] == "alice"
    assert row["version"] == 1
    assert row["is_deleted"] is False
    assert row["created_at"] == row["updated_at"] >= before.replace(microsecond=0)


async def test_insert_takes_an_id_chosen_in_advance(database: Database, tenants: Tenants) -> None:
    chosen = uuid.uuid4()
    async with database.transaction(tenants.a) as conn:
        row = await repository.insert(
            conn, "accounts", {"id": chosen, **_account(tenants.a)}, actor="alice"
        )
    assert row["id"] == chosen


@pytest.mark.parametrize(
    ("table", "values", "message"),
    [
        ("nope", {}, "unknown table"),
        ("accounts", {"name": "x", "colour": "red"}, "unknown columns of accounts: colour"),
        ("accounts", {"version": 7}, "managed by the repository: version"),
        ("accounts", {"created_by": "mallory"}, "managed by the repository: created_by"),
        ("accounts", {"name": "x"}, "needs a tenant_id"),
    ],
)
async def test_insert_validates_names(
    database: Database, tenants: Tenants, table: str, values: dict[str, Any], message: str
) -> None:
    async with database.transaction(tenants.a) as conn:
        with pytest.raises(ValueError, match=message):
            await repository.insert(conn, table, values, actor="alice")


async def test_get(database: Database, tenants: Tenants) -> None:
    row = await _create(database, tenants.a)
    async with database.transaction(tenants.a) as conn:
        assert await _get(conn, "accounts", row["id"]) == row
        with pytest.raises(NotFound):
            await _get(conn, "accounts", uuid.uuid4())
    # Another tenant's row is simply not there.
    async with database.transaction(tenants.b) as conn:
        with pytest.raises(NotFound):
            await _get(conn, "accounts", row["id"])


async def test_update_bumps_version_and_audit(database: Database, tenants: Tenants) -> None:
    row = await _create(database, tenants.a, name="old")
    async with database.transaction(tenants.a) as conn:
        updated = await repository.update(
            conn, "accounts", row["id"], expected_version=1, changes={"name": "new"}, actor="bob"
        )
    assert updated["name"] == "new"
    assert updated["version"] == 2
    assert updated["updated_by"] == "bob"
    assert updated["created_by"] == "alice"
    assert updated["created_at"] == row["created_at"]
    assert updated["updated_at"] > row["updated_at"]


async def test_update_with_a_stale_version(database: Database, tenants: Tenants) -> None:
    row = await _create(database, tenants.a)
    async with database.transaction(tenants.a) as conn:
        await repository.update(
            conn, "accounts", row["id"], expected_version=1, changes={"name": "x"}, actor="bob"
        )
        with pytest.raises(StaleVersion) as raised:
            await repository.update(
                conn, "accounts", row["id"], expected_version=1, changes={"name": "y"}, actor="c"
            )
    assert (raised.value.expected_version, raised.value.current_version) == (1, 2)


async def test_update_of_a_missing_or_foreign_row(database: Database, tenants: Tenants) -> None:
    row = await _create(database, tenants.a)
    async with database.transaction(tenants.b) as conn:
        with pytest.raises(NotFound):
            await repository.update(
                conn, "accounts", row["id"], expected_version=1, changes={"name": "x"}, actor="b"
            )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tenant_id": uuid.uuid4()}, "never change: tenant_id"),
        ({"id": uuid.uuid4()}, "never change: id"),
        ({"version": 9}, "managed by the repository"),
        ({"is_deleted": True}, "managed by the repository"),
        ({"nope": 1}, "unknown columns"),
    ],
)
async def test_update_validates_names(
    database: Database, tenants: Tenants, changes: dict[str, Any], message: str
) -> None:
    async with database.transaction(tenants.a) as conn:
        with pytest.raises(ValueError, match=message):
            await repository.update(
                conn, "accounts", uuid.uuid4(), expected_version=1, changes=changes, actor="b"
            )


async def test_concurrent_updates_with_the_same_version_have_one_winner(
    make_database: MakeDatabase, tenants: Tenants
) -> None:
    db = await make_database(db_pool_max_size=20, db_pool_acquire_timeout_seconds=10)
    row = await _create(db, tenants.a, balance=0)
    start = asyncio.Event()

    async def deposit(n: int) -> str:
        async with db.transaction(tenants.a) as conn:
            current = await _get(conn, "accounts", row["id"])
            await start.wait()  # all 20 hold version 1 and their own transaction
            try:
                await repository.update(
                    conn,
                    "accounts",
                    row["id"],
                    expected_version=current["version"],
                    changes={"balance_minor": current["balance_minor"] + 1, "name": f"w{n}"},
                    actor=f"writer-{n}",
                )
            except StaleVersion as exc:
                assert exc.current_version == 2
                return "stale"
            return f"w{n}"

    tasks = [asyncio.create_task(deposit(n)) for n in range(20)]
    while db.stats()["in_use"] < 20:
        await asyncio.sleep(0.01)
    start.set()
    outcomes = await asyncio.gather(*tasks)
    winners = [o for o in outcomes if o != "stale"]
    assert len(winners) == 1
    assert outcomes.count("stale") == 19
    async with db.transaction(tenants.a) as conn:
        final = await _get(conn, "accounts", row["id"])
    # No lost update: exactly one increment, by the one writer that was told it won.
    assert (final["balance_minor"], final["version"], final["name"]) == (1, 2, winners[0])


async def test_soft_delete_hides_the_row(database: Database, tenants: Tenants) -> None:
    gone = await _create(database, tenants.a, name="gone")
    kept = await _create(database, tenants.a, name="kept")
    async with database.transaction(tenants.a) as conn:
        with pytest.raises(StaleVersion):
            await repository.soft_delete(
                conn, "accounts", gone["id"], expected_version=5, actor="bob"
            )
        deleted = await repository.soft_delete(
            conn, "accounts", gone["id"], expected_version=1, actor="bob"
        )
    assert (deleted["is_deleted"], deleted["version"], deleted["updated_by"]) == (True, 2, "bob")
    async with database.transaction(tenants.a) as conn:
        with pytest.raises(NotFound):
            await _get(conn, "accounts", gone["id"])
        page = await _page(conn, "accounts", after=None, limit=10)
        assert [r["id"] for r in page] == [kept["id"]]
        with pytest.raises(NotFound):
            await repository.update(
                conn, "accounts", gone["id"], expected_version=2, changes={"name": "x"}, actor="b"
            )
        with pytest.raises(NotFound):
            await repository.soft_delete(
                conn, "accounts", gone["id"], expected_version=None, actor="b"
            )
        # Still there for the record (the app role cannot DELETE).
        cur = await conn.execute("SELECT is_deleted FROM accounts WHERE id = %s", (gone["id"],))
        assert await cur.fetchone() == {"is_deleted": True}


async def test_soft_delete_without_a_version(database: Database, tenants: Tenants) -> None:
    row = await _create(database, tenants.a)
    async with database.transaction(tenants.a) as conn:
        deleted = await repository.soft_delete(
            conn, "accounts", row["id"], expected_version=None, actor="bob"
        )
    assert deleted["is_deleted"] is True


async def test_a_soft_deleted_sku_can_be_reused(database: Database, tenants: Tenants) -> None:
    product = {"tenant_id": tenants.a, "sku": "S", "name": "P", "price_minor": 1, "currency": "EUR"}
    async with database.transaction(tenants.a) as conn:
        first = await repository.insert(conn, "products", product, actor="a")
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                await repository.insert(conn, "products", product, actor="a")
        await repository.soft_delete(conn, "products", first["id"], expected_version=1, actor="a")
        second = await repository.insert(conn, "products", product, actor="a")
    assert second["id"] != first["id"]
    # And the same SKU in another tenant never collided.
    async with database.transaction(tenants.b) as conn:
        await repository.insert(conn, "products", {**product, "tenant_id": tenants.b}, actor="b")


async def test_keyset_walk_visits_every_row_once(
    database: Database, database_urls: Any, tenants: Tenants
) -> None:
    # Many rows share a created_at (one transaction, now() is its start): the id breaks ties.
    async with database.transaction(tenants.a) as conn:
        for i in range(1000):
            await repository.insert(conn, "accounts", _account(tenants.a, f"a{i}"), actor="t")
    async with database.transaction(tenants.b) as conn:
        for i in range(50):
            await repository.insert(conn, "accounts", _account(tenants.b, f"b{i}"), actor="t")
        # A deleted row is skipped by every page.
        deleted = await repository.insert(conn, "accounts", _account(tenants.b, "x"), actor="t")
        await repository.soft_delete(conn, "accounts", deleted["id"], expected_version=1, actor="t")

    seen: list[dict[str, Any]] = []
    after: repository.Key | None = None
    pages = 0
    while True:
        async with database.transaction(tenants.a) as conn:
            page = await _page(conn, "accounts", after=after, limit=37)
        if not page:
            break
        pages += 1
        seen += page
        after = (page[-1]["created_at"], page[-1]["id"])
    assert pages == 28  # ceil(1000 / 37)
    assert len(seen) == 1000
    assert len({r["id"] for r in seen}) == 1000
    assert {r["tenant_id"] for r in seen} == {tenants.a}
    assert [(r["created_at"], r["id"]) for r in seen] == sorted(
        (r["created_at"], r["id"]) for r in seen
    )
    # The ids are UUIDv7 generated in order, so within the shared timestamp they follow the
    # insertion order.
    assert [r["name"] for r in seen] == [f"a{i}" for i in range(1000)]

    async with database.transaction(tenants.b) as conn:
        rows = await _page(conn, "accounts", after=None, limit=1000)
    assert len(rows) == 50


async def test_page_filters(database: Database, tenants: Tenants) -> None:
    async with database.transaction(tenants.a) as conn:
        for name in ("x", "y", "x"):
            await repository.insert(conn, "accounts", _account(tenants.a, name), actor="t")
        xs = await _page(conn, "accounts", after=None, limit=10, filters={"name": "x"})
        assert [r["name"] for r in xs] == ["x", "x"]
        outbox = {"tenant_id": tenants.a, "topic": "t", "payload": Jsonb({})}
        sent = await repository.insert(conn, "outbox", outbox, actor="t")
        await repository.update(
            conn,
            "outbox",
            sent["id"],
            expected_version=1,
            changes={"published_at": datetime.now(UTC)},
            actor="relay",
        )
        pending = await repository.insert(conn, "outbox", outbox, actor="t")
        unpublished = await _page(
            conn, "outbox", after=None, limit=10, filters={"published_at": None}
        )
        assert [r["id"] for r in unpublished] == [pending["id"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be between 1 and 1000"),
        ({"limit": 1001}, "limit must be between 1 and 1000"),
        ({"limit": 10, "filters": {"name; --": 1}}, "unknown columns"),
    ],
)
def test_page_validates(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        repository.select_page("accounts", after=None, **kwargs)


def test_statements_name_no_tenant() -> None:
    statement = repository.select_page(
        "accounts", after=(datetime(2020, 1, 1, tzinfo=UTC), uuid.uuid4()), limit=10
    )
    text = statement.query.as_string()
    assert "tenant" not in text.split(" WHERE ")[1]
    assert "OFFSET" not in text
    assert text == (
        'SELECT "id", "tenant_id", "created_at", "updated_at", "created_by", "updated_by",'
        ' "is_deleted", "version", "name", "currency", "balance_minor" FROM "public"."accounts"'
        " WHERE NOT is_deleted AND (created_at, id) > (%s, %s) ORDER BY created_at, id LIMIT %s"
    )
    one = repository.select_one("accounts", uuid.uuid4()).query.as_string()
    assert "tenant" not in one.split(" WHERE ")[1]
