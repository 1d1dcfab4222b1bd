-- Core schema of the reference service.
--
-- Every table carries the audit columns (created_at/created_by, updated_at/updated_by), a soft
-- delete flag (rows are never physically deleted: the app role has no DELETE privilege) and a
-- version for optimistic concurrency. Primary keys have no default: the application generates
-- UUIDv7 ids, so an id is known before the INSERT and ids sort by creation time.
--
-- Row-level security is not enabled here: `reference_service.db.rls` applies it afterwards with
-- the configured tenant setting and tables, so the operator and this file cannot disagree.

CREATE TABLE tenants (
    id          uuid        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    updated_by  text        NOT NULL,
    is_deleted  boolean     NOT NULL DEFAULT false,
    version     integer     NOT NULL DEFAULT 1,
    name        text        NOT NULL UNIQUE
);

CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    updated_by  text        NOT NULL,
    is_deleted  boolean     NOT NULL DEFAULT false,
    version     integer     NOT NULL DEFAULT 1,
    name        text        NOT NULL,
    -- SHA-256 of the whole key: the key itself is shown once and never stored.
    key_hash    bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    prefix      text        NOT NULL
);

CREATE TABLE accounts (
    id            uuid        PRIMARY KEY,
    tenant_id     uuid        NOT NULL REFERENCES tenants (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL,
    updated_by    text        NOT NULL,
    is_deleted    boolean     NOT NULL DEFAULT false,
    version       integer     NOT NULL DEFAULT 1,
    name          text        NOT NULL,
    currency      char(3)     NOT NULL,
    balance_minor bigint      NOT NULL CHECK (balance_minor >= 0),
    -- Target of the composite foreign keys below: an order can only reference an account of
    -- its own tenant. A plain `REFERENCES accounts (id)` would be checked without RLS (foreign
    -- key checks bypass policies), letting one tenant attach rows to another tenant's account.
    UNIQUE (tenant_id, id)
);

CREATE TABLE products (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    updated_by  text        NOT NULL,
    is_deleted  boolean     NOT NULL DEFAULT false,
    version     integer     NOT NULL DEFAULT 1,
    sku         text        NOT NULL,
    name        text        NOT NULL,
    price_minor bigint      NOT NULL CHECK (price_minor >= 0),
    currency    char(3)     NOT NULL,
    UNIQUE (tenant_id, id)
);

-- A SKU may be reused once the product holding it has been soft-deleted.
CREATE UNIQUE INDEX products_tenant_sku_live ON products (tenant_id, sku) WHERE NOT is_deleted;

CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    updated_by  text        NOT NULL,
    is_deleted  boolean     NOT NULL DEFAULT false,
    version     integer     NOT NULL DEFAULT 1,
    account_id  uuid        NOT NULL,
    product_id  uuid        NOT NULL,
    quantity    integer     NOT NULL CHECK (quantity > 0),
    total_minor bigint      NOT NULL CHECK (total_minor >= 0),
    currency    char(3)     NOT NULL,
    status      text        NOT NULL,
    -- Composite keys (see accounts): they imply `REFERENCES accounts (id)` and add the tenant.
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id)
);

-- Foreign keys are not indexed by Postgres; these keep "orders of an account/product" and the
-- referential checks on account/product updates from scanning orders.
CREATE INDEX orders_account ON orders (tenant_id, account_id);
CREATE INDEX orders_product ON orders (tenant_id, product_id);

CREATE TABLE outbox (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    updated_by   text        NOT NULL,
    is_deleted   boolean     NOT NULL DEFAULT false,
    version      integer     NOT NULL DEFAULT 1,
    topic        text        NOT NULL,
    payload      jsonb       NOT NULL,
    published_at timestamptz
);

-- The relay reads unpublished messages in creation order; once published they leave the index.
CREATE INDEX outbox_unpublished ON outbox (created_at, id)
    WHERE published_at IS NULL AND NOT is_deleted;

-- Keyset pagination: `WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id` under the RLS
-- predicate `tenant_id = <current tenant>` is one index range scan, whatever the page depth.
-- The leading tenant_id column is also what serves the RLS predicate itself.
CREATE INDEX api_keys_keyset ON api_keys (tenant_id, created_at, id);
CREATE INDEX accounts_keyset ON accounts (tenant_id, created_at, id);
CREATE INDEX products_keyset ON products (tenant_id, created_at, id);
CREATE INDEX orders_keyset ON orders (tenant_id, created_at, id);
CREATE INDEX outbox_keyset ON outbox (tenant_id, created_at, id);

-- Resolve an API key to its tenant before any tenant is set. The app role may execute this but
-- cannot read api_keys across tenants: the function runs with its owner's rights (the migrating
-- admin) and returns only the row matching a hash the caller already knows.
CREATE FUNCTION adbm_authenticate(key_hash bytea)
RETURNS TABLE (tenant_id uuid, key_id uuid)
LANGUAGE sql
STABLE
SECURITY DEFINER
-- A definer function must not resolve names through a search_path the caller controls.
SET search_path = pg_catalog, public
AS $$
    SELECT k.tenant_id, k.id
    FROM public.api_keys AS k
    JOIN public.tenants AS t ON t.id = k.tenant_id
    WHERE k.key_hash = adbm_authenticate.key_hash
      AND NOT k.is_deleted
      AND NOT t.is_deleted
$$;

REVOKE ALL ON FUNCTION adbm_authenticate(bytea) FROM PUBLIC;

-- RLS is FORCEd on api_keys, which applies it to the table owner too. A superuser owner bypasses
-- RLS anyway, but an owner that is only a CREATEROLE database owner (a managed-Postgres "admin")
-- does not, and adbm_authenticate would then find nothing. This policy lets the owner, and only
-- the owner, read keys; the app role is never a member of the owner role (rls.verify checks).
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY owner_authenticate ON public.api_keys FOR SELECT TO %I USING (true)',
        current_user
    );
END
$$;
