-- Queue time (created -> in_progress) and processing time (in_progress -> finalizing or end)
-- quantiles p50/p90/p99, in seconds, by provider, model and day of creation.
SELECT
    provider,
    model,
    toDate(created_at) AS day,
    count() AS batches,
    round(quantileExact(0.5)(queue_seconds), 1) AS queue_p50,
    round(quantileExact(0.9)(queue_seconds), 1) AS queue_p90,
    round(quantileExact(0.99)(queue_seconds), 1) AS queue_p99,
    round(quantileExact(0.5)(processing_seconds), 1) AS processing_p50,
    round(quantileExact(0.9)(processing_seconds), 1) AS processing_p90,
    round(quantileExact(0.99)(processing_seconds), 1) AS processing_p99
FROM batch_current
WHERE queue_seconds IS NOT NULL
GROUP BY provider, model, day
ORDER BY day, provider, model
