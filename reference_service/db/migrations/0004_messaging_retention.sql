-- Pruning the outbox and the inbox (`reference_service/messaging/retention.py`).
--
-- Both tables only grow otherwise: the relay marks a published row and never reads it again,
-- and a consumer writes one inbox row per message it applied. Rows are deleted, not soft
-- deleted: keeping them is what pruning is there to stop. The app role still may not DELETE
-- (schema.APP_PRIVILEGES); it prunes through the SECURITY DEFINER functions below, which delete
-- only rows past their retention, a batch at a time, skipping rows another transaction holds.

-- What pruning scans for, oldest first: published outbox rows by publication time, inbox rows
-- by the time their message was applied. (A plain CREATE INDEX: migrations are transactional,
-- and CONCURRENTLY cannot run in a transaction; it locks writes to the table while it builds.)
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX inbox_applied ON inbox (created_at);

-- Deletes up to `batch` outbox rows published more than `older_than` ago; returns how many.
CREATE FUNCTION adbm_outbox_prune(older_than interval, batch integer)
RETURNS integer
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH doomed AS (
        SELECT o.id
        FROM public.outbox AS o
        WHERE o.published_at IS NOT NULL
          AND o.published_at < now() - adbm_outbox_prune.older_than
        ORDER BY o.published_at
        LIMIT adbm_outbox_prune.batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.outbox AS o USING doomed WHERE o.id = doomed.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- Deletes up to `batch` inbox rows written more than `older_than` ago; returns how many. Never
-- one whose message's outbox row is still unpublished: the relay may publish that message
-- again (it published it, and its commit marking the row failed), so a copy can still come.
CREATE FUNCTION adbm_inbox_prune(older_than interval, batch integer)
RETURNS integer
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH doomed AS (
        SELECT i.id
        FROM public.inbox AS i
        WHERE i.created_at < now() - adbm_inbox_prune.older_than
          AND NOT EXISTS (
              SELECT 1 FROM public.outbox AS o
              WHERE o.id = i.message_id AND o.published_at IS NULL
          )
        ORDER BY i.created_at
        LIMIT adbm_inbox_prune.batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.inbox AS i USING doomed WHERE i.id = doomed.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

REVOKE ALL ON FUNCTION adbm_outbox_prune(interval, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION adbm_inbox_prune(interval, integer) FROM PUBLIC;

-- As in 0002: RLS is FORCEd, so an owner that is not a superuser sees no inbox rows inside the
-- definer function without a policy of its own (the outbox has `owner_relay` already). The app
-- role is never a member of the owner (rls.verify checks).
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY owner_prune ON public.inbox FOR ALL TO %I USING (true)', current_user
    );
END
$$;
