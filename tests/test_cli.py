"""Every tool in tools/ follows qgface_plugin/cli.py's convention: each flag has help text and ``--help`` shows
its default, ``main(argv)`` returns the exit code to ``sys.exit``, ``--workers 0`` means no workers, nothing
patches ``sys.path`` to find the package, and bad input exits 2 with ``<tool>: error: ...``.

The parsers are captured in this process: ``argparse.ArgumentParser.parse_args`` is replaced by a function
that raises with the parser, so no tool runs."""
import argparse
import ast

import pytest
import torch

from _proc import ROOT, tool
from qgface_plugin import cli
from qgface_plugin.formats.recordio import RecordIOError

TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py"))


class _Parsed(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _parser(name, monkeypatch):
    def capture(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    module = tool(name)
    with pytest.raises(_Parsed) as got:
        module.main([])
    return got.value.parser


def test_the_tools_are_found():
    assert {"train", "demo", "eval_suite", "export_onnx", "fetch_arcface_torch", "bench_core"} <= set(TOOLS)


def _problems(parser) -> list:
    """What breaks the convention in ``parser``: flags without help, a formatter that hides defaults,
    ``--workers`` whose help does not say what 0 means."""
    out = []
    if not issubclass(parser.formatter_class, cli.HelpFormatter):
        out.append(f"formatter {parser.formatter_class.__name__} does not show defaults")
    out += [f"{a.option_strings or a.dest}: no help text" for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    fmt = parser.formatter_class(prog="x")
    for a in parser._actions:
        if a.option_strings and not a.required and a.default not in (None, False, argparse.SUPPRESS) \
                and not isinstance(a, argparse._HelpAction) and "default" not in (fmt._get_help_string(a) or "").lower():
            out.append(f"{a.option_strings[0]}: default not shown")
    for a in parser._actions:
        if "--workers" in a.option_strings and not any(s in (a.help or "") for s in ("0 =", "0 means")):
            out.append(f"--workers: help does not say what 0 means: {a.help!r}")
    return out


def test_the_check_finds_each_kind_of_problem():
    bad = argparse.ArgumentParser()
    bad.add_argument("--size", type=int, default=3)
    bad.add_argument("--workers", type=int, help="threads")
    got = _problems(bad)
    assert any("formatter" in g for g in got) and any("--size" in g and "no help" in g for g in got)
    assert any("--workers" in g for g in got)
    good = cli.parser("ok")
    good.add_argument("--size", type=int, default=3, help="side")
    good.add_argument("--workers", type=int, default=None, help="threads; 0 = in this thread")
    assert _problems(good) == [] and "(default: 3)" in good.format_help()


@pytest.mark.parametrize("name", TOOLS)
def test_every_flag_has_help_and_shows_its_default(name, monkeypatch):
    problems = _problems(_parser(name, monkeypatch))
    assert not problems, f"tools/{name}.py: " + "; ".join(problems)


@pytest.mark.parametrize("name", TOOLS)
def test_main_returns_the_exit_code_and_no_path_patching(name):
    src = (ROOT / "tools" / f"{name}.py").read_text()
    tree = ast.parse(src)
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    if not mains:  # a thin tool imports its main from the package (tools/train.py)
        module = next(n.module for n in tree.body if isinstance(n, ast.ImportFrom)
                      and any(a.name == "main" for a in n.names))
        src_main = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        mains = [n for n in ast.parse(src_main).body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and mains[0].args.args and mains[0].args.args[0].arg == "argv", f"tools/{name}.py: main(argv=None)"
    assert mains[0].args.defaults, f"tools/{name}.py: main's argv defaults to None"
    assert "sys.exit(main())" in src, f"tools/{name}.py: `sys.exit(main())` under __main__"
    # the package is installed (pip install -e .): no tool adds the repository to sys.path to import it
    assert "parents[1]))" not in src and "sys.path.append(str(REPO" not in src, f"tools/{name}.py patches sys.path"


def test_bad_input_exits_2_with_the_tools_name(capsys):
    assert cli.error("no such file", prog="eval_suite.py") == cli.EXIT_BAD_INPUT == 2
    assert capsys.readouterr().err == "eval_suite.py: error: no such file\n"
    assert cli.error("ran and failed", prog="t", code=cli.EXIT_FAILED) == 1


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise RecordIOError(f"data/train.rec: record {index}: the 9 image bytes do not decode\n(second line)")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_error_in_a_dataloader_worker_prints_as_the_worker_raised_it(workers, capsys):
    loader = torch.utils.data.DataLoader(_Unreadable(), num_workers=workers)
    with pytest.raises(RecordIOError) as info:
        next(iter(loader))
    assert ("Original Traceback" in str(info.value)) == (workers > 0)  # torch's wrapping, which the error removes
    assert cli.error(info.value, prog="train.py") == 2
    where = " (in DataLoader worker process 0)" if workers else ""
    assert capsys.readouterr().err == ("train.py: error: data/train.rec: record 0: the 9 image bytes do not decode\n"
                                       f"(second line){where}\n")
