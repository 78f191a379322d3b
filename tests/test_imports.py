"""The import graph of the jaxlab package: no cycles, and DESIGN.md's floors.

  launch -> {llm, rl, grounding, looped, evals, supervised}
         -> {models, nets, representations, envs, optim} -> core

Every module is parsed with ``ast`` (nothing is imported), and every ``import`` /
``from ... import`` statement counts, at module level or inside a function (lazy imports are
still dependencies), with relative imports resolved. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg`` itself. Parent packages are not edges of
their own: Python runs them first, but they do not make a cycle unless they import back.
Imports by string (``importlib.import_module``) are registries and are not followed.
"""

from __future__ import annotations

import ast
import os
from typing import Iterator

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Floors of DESIGN.md, lowest first. A package imports only its own floor or lower ones.
FLOORS = {
    "core": 0,
    "models": 1, "nets": 1, "representations": 1, "envs": 1, "optim": 1,
    "llm": 2, "rl": 2, "grounding": 2, "looped": 2, "evals": 2, "supervised": 2,
    "trainers": 2,  # jaxlab/trainers.py: the trainers by name, read by launch.train
}
# What only a higher floor (or nothing in the package) may import.
OUTSIDE = ("launch", "benchmarks", "tests", "configs")


def _modules(root: str, top: str) -> dict[str, str]:
  """Dotted module name -> file, for every .py file under ``root/top``."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    for f in sorted(filenames):
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = os.path.join(dirpath, f)
  return out


def imports_of(name: str, path: str) -> Iterator[tuple[str, int, bool]]:
  """``(imported dotted name, line, is_from)`` for every import statement of one module.

  For ``from X import a, b`` it yields ``X.a`` and ``X.b`` (the caller decides whether each
  is a module or a name inside ``X``).
  """
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno, False
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package[:len(package) - (node.level - 1)]
        if node.level - 1 > len(package):
          raise ValueError(f"{path}:{node.lineno}: relative import beyond the top package")
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module
      for alias in node.names:
        yield f"{module}.{alias.name}" if alias.name != "*" else module, node.lineno, True


def _target(dotted: str, is_from: bool, modules: dict[str, str]) -> str | None:
  """The module an import loads: the name itself if it is a module, else (for ``from``) its
  parent; None when neither exists."""
  if dotted in modules:
    return dotted
  parent = dotted.rsplit(".", 1)[0]
  if is_from and parent in modules:
    return parent
  return None


def import_graph(root: str, top: str = "jaxlab"
                 ) -> tuple[dict[str, set[str]], list[str], list[str]]:
  """``(graph, unresolved, outside)`` of the package ``root/top``.

  graph: module -> the package's modules it imports. unresolved: ``file:line name`` for imports
  of ``top.*`` that name no module or attribute of one. outside: ``file:line name`` for imports
  of :data:`OUTSIDE` packages.
  """
  modules = _modules(root, top)
  graph: dict[str, set[str]] = {m: set() for m in modules}
  unresolved, outside = [], []
  for name, path in modules.items():
    for dotted, line, is_from in imports_of(name, path):
      head = dotted.split(".")[0]
      where = f"{os.path.relpath(path, root)}:{line} {dotted}"
      if head in OUTSIDE:
        outside.append(where)
      if head != top:
        continue
      target = _target(dotted, is_from, modules)
      if target is None:
        unresolved.append(where)
      elif target != name:
        graph[name].add(target)
  return graph, unresolved, outside


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  components: list[list[str]] = []
  counter = [0]

  def visit(v: str) -> None:  # Tarjan's algorithm; the graph is small enough for recursion
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1 or v in graph.get(v, ()):
        components.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)

  return [_shortest_cycle(graph, set(comp), comp[0]) for comp in components]


def _shortest_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
  """Breadth-first inside one component, from ``start`` back to it."""
  parent: dict[str, str | None] = {start: None}
  frontier = [start]
  while frontier:
    nxt = []
    for v in frontier:
      for w in sorted(graph.get(v, ())):
        if w == start:
          path = [v]
          while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
          return path[::-1] + [start]
        if w in members and w not in parent:
          parent[w] = v
          nxt.append(w)
    frontier = nxt
  raise AssertionError(f"{start} is on no cycle of its component")


def _package(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else parts[0]


@pytest.fixture(scope="module")
def graph():
  g, unresolved, outside = import_graph(REPO)
  return g, unresolved, outside


def test_the_checker_finds_lazy_and_relative_cycles(tmp_path):
  pkg = tmp_path / "toy"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("from . import b\n")
  (pkg / "a.py").write_text("def f():\n  from toy.sub import b\n  return b\n")
  (pkg / "sub" / "b.py").write_text("from ..c import g\n")
  (pkg / "c.py").write_text("import toy.a\ndef g():\n  pass\n")
  (pkg / "d.py").write_text("from toy import missing_module_or_name\nfrom toy.nowhere import x\n")
  g, unresolved, _ = import_graph(str(tmp_path), "toy")
  assert g["toy.a"] == {"toy.sub.b"} and g["toy.sub.b"] == {"toy.c"}
  assert g["toy.sub"] == {"toy.sub.b"}
  assert find_cycles(g) == [["toy.a", "toy.sub.b", "toy.c", "toy.a"]]
  # `from toy import name` may name an attribute of toy; `from toy.nowhere` names no module.
  assert unresolved == ["toy/d.py:2 toy.nowhere.x"]
  (pkg / "c.py").write_text("def g():\n  pass\n")
  assert find_cycles(import_graph(str(tmp_path), "toy")[0]) == []


def test_no_import_cycle_in_jaxlab(graph):
  g, _, _ = graph
  assert len(g) > 50  # the whole package was read
  cycles = find_cycles(g)
  assert not cycles, "import cycles in jaxlab:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_jaxlab_import_resolves(graph):
  # Lazy imports run only on some paths; a moved module must not leave one behind.
  unresolved = list(graph[1])
  for top in ("launch", "benchmarks", "tests", "configs"):
    modules = _modules(REPO, "jaxlab")
    for name, path in _modules(REPO, top).items():
      for dotted, line, is_from in imports_of(name, path):
        if dotted.split(".")[0] == "jaxlab" and _target(dotted, is_from, modules) is None:
          unresolved.append(f"{os.path.relpath(path, REPO)}:{line} {dotted}")
  assert not unresolved, "imports of missing jaxlab modules:\n" + "\n".join(unresolved)


def test_floors_of_the_design(graph):
  g, _, outside = graph
  assert not outside, "jaxlab imports launch/benchmarks/tests/configs:\n" + "\n".join(outside)
  packages = {_package(m) for m in g} - {"jaxlab"}
  unplaced = sorted(packages - set(FLOORS))
  assert not unplaced, f"place these packages on a floor of DESIGN.md (FLOORS): {unplaced}"
  bad = []
  for src, targets in sorted(g.items()):
    for dst in sorted(targets):
      a, b = _package(src), _package(dst)
      if a == b or b == "jaxlab":
        continue
      if a == "core":
        bad.append(f"{src} -> {dst}: jaxlab.core imports no other jaxlab package")
      elif a == "models" and b != "core":
        bad.append(f"{src} -> {dst}: jaxlab.models imports only jaxlab.core")
      elif a != "jaxlab" and FLOORS[a] < FLOORS[b]:
        bad.append(f"{src} -> {dst}: floor {FLOORS[a]} imports floor {FLOORS[b]}")
  assert not bad, "floor violations:\n" + "\n".join(bad)
