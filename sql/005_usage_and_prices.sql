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
-- (pipeline.core.prices.select is the same rule in Python). cost = (input - cached) x input +
-- cached x cached_input (the input price when there is none) + output x output, per million
-- tokens, as Decimal(38, 15): exact. A batch with no price has priced = 0 and cost NULL, never 0;
-- a priced batch without usage (usage_source none) has cost NULL too.
CREATE VIEW IF NOT EXISTS {db}.batch_spend AS
WITH
    (SELECT any(team_key) FROM {db}.spend_settings) AS team_key_,
    latest AS
    (
        SELECT source, provider, batch_id, status, model, metadata, usage_source,
               input_tokens, cached_input_tokens, output_tokens, reasoning_tokens,
               coalesce(created_at, observed_at) AS created
        FROM {db}.batch_latest FINAL
    ),
    chosen AS
    (
        SELECT l.source AS source, l.batch_id AS batch_id, 1 AS found,
               argMax((p.input, p.cached_input, p.output, p.currency, p.origin),
                      (p.origin = 'override', p.match = 'exact', length(p.model), p.valid_from)) AS price
        FROM latest AS l INNER JOIN {db}.prices AS p ON l.provider = p.provider
        WHERE ((p.match = 'exact' AND l.model = p.model) OR (p.match = 'prefix' AND startsWith(l.model, p.model)))
          AND p.valid_from <= l.created
        GROUP BY l.source, l.batch_id
    )
SELECT
    l.source AS source,
    l.provider AS provider,
    l.batch_id AS batch_id,
    l.status AS status,
    l.model AS model,
    l.created AS created_at,
    toDate(l.created) AS day,
    multiIf(l.metadata[team_key_] != '', l.metadata[team_key_], t.team != '', t.team, 'unattributed') AS team,
    l.usage_source AS usage_source,
    l.input_tokens AS input_tokens,
    l.cached_input_tokens AS cached_input_tokens,
    l.output_tokens AS output_tokens,
    l.reasoning_tokens AS reasoning_tokens,
    c.found = 1 AS priced,
    if(priced, c.price.1, NULL) AS input_price,
    if(priced, coalesce(c.price.2, c.price.1), NULL) AS cached_input_price,
    if(priced, c.price.3, NULL) AS output_price,
    if(priced, c.price.4, NULL) AS currency,
    if(priced, c.price.5, NULL) AS price_origin,
    if(priced AND l.usage_source != 'none',
       toDecimal128(assumeNotNull(l.input_tokens) - assumeNotNull(l.cached_input_tokens), 0) * (toDecimal128(c.price.1, 15) / 1000000)
       + toDecimal128(assumeNotNull(l.cached_input_tokens), 0) * (toDecimal128(coalesce(c.price.2, c.price.1), 15) / 1000000)
       + toDecimal128(assumeNotNull(l.output_tokens), 0) * (toDecimal128(c.price.3, 15) / 1000000),
       NULL) AS cost
FROM latest AS l
LEFT JOIN chosen AS c ON l.source = c.source AND l.batch_id = c.batch_id
LEFT JOIN {db}.source_teams AS t ON l.source = t.source;
