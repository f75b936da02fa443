-- Models seen without a price: no row of the price table matches the provider, the model and the
-- batch's created_at. Their token volume, so you know what to price in your [spend] prices_file
-- (docs/spend.md); until then their spend is unknown, never zero.
SELECT
    provider,
    model,
    count() AS batches,
    countIf(usage_source != 'none') AS batches_with_usage,
    sum(coalesce(input_tokens, 0)) AS input_tokens,
    sum(coalesce(cached_input_tokens, 0)) AS cached_input_tokens,
    sum(coalesce(output_tokens, 0)) AS output_tokens,
    min(created_at) AS first_created_at,
    max(created_at) AS last_created_at
FROM batch_spend
WHERE NOT priced
GROUP BY provider, model
ORDER BY provider, model
