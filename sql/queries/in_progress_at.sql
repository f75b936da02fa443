-- What was in progress across the fleet at a given instant ({at}, UTC, e.g.
-- --param at='2026-11-29 12:00:00'): batches created by then and not yet terminal, counted by
-- source, provider and the status they were in at that instant (from their provider timestamps).
WITH {at:DateTime64(3, 'UTC')} AS at_
SELECT
    source,
    provider,
    multiIf(cancelling_at IS NOT NULL AND cancelling_at <= at_, 'cancelling',
            finalizing_at IS NOT NULL AND finalizing_at <= at_, 'finalizing',
            in_progress_at IS NOT NULL AND in_progress_at <= at_, 'in_progress',
            'validating') AS status_then,
    count() AS batches,
    sum(coalesce(requests_total, 0)) AS requests_total
FROM batch_current
WHERE created_at <= at_ AND (ended_at IS NULL OR ended_at > at_)
GROUP BY source, provider, status_then
ORDER BY source, provider, status_then
