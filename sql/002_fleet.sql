-- Fleet views, the latest-state feed and the downstream acknowledgement table. {db} is the
-- configured database.

-- batch_latest is fed from batch_snapshots inside the same INSERT: the sink writes each block
-- once (half the rows to parse), and the latest state can never lag or lead the history. A block
-- deduplicated by its token in batch_snapshots is not pushed here either. The version is
-- pipeline.clickhouse.sink.version() in SQL: lifecycle rank (pipeline.core.transitions.RANK; a unit test keeps
-- the two equal) shifted by 42 bits, plus observed_at in ms.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_latest_feed TO {db}.batch_latest AS
SELECT
    *,
    bitShiftLeft(toUInt64(transform(toString(status),
        ['validating', 'in_progress', 'finalizing', 'cancelling', 'completed', 'failed', 'expired', 'cancelled'],
        [1, 2, 3, 4, 5, 5, 5, 5], 0)), 42) + toUInt64(toUnixTimestamp64Milli(observed_at)) AS version
FROM {db}.batch_snapshots;

-- The current state of every batch, deduplicated: batch_latest with FINAL, plus the two
-- durations the fleet questions ask about. A plain view (no storage): batch_latest holds one
-- row per batch after merges, so reading it is already cheap and always exact.
CREATE VIEW IF NOT EXISTS {db}.batch_current AS
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

-- Progress over time per batch: the processed count (completed + failed, which only grows) and
-- since when it has had that value, from the observation history. A plain view over
-- batch_snapshots, whose sort key (source, batch_id, observed_at) makes it a sequential read.
CREATE VIEW IF NOT EXISTS {db}.batch_progress AS
SELECT
    source,
    batch_id,
    max(done) AS processed,
    argMin(observed_at, (-toInt64(done), observed_at)) AS progress_since,
    max(observed_at) AS last_observed_at
FROM
(
    SELECT source, batch_id, observed_at,
           coalesce(requests_completed, 0) + coalesce(requests_failed, 0) AS done
    FROM {db}.batch_snapshots
)
GROUP BY source, batch_id;

-- Downstream acknowledgements: a consumer that collected a completed batch's output file
-- records it here (`batchscope query --write "INSERT INTO batch_output_acks ..."` or any
-- ClickHouse client). ReplacingMergeTree on (source, batch_id, consumer): acknowledging twice is
-- harmless, the latest acknowledgement wins; small, so no partitioning.
CREATE TABLE IF NOT EXISTS {db}.batch_output_acks
(
    source LowCardinality(String),
    batch_id String,
    consumer LowCardinality(String) DEFAULT 'default',
    output_file_id Nullable(String),
    acked_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(acked_at)
ORDER BY (source, batch_id, consumer)
SETTINGS non_replicated_deduplication_window = 1000;
