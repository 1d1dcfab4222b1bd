"""Field types and model bases shared by the domain modules."""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Generic, Protocol, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from reference_service.db import repository
from reference_service.db.pool import Connection, Database
from reference_service.db.repository import Key
from reference_service.domain.currencies import iso_4217

if TYPE_CHECKING:
    from reference_service.config import Settings

# Postgres bigint: larger values would pass validation and then fail in the database as a 500.
INT64_MAX: Final = 2**63 - 1

# No control characters: Postgres text cannot hold NUL at all (it would fail as a 500), and tabs,
# newlines or escape sequences in a display name only break the screens and logs showing it.
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Currency = Annotated[
    str,
    Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.", examples=["EUR"]),
    AfterValidator(iso_4217),
]
Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", examples=["TSHIRT-M-BLUE"])]
MinorUnits = Annotated[
    int,
    Field(
        ge=0,
        le=INT64_MAX,
        description="Money in integer minor units of the currency (cents for EUR): never floats.",
    ),
]


class Input(BaseModel):
    """Base of request bodies: unknown fields and type coercion ("5" for 5) are refused, so
    a client's typo is a 400 rather than a silently ignored field."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Changes(Input):
    """Base of PATCH bodies: fields left out stay as they are; null is not a value."""

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Field validators do not run for defaults, so this sees only values the client sent.
        if value is None:
            raise ValueError("must not be null; leave the field out to keep its value")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Changes:
        if not self.model_fields_set:
            raise ValueError("at least one field to change is required")
        return self

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent."""
        return self.model_dump(exclude_unset=True)


class Resource(BaseModel):
    """Base of response bodies: identity, version (also the ETag) and audit timestamps."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: UUID
    version: int
    created_at: datetime
    updated_at: datetime


# Reads go through `Database.read`: BEGIN READ ONLY, the tenant, the statement and COMMIT in one
# pipelined round trip, instead of three or more for a `transaction()` block. Writes take a
# connection from `Database.transaction(tenant)`, so a caller can group several in one.


M = TypeVar("M", bound=Resource)


@dataclass(frozen=True)
class Table(Generic[M]):
    """The reads and writes every resource table has, typed by the table's response model.

    Each domain module binds one (`products`, `accounts`, `orders`) and keeps only what is its
    own: the request models and the rules about which fields may change.
    """

    name: str
    model: type[M]

    async def get(self, database: Database, tenant_id: UUID, row_id: UUID) -> M:
        """The live row as the tenant sees it, or `repository.NotFound`."""
        rows = await database.read(tenant_id, repository.select_one(self.name, row_id))
        if not rows:
            raise repository.NotFound(self.name, row_id)
        return self.model.model_validate(rows[0])

    async def page(
        self, database: Database, tenant_id: UUID, *, after: Key | None, limit: int
    ) -> list[M]:
        """Up to `limit` live rows after the keyset position `after`."""
        statement = repository.select_page(self.name, after=after, limit=limit)
        # One validator call for the page (a list adapter), not one per row.
        rows: list[M] = self._rows.validate_python(await database.read(tenant_id, statement))
        return rows

    @functools.cached_property
    def _rows(self) -> TypeAdapter[list[M]]:
        return TypeAdapter(list[self.model])  # type: ignore[name-defined]

    async def create(
        self,
        conn: Connection,
        tenant_id: UUID,
        data: Input,
        *,
        actor: str,
        row_id: UUID | None = None,
    ) -> M:
        """Insert the row; `row_id` is its id when the caller made one (a UUIDv7) beforehand."""
        values = {"tenant_id": tenant_id, **data.model_dump()}
        if row_id is not None:
            values["id"] = row_id
        return self.model.model_validate(
            await repository.insert(conn, self.name, values, actor=actor)
        )

    async def update(
        self,
        conn: Connection,
        row_id: UUID,
        data: Changes,
        *,
        expected_version: int | None,
        actor: str,
    ) -> M:
        row = await repository.update(
            conn,
            self.name,
            row_id,
            expected_version=expected_version,
            changes=data.changes(),
            actor=actor,
        )
        return self.model.model_validate(row)

    async def delete(
        self, conn: Connection, row_id: UUID, *, expected_version: int | None, actor: str
    ) -> None:
        await repository.soft_delete(
            conn, self.name, row_id, expected_version=expected_version, actor=actor
        )


class Operation(enum.Enum):
    """What an API can do with a resource."""

    CREATE = "create"
    LIST = "list"
    GET = "get"
    CHANGE = "change"
    DELETE = "delete"


READS: Final = frozenset({Operation.LIST, Operation.GET})
EVERY_OPERATION: Final = frozenset(Operation)
# The writes that are not naturally idempotent: a retried POST would create twice, a retried
# PATCH could undo a change made in between. DELETE is idempotent by itself.
CREATE_AND_CHANGE: Final = frozenset({Operation.CREATE, Operation.CHANGE})


class Refused(ValueError):
    """A request that is valid but cannot be done as asked (the product's currency is not the
    account's, ...). Each subclass is one problem type of the API, mapped in `http.problems`."""


M_co = TypeVar("M_co", bound=Resource, covariant=True)


class Start(Protocol[M_co]):
    """Starts an asynchronous create: writes the resource in its first state and queues the
    work that moves it on, in one transaction, and returns the resource as written."""

    def __call__(
        self,
        database: Database,
        tenant_id: UUID,
        data: Any,
        /,
        *,
        actor: str,
        settings: Settings,
    ) -> Awaitable[M_co]: ...


@dataclass(frozen=True)
class Submission(Generic[M]):
    """A CREATE whose work runs behind the queue: answered 202 Accepted with `Location` of the
    resource, whose state the client polls.

    `start` runs in the request; `refusals` are the `Refused` errors it may raise (each its own
    problem type); `unavailable` says why the work could not be done with these settings (no
    queue, no external API configured), or None: the request is then refused with 503 rather
    than accepted and left pending forever.
    """

    start: Start[M]
    refusals: tuple[type[Refused], ...] = ()
    unavailable: Callable[[Settings], str | None] = lambda settings: None


@dataclass(frozen=True)
class ResourceSpec(Generic[M]):
    """One resource, declared once: every API version serves it from this declaration.

    `item` is its singular (`product`: the path parameter `product_id`, the operation names);
    `create` and `changes` are the request models of CREATE and CHANGE; `idempotent` the writes
    that need an `Idempotency-Key`; `unique` the fields under a uniqueness rule (a write that
    sets one can conflict); `money` the amount `<money>_minor` counted in `currency`, if any.
    `submission`, with CREATE, makes the create asynchronous (see `Submission`); `cached` serves
    GET of one item through the read-through cache, which the writes keep current.
    """

    table: Table[M]
    item: str
    operations: frozenset[Operation]
    create: type[Input] | None = None
    changes: type[Changes] | None = None
    idempotent: frozenset[Operation] = field(default=frozenset())
    unique: frozenset[str] = field(default=frozenset())
    money: str | None = None
    submission: Submission[M] | None = None
    cached: bool = False

    def __post_init__(self) -> None:
        if (Operation.CREATE in self.operations) != (self.create is not None):
            raise ValueError(f"{self.name}: a create model goes with CREATE, and only with it")
        if (Operation.CHANGE in self.operations) != (self.changes is not None):
            raise ValueError(f"{self.name}: a changes model goes with CHANGE, and only with it")
        if not self.idempotent <= self.operations - READS:
            raise ValueError(f"{self.name}: only its writes can be idempotent writes")
        if self.submission is not None and Operation.CREATE not in self.operations:
            raise ValueError(f"{self.name}: a submission is how it is created: it needs CREATE")
        if self.cached and Operation.GET not in self.operations:
            raise ValueError(f"{self.name}: only a resource with GET can be cached")

    @property
    def name(self) -> str:
        """The collection: table, path segment, tag and cursor scope."""
        return self.table.name

    @property
    def model(self) -> type[M]:
        return self.table.model

    def conflicts(self, operation: Operation) -> bool:
        """Whether `operation` can break a uniqueness rule."""
        written = {Operation.CREATE: self.create, Operation.CHANGE: self.changes}.get(operation)
        return written is not None and bool(self.unique & set(written.model_fields))
