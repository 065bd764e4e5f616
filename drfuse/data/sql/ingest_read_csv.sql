-- One MIMIC CSV (.csv or .csv.gz) read with explicit column types: no sniffing, so ICD codes and
-- other id-like strings keep their leading zeros, and a malformed row fails the load.
read_csv(
    {path},
    header = true,
    auto_detect = false,
    delim = ',',
    quote = '"',
    escape = '"',
    columns = {columns}
)
