-- Order notifications: what the `notifications.email` consumer wrote for each order that
-- reached CONFIRMED or CANCELLED, for the tenant's mail gateway to deliver.
--
-- Same conventions as 0001_core; tenant-scoped and under RLS (`schema.TENANT_SCOPED`). One row
-- per order and event: the unique key backs up the consumer's inbox, so a redelivered message
-- cannot notify twice.

CREATE TABLE notifications (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    updated_by  text        NOT NULL,
    is_deleted  boolean     NOT NULL DEFAULT false,
    version     integer     NOT NULL DEFAULT 1,
    order_id    uuid        NOT NULL,
    channel     text        NOT NULL CHECK (channel IN ('email')),
    event       text        NOT NULL CHECK (event IN ('order.confirmed', 'order.cancelled')),
    subject     text        NOT NULL,
    body        text        NOT NULL,
    UNIQUE (tenant_id, order_id, channel, event),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)
);

CREATE INDEX notifications_keyset ON notifications (tenant_id, created_at, id);
