"""The structure rules CI checks before the tests (``tools/check_structure.py``), as tests: no module
over 500 lines, a docstring on every module, no private name imported from another module, no
import cycle (imports inside functions count)."""

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_structure.py"
spec = importlib.util.spec_from_file_location("check_structure", TOOL)
check_structure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_structure)


def test_the_tree_keeps_the_structure_rules():
    assert check_structure.problems() == []


def test_cycles_are_found_through_imports_inside_functions():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert check_structure.cycles(graph) == [["a", "b", "c"]]


def test_private_imports_and_in_function_imports_are_seen(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text('"""doc"""\n\ndef f():\n    from seesaw.engine.kv import _hidden\n    import simulator.sim\n')
    root = check_structure.ROOT
    check_structure.ROOT = tmp_path
    try:
        assert check_structure.private_imports("x.mod", src) == [
            "mod.py: imports the private name _hidden from seesaw.engine.kv"]
        assert check_structure.imports("x.mod", src, {"seesaw.engine.kv", "simulator.sim"}) == {
            "seesaw.engine.kv", "simulator.sim"}
    finally:
        check_structure.ROOT = root
