"""A griffe extension for the documentation site (mkdocs.yml): the reference says only public names.

* Docstrings name other public objects the way help() readers know, as ``:class:`Image```,
  ``:attr:`Operation.class_``` or ``:func:`load_remotes```. On the site each becomes a
  cross-reference to ``incus_images.<name>``, so a role naming something the API reference does
  not document fails ``mkdocs build --strict``.
* Signatures use private type aliases and constants (``cert: CertificateArg``, ``timeout:
  float | None = DEFAULT_TIMEOUT``) that no page documents: they are shown as what they stand
  for (``str | PathLike[str] | ...``, ``30.0``).
* An attribute that ``__init__`` sets from its argument (``self.server = server``) would read
  ``server = server``: its value is left out.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import griffe

PACKAGE = "incus_images"

#: :role:`Name` or :role:`~Name`, the roles our docstrings use.
_ROLE = re.compile(r":(?:class|func|attr|meth|exc|data):`~?([A-Za-z_][\w.]*)`")


def _linked(text: str) -> str:
    return _ROLE.sub(lambda match: f"[`{match[1]}`][{PACKAGE}.{match[1]}]", text)


def _private_constant(name: griffe.ExprName) -> griffe.Attribute | None:
    """The module-level alias or constant of a private module that ``name`` refers to."""
    path = name.canonical_path
    module, _, attribute = path.rpartition(".")
    if not path.startswith(f"{PACKAGE}._") or not module:
        return None
    try:
        target = name.parent.modules_collection.get_member(path)  # type: ignore[union-attr]
    except (KeyError, AttributeError, griffe.AliasResolutionError):
        return None
    if isinstance(target, griffe.Alias):
        try:
            target = target.final_target
        except griffe.AliasResolutionError:
            return None
    if not isinstance(target, griffe.Attribute) or target.value is None:
        return None
    if not isinstance(target.parent, griffe.Module) or attribute.startswith("__"):
        return None
    return target


def _expanded(expression: Any) -> Any:
    """The expression with each private alias or constant replaced by its value."""
    if isinstance(expression, griffe.ExprName):
        constant = _private_constant(expression)
        return expression if constant is None else _expanded(constant.value)
    if isinstance(expression, list):
        items = [_expanded(item) for item in expression]
        return (
            items if any(a is not b for a, b in zip(items, expression, strict=True)) else expression
        )
    if not isinstance(expression, griffe.Expr) or not dataclasses.is_dataclass(expression):
        return expression
    changes = {}
    for field in dataclasses.fields(expression):
        if field.name == "parent" or not field.init:
            continue
        value = getattr(expression, field.name)
        new = _expanded(value)
        if new is not value:
            changes[field.name] = new
    return dataclasses.replace(expression, **changes) if changes else expression


class PublicReference(griffe.Extension):
    """Rewrite the package's docstrings and signatures as described in the module docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name == PACKAGE:
            self._rewrite(pkg, seen=set())

    def _rewrite(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = _linked(obj.docstring.value)
        if isinstance(obj, griffe.Function):
            obj.returns = _expanded(obj.returns)
            for parameter in obj.parameters:
                parameter.annotation = _expanded(parameter.annotation)
                parameter.default = _expanded(parameter.default)
        if isinstance(obj, griffe.Attribute) and obj.labels == {"instance-attribute"}:
            # Set in __init__ only; class-level fields (attrs models) keep their defaults.
            obj.value = None
        for member in obj.members.values():
            if not member.is_alias:
                self._rewrite(member, seen)  # type: ignore[arg-type]
