-- The results reader's usage (docs/spend.md#the-results-reader), kept apart from batch_latest so
-- that a later observation of the batch object (which carries no usage: after a poller restart,
-- a sweep, a replay) cannot replace it. {db} is the configured database.
-- batch_usage holds one row per batch whose results were summed (usage_source = 'results' on a
-- snapshot), fed by batch_usage_feed inside the same INSERT as batch_snapshots. The version is
-- observed_at: a replayed or reordered read of the same file (it no longer changes once the batch
-- ended) leaves one row with the same figures. Query with FINAL.
CREATE TABLE IF NOT EXISTS {db}.batch_usage
(
    source LowCardinality(String),
    provider LowCardinality(String),
    batch_id String,
    model LowCardinality(Nullable(String)) COMMENT 'the one model the results named, else NULL',
    input_tokens UInt64 COMMENT 'input tokens, cached ones included',
    cached_input_tokens UInt64 COMMENT 'input tokens read from cache',
    output_tokens UInt64 COMMENT 'output tokens, reasoning ones included',
    reasoning_tokens UInt64 COMMENT 'reasoning tokens',
    observed_at DateTime64(3, 'UTC') COMMENT 'when the results were read'
)
ENGINE = ReplacingMergeTree(observed_at)
ORDER BY (source, batch_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_usage_feed TO {db}.batch_usage AS
SELECT source, provider, batch_id, model,
       assumeNotNull(input_tokens) AS input_tokens,
       assumeNotNull(cached_input_tokens) AS cached_input_tokens,
       assumeNotNull(output_tokens) AS output_tokens,
       coalesce(reasoning_tokens, 0) AS reasoning_tokens,
       observed_at
FROM {db}.batch_snapshots
WHERE usage_source = 'results' AND input_tokens IS NOT NULL AND cached_input_tokens IS NOT NULL
  AND output_tokens IS NOT NULL;

-- batch_spend (005_usage_and_prices.sql) again, the same but for its usage and model: a batch
-- whose latest state carries no usage (usage_source none) takes batch_usage's, and its model
-- when the object names none (Anthropic's objects never do: each request names its model).
CREATE OR REPLACE VIEW {db}.batch_spend AS
WITH
    (SELECT any(team_key) FROM {db}.spend_settings) AS team_key_,
    candidates AS
    (
        SELECT m.provider AS provider, m.model AS model,
               arrayReverseSort(c -> c.6, groupArray((p.input, p.cached_input, p.output, p.currency, p.origin,
                   (p.origin = 'override', p.match = 'exact', length(p.model), p.valid_from)))) AS prices
        FROM (SELECT DISTINCT provider, model
              FROM (SELECT provider, assumeNotNull(model) AS model FROM {db}.batch_latest WHERE model IS NOT NULL
                    UNION ALL
                    SELECT provider, assumeNotNull(model) AS model FROM {db}.batch_usage WHERE model IS NOT NULL))
             AS m
        INNER JOIN {db}.prices AS p ON m.provider = p.provider
        WHERE (p.match = 'exact' AND m.model = p.model) OR (p.match = 'prefix' AND startsWith(m.model, p.model))
        GROUP BY m.provider, m.model
    ),
    latest AS
    (
        SELECT
            l.source AS source, l.provider AS provider, l.batch_id AS batch_id, l.status AS status,
            coalesce(l.model, u.model) AS model,
            coalesce(l.created_at, l.observed_at) AS created_at,
            l.metadata AS metadata,
            l.usage_source = 'none' AND u.batch_id != '' AS from_results,
            if(from_results, 'results', l.usage_source) AS usage_source,
            if(from_results, u.input_tokens, l.input_tokens) AS input_tokens,
            if(from_results, u.cached_input_tokens, l.cached_input_tokens) AS cached_input_tokens,
            if(from_results, u.output_tokens, l.output_tokens) AS output_tokens,
            if(from_results, u.reasoning_tokens, l.reasoning_tokens) AS reasoning_tokens
        FROM {db}.batch_latest AS l FINAL
        LEFT JOIN (SELECT * FROM {db}.batch_usage FINAL) AS u ON l.source = u.source AND l.batch_id = u.batch_id
    )
SELECT
    l.source AS source,
    l.provider AS provider,
    l.batch_id AS batch_id,
    l.status AS status,
    l.model AS model,
    l.created_at AS created_at,
    toDate(created_at) AS day,
    multiIf(l.metadata[team_key_] != '', l.metadata[team_key_], t.team != '', t.team, 'unattributed') AS team,
    l.usage_source AS usage_source,
    l.input_tokens AS input_tokens,
    l.cached_input_tokens AS cached_input_tokens,
    l.output_tokens AS output_tokens,
    l.reasoning_tokens AS reasoning_tokens,
    arrayFirstIndex(x -> x.6.4 <= created_at, c.prices) AS chosen,
    chosen > 0 AS priced,
    c.prices[chosen] AS price,
    if(priced, price.1, NULL) AS input_price,
    if(priced, coalesce(price.2, price.1), NULL) AS cached_input_price,
    if(priced, price.3, NULL) AS output_price,
    if(priced, price.4, NULL) AS currency,
    if(priced, price.5, NULL) AS price_origin,
    if(priced AND l.usage_source != 'none',
       toDecimal128(assumeNotNull(l.input_tokens) - assumeNotNull(l.cached_input_tokens), 0)
           * (toDecimal128(price.1, 15) / 1000000)
       + toDecimal128(assumeNotNull(l.cached_input_tokens), 0) * (toDecimal128(coalesce(price.2, price.1), 15) / 1000000)
       + toDecimal128(assumeNotNull(l.output_tokens), 0) * (toDecimal128(price.3, 15) / 1000000),
       NULL) AS cost
FROM latest AS l
LEFT JOIN candidates AS c ON l.provider = c.provider AND assumeNotNull(l.model) = c.model
LEFT JOIN {db}.source_teams AS t ON l.source = t.source;
