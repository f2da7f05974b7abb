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


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
  """One import cycle as `[a, b, ..., a]`, or None (depth-first search, three colours)."""
  colour, stack = {}, []

  def visit(node):
    colour[node] = 'grey'
    stack.append(node)
    for nxt in graph.get(node, ()):
      if colour.get(nxt) == 'grey':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in colour:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    colour[node] = 'black'
    return None
  for node in sorted(graph):
    if node not in colour:
      found = visit(node)
      if found:
        return found
  return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
  assert find_cycle({'a': ['b'], 'b': ['c'], 'c': ['a']}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': ['b', 'c'], 'b': ['c'], 'c': []}) is None


def test_relative_and_submodule_imports_are_resolved():
  imports = {t for t, _, _ in _imports('launch.run')}
  assert {'hinge_jax.io_utils', 'launch.structural'} <= imports
  assert 'hinge_jax.datasets' in GRAPH['hinge_jax.experiment']


def test_no_import_cycles():
  cycle = find_cycle(GRAPH)
  assert cycle is None, 'import cycle: ' + ' → '.join(cycle)


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
