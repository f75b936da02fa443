-- A snapshot record may carry many snapshots ({"v": 2, "snapshots": [...]}, docs/records.md), so
-- one Kafka offset gives many batch_snapshots rows: a row's Kafka position is (kafka_topic,
-- kafka_partition, kafka_offset, kafka_index), kafka_index being the snapshot's place in its
-- record's list (0 for a record of one, as every row stored before this migration). The sink's
-- high-water mark is max((kafka_offset, kafka_index)) per partition and a replay below it is
-- looked up by (offset, index) (pipeline/clickhouse/sink.py). batch_changes is unchanged: one event a record.
-- batch_latest first: the materialized view batch_latest_feed copies every column of
-- batch_snapshots (SELECT *), so the latest state names the position of the row it holds.
-- batch_latest's version (rank << 42 | observed_at ms) leaves no bits for a position: on a tie a
-- ReplacingMergeTree keeps the row inserted last, and the sink inserts in (offset, index) order.
ALTER TABLE {db}.batch_latest
    ADD COLUMN IF NOT EXISTS kafka_index UInt32 DEFAULT 0 COMMENT 'place in the Kafka record' AFTER kafka_offset;
ALTER TABLE {db}.batch_snapshots
    ADD COLUMN IF NOT EXISTS kafka_index UInt32 DEFAULT 0 COMMENT 'place in the Kafka record' AFTER kafka_offset;
