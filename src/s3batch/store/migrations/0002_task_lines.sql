-- Results of unfinished chunks as report lines instead of JSON arrays.
--
-- Each finished task's row is stored exactly as the completion report will hold it: one
-- RFC 4180 CSV line (domain.report.render_row). Compacting a chunk is then a concatenation
-- of its lines in idx order, with no JSON decode and re-encode per task, and a row takes
-- fewer bytes. Rows recorded by an older version (a job running across the upgrade) are
-- converted here, with the same quoting rule as render_row: a field holding a comma, a
-- double quote, CR or LF is quoted and its double quotes doubled.
CREATE TABLE task_lines (
    job_id TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, chunk_no, idx)
) WITHOUT ROWID;

INSERT INTO task_lines (job_id, chunk_no, idx, line)
SELECT job_id, chunk_no, idx,
    CASE WHEN instr(json_extract(row, '$[0]'), ',') OR instr(json_extract(row, '$[0]'), '"') OR instr(json_extract(row, '$[0]'), char(13))
              OR instr(json_extract(row, '$[0]'), char(10))
         THEN '"' || replace(json_extract(row, '$[0]'), '"', '""') || '"' ELSE json_extract(row, '$[0]') END
    || ',' ||
    CASE WHEN instr(json_extract(row, '$[1]'), ',') OR instr(json_extract(row, '$[1]'), '"') OR instr(json_extract(row, '$[1]'), char(13))
              OR instr(json_extract(row, '$[1]'), char(10))
         THEN '"' || replace(json_extract(row, '$[1]'), '"', '""') || '"' ELSE json_extract(row, '$[1]') END
    || ',' ||
    CASE WHEN instr(json_extract(row, '$[2]'), ',') OR instr(json_extract(row, '$[2]'), '"') OR instr(json_extract(row, '$[2]'), char(13))
              OR instr(json_extract(row, '$[2]'), char(10))
         THEN '"' || replace(json_extract(row, '$[2]'), '"', '""') || '"' ELSE json_extract(row, '$[2]') END
    || ',' ||
    CASE WHEN instr(json_extract(row, '$[3]'), ',') OR instr(json_extract(row, '$[3]'), '"') OR instr(json_extract(row, '$[3]'), char(13))
              OR instr(json_extract(row, '$[3]'), char(10))
         THEN '"' || replace(json_extract(row, '$[3]'), '"', '""') || '"' ELSE json_extract(row, '$[3]') END
    || ',' ||
    CASE WHEN instr(json_extract(row, '$[4]'), ',') OR instr(json_extract(row, '$[4]'), '"') OR instr(json_extract(row, '$[4]'), char(13))
              OR instr(json_extract(row, '$[4]'), char(10))
         THEN '"' || replace(json_extract(row, '$[4]'), '"', '""') || '"' ELSE json_extract(row, '$[4]') END
    || ',' ||
    CASE WHEN instr(json_extract(row, '$[5]'), ',') OR instr(json_extract(row, '$[5]'), '"') OR instr(json_extract(row, '$[5]'), char(13))
              OR instr(json_extract(row, '$[5]'), char(10))
         THEN '"' || replace(json_extract(row, '$[5]'), '"', '""') || '"' ELSE json_extract(row, '$[5]') END
    || ',' ||
    CASE WHEN instr(json_extract(row, '$[6]'), ',') OR instr(json_extract(row, '$[6]'), '"') OR instr(json_extract(row, '$[6]'), char(13))
              OR instr(json_extract(row, '$[6]'), char(10))
         THEN '"' || replace(json_extract(row, '$[6]'), '"', '""') || '"' ELSE json_extract(row, '$[6]') END
    || char(10)
FROM task_results;

DROP TABLE task_results;
