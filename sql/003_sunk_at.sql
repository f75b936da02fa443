-- When each change event became visible in ClickHouse: filled by the server at insert time (the
-- sink does not send it). sunk_at minus the provider's transition time is the pipeline's
-- detection-to-query latency, which bench/e2e_bench.py reports and a dashboard can watch. A block
-- retried with the same deduplication token is dropped whole, so the first insert's time stays.
ALTER TABLE {db}.batch_changes
    ADD COLUMN IF NOT EXISTS sunk_at DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'insert time';
