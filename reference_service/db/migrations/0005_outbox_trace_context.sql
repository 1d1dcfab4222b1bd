-- The W3C trace context of the transaction that wrote each outbox message (`traceparent`,
-- `tracestate`), so the relay's publish span and the consumer's spans join the trace of the
-- request (or message) that caused it. NULL where nothing was traced (the recovery sweep).
--
-- The formats are W3C Trace Context's (https://www.w3.org/TR/trace-context/): version 00's
-- traceparent is exactly 55 characters; a tracestate is at most 32 list members, and the
-- propagator drops one longer than 512 characters.

ALTER TABLE outbox ADD COLUMN traceparent text
    CHECK (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
ALTER TABLE outbox ADD COLUMN tracestate text CHECK (length(tracestate) <= 512);

-- The claim also returns each message's trace context and age (by the database's clock, the
-- one that stamped created_at: the relay's outbox lag). A new return type needs a new function.
DROP FUNCTION adbm_outbox_claim(integer);

CREATE FUNCTION adbm_outbox_claim(batch integer)
RETURNS TABLE (
    id uuid,
    tenant_id uuid,
    topic text,
    payload jsonb,
    created_at timestamptz,
    traceparent text,
    tracestate text,
    age_seconds double precision
)
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT o.id, o.tenant_id, o.topic, o.payload, o.created_at, o.traceparent, o.tracestate,
           extract(epoch FROM clock_timestamp() - o.created_at)::double precision
    FROM public.outbox AS o
    WHERE o.published_at IS NULL AND NOT o.is_deleted
    ORDER BY o.created_at, o.id
    LIMIT adbm_outbox_claim.batch
    FOR UPDATE SKIP LOCKED
$$;

-- `migrate` grants EXECUTE to the app role again (schema.DEFINER_FUNCTIONS).
REVOKE ALL ON FUNCTION adbm_outbox_claim(integer) FROM PUBLIC;
