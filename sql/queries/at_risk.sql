-- Batches at risk of expiring: active batches whose finish, projected from their progress rate
-- since they started, falls after expires_at, or that have made no progress and expire within
-- {margin_minutes} minutes. A batch the provider no longer returns (vanished) is not at risk.
-- default: margin_minutes=120
SELECT
    source,
    provider,
    batch_id,
    status,
    model,
    expires_at,
    requests_total,
    coalesce(requests_completed, 0) + coalesce(requests_failed, 0) AS processed,
    dateDiff('second', in_progress_at, now64(3)) AS running_seconds,
    if(processed = 0 OR in_progress_at IS NULL, NULL,
       in_progress_at + toIntervalSecond(toInt64(running_seconds * requests_total / processed)))
        AS projected_finish
FROM batch_current
WHERE NOT terminal
  AND (source, batch_id) NOT IN (SELECT source, batch_id FROM batch_changes WHERE kind = 'vanished')
  AND status != 'cancelling'
  AND expires_at IS NOT NULL
  AND (projected_finish > expires_at
       OR (processed = 0 AND expires_at < now64(3) + toIntervalMinute({margin_minutes:UInt32})))
ORDER BY expires_at, source, batch_id
