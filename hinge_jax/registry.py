"""Components chosen by name: one small registry per kind, with a clear error for unknown names."""

from typing import Callable, Generic, TypeVar

from hinge_jax.errors import ConfigError

T = TypeVar('T')


class Registry(Generic[T]):
  """Maps names to components; `get` names the config field and the valid choices on a miss."""

  def __init__(self, field: str):
    self.field = field
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(item: T) -> T:
      self._items[name] = item
      return item
    return decorator

  def add(self, name: str, item: T) -> None:
    self._items[name] = item

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(sorted(self._items))

  def __contains__(self, name: str) -> bool:
    return name in self._items

  def get(self, name: str) -> T:
    if name not in self._items:
      raise ConfigError(
          f'{self.field}={name!r} is not known; choose one of: {", ".join(self.names)}')
    return self._items[name]
