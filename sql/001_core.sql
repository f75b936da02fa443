-- Core tables. {db} is replaced by the configured database name.
-- Times are DateTime64(3, 'UTC'): the canonical snapshot carries millisecond ISO 8601 UTC.

-- Every observation of every batch, as the poller saw it. MergeTree ordered by batch then time:
-- a batch's history is one contiguous range; monthly partitions (by observation time, the sink
-- cuts its blocks at month boundaries so each insert is one part) make the TTL a cheap drop.
-- The deduplication window lets the sink retry an insert block with the same token safely; the
-- Kafka position columns are the sink's high-water mark after a rewind (a plain MergeTree never
-- drops a row, so max(kafka_offset) per partition is exact).
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
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (source, batch_id, observed_at)
TTL toDateTime(observed_at) + toIntervalDay({ttl_days})
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- The latest state per batch. ReplacingMergeTree keeps the row with the highest version per
-- (source, batch_id); the version grows along the lifecycle first and observation time second,
-- so a late, out-of-order snapshot never replaces a newer status. Query with FINAL. Written by
-- the materialized view batch_latest_feed (002_fleet.sql) as snapshots are inserted.
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
    version UInt64 COMMENT 'lifecycle rank << 42 | observed_at in ms',
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (source, batch_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Every change event. ReplacingMergeTree on the deterministic event_id: an event the track agent
-- emits twice (its own replay) collapses into one row (use FINAL for exact counts before merges).
-- The version is the Kafka offset, so merges always keep the row with the highest offset of a
-- partition and max(kafka_offset) stays the sink's exact high-water mark. Partitioned by the
-- month of observation, like the sink's blocks, so each insert block is one part.
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
    schema_version UInt16,
    kafka_topic LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(observed_at)
ORDER BY (source, batch_id, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
