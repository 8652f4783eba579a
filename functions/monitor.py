"""Monitoring: a timer sends one window per champion to monitor-requests; a queue function reports it.

Admin routes run a window now and read the reports; the feedback route takes ground-truth labels.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared import feedback, names, paths, registry
from shared.errors import BadRequest, NotFound, Unavailable
from shared.http import handles_errors, json_body, json_response
from shared.lifecycle.stages import app_context
from shared.messages import MonitorRequest, parse_message
from shared.monitoring.report import list_reports, note_failure, run_monitor
from shared.outbox import Messages

bp = func.Blueprint()


@bp.function_name("monitor_timer")
@bp.timer_trigger(arg_name="timer", schedule="%MLOPS_MONITOR_SCHEDULE%", run_on_startup=False)
@bp.queue_output(arg_name="windows", queue_name=paths.MONITOR_QUEUE, connection="AzureWebJobsStorage")
def monitor_timer(timer: func.TimerRequest, windows: func.Out[Messages]) -> None:
    """One message per model with a champion; the window ends at this occurrence (so a retry is the same window)."""
    ctx, outbox = app_context().with_outbox()
    end = ctx.clock.now().astimezone(UTC).replace(second=0, microsecond=0)
    for model in registry.list_models(ctx.storage):
        if model.aliases.champion is not None:
            ctx.send(paths.MONITOR_QUEUE, MonitorRequest(model=model.name, window_end=end).to_payload())
    outbox.bind({paths.MONITOR_QUEUE: windows})
    logging.info("monitor_timer: %d window(s) ending %s sent to %s", len(outbox.messages.get(paths.MONITOR_QUEUE, [])),
                 end.isoformat(), paths.MONITOR_QUEUE)


@bp.function_name("monitor")
@bp.queue_trigger(arg_name="msg", queue_name=paths.MONITOR_QUEUE, connection="AzureWebJobsStorage")
@bp.queue_output(arg_name="trainings", queue_name=paths.TRAIN_QUEUE, connection="AzureWebJobsStorage")
def monitor(msg: func.QueueMessage, trainings: func.Out[Messages]) -> None:
    """The monitoring report of one window (idempotent per model, version and window); a retrain it decides
    on leaves through the output binding."""
    request = parse_message(MonitorRequest, msg.get_body())
    ctx, outbox = app_context().with_outbox()
    try:
        report = run_monitor(ctx, request.model, window_end=request.window_end, trigger=request.trigger)
    except (NotFound, Unavailable) as exc:  # the model or its champion went away: nothing to monitor
        logging.warning("monitor: %s: %s", request.model, exc.message)
        return
    except Exception as exc:  # the host retries; once it gives up, monitor_poison reports this reason
        note_failure(ctx, request.model, request.window_end, exc, msg.dequeue_count or 1)
        raise
    outbox.bind({paths.TRAIN_QUEUE: trainings})
    logging.info("monitor: %s v%s drift=%s retrain=%s", request.model, report["version"], report["dataset_drift"],
                 report["decision"]["retrain"])


@bp.function_name("monitor_now")
@bp.route(route="registry/models/{model}/monitor", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@bp.queue_output(arg_name="trainings", queue_name=paths.TRAIN_QUEUE, connection="AzureWebJobsStorage")
@handles_errors
def monitor_now(req: func.HttpRequest, trainings: func.Out[Messages]) -> func.HttpResponse:
    """Run one window and answer its report: body {"window_end": ISO time} (optional; default now)."""
    model = names.model_name(req.route_params.get("model"))
    raw = json_body(req).get("window_end")
    try:
        end = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        end = None
    if raw is not None and (end is None or end.tzinfo is None):
        raise BadRequest(f"window_end ({str(raw)[:40]!r}) must be an ISO 8601 time with a zone, e.g. "
                         "2026-11-24T12:00:00Z")
    ctx, outbox = app_context().with_outbox()
    report = run_monitor(ctx, model, window_end=end, trigger="api")
    outbox.bind({paths.TRAIN_QUEUE: trainings})
    return json_response(report)


@bp.function_name("list_monitoring")
@bp.route(route="registry/models/{model}/monitoring", methods=["GET"])
@handles_errors
def list_monitoring(req: func.HttpRequest) -> func.HttpResponse:
    """Monitoring reports, latest first."""
    model = names.model_name(req.route_params.get("model"))
    return json_response({"reports": list_reports(app_context(), model)})


@bp.function_name("latest_monitoring")
@bp.route(route="registry/models/{model}/monitoring/latest", methods=["GET"])
@handles_errors
def latest_monitoring(req: func.HttpRequest) -> func.HttpResponse:
    """The newest monitoring report."""
    model = names.model_name(req.route_params.get("model"))
    reports = list_reports(app_context(), model, limit=1)
    if not reports:
        raise NotFound(f"monitoring report (model={model}) not found: none computed yet; POST .../monitor runs one")
    return json_response(reports[0])


@bp.function_name("feedback")
@bp.route(route="models/{model}/feedback", methods=["POST"])
@handles_errors
def post_feedback(req: func.HttpRequest) -> func.HttpResponse:
    """Ground-truth labels by prediction id (JSON or CSV); 202 with accepted/duplicates/replaced/unmatched."""
    model = names.model_name(req.route_params.get("model"))
    labels = feedback.parse_feedback(req.get_body(), req.headers.get("content-type"))
    ctx = app_context()
    if not registry.model_exists(ctx.storage, model):
        raise NotFound(f"model (name={model}) not found")
    return json_response(feedback.record(ctx.storage, ctx.clock, model, labels).to_json(), 202)
