"""README's Reliability table cannot rot: every test it names exists, and every row names one."""
import ast
import re

from _proc import ROOT


def _rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Reliability", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Fault")]


def _tests(path):
    tree = ast.parse((ROOT / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_row_names_existing_tests():
    rows = _rows()
    assert len(rows) >= 20
    for row in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row.rsplit("|", 2)[-2])
        assert named, f"row without a test: {row}"
        for path, name in named:
            assert (ROOT / path).is_file(), f"{path} (row: {row[:60]})"
            assert name in _tests(path), f"{path}::{name} does not exist (row: {row[:60]})"
