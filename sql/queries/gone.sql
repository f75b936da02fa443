-- Batches the provider no longer returns, newest first: `purged` (terminal when it left the
-- list) and `vanished` (not terminal when last seen), with the status it was last seen in and
-- when the poller found it gone (docs/change-events.md).
SELECT
    source,
    provider,
    batch_id,
    kind,
    status AS last_status,
    at AS gone_at
FROM batch_changes FINAL
WHERE kind IN ('purged', 'vanished')
ORDER BY gone_at DESC, source, batch_id
