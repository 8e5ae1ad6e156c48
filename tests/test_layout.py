"""The house: sdgas' imports run one way (docs/layout.md), read from the source, not from a running interpreter.

utils -> nn -> io -> data -> models -> engine -> tools -> cli. A module may import its own floor and the floors
below it; the package root (`sdgas`: __version__ and the SDGAS facade) shares the top floor with the CLI. An sdgas import inside a
function is allowed only where the same import at the top would close a cycle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sdgas"
FLOORS = ("sdgas.utils", "sdgas.nn", "sdgas.io", "sdgas.data", "sdgas.models", "sdgas.engine", "sdgas.tools",
          "sdgas.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    """The floor of an sdgas module; the package root shares the top floor with the CLI."""
    for i, prefix in enumerate(FLOORS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    assert module == "sdgas", f"{module} is on no floor of docs/layout.md"
    return len(FLOORS) - 1


def sdgas_imports(path: Path):
    """(imported module, line, at top level) for every sdgas import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "sdgas":
            yield node.module, node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; sdgas imports are absolute")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sdgas":
                    yield alias.name, node.lineno, id(node) in top


def import_graph() -> dict:
    """module -> {(imported module, line, top level)} over every file of the package."""
    return {module_name(p): set(sdgas_imports(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def reaches(graph: dict, start: str, goal: str) -> bool:
    """Whether importing `start` at the top of a module imports `goal` (following top-level imports and parents)."""
    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        if mod == goal:
            return True
        if mod in seen:
            continue
        seen.add(mod)
        parents = [".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)]  # a package runs its __init__
        todo += parents + [m for m, _, top in graph.get(mod, ()) if top]
    return False


def test_floors_cover_the_package():
    for module in import_graph():
        if module != "sdgas":
            floor(module)


def test_imports_run_one_way():
    wrong = [f"{mod} (line {line}) imports {target}"
             for mod, imports in import_graph().items() if mod != "sdgas"
             for target, line, _ in imports if floor(target) > floor(mod)]
    assert not wrong, "imports against the floors of docs/layout.md:\n" + "\n".join(wrong)


def test_utils_import_nothing_from_the_rest_of_sdgas():
    graph = import_graph()
    outside = [f"{mod} imports {target}" for mod, imports in graph.items() if floor(mod) == 0
               for target, _, _ in imports if floor(target) != 0]
    assert not outside, outside


def test_imports_inside_functions_only_break_cycles():
    graph = import_graph()
    needless = [f"{mod} (line {line}) imports {target} inside a function"
                for mod, imports in graph.items() for target, line, top in imports
                if not top and not reaches(graph, target, mod)]
    assert not needless, "these would close no cycle at the top of the file:\n" + "\n".join(needless)


def test_the_checks_catch_a_wrong_way_arrow_and_a_needless_local_import():
    graph = {"sdgas.nn.tasks": {("sdgas.engine.model", 3, True)}, "sdgas.engine.model": {("sdgas.nn.tasks", 1, True)},
             "sdgas.data.check": {("sdgas.utils", 9, False)}, "sdgas.utils": set()}
    assert floor("sdgas.engine.model") > floor("sdgas.nn.tasks")  # the first import points up
    assert not reaches(graph, "sdgas.utils", "sdgas.data.check")  # the second breaks no cycle
    assert reaches(graph, "sdgas.engine.model", "sdgas.nn.tasks")
