"""lib/ has no import cycles: module-level imports, imports inside functions, and the family registry's discovery
(lib.families imports every module of its package that defines FAMILY) all count; and the modules 01 and 06 use
load no torch."""
import ast
import subprocess
import sys
from pathlib import Path

from lib import config

LIB = config.PROJECT_ROOT / "lib"


def module_name(path: Path) -> str:
    parts = path.relative_to(config.PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """lib module -> the lib modules it imports (`from lib import x` is the module lib.x where there is one)."""
    modules = {module_name(p): p for p in LIB.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        if name == "lib.families":  # the registry's discovery
            found |= {module_name(p) for p in path.parent.glob("*.py")
                      if any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "FAMILY" for t in n.targets)
                             for n in ast.parse(p.read_text(encoding="utf-8")).body)}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as the path that closes it."""
    found, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_holds_function_level_imports_and_discovery():
    graph = import_graph()
    assert {"lib.families.whisper", "lib.families.e2e"} <= graph["lib.families"]
    assert "lib.ct2" in graph["lib.families.whisper"]  # imported inside Whisper.make and export_models
    assert "lib.whisper_tokens" in graph["lib.ct2"] and "lib.schema" in graph["lib.config"]


def test_lib_has_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_schema_and_the_token_conventions_are_leaves():
    graph = import_graph()
    assert graph["lib.schema"] == set() and graph["lib.whisper_tokens"] == set()


def test_the_reports_and_charts_read_05s_files_without_loading_torch():
    # 01 and 06 draw and tabulate only: importing torch and transformers would cost each notebook seconds
    code = "import sys; from lib import charts, report, split, stored, summary; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=config.PROJECT_ROOT).stdout.strip()
    assert loaded == "False"
