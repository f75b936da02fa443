-- Completed batches whose output was never collected: an output file exists but no downstream
-- consumer has recorded an acknowledgement in batch_output_acks yet. Oldest first.
SELECT
    c.source AS source,
    c.provider AS provider,
    c.batch_id AS batch_id,
    c.model AS model,
    c.output_file_id AS output_file_id,
    c.completed_at AS completed_at
FROM batch_current AS c
LEFT ANTI JOIN (SELECT DISTINCT source, batch_id FROM batch_output_acks FINAL) AS a
    ON c.source = a.source AND c.batch_id = a.batch_id
WHERE c.status = 'completed' AND c.output_file_id IS NOT NULL
ORDER BY c.completed_at, c.source, c.batch_id
