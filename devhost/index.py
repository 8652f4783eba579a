"""Index the app as the Python worker does, and invoke functions with the host's log lines."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import json
import logging
import sys
import threading
import time
import traceback
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from devhost.annotations import FunctionLoadError, check_function, sdk_converter
from devhost.config import DevHostError
from devhost.outputs import Out, OutputWriter, check_output

log = logging.getLogger("devhost")

SUPPORTED_TRIGGERS = ("httpTrigger", "queueTrigger", "blobTrigger", "timerTrigger")


@dataclass(frozen=True)
class FunctionSpec:
    """One indexed function: its bindings as the worker sends them to the host, and the callable."""

    name: str
    trigger: dict[str, Any]
    bindings: tuple[dict[str, Any], ...]
    user_function: Callable[..., Any]
    wants_context: bool
    outputs: tuple[dict[str, Any], ...] = ()  # output bindings the host writes after a success
    sdk_type: Any = None  # the trigger parameter's SDK type (e.g. a BlobClient): the host sends no data

    @functools.cached_property  # asked on every HTTP request
    def is_async(self) -> bool:
        """An async def function: the worker runs it on its event loop, not on a thread of its pool."""
        return inspect.iscoroutinefunction(self.user_function)

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def function_id(self) -> str:
        """The id the Functions host uses in receipts and poison messages."""
        return f"Host.Functions.{self.name}"


def _import_failure(app_dir: Path, exc: BaseException) -> DevHostError:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if str(app_dir) in f.filename]
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return DevHostError(
        f"function_app.py failed to import (module=function_app, app_dir={app_dir}): "
        f"{type(exc).__name__}: {exc}{where}. No functions were loaded."
    )


def import_app(app_dir: Path) -> func.FunctionRegister:
    """Import function_app from app_dir and return its single FunctionApp. Raises DevHostError."""
    if not (app_dir / "function_app.py").exists():
        raise DevHostError(f"no function_app.py in {app_dir} (use --app-dir)")
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    sys.modules.pop("function_app", None)  # a fresh import per start, as a new worker process would
    try:
        module = importlib.import_module("function_app")
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit from app code alike
        raise _import_failure(app_dir, exc) from exc
    # the Python worker rejects a function_app.py with zero or several FunctionApp instances
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(apps) != 1:
        found = "none" if not apps else f"{len(apps)}"
        raise DevHostError(f"function_app.py (app_dir={app_dir}) must define exactly one "
                           f"func.FunctionApp at module level; found {found}")
    return apps[0]


def index(app: func.FunctionRegister) -> list[FunctionSpec]:
    """Functions with their raw bindings; DevHostError for what the local host cannot serve."""
    try:
        functions = app.get_functions()
    except ValueError as exc:  # e.g. duplicate function names
        raise DevHostError(f"function_app.py indexing failed: {exc}") from exc
    return [_function_spec(f) for f in functions]


def _function_spec(f: func.Function) -> FunctionSpec:
    # typed Optional, but func.Function defaults it to the Python function's __name__ (decorators/function_app.py)
    name = f.get_function_name() or f.get_user_function().__name__
    bindings = tuple(json.loads(raw) for raw in f.get_raw_bindings())
    trigger = _trigger(name, bindings)
    outputs = _outputs(name, bindings, trigger)
    try:
        check_function(name, f.get_user_function(), bindings)
    except (FunctionLoadError, NameError, TypeError) as exc:  # the worker refuses such a function at load
        raise DevHostError(f"function_app.py indexing failed: {exc}") from exc
    params = set(inspect.signature(f.get_user_function()).parameters)
    pytype = typing.get_type_hints(f.get_user_function()).get(trigger["name"])
    sdk_type = pytype if sdk_converter(trigger["type"], pytype) is not None else None
    return FunctionSpec(name, trigger, bindings, f.get_user_function(), "context" in params, outputs, sdk_type)


def _trigger(name: str, bindings: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The one supported trigger binding."""
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        raise DevHostError(f"function {name} has {len(triggers)} triggers; exactly one is required")
    trigger = triggers[0]
    if trigger["type"] not in SUPPORTED_TRIGGERS:
        raise DevHostError(f"function {name}: trigger type {trigger['type']} is not supported by "
                           f"devhost (supported: {', '.join(SUPPORTED_TRIGGERS)})")
    return trigger


def _outputs(name: str, bindings: tuple[dict[str, Any], ...], trigger: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The output bindings devhost writes; DevHostError for any other binding but the http $return."""
    outputs = []
    for b in bindings:
        if b is trigger or (b.get("type") == "http" and b.get("name") == "$return"):
            continue
        if b.get("direction") != "OUT":
            raise DevHostError(f"function {name}: input binding type {b.get('type')} (name={b.get('name')}) "
                               "is not supported by devhost (only triggers, queue outputs and the http $return)")
        check_output(name, b)
        outputs.append(b)
    return tuple(outputs)


@dataclass(frozen=True)
class Context:
    """The subset of func.Context a function can read locally."""

    invocation_id: str
    function_name: str
    function_directory: str
    retry_context: None = None
    trace_context: None = None


@dataclass(frozen=True)
class _Call:
    kwargs: dict[str, Any]  # the function's arguments: trigger, output bindings, context
    outs: dict[str, Out[Any]]


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


class Invoker:
    """Runs functions with the host's Executing/Executed log lines and counts what is in flight."""

    def __init__(self, app_dir: Path) -> None:
        self._app_dir = app_dir
        self._inflight = 0
        self._idle = threading.Condition()
        self.outputs: OutputWriter | None = None  # set by the host once it knows its storage

    def __call__(self, spec: FunctionSpec, reason: str, arg: Any) -> Any:
        """Invoke `spec` with its trigger argument; re-raises what the function (or an output write) raised.

        An async function runs to completion on an event loop of its own on the caller's thread (the trigger
        listeners' threads have none)."""
        with self._invocation(spec, reason, arg) as call:
            result = spec.user_function(**call.kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            self._write_outputs(spec, call.outs)
            return result

    async def call_async(self, spec: FunctionSpec, reason: str, arg: Any) -> Any:
        """Invoke the async function `spec` on the caller's event loop, as the worker runs async functions."""
        with self._invocation(spec, reason, arg) as call:
            result = await spec.user_function(**call.kwargs)
            self._write_outputs(spec, call.outs)
            return result

    @contextlib.contextmanager
    def _invocation(self, spec: FunctionSpec, reason: str, arg: Any) -> Iterator[_Call]:
        """The host's Executing/Executed lines (Failed with the exception, re-raised) around one invocation."""
        invocation_id = str(uuid.uuid4())
        outs: dict[str, Out[Any]] = {b["name"]: Out() for b in spec.outputs}
        kwargs: dict[str, Any] = {spec.trigger["name"]: arg, **outs}
        if spec.wants_context:
            kwargs["context"] = Context(invocation_id, spec.name, str(self._app_dir))
        with self._idle:
            self._inflight += 1
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        started = time.monotonic()
        try:
            yield _Call(kwargs, outs)
        except Exception:
            took = (time.monotonic() - started) * 1000
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms) "
                          "Exception while executing function: Functions.%s", spec.name, invocation_id,
                          took, spec.name)
            raise
        else:
            took = (time.monotonic() - started) * 1000
            log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", spec.name, invocation_id, took)
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _write_outputs(self, spec: FunctionSpec, outs: dict[str, Out[Any]]) -> None:
        if not outs:
            return
        if self.outputs is None:
            raise DevHostError(f"function {spec.name}: output bindings but no output writer")
        self.outputs.write(spec.name, spec.outputs, outs)

    @property
    def inflight(self) -> int:
        with self._idle:
            return self._inflight

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation runs, up to timeout seconds; True when idle."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._inflight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            return self._inflight == 0
