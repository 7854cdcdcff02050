"""README's Reliability table cannot rot: its shape holds, every row names tests, and every test it names exists
(the check itself fails on bad rows)."""
import ast
import re

import pytest

from _proc import ROOT


def _reliability_table(readme: str) -> list:
    """The lines of the Reliability table in ``readme``: header, delimiter and rows, up to the first non-table line."""
    lines = readme.split("\n## Reliability\n", 1)[1].split("\n## ", 1)[0].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Fault or bad input |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def _cells(line: str) -> list:
    """A table row's cells, HTML comments left out (Markdown does not show them)."""
    line = re.sub(r"<!--.*?-->", "", line)
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _test_names(path) -> set:
    """``name`` and ``Class::name`` of the test functions defined in ``path``."""
    names = set()
    for node in ast.parse((ROOT / path).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{n.name}" for n in node.body
                         if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))
    return names


def _check_table(readme: str) -> int:
    """Assert the Reliability table's shape and that every Test cell names existing tests; returns the row count."""
    table = _reliability_table(readme)
    assert _cells(table[0]) == ["Fault or bad input", "What you see", "What is kept", "Test"]
    assert set(table[1].replace("|", "").strip()) <= {"-", " ", ":"}
    rows = table[2:]
    for row in rows:
        cells = _cells(row)
        assert len(cells) == 4 and all(cells), f"a row needs 4 filled cells: {row[:80]}"
        named = re.findall(r"`(tests/[\w/]+\.py)::([\w:]+)`", cells[3])
        assert named and len(named) == cells[3].count("`") // 2, f"a Test cell holds only `file::test`: {row[:80]}"
        for path, name in named:
            assert (ROOT / path).is_file(), f"{path} does not exist (row: {row[:60]})"
            assert name in _test_names(path), f"{path}::{name} does not exist (row: {row[:60]})"
    return len(rows)


def test_readme_reliability_table_names_existing_tests():
    assert _check_table((ROOT / "README.md").read_text()) >= 30


@pytest.mark.parametrize("bad_row, says", [
    ("| x | y | z | `tests/test_readme_reliability.py::test_no_such_test` |", "test_no_such_test does not exist"),
    ("| x | y | z | `tests/test_no_such_file.py::test_a` |", "test_no_such_file.py does not exist"),
    ("| x | y | z | a test |", "a Test cell holds only"),
    ("| x | y | `tests/test_readme_reliability.py::test_readme_reliability_table_names_existing_tests` |", "4 filled"),
])
def test_the_table_check_fails_on_a_bad_row(bad_row, says):
    readme = (ROOT / "README.md").read_text()
    head, table = readme.split("\n| Fault or bad input |", 1)
    header, delimiter, rest = table.split("\n", 2)
    with pytest.raises(AssertionError, match=says):
        _check_table(f"{head}\n| Fault or bad input |{header}\n{delimiter}\n{bad_row}\n{rest}")
