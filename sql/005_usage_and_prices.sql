-- Spend (docs/spend.md): typed token usage on every snapshot, the dated price table, the teams of
-- the sources and the spend settings the batch_spend view reads. {db} is the configured database.
-- The usage JSON column stays (the raw provider object); these typed columns are what spend reads.
-- batch_latest first: the materialized view batch_latest_feed copies every column of
-- batch_snapshots (SELECT *), as in 004_kafka_index.sql.
ALTER TABLE {db}.batch_latest
    ADD COLUMN IF NOT EXISTS input_tokens Nullable(UInt64) COMMENT 'input tokens, cached ones included',
    ADD COLUMN IF NOT EXISTS cached_input_tokens Nullable(UInt64) COMMENT 'input tokens read from cache',
    ADD COLUMN IF NOT EXISTS output_tokens Nullable(UInt64) COMMENT 'output tokens, reasoning ones included',
    ADD COLUMN IF NOT EXISTS reasoning_tokens Nullable(UInt64) COMMENT 'reasoning tokens',
    ADD COLUMN IF NOT EXISTS usage_source LowCardinality(String) DEFAULT 'none' COMMENT 'object, results or none';
ALTER TABLE {db}.batch_snapshots
    ADD COLUMN IF NOT EXISTS input_tokens Nullable(UInt64) COMMENT 'input tokens, cached ones included',
    ADD COLUMN IF NOT EXISTS cached_input_tokens Nullable(UInt64) COMMENT 'input tokens read from cache',
    ADD COLUMN IF NOT EXISTS output_tokens Nullable(UInt64) COMMENT 'output tokens, reasoning ones included',
    ADD COLUMN IF NOT EXISTS reasoning_tokens Nullable(UInt64) COMMENT 'reasoning tokens',
    ADD COLUMN IF NOT EXISTS usage_source LowCardinality(String) DEFAULT 'none' COMMENT 'object, results or none';

-- batch_current (002_fleet.sql) is a plain view whose SELECT * was expanded when it was created:
-- created again, the same, so that it shows the typed usage columns (and 004's kafka_index).
CREATE OR REPLACE VIEW {db}.batch_current AS
SELECT
    *,
    coalesce(completed_at, failed_at, expired_at, cancelled_at) AS ended_at,
    status IN ('completed', 'failed', 'expired', 'cancelled') AS terminal,
    if(in_progress_at IS NULL OR created_at IS NULL, NULL,
       dateDiff('millisecond', created_at, in_progress_at) / 1000.0) AS queue_seconds,
    if(in_progress_at IS NULL OR coalesce(finalizing_at, ended_at) IS NULL, NULL,
       dateDiff('millisecond', in_progress_at, coalesce(finalizing_at, ended_at)) / 1000.0)
        AS processing_seconds
FROM {db}.batch_latest FINAL;

-- The price table: the shipped file and the operator's [spend] prices_file, loaded whole by
-- `batchscope migrate`, `batchscope run` and `batchscope prices load` (pipeline/spend/load.py).
-- Prices are batch prices per million tokens, exact Decimals. cached_input NULL: cached tokens
-- cost the input price. match: 'exact' (model equals) or 'prefix' (model starts with).
CREATE TABLE IF NOT EXISTS {db}.prices
(
    provider LowCardinality(String),
    model String,
    match LowCardinality(String),
    valid_from DateTime64(3, 'UTC'),
    input Decimal(18, 9),
    cached_input Nullable(Decimal(18, 9)),
    output Decimal(18, 9),
    currency LowCardinality(String),
    source_url String,
    origin LowCardinality(String) COMMENT 'shipped or override'
)
ENGINE = MergeTree
ORDER BY (provider, model, valid_from);

-- Each configured source's team (its tags[team_key]), loaded with the prices.
CREATE TABLE IF NOT EXISTS {db}.source_teams
(
    source String,
    team String
)
ENGINE = MergeTree
ORDER BY source;

-- The spend settings the view reads: one row, the metadata key that names a batch's team.
CREATE TABLE IF NOT EXISTS {db}.spend_settings
(
    team_key String
)
ENGINE = MergeTree
ORDER BY tuple();

-- One row per batch, from its latest state only (batch_latest FINAL: a re-observed or replayed
-- batch is one row), with its team, tokens, the price that applies and its cost. The price: the
-- rows of its provider whose model matches (exact, or a prefix of the batch's model) and whose
-- valid_from is at or before the batch's created_at; of those an override beats a shipped row,
-- then an exact match a prefix, then the longer prefix, then the later valid_from
-- (pipeline.core.prices.select is the same rule in Python). The matching rows are found once per
-- (provider, model) seen, sorted by that rank, and each batch takes the first whose valid_from
-- has come: one pass over the batches, joined to a table as small as the models seen.
-- cost = (input - cached) x input + cached x cached_input (the input price when there is none)
-- + output x output, per million tokens, as Decimal(38, 15): exact. A batch with no price has
-- priced = 0 and cost NULL, never 0; a priced batch without usage (usage_source none) has cost NULL.
CREATE VIEW IF NOT EXISTS {db}.batch_spend AS
WITH
    (SELECT any(team_key) FROM {db}.spend_settings) AS team_key_,
    candidates AS
    (
        SELECT m.provider AS provider, m.model AS model,
               arrayReverseSort(c -> c.6, groupArray((p.input, p.cached_input, p.output, p.currency, p.origin,
                   (p.origin = 'override', p.match = 'exact', length(p.model), p.valid_from)))) AS prices
        FROM (SELECT DISTINCT provider, assumeNotNull(model) AS model FROM {db}.batch_latest
              WHERE model IS NOT NULL) AS m
        INNER JOIN {db}.prices AS p ON m.provider = p.provider
        WHERE (p.match = 'exact' AND m.model = p.model) OR (p.match = 'prefix' AND startsWith(m.model, p.model))
        GROUP BY m.provider, m.model
    )
SELECT
    l.source AS source,
    l.provider AS provider,
    l.batch_id AS batch_id,
    l.status AS status,
    l.model AS model,
    coalesce(l.created_at, l.observed_at) AS created_at,
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
FROM {db}.batch_latest AS l FINAL
LEFT JOIN candidates AS c ON l.provider = c.provider AND assumeNotNull(l.model) = c.model
LEFT JOIN {db}.source_teams AS t ON l.source = t.source;
