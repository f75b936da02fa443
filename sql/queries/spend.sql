-- Cost and tokens by day, team, source, provider and model, over the batches created from
-- {since} up to {until} (UTC; the day is the batch's created_at), each batch counted once from its
-- latest state (batch_spend). cost is NULL where nothing is priced (see the unpriced query);
-- unpriced and usage-less batches are counted, never costed as zero.
-- e.g. --param since='2026-12-01 00:00:00' --param until='2027-01-01 00:00:00'
-- default: since=1970-01-01 00:00:00
-- default: until=2106-01-01 00:00:00
SELECT
    day,
    team,
    source,
    provider,
    model,
    currency,
    count() AS batches,
    countIf(priced) AS priced_batches,
    countIf(usage_source = 'none') AS batches_without_usage,
    sum(coalesce(input_tokens, 0)) AS input_tokens,
    sum(coalesce(cached_input_tokens, 0)) AS cached_input_tokens,
    sum(coalesce(output_tokens, 0)) AS output_tokens,
    sum(coalesce(reasoning_tokens, 0)) AS reasoning_tokens,
    sum(cost) AS cost
FROM batch_spend
WHERE created_at >= {since:DateTime64(3, 'UTC')} AND created_at < {until:DateTime64(3, 'UTC')}
GROUP BY day, team, source, provider, model, currency
ORDER BY day, team, source, provider, model, currency
