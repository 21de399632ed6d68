"""The house's rooms and the one way their imports point (README, "Architecture").

Every import of ours is read from the source (lazy ones inside functions and ``TYPE_CHECKING``
ones included: a circle that only type checkers see is still a circle), and checked against the
table below: a room imports only the rooms it names, and no module reaches itself again through
its imports. The checker is run on small packages made on purpose too, so that it is shown to
catch a circle and an upward import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: room -> the rooms it may import, top to bottom (bench and tests, above them all, are free).
ROOMS: dict[str, frozenset[str]] = {
    "openstack_handler.cli": frozenset({"openstack_handler.demos", "openstack_handler.daemon",
                                        "openstack_handler.provisioning",
                                        "openstack_handler.private_cloud",
                                        "openstack_handler.web",
                                        "openstack_handler.logs", "openstack_handler"}),
    "openstack_handler.demos": frozenset({"localcloud", "openstack_handler.daemon",
                                          "openstack_handler.provisioning",
                                          "openstack_handler.logs"}),
    #: the web tier: one more client of the daemon's placement
    "openstack_handler.web": frozenset({"openstack_handler.daemon",
                                        "openstack_handler.private_cloud",
                                        "openstack_handler.logs", "openstack_handler"}),
    "openstack_handler.daemon": frozenset({"openstack_handler.private_cloud",
                                           "openstack_handler.logs", "openstack_handler"}),
    "localcloud": frozenset({"lambda_service", "openstack_handler.provisioning",
                             "openstack_handler.logs"}),
    "camera": frozenset(),
    "openstack_handler.provisioning": frozenset(),
    "openstack_handler.private_cloud": frozenset(),
    "lambda_service": frozenset(),
    "sampledata": frozenset(),
    "lambda_image": frozenset(),
    "openstack_handler.logs": frozenset(),
    #: the package itself: its version, nothing else; `python -m openstack_handler` is the CLI
    "openstack_handler": frozenset(),
    "openstack_handler.__main__": frozenset({"openstack_handler.cli"}),
}
#: code whose imports are not checked: it sits above every room
FREE = ("bench", "tests")
PACKAGES = ("openstack_handler", "localcloud", "lambda_service", "lambda_image", "camera",
            "sampledata")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path, ours: Iterable[str]) -> set[str]:
    """The modules of *ours* (top-level package names) that *path* imports, anywhere in it."""
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from pkg import module` imports pkg.module when it is one
            found.update(f"{base}.{alias.name}" for alias in node.names)
    tops = set(ours)
    return {name for name in found if name.split(".")[0] in tops}


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """module -> the modules of ours it imports (names that are not modules, dropped)."""
    packages = tuple(packages)
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    return {module: {name for name in imports_of(root, path, packages) if name in files}
            for module, path in files.items()}


def room_of(module: str, rooms: Iterable[str]) -> str | None:
    matches = [r for r in rooms if module == r or module.startswith(r + ".")]
    return max(matches, key=len, default=None)


def violations(graph: Mapping[str, set[str]], rooms: Mapping[str, frozenset[str]],
               free: Iterable[str] = ()) -> list[str]:
    """What breaks the house: a module outside every room, an import a room may not make, and
    every circle of modules (each named once, by its members)."""
    free = tuple(free)
    found = []
    for module, deps in sorted(graph.items()):
        if module.split(".")[0] in free:
            continue
        room = room_of(module, rooms)
        if room is None:
            found.append(f"{module} is in no room")
            continue
        for dep in sorted(deps):
            target = room_of(dep, rooms)
            if target != room and target not in rooms[room]:
                found.append(f"{module} imports {dep}: {room} may not import {target}")
    found += [f"circle through {', '.join(cycle)}" for cycle in circles(graph)]
    return found


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or a module importing itself
    (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return found


def test_every_import_of_ours_points_down_and_no_module_comes_back_to_itself() -> None:
    graph = import_graph(REPO, (*PACKAGES, "bench"))
    assert len(graph) > 100, "the tree was not read"
    assert violations(graph, ROOMS, FREE) == []


def test_the_rooms_themselves_point_one_way() -> None:
    graph = {room: set(allowed) for room, allowed in ROOMS.items()}
    assert circles(graph) == []


def _package(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


ON_PURPOSE_ROOMS = {"top": frozenset({"low"}), "low": frozenset()}


@pytest.mark.parametrize(("files", "expected"), [
    pytest.param({"low/a.py": "from low import b\n", "low/b.py": "import low.c\n",
                  "low/c.py": "def f():\n    from low.a import g\n"},
                 ["circle through low.a, low.b, low.c"], id="a-circle-inside-a-room"),
    pytest.param({"low/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from low.b import B\n",
                  "low/b.py": "from .a import A\n"},
                 ["circle through low.a, low.b"], id="a-circle-seen-by-type-checkers-only"),
    pytest.param({"top/a.py": "import low.b\n",
                  "low/b.py": "def f():\n    from top.a import run\n"},
                 ["low.b imports top.a: low may not import top",
                  "circle through low.b, top.a"], id="an-upward-import"),
    pytest.param({"top/a.py": "import low.b\n", "low/b.py": "import json\n"}, [],
                 id="a-downward-import"),
])
def test_the_checker_finds_what_was_added_on_purpose(tmp_path: Path, files: dict[str, str],
                                                     expected: list[str]) -> None:
    root = _package(tmp_path, {"top/__init__.py": "", "low/__init__.py": "", **files})
    assert violations(import_graph(root, ("top", "low")), ON_PURPOSE_ROOMS) == expected


def test_the_checker_finds_an_upward_import_added_to_the_real_tree(tmp_path: Path) -> None:
    # GIVEN the real import graph WHEN the daemon is made to import the local cloud
    graph = import_graph(REPO, PACKAGES)
    graph["openstack_handler.daemon.consumer"].add("localcloud.cloud")
    # THEN that import is named
    assert any(v.startswith("openstack_handler.daemon.consumer imports localcloud.cloud")
               for v in violations(graph, ROOMS, FREE))
