"""The Python worker's load-time check of parameter annotations against binding types.

The worker refuses to load a function whose parameters and bindings disagree, before any trigger
fires (azure_functions_worker/functions.py, Registry.validate_function_params and
get_function_return_type, in Azure/azure-functions-python-worker); devhost refuses it at start-up
with the same messages, so a function that loads here loads on Azure.
"""
from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import azure.functions as func

OUT = "OUT"


class FunctionLoadError(RuntimeError):
    def __init__(self, function_name: str, msg: str) -> None:
        super().__init__(f"cannot load the {function_name} function: {msg}")


def _converter(binding_type: str) -> Any:
    """The library's converter for a binding type; None means the worker's GenericBinding."""
    return func.get_binding_registry().get(binding_type)


def _accepts(binding_type: str, pytype: Any, *, output: bool) -> bool:
    converter = _converter(binding_type)
    if converter is None:  # GenericBinding
        allowed: tuple[type, ...] = (str, bytes, bytearray) if output else (str, bytes)
        return isinstance(pytype, type) and issubclass(pytype, allowed)
    check = converter.check_output_type_annotation if output else converter.check_input_type_annotation
    return bool(check(pytype))


def sdk_converter(binding_type: str, pytype: Any) -> Any:
    """The worker extension's converter when `pytype` is an SDK type it binds for this binding (a deferred binding:
    the host sends a reference, not the data), else None. The worker asks the same registry
    (azurefunctions.extensions.base, installed with e.g. azurefunctions-extensions-bindings-blob)."""
    try:
        from azurefunctions.extensions.base import get_binding_registry
    except ImportError:  # no extension installed: no SDK types
        return None
    registry = get_binding_registry()
    converter = registry.get(binding_type)
    if converter is None or not registry.check_supported_type(pytype):
        return None
    return converter if converter.check_input_type_annotation(pytype) else None


def _is_out(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and origin.__name__ == "Out"


def _param_type(name: str, param: str, annotation: Any, is_out: bool) -> Any:
    if not is_out:
        pytype = annotation
    else:
        args = typing.get_args(annotation)
        if len(args) != 1:
            raise FunctionLoadError(name, f"binding {param} has invalid Out annotation {annotation!r}")
        pytype = args[0]
    if not isinstance(pytype, type) and typing.get_origin(pytype) is None:
        raise FunctionLoadError(name, f"binding {param} has invalid non-type annotation {annotation!r}")
    return pytype


def _check_param(name: str, param: str, binding: dict[str, Any], annotation: Any) -> None:
    is_out, is_binding_out = _is_out(annotation), binding.get("direction") == OUT
    pytype = _param_type(name, param, annotation, is_out)
    if is_binding_out and not is_out:
        raise FunctionLoadError(name, f'binding {param} is declared to have the "out" direction, but its '
                                      "annotation in Python is not a subclass of azure.functions.Out")
    if not is_binding_out and is_out:
        raise FunctionLoadError(name, f'binding {param} is declared to have the "in" direction in '
                                      "function.json, but its annotation is azure.functions.Out in Python")
    if not is_out and sdk_converter(str(binding["type"]), pytype) is not None:
        return
    binding_type = "generic" if pytype in (str, bytes) else str(binding["type"])
    if not _accepts(binding_type, pytype, output=is_out):
        type_name = getattr(pytype, "__name__", repr(pytype))
        raise FunctionLoadError(name, f'type of {param} binding in function.json "{binding["type"]}" does not '
                                      f'match its Python annotation "{type_name}"')


def check_function(name: str, function: Callable[..., Any], bindings: tuple[dict[str, Any], ...]) -> None:
    """Raise FunctionLoadError where the worker would refuse to load this function."""
    params = dict(inspect.signature(function).parameters)
    bound = {b["name"]: b for b in bindings if b["name"] != "$return"}
    hints = typing.get_type_hints(function)
    if "context" in params and "context" not in bound:
        params.pop("context")
    if set(params) - set(bound):
        raise FunctionLoadError(name, "the following parameters are declared in Python but not in "
                                      f"function.json: {set(params) - set(bound)!r}")
    if set(bound) - set(params):
        raise FunctionLoadError(name, "the following parameters are declared in function.json but not in "
                                      f"Python: {set(bound) - set(params)!r}")
    for param in params:
        if param in hints:
            _check_param(name, param, bound[param], hints[param])
    _check_return(name, bindings, hints)


def _check_return(name: str, bindings: tuple[dict[str, Any], ...], hints: dict[str, Any]) -> None:
    returned = next((b for b in bindings if b["name"] == "$return"), None)
    if returned is None or "return" not in hints:
        return
    pytype = hints["return"]
    if _is_out(pytype):
        raise FunctionLoadError(name, "return annotation should not be azure.functions.Out")
    if not isinstance(pytype, type):
        raise FunctionLoadError(name, f"has invalid non-type return annotation {pytype!r}")
    if not _accepts(str(returned["type"]), pytype, output=True):
        raise FunctionLoadError(name, f'Python return annotation "{pytype.__name__}" does not match binding '
                                      f'type "{returned["type"]}"')
