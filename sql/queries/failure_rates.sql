-- Failure and expiry rates by provider and model, over terminal batches: how many ended
-- failed, expired, cancelled, and completed with every request failed ("completed" is not
-- success: see docs/providers.md).
SELECT
    provider,
    model,
    count() AS terminal_batches,
    countIf(status = 'failed') AS failed,
    countIf(status = 'expired') AS expired,
    countIf(status = 'cancelled') AS cancelled,
    countIf(status = 'completed' AND requests_total > 0 AND requests_failed = requests_total)
        AS completed_all_failed,
    round(failed / terminal_batches, 4) AS failure_rate,
    round(expired / terminal_batches, 4) AS expiry_rate
FROM batch_current
WHERE terminal
GROUP BY provider, model
ORDER BY provider, model
