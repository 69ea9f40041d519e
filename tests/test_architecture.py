"""The shape of the code, as the developers' brief asks for it: small modules, one direction of
flow (adapters -> core), no import cycles. Read from the source with ``ast``; nothing imported."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500

# Modules still over MAX_LINES, each with the reason. This list only shrinks: a module listed
# here that is already within the limit fails the test, so an entry cannot outlive its reason.
OVER_LIMIT: dict[str, str] = {}


def _sources(*tops: str) -> Iterator[Path]:
    for top in tops:
        yield from sorted((ROOT / top).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(node: ast.Import | ast.ImportFrom, package: str) -> Iterator[str]:
    """Dotted names an import statement loads: ``module.name`` for ``from module import name``
    (the name may be a submodule; callers take the longest known module it starts with)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*up, *([node.module] if node.module else [])])
    for alias in node.names:
        yield f"{base}.{alias.name}"


def _runtime_imports(tree: ast.Module, package: str) -> Iterator[str]:
    """Every import that can run: at module level and inside functions (a function-level import
    only postpones a cycle, it does not remove it), but not those under ``if TYPE_CHECKING:``."""

    def walk(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from _imported_names(node, package)
            return
        if isinstance(node, ast.If) and _is_type_checking(node):
            for orelse in node.orelse:
                yield from walk(orelse)
            return
        for inner in ast.iter_child_nodes(node):
            yield from walk(inner)

    yield from walk(tree)


def _all_imports(tree: ast.Module, package: str) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from _imported_names(node, package)


def _parse(path: Path) -> tuple[ast.Module, str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return ast.parse(path.read_text(encoding="utf-8")), package


def _import_graph() -> dict[str, set[str]]:
    """app's modules and the app modules each one imports (at any level but TYPE_CHECKING)."""
    paths = {_module_name(p): p for p in _sources("app")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree, package = _parse(path)
        targets: set[str] = set()
        for imported in _runtime_imports(tree, package):
            # The longest known module the dotted name starts with (``from app.x import f``
            # is app.x; ``from app.redact import _scan`` is the submodule).
            parts = imported.split(".")
            while parts and ".".join(parts) not in paths:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _adapter_of(path: Path) -> str | None:
    parts = path.relative_to(ROOT / "adapters").parts
    return parts[0] if len(parts) > 1 else None


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_in_app_or_adapters_is_over_500_lines() -> None:
    too_long = {
        _rel(p): n
        for p in _sources("app", "adapters")
        if (n := _line_count(p)) > MAX_LINES and _rel(p) not in OVER_LIMIT
    }
    assert not too_long, f"split these modules by concern (at most {MAX_LINES} lines): {too_long}"
    within = [
        path
        for path in OVER_LIMIT
        if not (ROOT / path).exists() or _line_count(ROOT / path) <= MAX_LINES
    ]
    assert not within, f"take these off OVER_LIMIT, they are within the limit now: {within}"


def test_app_has_no_import_cycle() -> None:
    graph = _import_graph()
    assert graph.get("app.pipeline.bridge"), "the graph reads the imports"
    cycles = _cycles(graph)
    assert not cycles, f"modules importing each other: {cycles}"


def test_the_cycle_finder_sees_a_cycle() -> None:
    # The referee of the test above: it must report a cycle when there is one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_imports_inside_functions_count_and_type_checking_ones_do_not() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import app.one\n"
        "if TYPE_CHECKING:\n    import app.two\n"
        "def f():\n    import app.three\n"
    )
    names = set(_runtime_imports(tree, "app"))
    assert {"app.one", "app.three"} <= names
    assert "app.two" not in names


def test_the_core_never_imports_an_adapter() -> None:
    offenders = set()
    for path in _sources("app"):
        tree, package = _parse(path)
        names = set(_all_imports(tree, package))
        if any(n == "adapters" or n.startswith("adapters.") for n in names):
            offenders.add(_rel(path))
    assert not offenders, f"the core imports an adapter in: {sorted(offenders)}"


PLATFORM_WORDS = re.compile(r"slack|teams", re.IGNORECASE)
# A list of credential formats (AWS, GitHub, Stripe ... and chat webhook URLs): the redactor
# recognizes a webhook URL pasted by anyone, whatever platform the bridge serves.
CREDENTIAL_FORMATS = {"app/redact/_secrets.py"}


def test_the_core_names_no_platform() -> None:
    named = {}
    for path in _sources("app"):
        if _rel(path) in CREDENTIAL_FORMATS:
            continue
        lines = [
            n
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if PLATFORM_WORDS.search(line)
        ]
        if lines:
            named[_rel(path)] = lines
    assert not named, f"the core names a platform (lines): {named}"


def test_an_adapter_never_imports_another_adapter() -> None:
    platforms = {p.name for p in (ROOT / "adapters").iterdir() if (p / "__init__.py").exists()}
    assert {"slack", "teams"} <= platforms
    crossing: dict[str, list[str]] = {}
    for path in _sources("adapters"):
        own = _adapter_of(path)
        if own is None:
            continue
        tree, package = _parse(path)
        others = sorted(
            {
                n
                for n in _all_imports(tree, package)
                if n.startswith("adapters.") and n.split(".")[1] in platforms - {own}
            }
        )
        if others:
            crossing[_rel(path)] = others
    assert not crossing, f"adapters importing another adapter: {crossing}"


# What the Dify client may build on: the settings, the shared errors and texts, and itself. The
# pipeline calls the client, never the other way round (the brief's one direction of flow).
DIFY_MAY_IMPORT = ("app.config", "app.errors", "app.texts", "app.dify")


def test_the_dify_client_imports_neither_the_pipeline_nor_the_commands() -> None:
    graph = _import_graph()
    assert graph.get("app.dify.appcheck"), "the graph reads the imports"
    offenders = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith("app.dify.")
        for target in targets
        if not any(target == ok or target.startswith(ok + ".") for ok in DIFY_MAY_IMPORT)
    }
    assert not offenders, f"the Dify client reaches up the flow: {sorted(offenders)}"
