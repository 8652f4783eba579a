"""Change the registry (admin key): upload a spec, approve, reject, roll back, retrain."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from mlops_cli import names
from mlops_cli.console import Context
from mlops_cli.errors import OK, USAGE, CliError
from mlops_cli.follow import Follower


def read_file(path: str) -> bytes:
    """A local file's bytes. Raises CliError (usage) naming the file and why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", USAGE) from None


def spec_name(data: bytes, filename: str) -> str | None:
    """The `name` a spec file declares, if it can be read at all (the API checks the rest)."""
    try:
        document = json.loads(data) if filename.lower().endswith(".json") else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError):
        return None
    name = document.get("name") if isinstance(document, dict) else None
    return name if isinstance(name, str) else None


def upload_spec(ctx: Context, args: argparse.Namespace) -> int:
    data = read_file(args.file)
    model = args.model or spec_name(data, args.file)
    if model is None:
        raise CliError(f"{args.file} names no model (no readable `name:`): fix the file or pass --model", USAGE)
    if args.wait and not args.retrain:
        raise CliError("--wait follows a run, and storing a spec starts none: add --retrain", USAGE)
    if not args.model:  # --model went through its argparse check already
        _spec_model_name(model, args.file)
    kind = "application/json" if args.file.lower().endswith(".json") else "application/yaml"
    ctx.announce()
    stored = ctx.api.call("PUT", "registry", "models", model, "spec", admin=True, data=data,
                          headers={"content-type": kind})
    if not args.retrain:
        _done(ctx, stored, f"stored the spec of {model} (spec hash {str(stored.get('spec_hash'))[:12]})")
        return OK
    if not ctx.console.as_json:
        ctx.console.err(f"stored the spec of {model} (spec hash {str(stored.get('spec_hash'))[:12]})")
    return _retrain(ctx, model, f"spec {Path(args.file).name} uploaded via cli", args, {"spec": stored})


def _spec_model_name(model: str, filename: str) -> None:
    try:
        names.model_name(model)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"the spec's name in {filename} cannot be used: {exc}", USAGE) from None


def _done(ctx: Context, body: Any, line: str) -> None:
    if ctx.console.as_json:
        ctx.console.json(body)
    else:
        ctx.console.out(line)


def approve(ctx: Context, args: argparse.Namespace) -> int:
    ctx.announce()
    body = ctx.api.post("registry", "models", args.model, "versions", args.version, "approve", admin=True,
                        json={"by": args.by})
    _done(ctx, body, _aliases_line(args.model, body))
    return OK


def _aliases_line(model: str, body: dict[str, Any]) -> str:
    champion, previous = body.get("champion"), body.get("previous")
    state = f"{model}: champion v{champion}" + (f", previous v{previous}" if previous else "")
    return f"{state} ({body.get('message')})" if not body.get("changed") else state


def reject(ctx: Context, args: argparse.Namespace) -> int:
    ctx.announce()
    body = ctx.api.post("registry", "models", args.model, "versions", args.version, "reject", admin=True,
                        json={"by": args.by, "reason": args.reason})
    _done(ctx, body, f"{args.model} v{args.version}: {body.get('status')} ({body.get('message')})")
    return OK


def rollback(ctx: Context, args: argparse.Namespace) -> int:
    request = {k: v for k, v in (("from", args.from_version), ("to", args.to)) if v is not None}
    ctx.announce()
    body = ctx.api.post("registry", "models", args.model, "rollback", admin=True, json={**request, "by": args.by})
    _done(ctx, body, _aliases_line(args.model, body))
    return OK


def retrain(ctx: Context, args: argparse.Namespace) -> int:
    ctx.announce()
    return _retrain(ctx, args.model, args.reason, args, {})


def _retrain(ctx: Context, model: str, reason: str, args: argparse.Namespace, result: dict[str, Any]) -> int:
    body = ctx.api.post("registry", "models", model, "retrain", admin=True, json={"reason": reason})
    run_id = str(body["run_id"])
    if args.wait:
        return Follower(ctx, model, timeout=args.timeout).watch(run_id, {**result, **body})
    _done(ctx, {**result, **body}, f"retrain of {model} requested: run {run_id}\n"
                                   f"  follow it: mlops run {model} {run_id} --wait")
    return OK
