"""Writing a table as CSV, Markdown and LaTeX, each file atomically (temp file, then rename)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from drfuse import atomic

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g")


def markdown(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731 - a pipe would split the cell
    lines = [f"**{title}**", "", "| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines + [""] + notes) + "\n"


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    spec = "l" + "r" * (len(header) - 1)
    body = [" & ".join(tex_escape(c) for c in r) + r" \\" for r in rows]
    caption = tex_escape(title + ". " + " ".join(notes))
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering\small",
            rf"\caption{{{caption}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(tex_escape(h) for h in header) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )


def write_table(
    out_dir: Path, name: str, df: pd.DataFrame, title: str, header: list[str], rows: list[list[str]], notes: list[str]
) -> None:
    """`name`.csv (our numbers, machine-readable) and `name`.md / `name`.tex (ours beside the paper's)."""
    out_dir = Path(out_dir)
    atomic.write_text(out_dir / f"{name}.csv", csv_text(df))
    atomic.write_text(out_dir / f"{name}.md", markdown(title, header, rows, notes))
    atomic.write_text(out_dir / f"{name}.tex", latex(title, header, rows, notes))
