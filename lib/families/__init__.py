"""The model families, by params section name.

Every module in this package that defines `FAMILY` (an instance of a `Family` subclass) is registered when the package
is imported. A family kept elsewhere (a user's package, or the tests') is registered by naming its module's dotted
path in the params' `families` list (`find`), or by `register`. The params' `families` list also says which of the
known families a run trains. Adding a family is its module, its section in the params files and its training
notebook; see docs/architecture.md, "Adding a model family".
"""
from __future__ import annotations

import importlib
import pkgutil

from lib.families.base import Bundle, Export, Family, count_parameters, share_encoder

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make a family known to the params, training, evaluation, notebooks and charts."""
    missing = [attribute for attribute in Family.REQUIRED if not hasattr(family, attribute)]
    if missing:
        raise TypeError(f"{type(family).__name__}: a model family sets {', '.join(missing)}")
    known = FAMILIES.get(family.name)
    if known is not None and type(known) is not type(family):
        raise ValueError(f"model family {family.name!r}: already registered by {type(known).__module__}")
    FAMILIES[family.name] = family
    return family


def get(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"model family: expected one of {', '.join(names())}, got {name!r}") from None


TINY = "tiny, random weights: checks the pipeline, not a model"


def model_label(params, name: str) -> str:
    """What reports, charts and cards call the model of family `name` in a run: its label, with TINY when the run
    built it with random weights (`build_tiny`)."""
    label = get(name).label
    return f"{label} ({TINY})" if getattr(params.section(name), "build_tiny", False) else label


def for_model_type(model_type: str | None) -> Family:
    """The family whose saved models' config.json says `model_type` (ValueError naming the known ones)."""
    found = [family for family in FAMILIES.values() if family.model_type and family.model_type == model_type]
    if not found:
        known = ", ".join(f"{f.model_type} ({f.name})" for f in FAMILIES.values() if f.model_type)
        raise ValueError(f"no model family reads a {model_type!r} model: expected one of {known}")
    return found[0]


def names() -> tuple[str, ...]:
    """Every known family, in the order of their training notebooks (the run's own: `Params.family_names`)."""
    return tuple(sorted(FAMILIES, key=lambda name: FAMILIES[name].notebook))


def find(entry: str) -> Family:
    """The family an entry of the params' `families` list names: a known family's name, or the dotted path of a
    module that defines `FAMILY` (imported and registered here); LookupError saying why when it names none."""
    if entry in FAMILIES:
        return FAMILIES[entry]
    if not isinstance(entry, str) or "." not in entry:
        raise LookupError(f"no model family {entry!r}: expected one of {', '.join(names())}, or the dotted path of "
                          "a module that defines FAMILY")
    try:
        module = importlib.import_module(entry)
    except ImportError as err:
        raise LookupError(f"{entry}: the module cannot be imported ({err})") from None
    family = getattr(module, "FAMILY", None)
    if not isinstance(family, Family):
        raise LookupError(f"{entry}: the module defines no FAMILY (an instance of lib.families.Family)")
    try:
        return register(family)
    except (TypeError, ValueError) as err:
        raise LookupError(f"{entry}: {err}") from None


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        family = getattr(importlib.import_module(f"{__name__}.{module.name}"), "FAMILY", None)
        if family is not None:
            register(family)


_discover()

__all__ = ["Bundle", "Export", "Family", "FAMILIES", "count_parameters", "find", "for_model_type", "get", "names",
           "register", "share_encoder"]
