"""The house's import rules, read from the code: no circles among service/'s modules, and no
import from a lower room into a higher one (docs/architecture.md, "The rooms").

Every import counts, also one inside a function: it is a dependency all the same. Imports are
read with `ast`, nothing is imported, so the test says which line breaks a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
PACKAGE = "jitnet.service"

# The rooms from the ground up: a module may import its own room and the rooms below it. A
# module's room is the first entry that is its dotted name or a package above it.
ROOMS = [
    ("ground", ["", "config", "errors", "events"]),
    ("engine", ["engine"]),
    ("store", ["store"]),
    ("protocols", ["protocols"]),
    ("observability", ["observability"]),
    ("web", ["web"]),  # the page's API: a client of the server's own gRPC port
    ("server", ["server"]),
]
# What the lower rooms never import, whatever their room: the engine knows arrays only, the
# store knows nothing of the wire.
FORBIDDEN = {
    "engine": ("grpc", "google.protobuf", "jitnet.v1", "jitnet.inference", "psycopg"),
    "store": ("grpc", "google.protobuf", "jitnet.v1", "jitnet.inference"),
}


def module_name(path: Path, root: Path = SERVICE) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def room_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(ROOMS):
        for prefix in prefixes:
            if module == prefix or (prefix and module.startswith(prefix + ".")):
                return rank
    raise AssertionError(f"service module {module!r} is in no room: add it to ROOMS")


def imports_of(path: Path, modules: set[str], root: Path = SERVICE) -> list[tuple[str, int, str]]:
    """(imported service module, line, what the line says) for every import in the file; and
    outside modules as they are named."""
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((_inside(alias.name, modules), node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + (node.module.split(".") if node.module else []))
                absolute = PACKAGE + ("." + target if target else "")
            else:
                absolute = node.module
            for alias in node.names:  # `from pkg import module` imports that module
                sub = f"{absolute}.{alias.name}"
                named = _inside(sub, modules)
                found.append((named if named in modules else _inside(absolute, modules),
                              node.lineno, absolute))
    return found


def _inside(name: str, modules: set[str]) -> str:
    """A dotted name as a service module (relative to jitnet.service), or the name itself."""
    if name == PACKAGE:
        return ""
    if name.startswith(PACKAGE + "."):
        rest = name[len(PACKAGE) + 1:]
        while rest and rest not in modules:
            rest = rest.rpartition(".")[0]
        return rest
    return name


def graph(root: Path = SERVICE):
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges = {}
    for module, path in files.items():
        edges[module] = [(target, line, text) for target, line, text in
                         imports_of(path, modules, root)]
    return files, modules, edges


def circles(modules: set[str], edges) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing
    itself), by Tarjan's algorithm."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in edges[v]:
            if w not in modules:
                continue
            if w == v:
                found.append([v])
            elif w not in index:
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

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return found


def breaches(modules: set[str], edges) -> list[str]:
    out = []
    for module in sorted(modules):
        rank = room_of(module)
        for target, line, text in edges[module]:
            if target in modules and room_of(target) > rank:
                out.append(f"service/{module.replace('.', '/')} (room {ROOMS[rank][0]}), line "
                           f"{line}: imports {target or PACKAGE} (room "
                           f"{ROOMS[room_of(target)][0]}), a higher room")
            forbidden = FORBIDDEN.get(ROOMS[rank][0], ())
            if target not in modules and text.startswith(forbidden):
                out.append(f"service/{module.replace('.', '/')} (room {ROOMS[rank][0]}), line "
                           f"{line}: imports {text}, which that room never does")
    return out


def test_no_module_of_the_service_is_in_a_circle():
    _, modules, edges = graph()
    assert circles(modules, edges) == []


def test_no_room_imports_a_higher_one():
    _, modules, edges = graph()
    assert breaches(modules, edges) == []


def test_every_folder_says_in_its_first_line_what_it_holds():
    for init in sorted(SERVICE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(SERVICE.parent)} has no docstring"
        first = doc.splitlines()[0]
        assert first.endswith(".") and len(first) <= 96, (init, first)


@pytest.fixture
def house(tmp_path):
    """A copy of service/ to break on purpose."""
    import shutil
    copy = tmp_path / "service"
    shutil.copytree(SERVICE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_circle_is_caught(house):
    # The store factory imports the implementations; an implementation importing the factory's
    # module back is the circle this house took out.
    with (house / "store" / "file.py").open("a") as f:
        f.write("\nfrom . import open_store  # noqa\n")
    _, modules, edges = graph(house)
    assert circles(modules, edges) == [["store", "store.file"]]


def test_an_import_up_the_floors_is_caught(house):
    with (house / "engine" / "model.py").open("a") as f:
        f.write("\nfrom ..store import ModelRecord  # noqa\n")
    _, modules, edges = graph(house)
    found = breaches(modules, edges)
    assert len(found) == 1 and found[0].startswith("service/engine/model (room engine), line ")
    assert found[0].endswith("imports store (room store), a higher room")
