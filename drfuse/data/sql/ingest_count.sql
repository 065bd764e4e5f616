-- Rows of a whole source file, to compare the event tables with the release's published counts,
-- used only when DuckDB's profiler did not report the rows its CSV reader scanned
-- (the loaded tables hold only the 17 variables' items).
SELECT count(*) FROM {source};
