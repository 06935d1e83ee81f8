-- Report lines kept with their task status, and finished chunks' lines grouped by status.
--
-- A task's report line is rendered once, when it finishes; the store keeps that text, and the
-- completion report's files (one per task status) receive it unchanged. To count and split
-- lines by status without parsing them back:
--
--   task_lines.succeeded       1 or 0 beside each line of an unfinished chunk; NULL for a line
--                              recorded before this migration (its status is read from the line).
--   chunks.succeeded_lines     zlib of a finished chunk's succeeded lines, in manifest order,
--   chunks.failed_lines        and of its failed lines; NULL where the chunk has none.
--   chunks.statuses            zlib of one byte per task (1 succeeded, 0 failed), in manifest
--                              order: how the two interleave. Only for a chunk that has both.
--
-- chunks.results keeps the chunks finished before this migration (all lines in manifest order);
-- finished chunks written since leave it NULL.
ALTER TABLE task_lines ADD COLUMN succeeded INTEGER;
ALTER TABLE chunks ADD COLUMN succeeded_lines BLOB;
ALTER TABLE chunks ADD COLUMN failed_lines BLOB;
ALTER TABLE chunks ADD COLUMN statuses BLOB;
