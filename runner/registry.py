"""A small timm-style registry: register by name, create by name, list names."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from compare.errors import UnknownNameError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._resolvers: list[tuple[Callable[[str], Callable | None], Callable[[], list[str]]]] = []

    def register(self, name: str | None = None) -> Callable[[F], F]:
        def add(fn: F) -> F:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = fn
            return fn

        return add

    def add_resolver(self, resolver: Callable[[str], Callable | None], names: Callable[[], list[str]]) -> None:
        """Names resolved lazily (e.g. `torchvision.<builder>`), listed by `names()`."""
        self._resolvers.append((resolver, names))

    def get(self, name: str) -> Callable:
        if name in self._entries:
            return self._entries[name]
        for resolve, _ in self._resolvers:
            fn = resolve(name)
            if fn is not None:
                return fn
        raise UnknownNameError(self.kind, name, self.names())

    def names(self) -> list[str]:
        extra = [n for _, names in self._resolvers for n in names()]
        return sorted(self._entries) + sorted(extra)
