-- Stalled batches: in progress, but their processed count has not moved for at least
-- {stall_minutes} minutes of observations (they are still being polled: a vanished one is not).
-- default: stall_minutes=30
SELECT
    c.source AS source,
    c.provider AS provider,
    c.batch_id AS batch_id,
    c.model AS model,
    p.processed AS processed,
    c.requests_total AS requests_total,
    p.progress_since AS progress_since,
    p.last_observed_at AS last_observed_at,
    round(dateDiff('second', p.progress_since, p.last_observed_at) / 60.0, 1) AS stalled_minutes
FROM batch_current AS c
INNER JOIN batch_progress AS p ON c.source = p.source AND c.batch_id = p.batch_id
WHERE c.status = 'in_progress'
  AND (c.source, c.batch_id) NOT IN (SELECT source, batch_id FROM batch_changes WHERE kind = 'vanished')
  AND p.last_observed_at - toIntervalMinute({stall_minutes:UInt32}) >= p.progress_since
ORDER BY stalled_minutes DESC, source, batch_id
