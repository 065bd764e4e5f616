-- Load one MIMIC table. {where} is empty or the item-id filter of the event tables (which also keep
-- only the columns the pipeline reads), applied while the file streams through (the full
-- chartevents never sits in memory or on disk).
CREATE TABLE {table} AS
SELECT {select}
FROM {source}
{where};
