"""The layering of tff_ditto, read from its source (AST, nothing imported).

* No import cycle between tff_ditto modules (module-level imports: those
  inside functions run late and are how a cycle is broken on purpose).
* No module imports another tff_ditto module's private name (`from
  tff_ditto.x import _y`, or `x._y` with `x` a tff_ditto module).
* `TF_FREE_MODULES` import neither tensorflow nor tensorflow_federated, also
  not through the tff_ditto modules (and packages) they import.

Violations that exist in files being changed elsewhere are allow-listed
below, each with why; a new violation fails.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import pytest

import process_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'tff_ditto'

TF_PACKAGES = ('tensorflow', 'tensorflow_federated')
# Modules that flag validation, the grid and its report import without
# starting TensorFlow.
TF_FREE_MODULES = (
    'tff_ditto.names',
    'tff_ditto.training_config',
    'tff_ditto.config_validation',
    'tff_ditto.lambda_policy',
    'tff_ditto.config_equivalence',
    'tff_ditto.reproduction.grid',
)

# Import cycles (each a sorted tuple of its modules) allowed for now: none.
ALLOWED_CYCLES: frozenset[tuple[str, ...]] = frozenset()

# Private names used across modules, as 'importer -> module._name', allowed
# for now: none. A new one fails; make the name public instead.
ALLOWED_PRIVATE_IMPORTS: frozenset[str] = frozenset()


# ------------------------------------------------------------------ checker


def module_files(root: str, package: str) -> dict[str, str]:
  """{module name: file} of every .py file of `package` under `root`."""
  found = {}
  for directory, _, files in os.walk(os.path.join(root, package)):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(directory, name)
      parts = os.path.relpath(path, root)[: -len('.py')].split(os.sep)
      if parts[-1] == '__init__':
        parts = parts[:-1]
      found['.'.join(parts)] = path
  return found


def _parse(path: str) -> ast.Module:
  with open(path) as f:
    return ast.parse(f.read(), path)


def _module_level_imports(tree: ast.AST):
  """Import nodes that run when the module is imported (not in functions)."""
  for node in ast.iter_child_nodes(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      continue
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    else:
      yield from _module_level_imports(node)


def _base_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
  """The absolute module a `from ... import` names (relative ones too)."""
  if not node.level:
    return node.module or ''
  parts = module.split('.')
  if not is_package:
    parts = parts[:-1]
  parts = parts[: len(parts) - (node.level - 1)]
  return '.'.join(parts + ([node.module] if node.module else []))


def _imported(
    node, module: str, is_package: bool, modules: set[str]
) -> list[tuple[str, str]]:
  """(module imported, name taken from it or '') of one import node.

  `from a import b` imports the module a.b when there is one, else the name
  b of module a.
  """
  if isinstance(node, ast.Import):
    return [(alias.name, '') for alias in node.names]
  base = _base_module(node, module, is_package)
  found = []
  for alias in node.names:
    submodule = f'{base}.{alias.name}'
    found.append(
        (submodule, '') if submodule in modules else (base, alias.name)
    )
  return found


class Package:
  """The modules of a package and their module-level imports."""

  def __init__(self, root: str, package: str):
    self.package = package
    self.files = module_files(root, package)
    self.modules = set(self.files)
    self.trees = {name: _parse(path) for name, path in self.files.items()}
    self.graph: dict[str, set[str]] = {}
    self.external: dict[str, set[str]] = {}
    for name, tree in self.trees.items():
      is_package = self.files[name].endswith('__init__.py')
      internal, external = set(), set()
      for node in _module_level_imports(tree):
        for target, _ in _imported(node, name, is_package, self.modules):
          if target == package or target.startswith(package + '.'):
            internal.add(self._known(target))
          else:
            external.add(target.split('.')[0])
      internal.discard(name)
      self.graph[name], self.external[name] = internal, external

  def _known(self, module: str) -> str:
    """`module`, or its closest existing parent (an unknown name in it)."""
    while module not in self.modules and '.' in module:
      module = module.rsplit('.', 1)[0]
    return module

  def cycles(self) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
      index[node] = low[node] = len(index)
      stack.append(node)
      on_stack.add(node)
      for target in sorted(self.graph.get(node, ())):
        if target not in index:
          visit(target)
          low[node] = min(low[node], low[target])
        elif target in on_stack:
          low[node] = min(low[node], index[target])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          components.append(tuple(sorted(component)))

    for node in sorted(self.graph):
      if node not in index:
        visit(node)
    return sorted(components)

  def private_imports(self) -> list[str]:
    """'importer -> module._name' for each private name used across modules.

    Imports anywhere in a module count (inside functions too), and so does
    `alias._name` where `alias` is bound to a package module by an import.
    """
    found = set()
    for name, tree in self.trees.items():
      is_package = self.files[name].endswith('__init__.py')
      aliases = {}
      for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
          continue
        imported = _imported(node, name, is_package, self.modules)
        for alias, (target, attribute) in zip(node.names, imported):
          if not self._inside(target):
            continue
          if attribute:
            if _is_private(attribute) and target != name:
              found.add(f'{name} -> {target}.{attribute}')
          elif isinstance(node, ast.ImportFrom) or alias.asname:
            aliases[alias.asname or alias.name] = target
          else:  # `import a.b.c` binds a.
            aliases[target.split('.')[0]] = target.split('.')[0]
      for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
          owner = self._module_of(node.value, aliases)
          if (
              owner is not None
              and owner != name
              and _is_private(node.attr)
              and f'{owner}.{node.attr}' not in self.modules
          ):
            found.add(f'{name} -> {owner}.{node.attr}')
    return sorted(found)

  def _inside(self, module: str) -> bool:
    return module == self.package or module.startswith(self.package + '.')

  def _module_of(self, node: ast.AST, aliases: dict[str, str]):
    """The package module `alias` or `alias.sub` names, or None."""
    if isinstance(node, ast.Name):
      return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
      owner = self._module_of(node.value, aliases)
      if owner is not None and f'{owner}.{node.attr}' in self.modules:
        return f'{owner}.{node.attr}'
    return None

  def imports_of(self, module: str) -> set[str]:
    """External packages `module` imports, through the package's modules.

    Importing a module runs its parent packages' `__init__` first, so they
    count as imported.
    """
    seen, todo, external = set(), [module], set()
    while todo:
      current = todo.pop()
      if current in seen:
        continue
      seen.add(current)
      external |= self.external.get(current, set())
      todo += self.graph.get(current, ())
      if '.' in current:
        todo.append(current.rsplit('.', 1)[0])
    return external


def _is_private(name: str) -> bool:
  return name.startswith('_') and not name.endswith('__')


# -------------------------------------------------------------- the package


@pytest.fixture(scope='module')
def package():
  return Package(REPO, PACKAGE)


def test_no_import_cycles(package):
  cycles = set(package.cycles())
  assert cycles - ALLOWED_CYCLES == set(), (
      'import cycles between tff_ditto modules (module-level imports); '
      'break them, or import inside the function that needs it'
  )
  assert ALLOWED_CYCLES - cycles == set(), 'allow-listed cycles are gone'


def test_no_private_names_across_modules(package):
  found = set(package.private_imports())
  assert (
      found - ALLOWED_PRIVATE_IMPORTS == set()
  ), "a module uses another module's private name: make it public there"
  assert (
      ALLOWED_PRIVATE_IMPORTS - found == set()
  ), 'allow-listed private imports are gone'


@pytest.mark.parametrize('module', TF_FREE_MODULES)
def test_tf_free_modules_import_no_tensorflow(package, module):
  assert module in package.modules
  assert not package.imports_of(module) & set(TF_PACKAGES)


@pytest.mark.parametrize('module', TF_FREE_MODULES)
def test_tf_free_modules_load_no_tensorflow(module):
  """The same, imported in a fresh interpreter (third-party imports too)."""
  check = (
      'import importlib, sys; importlib.import_module(sys.argv[1]); '
      f'print(sorted(set({TF_PACKAGES!r}) & set(sys.modules)))'
  )
  completed = subprocess.run(
      [sys.executable, '-c', check, module],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO),
  )
  assert completed.returncode == 0, process_output.failure_text(
      completed.stderr
  )
  assert completed.stdout.strip() == '[]'


# ------------------------------------------------------- the checker itself


def _write_package(root, files):
  for relative, text in files.items():
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_checker_finds_cycles_private_names_and_tensorflow(tmp_path):
  _write_package(
      tmp_path,
      {
          'pkg/__init__.py': '',
          'pkg/a.py': (
              """
          from pkg import b
          import numpy as np

          def late():
            from pkg import c  # inside a function: no edge
            return c._hidden   # but a private name all the same
          """
          ),
          'pkg/b.py': (
              """
          import pkg.a
          from pkg.c import _helper
          """
          ),
          'pkg/c.py': (
              """
          import tensorflow as tf
          _hidden = 1

          def _helper():
            return _hidden
          """
          ),
          'pkg/sub/__init__.py': 'from pkg import c\n',
          'pkg/sub/d.py': (
              """
          import pkg.sub.e as e
          value = e._private
          """
          ),
          'pkg/sub/e.py': 'from pkg.sub import d\n',
          'pkg/free.py': 'import os\nfrom pkg import names\n',
          'pkg/names.py': 'NAMES = ()\n',
      },
  )
  checked = Package(str(tmp_path), 'pkg')
  assert checked.cycles() == [('pkg.a', 'pkg.b'), ('pkg.sub.d', 'pkg.sub.e')]
  assert checked.private_imports() == [
      'pkg.a -> pkg.c._hidden',
      'pkg.b -> pkg.c._helper',
      'pkg.sub.d -> pkg.sub.e._private',
  ]
  assert checked.imports_of('pkg.c') == {'tensorflow'}
  assert checked.imports_of('pkg.a') == {'numpy', 'tensorflow'}  # via b, c
  assert checked.imports_of('pkg.sub.e') == {'tensorflow'}  # via pkg.sub
  assert checked.imports_of('pkg.free') == {'os'}


def test_checker_accepts_a_clean_package(tmp_path):
  _write_package(
      tmp_path,
      {
          'pkg/__init__.py': 'from pkg.a import VALUE\n',
          'pkg/a.py': 'from pkg import b\nVALUE = b.public\n',
          'pkg/b.py': 'public = 1\n__all__ = ["public"]\n',
      },
  )
  checked = Package(str(tmp_path), 'pkg')
  assert checked.cycles() == []
  assert checked.private_imports() == []
  assert checked.imports_of('pkg.a') == set()
