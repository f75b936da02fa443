"""A credential that never prints itself: API keys, passwords, signing secrets.

Its own module, below everything that holds one (settings, provider adapters, SigV4, the store),
so that none of them needs the settings module for it.
"""

from __future__ import annotations


class Secret:
    """A credential. ``str()`` and ``repr()`` never show it; :meth:`reveal` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
