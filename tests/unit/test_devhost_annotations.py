"""The worker's load-time check of annotations against bindings, as devhost copies it."""
from __future__ import annotations

import json
import typing

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk
import pytest

from devhost.annotations import FunctionLoadError, check_function, sdk_converter


def _indexed(app: func.FunctionApp) -> tuple[str, typing.Callable[..., typing.Any], tuple[dict[str, typing.Any], ...]]:
    [f] = app.get_functions()
    return f.get_function_name(), f.get_user_function(), tuple(json.loads(b) for b in f.get_raw_bindings())


def test_matching_annotations_load() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="q2", connection="AzureWebJobsStorage")
    def relay(msg: func.QueueMessage, out: func.Out[typing.List[str]]) -> None:  # noqa: UP006
        """Fixture."""

    check_function(*_indexed(app))


def test_function_whose_annotation_does_not_match_its_binding_is_refused_like_the_worker() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")
    def wrong(msg: func.HttpRequest) -> None:
        """Fixture."""

    with pytest.raises(FunctionLoadError) as err:
        check_function(*_indexed(app))
    assert str(err.value) == ('cannot load the wrong function: type of msg binding in function.json "queueTrigger" '
                              'does not match its Python annotation "HttpRequest"')


def test_pep585_list_in_a_queue_output_is_refused_as_the_worker_refuses_it() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="q2", connection="AzureWebJobsStorage")
    def relay(msg: func.QueueMessage, out: func.Out[list[str]]) -> None:
        """Fixture: the azure-functions converter recognises typing.List only."""

    with pytest.raises(FunctionLoadError, match='binding in function.json "queue" does not match its Python '
                                                'annotation "list"'):
        check_function(*_indexed(app))


def test_output_binding_without_out_annotation_is_refused() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="q2", connection="AzureWebJobsStorage")
    def relay(msg: func.QueueMessage, out: str) -> None:
        """Fixture."""

    with pytest.raises(FunctionLoadError, match='binding out is declared to have the "out" direction'):
        check_function(*_indexed(app))


def test_parameter_without_binding_is_refused_with_the_workers_message() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")
    def extra(msg: func.QueueMessage, other: str) -> None:
        """Fixture."""

    with pytest.raises(FunctionLoadError, match="declared in Python but not in function.json: {'other'}"):
        check_function(*_indexed(app))


def test_http_return_annotation_must_match_the_http_binding() -> None:
    app = func.FunctionApp()

    @app.route(route="x")
    def bad(req: func.HttpRequest) -> func.QueueMessage:
        """Fixture."""
        raise AssertionError

    with pytest.raises(FunctionLoadError, match='Python return annotation "QueueMessage" does not match binding'):
        check_function(*_indexed(app))


def test_a_blob_sdk_type_loads_on_a_blob_trigger_and_nowhere_else() -> None:
    """The blob extension's BlobClient is a deferred binding for blobTrigger (the worker asks the extension's
    registry); on a queue trigger it is refused like any other mismatch."""
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="client", path="c/{name}", connection="AzureWebJobsStorage")
    def on_blob(client: blob_sdk.BlobClient) -> None:
        """Fixture."""

    check_function(*_indexed(app))
    assert sdk_converter("blobTrigger", blob_sdk.BlobClient) is not None
    assert sdk_converter("blobTrigger", func.InputStream) is None

    queued = func.FunctionApp()

    @queued.queue_trigger(arg_name="client", queue_name="q", connection="AzureWebJobsStorage")
    def on_message(client: blob_sdk.BlobClient) -> None:
        """Fixture."""

    with pytest.raises(FunctionLoadError, match='"queueTrigger" does not match its Python annotation "BlobClient"'):
        check_function(*_indexed(queued))
