"""The model families a run trains, evaluates and charts, by params section name.

Every module in this package that defines `FAMILY` (an instance of a `Family` subclass) is registered, in the order
of the notebooks that train them. Adding a family is its module here, its section in the params files and its
training notebook; see the README's "Adding a model family".
"""
from __future__ import annotations

import importlib
import pkgutil

from lib.families.base import Bundle, Family, count_parameters, share_encoder

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make a family known to the params, training, evaluation, notebooks and charts."""
    FAMILIES[family.name] = family
    return family


def get(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"model family: expected one of {', '.join(FAMILIES)}, got {name!r}") from None


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def _discover() -> None:
    found = []
    for module in pkgutil.iter_modules(__path__):
        family = getattr(importlib.import_module(f"{__name__}.{module.name}"), "FAMILY", None)
        if family is not None:
            found.append(family)
    for family in sorted(found, key=lambda f: f.notebook):
        register(family)


_discover()

__all__ = ["Bundle", "Family", "FAMILIES", "count_parameters", "get", "names", "register", "share_encoder"]
