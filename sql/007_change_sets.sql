-- The sink reads change events packed per snapshot record ({"v": 2, "changes": [...]} on
-- <prefix>.changesets, docs/records.md), so one Kafka offset gives many batch_changes rows, as one
-- gives many batch_snapshots rows since 004_kafka_index.sql: a row's Kafka position is now
-- (kafka_topic, kafka_partition, kafka_offset, kafka_index), kafka_index being the event's place
-- in its record's list (0 for a record of one, as every row stored before this migration, each
-- from <prefix>.changes). The sink's high-water mark is max((kafka_offset, kafka_index)) per
-- partition. The table's version stays kafka_offset: a replayed event (same event_id) is written
-- in a later change-set record, so the copy kept is still the one at the highest position.
ALTER TABLE {db}.batch_changes
    ADD COLUMN IF NOT EXISTS kafka_index UInt32 DEFAULT 0 COMMENT 'place in the Kafka record' AFTER kafka_offset;
