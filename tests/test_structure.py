"""The package's shape: no import cycles, module-level imports only, no module over 400 lines.

Imports of the package's own modules (`hinge_jax`, `launch`) are read from the source with
`ast`, so a cycle or a function-level import fails here by name before it confuses a reader.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('hinge_jax', 'launch')
MAX_LINES = 400


def _modules() -> dict[str, str]:
  """`{dotted module name: path}` of every .py file under the packages."""
  out = {}
  for package in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for name in sorted(files):
        if name.endswith('.py'):
          path = os.path.join(root, name)
          parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
          if parts[-1] == '__init__':
            parts = parts[:-1]
          out['.'.join(parts)] = path
  return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
  """The package modules an import statement names (a `from pkg import mod` names pkg.mod)."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = node.module or ''
    if node.level:  # relative: from the module's package, `level` up
      here = module.split('.') if is_package else module.split('.')[:-1]
      here = here[:len(here) - node.level + 1]
      base = '.'.join(here + ([base] if base else []))
    names = [f'{base}.{a.name}' if f'{base}.{a.name}' in MODULES else base for a in node.names]
  out = []
  for name in names:
    while name and name not in MODULES:  # `import hinge_jax.x.y` → the longest module prefix
      name = name.rpartition('.')[0]
    if name and name.split('.')[0] in PACKAGES:
      out.append(name)
  return out


def _imports(module: str) -> list[tuple[str, int, bool]]:
  """(imported module, line, at module level) for every import of a package module."""
  path = MODULES[module]
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  is_package = os.path.basename(path) == '__init__.py'
  top = {id(n) for n in tree.body}
  for n in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at module level are module level
    if isinstance(n, (ast.If, ast.Try)):
      top |= {id(m) for m in ast.walk(n) if isinstance(m, (ast.Import, ast.ImportFrom))}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      for target in _resolve(module, node, is_package):
        out.append((target, node.lineno, id(node) in top))
  return out


GRAPH = {m: sorted({t for t, _, _ in _imports(m) if t != m}) for m in MODULES}


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
  """One import cycle `[a, b, ..., a]` per group of modules that import each other."""
  index, low, on_stack, stack, groups = {}, {}, set(), [], []

  def connect(node):  # Tarjan's strongly connected components
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in graph.get(node, ()):
      if nxt not in index:
        connect(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      group = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        group.append(member)
        if member == node:
          break
      if len(group) > 1:
        groups.append(set(group))
  for node in sorted(graph):
    if node not in index:
      connect(node)
  return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, list[str]], group: set) -> list[str]:
  """A shortest cycle through the group's first module (breadth-first, inside the group)."""
  start = min(group)
  parent, frontier = {start: None}, [start]
  while frontier:
    nxt_frontier = []
    for node in frontier:
      for nxt in graph.get(node, ()):
        if nxt == start:
          path = [node]
          while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
          return [start] + path[::-1][1:] + [start]
        if nxt in group and nxt not in parent:
          parent[nxt] = node
          nxt_frontier.append(nxt)
    frontier = nxt_frontier
  raise AssertionError(f'no cycle in {group}')


def test_the_cycle_finder_finds_every_cycle_and_accepts_a_tree():
  assert find_cycles({'a': ['b'], 'b': ['c'], 'c': ['a']}) == [['a', 'b', 'c', 'a']]
  assert find_cycles({'a': ['b', 'c'], 'b': ['c'], 'c': []}) == []
  two = find_cycles({'a': ['b'], 'b': ['a', 'c'], 'c': ['d'], 'd': ['c', 'e'], 'e': []})
  assert sorted(two) == [['a', 'b', 'a'], ['c', 'd', 'c']]


def test_relative_and_submodule_imports_are_resolved():
  imports = {t for t, _, _ in _imports('launch.run')}
  assert {'hinge_jax.io_utils', 'launch.structural'} <= imports
  assert 'hinge_jax.datasets' in GRAPH['hinge_jax.experiment']


def test_no_import_cycles():
  cycles = find_cycles(GRAPH)
  assert not cycles, 'import cycles:\n' + '\n'.join(' → '.join(c) for c in cycles)


def test_package_modules_are_imported_at_module_level_only():
  late = sorted({f'{os.path.relpath(MODULES[m], REPO)}:{line} imports {target}'
                 for m in MODULES for target, line, top in _imports(m) if not top})
  assert not late, 'function-level imports of package modules:\n' + '\n'.join(late)


@pytest.mark.parametrize('package', ['hinge_jax'])
def test_no_module_is_over_400_lines(package):
  long = []
  for module, path in sorted(MODULES.items()):
    if module.split('.')[0] == package:
      with open(path) as f:
        n = sum(1 for _ in f)
      if n > MAX_LINES:
        long.append(f'{os.path.relpath(path, REPO)}: {n} lines')
  assert not long, f'modules over {MAX_LINES} lines:\n' + '\n'.join(long)
