"""Reuse of built TFF computations between runs of one Python process.

Building a run's computations (tracing the Ditto or baseline process, the
aggregator and the evaluations) takes seconds, and TFF compiles each new
computation object again the first time it is invoked. A grid of short runs
(`scripts/reproduce.py --quick`) spends most of its time there. A
`ComputationCache` passed to several `tff_ditto.training.ExperimentRunner`s
keeps every built computation under a key made of exactly the inputs its
builder receives, so a later run whose builders would receive the same inputs
gets the very same object (and TFF's compiled form of it, which the execution
context caches per computation object).

Reuse is safe because a built process holds no run: its state (model,
optimizer and aggregator state, e.g. bucketing's round counter) is what
`initialize()` returns, and everything per run (client-state file paths,
attack instructions and seeds, batches) is client data of each call. The one
thing a process keeps from its build is the file-gather directory of the
robust aggregators (`tff_ditto.aggregators.gather`), which one aggregation at
a time may use: runs sharing a cache must run one after the other, not
concurrently.

A key must hold every builder input, or a wrong computation is silently
reused, and nothing else, or nothing is reused. Objects without a value
semantics (a `model_fn`, a caller's aggregation factory) enter keys by
identity (`ByIdentity`): reuse then needs the same object, e.g. one `model_fn`
per dataset.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import Any, Optional, TypeVar
import weakref

T = TypeVar('T')


class ByIdentity:
  """A hashable stand-in for an object, equal only to stand-ins of itself.

  Holds a reference to the object, so its `id` cannot be reused by another
  object while a key containing it lives.
  """

  __slots__ = ('value',)

  def __init__(self, value: Any):
    self.value = value

  def __eq__(self, other: object) -> bool:
    return isinstance(other, ByIdentity) and other.value is self.value

  def __hash__(self) -> int:
    return id(self.value)

  def __repr__(self) -> str:
    return f'ByIdentity({type(self.value).__name__} at {id(self.value):#x})'


class ComputationCache:
  """Built computations by kind and key, with build and reuse counts.

  Attributes:
    builds: Per kind, how many objects were built.
    hits: Per kind, how many requests got an object built before.
  """

  def __init__(self):
    self._entries: dict[tuple[str, Hashable], Any] = {}
    self.builds: collections.Counter[str] = collections.Counter()
    self.hits: collections.Counter[str] = collections.Counter()

  def __len__(self) -> int:
    return len(self._entries)

  def get_or_build(self, kind: str, key: Hashable, build: Callable[[], T]) -> T:
    """The object cached under (kind, key), built by `build()` if absent.

    Args:
      kind: What is built (e.g. 'ditto_process'); keys of different kinds
        never collide.
      key: Every input the builder receives (hashable).
      build: No-arg builder, called only when nothing is cached.

    Returns:
      The cached or newly built object.

    Raises:
      TypeError: If the key is not hashable.
    """
    entry_key = (kind, key)
    if entry_key in self._entries:
      self.hits[kind] += 1
      return self._entries[entry_key]
    value = build()
    self._entries[entry_key] = value
    self.builds[kind] += 1
    return value

  def describe(self) -> str:
    """One line: objects built and reused, in all and per kind."""
    kinds = sorted(set(self.builds) | set(self.hits))
    per_kind = ', '.join(
        f'{kind} {self.builds[kind]}/{self.hits[kind]}' for kind in kinds
    )
    return (
        f'{sum(self.builds.values())} computations built, '
        f'{sum(self.hits.values())} reused (built/reused: {per_kind})'
    )


def get_or_build(
    cache: Optional[ComputationCache],
    kind: str,
    key: Hashable,
    build: Callable[[], T],
) -> T:
  """`cache.get_or_build(kind, key, build)`, or `build()` without a cache.

  Args:
    cache: The cache, or None to build every time.
    kind: See `ComputationCache.get_or_build`.
    key: See `ComputationCache.get_or_build`.
    build: See `ComputationCache.get_or_build`.

  Returns:
    The cached or newly built object.
  """
  if cache is None:
    return build()
  return cache.get_or_build(kind, key, build)


class PerObjectMemo:
  """Values derived from an object (e.g. a `model_fn`), built once per key.

  Keyed weakly by the object, so entries go with it and an `id` is never
  mistaken for another object's. Objects that cannot be weakly referenced
  get no memo: `build()` runs on every call.
  """

  def __init__(self):
    self._values: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

  def get_or_build(
      self, owner: Any, key: Hashable, build: Callable[[], T]
  ) -> T:
    """The value of `owner` under `key`, built by `build()` if absent.

    Args:
      owner: The object the value is derived from.
      key: Further inputs of `build` (hashable).
      build: No-arg builder.

    Returns:
      The memoized or newly built value (the same object on every hit).
    """
    try:
      values = self._values.setdefault(owner, {})
    except TypeError:  # Not weak-referenceable.
      return build()
    if key not in values:
      values[key] = build()
    return values[key]
