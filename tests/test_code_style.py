"""The package's functions stay readable in one sitting: none longer than 100 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "drfuse"
MAX_LINES = 100


def long_functions(root: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_the_package_is_longer_than_100_lines():
    assert long_functions(PACKAGE, MAX_LINES) == []


def test_the_check_names_a_long_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (package / "mod.py").write_text(f"def short():\n    return 1\n\n\ndef long_one():\n{body}\n")
    assert long_functions(package, MAX_LINES) == [f"pkg/mod.py:5 long_one ({MAX_LINES + 1} lines)"]
