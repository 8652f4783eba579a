"""Command line for data scientists: `python -m shared.cli <command> ...`.

Talks to storage directly (AzureWebJobsStorage, the same setting the app reads; locally from
local.settings.json when present) for specs, data drops and the registry, and to the HTTP API
for scoring.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared import names, paths, registry, runs
from shared.clock import SYSTEM_CLOCK
from shared.errors import PipelineError
from shared.lifecycle import releases
from shared.lifecycle.records import RunStatus
from shared.lifecycle.stages import Context
from shared.messages import RetrainRequest
from shared.settings import STORAGE, Settings
from shared.storage import AzureStorage


def _context(args: argparse.Namespace) -> Context:
    storage = _storage(args)
    return Context(storage, Settings.from_env())


def _load_local_settings() -> None:
    """Use local.settings.json Values for anything the environment does not set (as the host does)."""
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = Path(name)
        if path.exists():
            for key, value in json.loads(path.read_text()).get("Values", {}).items():
                os.environ.setdefault(key, str(value))
            return


def _storage(args: argparse.Namespace) -> AzureStorage:
    env = dict(os.environ)
    if args.connection_string:
        env[STORAGE] = args.connection_string
    return AzureStorage.from_settings(Settings.from_env(env))


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_upload_spec(args: argparse.Namespace) -> None:
    spec, digest = registry.upload_spec(_storage(args), Path(args.file).read_bytes(), Path(args.file).name,
                                        origin={"via": "cli", "file": args.file})
    _print({"model": spec.name, "spec_hash": digest})


def cmd_drop(args: argparse.Namespace) -> None:
    path = Path(args.file)
    name = args.name or path.name
    _storage(args).write(paths.DATASETS, f"{args.model}/{name}", path.read_bytes(), create_only=True)
    _print({"dropped": f"{paths.DATASETS}/{args.model}/{name}"})


def cmd_models(args: argparse.Namespace) -> None:
    _print([m.to_json() for m in registry.list_models(_storage(args))])


def cmd_versions(args: argparse.Namespace) -> None:
    rows = registry.list_versions(_storage(args), args.model)
    _print([{"version": v.version, "status": v.status, "run_id": v.run_id, "created": v.created,
             "decision": (v.decision or {}).get("reasons")} for v in rows])


def cmd_show(args: argparse.Namespace) -> None:
    _print(registry.get_version(_storage(args), args.model, args.version).to_json())


def cmd_runs(args: argparse.Namespace) -> None:
    _print([{"run_id": r.run_id, "status": r.status, "created": r.created, "version": r.version, "error": r.error}
            for r in runs.list_runs(_storage(args), args.model)])


def cmd_run(args: argparse.Namespace) -> None:
    _print(runs.get(_storage(args), args.model, args.run_id).to_json())


def cmd_approve(args: argparse.Namespace) -> None:
    _print(releases.approve(_context(args), args.model, args.version, by=args.by).to_json())


def cmd_reject(args: argparse.Namespace) -> None:
    _print(releases.reject(_context(args), args.model, args.version, by=args.by, reason=args.reason))


def cmd_rollback(args: argparse.Namespace) -> None:
    body = {k: v for k, v in (("from", args.from_version), ("to", args.to)) if v is not None}
    _print(releases.rollback(_context(args), args.model, body, by=args.by).to_json())


def cmd_retrain(args: argparse.Namespace) -> None:
    run_id = runs.new_run_id()
    runs.record(_storage(args), SYSTEM_CLOCK, args.model, run_id, RunStatus.RECEIVED, detail=args.reason)
    request = RetrainRequest(model=args.model, reason=args.reason, run_id=run_id)
    _storage(args).enqueue(paths.RETRAIN_QUEUE, request.to_payload())
    _print({"run_id": run_id, "queued": paths.RETRAIN_QUEUE})


# -- over the HTTP API (function key; admin actions take the admin key) ------------------------------

DEFAULT_URL = "http://127.0.0.1:7071/api"


def _devhost_key(kind: str) -> str | None:
    """The local host's keys from local.settings(.sample).json, for a default against a local URL."""
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = Path(name)
        if path.exists():
            dev = json.loads(path.read_text()).get("DevHost", {})
            keys = dev.get("FunctionKeys", {}) if kind == "function" else {}
            return next(iter(keys.values()), None) if keys else dev.get("MasterKey")
    return None


def _http(args: argparse.Namespace, method: str, route: str, *, admin: bool = False, **kwargs: Any) -> Any:
    import requests

    key = (os.environ.get("MLOPS_ADMIN_KEY") if admin else os.environ.get("MLOPS_KEY")) or _devhost_key(
        "admin" if admin else "function")
    response = requests.request(method, f"{args.url.rstrip('/')}/{route}", headers={"x-functions-key": key or ""},
                                timeout=300, **kwargs)
    body = response.json() if response.content else {}
    if response.status_code >= 400:
        raise PipelineError(f"{method} {route} answered {response.status_code}: "
                            f"{body.get('message', response.text[:300])}")
    return body


def cmd_feedback(args: argparse.Namespace) -> None:
    path = Path(args.file)
    kind = "text/csv" if path.suffix.lower() == ".csv" else "application/json"
    _print(_http(args, "POST", f"models/{args.model}/feedback", data=path.read_bytes(),
                 headers={"Content-Type": kind}))


def cmd_monitor(args: argparse.Namespace) -> None:
    _print(_http(args, "POST", f"registry/models/{args.model}/monitor", admin=True))


def cmd_monitoring(args: argparse.Namespace) -> None:
    reports = _http(args, "GET", f"registry/models/{args.model}/monitoring")["reports"]
    _print([{"window_end": r["window"]["end"], "version": r["version"], "rows": r["window"]["rows"],
             "dataset_drift": r["dataset_drift"], "label_coverage": r["label_coverage"],
             "live_metrics": r["live_metrics"], "decision": r["decision"]} for r in reports])


def cmd_simulate(args: argparse.Namespace) -> None:
    from shared.simulate import simulate

    key = os.environ.get("MLOPS_KEY") or _devhost_key("function") or ""
    result = simulate(args.url.rstrip("/"), key, args.model, rows=args.rows, drift=args.drift,
                      label_share=args.label_share, dataset=args.dataset,
                      progress=lambda line: print(line, file=sys.stderr))
    _print(result.to_json())


def _checked(rule: Callable[[str], Any]) -> Callable[[str], Any]:
    """A names.* rule as an argparse type: a bad name is a usage error (exit 2) naming the rule."""
    def check(raw: str) -> Any:
        try:
            return rule(raw)
        except PipelineError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
    return check


def _file_name(raw: str) -> str:
    if not names.is_blob_file_name(raw):
        raise argparse.ArgumentTypeError(f"file name {raw!r} is not allowed: no empty, '.' or '..' segments")
    return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--connection-string", help=f"storage connection string (default: ${STORAGE})")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Any, help_text: str, *arguments: tuple[str, dict[str, Any]]) -> None:
        p = sub.add_parser(name, help=help_text)
        for flag, kwargs in arguments:
            p.add_argument(flag, **kwargs)
        p.set_defaults(fn=fn)

    model = ("model", {"type": _checked(names.model_name), "help": f"model name ({names.MODEL_NAME_RULE})"})
    version = ("version", {"type": _checked(names.version), "help": "model version"})
    by = ("--by", {"default": os.environ.get("USER", "cli")})
    add("upload-spec", cmd_upload_spec, "validate and store a training spec", ("file", {"help": "spec YAML/JSON"}))
    add("drop", cmd_drop, "drop a dataset (CSV, Parquet, JSONL) for a model", model, ("file", {}),
        ("--name", {"type": _file_name}))
    add("models", cmd_models, "list models")
    add("versions", cmd_versions, "list versions of a model", model)
    add("show", cmd_show, "show a version with lineage and metrics", model, version)
    add("runs", cmd_runs, "list runs of a model", model)
    add("run", cmd_run, "show a run's timeline", model, ("run_id", {"type": _checked(names.run_id)}))
    add("approve", cmd_approve, "approve a version pending approval", model, version, by)
    add("reject", cmd_reject, "reject a version pending approval", model, version, by, ("--reason", {"default": ""}))
    add("rollback", cmd_rollback, "make a former champion the champion again", model, by,
        ("--from", {"dest": "from_version", "type": _checked(names.version),
                    "help": "only if the champion is still this version"}),
        ("--to", {"type": _checked(names.version),
                  "help": "target version (default: the champion before the current one)"}))
    add("retrain", cmd_retrain, "retrain on the current data", model,
        ("--reason", {"default": "retrain requested via cli"}))
    url = ("--url", {"default": os.environ.get("MLOPS_URL", DEFAULT_URL), "help": "the app's API (MLOPS_URL)"})
    add("feedback", cmd_feedback, "send ground-truth labels (JSON {labels: [...]} or CSV prediction_id,label)",
        model, ("file", {}), url)
    add("monitor", cmd_monitor, "compute a monitoring window ending now (admin key)", model, url)
    add("monitoring", cmd_monitoring, "list monitoring reports, latest first", model, url)
    add("simulate", cmd_simulate, "score generated traffic over HTTP and send labels for a share of it", model,
        url, ("--rows", {"type": int, "default": 1000}), ("--drift", {"action": "store_true"}),
        ("--label-share", {"type": float, "default": 0.5}),
        ("--dataset", {"choices": ["predictive-maintenance", "diabetes", "breast-cancer"],
                       "help": "the example generator (default: the one the model is named after)"}))
    return parser


def main(argv: list[str] | None = None) -> int:
    _load_local_settings()
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except PipelineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.details:
            _print(exc.details)
        return 2
    except OSError as exc:  # the user's own file: say which and why, no traceback
        print(f"error: cannot read {exc.filename or 'the file'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
