-- Core tables. {db} is replaced by the configured database name.
-- Times are DateTime64(3, 'UTC'): the canonical snapshot carries millisecond ISO 8601 UTC.

-- Every observation of every batch, as the poller saw it. MergeTree ordered by batch then time:
-- a batch's history is one contiguous range; monthly partitions make retention a cheap drop.
-- The deduplication window lets the sink retry an insert block with the same token safely.
CREATE TABLE IF NOT EXISTS {db}.batch_snapshots
(
    source LowCardinality(String),
    provider LowCardinality(String),
    batch_id String,
    status LowCardinality(String),
    provider_status LowCardinality(String),
    observed_at DateTime64(3, 'UTC'),
    endpoint Nullable(String),
    model LowCardinality(Nullable(String)),
    completion_window Nullable(String),
    created_at Nullable(DateTime64(3, 'UTC')),
    in_progress_at Nullable(DateTime64(3, 'UTC')),
    finalizing_at Nullable(DateTime64(3, 'UTC')),
    completed_at Nullable(DateTime64(3, 'UTC')),
    failed_at Nullable(DateTime64(3, 'UTC')),
    expired_at Nullable(DateTime64(3, 'UTC')),
    cancelling_at Nullable(DateTime64(3, 'UTC')),
    cancelled_at Nullable(DateTime64(3, 'UTC')),
    expires_at Nullable(DateTime64(3, 'UTC')),
    requests_total Nullable(UInt64),
    requests_completed Nullable(UInt64),
    requests_failed Nullable(UInt64),
    input_file_id Nullable(String),
    output_file_id Nullable(String),
    error_file_id Nullable(String),
    errors String COMMENT 'JSON array of {code, message, param, line}',
    metadata Map(String, String),
    usage Nullable(String) COMMENT 'JSON token counts, or NULL',
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (source, batch_id, observed_at)
SETTINGS non_replicated_deduplication_window = 10000;

-- The latest state per batch. ReplacingMergeTree keeps the row with the highest version per
-- (source, batch_id); the version grows along the lifecycle first and observation time second,
-- so a late, out-of-order snapshot never replaces a newer status. Query with FINAL.
CREATE TABLE IF NOT EXISTS {db}.batch_latest
(
    source LowCardinality(String),
    provider LowCardinality(String),
    batch_id String,
    status LowCardinality(String),
    provider_status LowCardinality(String),
    observed_at DateTime64(3, 'UTC'),
    endpoint Nullable(String),
    model LowCardinality(Nullable(String)),
    completion_window Nullable(String),
    created_at Nullable(DateTime64(3, 'UTC')),
    in_progress_at Nullable(DateTime64(3, 'UTC')),
    finalizing_at Nullable(DateTime64(3, 'UTC')),
    completed_at Nullable(DateTime64(3, 'UTC')),
    failed_at Nullable(DateTime64(3, 'UTC')),
    expired_at Nullable(DateTime64(3, 'UTC')),
    cancelling_at Nullable(DateTime64(3, 'UTC')),
    cancelled_at Nullable(DateTime64(3, 'UTC')),
    expires_at Nullable(DateTime64(3, 'UTC')),
    requests_total Nullable(UInt64),
    requests_completed Nullable(UInt64),
    requests_failed Nullable(UInt64),
    input_file_id Nullable(String),
    output_file_id Nullable(String),
    error_file_id Nullable(String),
    errors String,
    metadata Map(String, String),
    usage Nullable(String),
    version UInt64 COMMENT 'lifecycle rank << 42 | observed_at in ms'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (source, batch_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Every change event. ReplacingMergeTree on the deterministic event_id: a replayed event
-- collapses into the original row (use FINAL for exact counts before merges).
CREATE TABLE IF NOT EXISTS {db}.batch_changes
(
    event_id UUID,
    kind LowCardinality(String),
    source LowCardinality(String),
    provider LowCardinality(String),
    batch_id String,
    observed_at DateTime64(3, 'UTC'),
    at DateTime64(3, 'UTC'),
    from_status LowCardinality(Nullable(String)),
    to_status LowCardinality(Nullable(String)),
    seconds_in_previous Nullable(Float64),
    status LowCardinality(String) COMMENT 'status after the change',
    snapshot String COMMENT 'canonical snapshot after the change, JSON',
    schema_version UInt16
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (source, batch_id, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
