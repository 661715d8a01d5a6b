"""Finding handlers in Python modules, for ``python -m tasker_worker --handlers SPEC``.

A SPEC is one of:

- ``package.module``: every handler defined or imported at the module's top level —
  :class:`~tasker_worker.StepHandler` subclasses (except ones that do not implement ``process``
  or whose name starts with ``_``), ``StepHandler`` instances, and ``@handler`` functions; or,
  if the module has a top-level ``registry``/``handlers`` :class:`~tasker_worker.HandlerRegistry`,
  that registry alone;
- ``package.module:attribute``: that attribute — a registry, a mapping ``{handler_class:
  handler}``, a list of handlers, or one handler;
- ``path/to/file.py`` (optionally ``:attribute``): the same for a file, loaded by path.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from .errors import ConfigurationError
from .handlers import HandlerRegistry, StepHandler, as_registry, handler_class_of

_REGISTRY_NAMES = ("registry", "handlers")


def load_handlers(specs: list[str]) -> HandlerRegistry:
    """One registry with the handlers of every SPEC."""
    registry = HandlerRegistry()
    for spec in specs:
        registry.update(load_spec(spec))
    return registry


def load_spec(spec: str) -> HandlerRegistry:
    module_part, attribute = _split(spec)
    module = _import(module_part)
    if attribute is not None:
        try:
            target = module
            for part in attribute.split("."):
                target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{module_part} has no attribute {attribute!r}") from None
        return as_registry(target)
    registry = discover(module)
    if len(registry) == 0:
        raise ConfigurationError(
            f"no handlers found in {module_part}: define StepHandler subclasses or @handler "
            "functions there, or name an attribute (module:attribute)"
        )
    return registry


def discover(module: ModuleType) -> HandlerRegistry:
    """The handlers at the top level of ``module`` (see the module documentation)."""
    for name in _REGISTRY_NAMES:
        candidate = getattr(module, name, None)
        if isinstance(candidate, HandlerRegistry):
            return candidate
    registry = HandlerRegistry()
    for name, value in sorted(vars(module).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, type):
            if (
                not issubclass(value, StepHandler)
                or value is StepHandler
                or value.process is StepHandler.process
            ):
                continue
        if handler_class_of(value) is not None:
            registry.register(value)
    return registry


def _split(spec: str) -> tuple[str, str | None]:
    # A Windows drive letter ("C:\\...") is not an attribute separator.
    head, separator, tail = spec.rpartition(":")
    if separator and tail and not tail.startswith(("\\", "/")) and head and len(head) > 1:
        return head, tail
    return spec, None


def _import(module_part: str) -> ModuleType:
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        return _import_path(module_part)
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as error:
        if error.name and module_part.startswith(error.name):
            raise ConfigurationError(
                f"cannot import {module_part!r}: {error} (is its directory on sys.path? "
                "run from the directory that contains it, or pass a file path)"
            ) from None
        raise


def _import_path(path: str) -> ModuleType:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigurationError(f"no such handler file: {path}")
    name = "tasker_handlers_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so the file can import its neighbours
    spec.loader.exec_module(module)
    return module


__all__ = ["discover", "load_handlers", "load_spec"]
