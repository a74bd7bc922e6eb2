"""The package's module graph: no import circle, and the layer order of docs/architecture.md (a lower
sub-package never imports a higher one), counting imports inside functions too (a lazy import that closes a
circle still ties two modules into one)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fpdm"
# lowest first: each may import those before it, never those after (docs/architecture.md)
LAYERS = ["version", "config", "common", "fixed_point", "models", "diffusion", "data", "evaluation",
          "sampling", "training", "weights", "studies", "serve", "cli"]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The fpdm modules `path` imports, anywhere in it (absolute and relative imports)."""
    me = _module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if not base.startswith("fpdm"):
                continue
            for alias in node.names:  # `from fpdm.x import y`: y may be a module itself
                sub = f"{base}.{alias.name}"
                found.add(sub if _exists(sub) else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fpdm"))
    return found


def _exists(module: str) -> bool:
    p = SRC.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in SRC.rglob("*.py"):
        me = _module_name(path)
        graph[me] = {m for m in _imports(path) if m != me}
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


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for each import of a higher layer by a lower one (the package's own __init__ is the top)."""
    bad = []
    for mod, deps in graph.items():
        mine = _layer(mod)
        for dep in deps:
            theirs = _layer(dep)
            if mine is not None and (dep == "fpdm" or theirs is not None and theirs > mine):
                bad.append(f"{mod} -> {dep}")
    return sorted(bad)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = _graph()
    assert {"fpdm.data.datasets", "fpdm.data.latents", "fpdm.sampling.many", "fpdm.cli.app"} <= set(graph)
    assert _cycles(graph) == []


def test_the_layer_checker_sees_upward_imports():
    graph = {"fpdm.sampling.loop": {"fpdm.training.loop", "fpdm.models.fpdm"}, "fpdm.models.fpdm": {"fpdm"}}
    assert _upward(graph) == ["fpdm.models.fpdm -> fpdm", "fpdm.sampling.loop -> fpdm.training.loop"]


def test_every_sub_package_is_in_the_layer_order_and_imports_only_below_it():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()} | {"version", "config"}
    assert packages == set(LAYERS) and len(packages) >= 6
    assert _upward(_graph()) == []
