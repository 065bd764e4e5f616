"""The SQL of the data stages lives in `drfuse/data/sql/*.sql`; this reads and runs those files."""

from __future__ import annotations

from importlib import resources

SQL = resources.files("drfuse.data") / "sql"


def read_sql(name: str, **parts: str) -> str:
    """The text of `sql/<name>`, with `{part}` placeholders filled (identifiers and literals that
    the caller built; values go in as DuckDB variables, see `run_sql`)."""
    text = (SQL / name).read_text()
    return text.format(**parts) if parts else text


def run_sql(con, name: str, **variables) -> None:
    """Run every statement of `sql/<name>` after `SET VARIABLE` of each keyword (read in the SQL
    with getvariable('name'))."""
    for key, value in variables.items():
        con.execute(f"SET VARIABLE {key} = ?", [value])
    con.execute(read_sql(name))


def scalar(con, query: str, params: list | None = None):
    """The single value of a one-row, one-column query (fetched completely: DuckDB 2 refuses other
    work on a connection with an unfinished result)."""
    return con.execute(query, params or []).fetchall()[0][0]
