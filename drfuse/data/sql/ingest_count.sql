-- Rows of a whole source file, to compare the event tables with the release's published counts
-- (the loaded tables hold only the 17 variables' items).
SELECT count(*) FROM {source};
