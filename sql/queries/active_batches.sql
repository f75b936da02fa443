-- Active batches by source and provider, with their progress: how many are not terminal yet,
-- in which status, and how far along their requests are (processed = completed + failed).
-- A batch the provider no longer returns (vanished: see the saved query gone) is not counted.
SELECT
    source,
    provider,
    status,
    count() AS batches,
    sum(coalesce(requests_total, 0)) AS requests_total,
    sum(coalesce(requests_completed, 0) + coalesce(requests_failed, 0)) AS requests_processed,
    round(100 * requests_processed / greatest(requests_total, 1), 1) AS progress_pct
FROM batch_current
WHERE NOT terminal
  AND (source, batch_id) NOT IN (SELECT source, batch_id FROM batch_changes WHERE kind = 'vanished')
GROUP BY source, provider, status
ORDER BY source, provider, status
