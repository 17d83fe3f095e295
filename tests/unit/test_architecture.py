"""The architecture as a test: the folders are the map, and the map stays true.

Reads every module of ``hyperplane`` and ``lambda_vm`` with ``ast`` (nothing is
imported) and checks the rules that ``hyperplane/__init__.py`` and
docs/architecture.md state:

* layers import only downward (``RANK``): a module imports from its own
  subpackage or from a lower rank, never from a sibling of the same rank;
* no import circles between modules (type-only imports excepted);
* modules documented as pure (``(pure`` in the docstring's first line) import
  none of socket, subprocess, pyroute2, ctypes, select, fcntl, sqlite3 and call
  no ``os.system``-style function;
* nothing outside ``cli`` imports ``cli`` (it holds no logic another package calls);
* at most 6 modules at the top of ``hyperplane/``, every module opens with a
  docstring, none is over 500 lines and no function over 80;
* errors are told apart by type, never by ``type(x).__name__``.

The checks are functions of a ``Tree`` (module name -> source), so the last tests
feed them a tree with a deliberate violation and see it caught.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RANK = {"errors": 0, "jsonline": 1, "model": 2, "dataplane": 3, "policy": 4, "fabric": 4,
        "services": 4, "templates": 4, "kernel": 5, "controller": 6, "emulator": 7,
        "endpoint": 8, "bench": 9, "cli": 10}
LAMBDA_VM_MAY_USE = ("errors", "jsonline", "kernel")
IMPURE_MODULES = frozenset({"socket", "subprocess", "pyroute2", "ctypes", "select", "fcntl",
                            "sqlite3", "asyncio", "http"})
IMPURE_CALLS = frozenset({"system", "popen", "fork", "execv", "execvp", "spawnv", "kill"})
MAX_TOP_MODULES = 6
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

Tree = dict[str, str]  # dotted module name -> source


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str      # a dotted module name of the project
    line: int
    type_only: bool


def load_tree() -> Tree:
    tree: Tree = {}
    for package in ("hyperplane", "lambda_vm"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            tree[name] = path.read_text()
    return tree


def _resolve(tree: Tree, name: str) -> str | None:
    """The project module ``name`` stands for (a name imported from a package may be
    one of its modules, or just a name it defines)."""
    while name and name not in tree:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, type_only: bool = False):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, type_only
        yield from _walk(child, type_only or (isinstance(child, ast.If) and
                                              _type_checking(child)))


def imports(tree: Tree) -> list[Import]:
    found = []
    for module, source in tree.items():
        for node, type_only in _walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                target = _resolve(tree, name)
                if target is not None and target != module:
                    found.append(Import(module, target, node.lineno, type_only))
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "hyperplane" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def layer_violations(tree: Tree) -> list[str]:
    bad = []
    for imp in imports(tree):
        src, dst = layer(imp.importer), layer(imp.imported)
        where = f"{imp.importer}:{imp.line} imports {imp.imported}"
        if imp.importer.startswith("lambda_vm"):
            if imp.imported.startswith("hyperplane") and dst not in LAMBDA_VM_MAY_USE:
                bad.append(f"{where} (lambda_vm may use only {LAMBDA_VM_MAY_USE})")
            continue
        if src is None or dst is None or src == dst:
            if src is not None and dst is None and imp.imported.startswith("lambda_vm"):
                bad.append(f"{where} (hyperplane never imports lambda_vm)")
            continue
        if RANK[dst] >= RANK[src]:
            bad.append(f"{where} ({src} is rank {RANK[src]}, {dst} rank {RANK[dst]}: "
                       "layers import only downward)")
    return bad


def cycles(tree: Tree) -> list[list[str]]:
    """Import circles between modules (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = {m: set() for m in tree}
    for imp in imports(tree):
        if not imp.type_only:
            graph[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for node in graph:
        if node not in index:
            visit(node)
    return found


def documented_pure(source: str) -> bool:
    doc = ast.get_docstring(ast.parse(source)) or ""
    return "(pure" in doc.splitlines()[0] if doc else False


def purity_violations(tree: Tree) -> list[str]:
    bad = []
    for module, source in tree.items():
        if not documented_pure(source):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                names = []
            for name in names:
                if name.split(".")[0] in IMPURE_MODULES:
                    bad.append(f"{module}:{node.lineno} imports {name} but is documented pure")
            if isinstance(node, ast.Attribute) and node.attr in IMPURE_CALLS and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                bad.append(f"{module}:{node.lineno} calls os.{node.attr} but is documented pure")
    return bad


def size_violations(tree: Tree) -> list[str]:
    bad = []
    for module, source in tree.items():
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            bad.append(f"{module} has {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{module}.{node.name} (line {node.lineno}) has {length} "
                               f"lines (at most {MAX_FUNCTION_LINES})")
    return bad


def _type_name(node: ast.AST) -> bool:
    """``type(x).__name__``."""
    return isinstance(node, ast.Attribute) and node.attr == "__name__" and \
        isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name) and \
        node.value.func.id == "type"


def name_string_violations(tree: Tree) -> list[str]:
    bad = []
    for module, source in tree.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare) and \
                    any(_type_name(n) for n in (node.left, *node.comparators)):
                bad.append(f"{module}:{node.lineno} tells an error by its class name")
    return bad


# -- the project as it is -----------------------------------------------------------------
TREE = load_tree()


def test_layers_import_only_downward() -> None:
    assert layer_violations(TREE) == []


def test_no_import_circles() -> None:
    assert cycles(TREE) == []


def test_modules_documented_pure_do_no_io() -> None:
    assert purity_violations(TREE) == []


def test_the_pure_packages_are_documented_pure() -> None:
    for module, source in TREE.items():
        if layer(module) in ("model", "policy", "fabric", "errors") and \
                not module.endswith("__init__") and module.count(".") >= 2:
            assert documented_pure(source), f"{module} is in a pure package"


def test_nothing_outside_cli_imports_cli() -> None:
    users = {i.importer for i in imports(TREE) if layer(i.imported) == "cli"
             and layer(i.importer) != "cli"}
    assert users <= {"hyperplane.__main__"}


def test_the_top_level_holds_few_modules() -> None:
    top = [p.name for p in (ROOT / "hyperplane").glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, top


def test_every_module_opens_with_a_docstring() -> None:
    missing = [m for m, s in TREE.items()
               if s.strip() and ast.get_docstring(ast.parse(s)) is None]
    assert missing == []


def test_no_module_or_function_is_too_long() -> None:
    assert size_violations(TREE) == []


def test_errors_are_told_apart_by_type() -> None:
    assert name_string_violations(TREE) == []


# -- the checks catch what they are for ---------------------------------------------------
def _with(module: str, source: str) -> Tree:
    tree = dict(TREE)
    tree[module] = source
    return tree


@pytest.mark.parametrize("importer, statement", [
    ("hyperplane.model.names", "from hyperplane.dataplane import packet"),
    ("hyperplane.dataplane.pipeline", "from hyperplane.controller import service"),
    ("hyperplane.dataplane.pipeline", "import hyperplane.kernel.netlink"),
    ("hyperplane.policy.hostfw", "from hyperplane.fabric.desired import host_netns"),
    ("hyperplane.kernel.build", "from hyperplane.emulator.run import up"),
    ("lambda_vm.agent", "from hyperplane.controller.service import Controller"),
])
def test_an_upward_import_is_caught(importer: str, statement: str) -> None:
    source = TREE[importer] + f"\n{statement}\n"
    assert any(importer in v for v in layer_violations(_with(importer, source)))


def test_an_import_circle_is_caught() -> None:
    source = TREE["hyperplane.dataplane.packet"] + "\nfrom hyperplane.dataplane import icmp\n"
    found = cycles(_with("hyperplane.dataplane.packet", source))
    assert any("hyperplane.dataplane.packet" in c and "hyperplane.dataplane.icmp" in c
               for c in found)


def test_a_socket_in_a_pure_module_is_caught() -> None:
    source = TREE["hyperplane.model.ipam"] + "\nimport socket\n"
    assert purity_violations(_with("hyperplane.model.ipam", source))


def test_a_long_function_is_caught() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    assert size_violations({"hyperplane.model.x": f'"""x (pure)."""\ndef f():\n{body}\n'})


def test_a_class_name_comparison_is_caught() -> None:
    source = '"""x."""\ntry:\n    pass\nexcept Exception as e:\n' \
             '    if type(e).__name__ == "UsageError":\n        pass\n'
    assert name_string_violations({"hyperplane.cli.x": source})
