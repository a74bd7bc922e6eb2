"""The package's module graph: no import circle, counting imports inside functions too (a lazy import
that closes a circle still ties two modules into one)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fpdm"


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in SRC.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:  # from . import x
                    deps.update(a.name for a in node.names if (SRC / f"{a.name}.py").exists())
        graph[path.stem] = deps - {path.stem, "__init__"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = _graph()
    assert {"data", "latents", "image_folder", "sample_many", "cli"} <= set(graph)
    assert _cycles(graph) == []
