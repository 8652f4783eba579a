"""Data in and out: drop a dataset (straight to storage), score rows, send ground-truth labels."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mlops_cli.api import json_of
from mlops_cli.commands.changes import read_file
from mlops_cli.console import Console, Context
from mlops_cli.errors import INTERRUPTED, OK, USAGE, CliError
from mlops_cli.follow import Follower
from mlops_cli.render import duration, number, progress_bar, short, size, table
from mlops_cli.upload import Progress, upload

REDRAW_SECONDS = 0.1


def _bar(console: Console, label: str) -> Progress:
    """A progress bar redrawn in place on a terminal, at most every REDRAW_SECONDS."""
    shown = {"at": -1.0}

    def show(done: int, total: int, elapsed: float) -> None:
        if done < total and elapsed - shown["at"] < REDRAW_SECONDS:
            return
        shown["at"] = elapsed
        console.stderr.write(f"\r\x1b[2K{label} {progress_bar(done, total, elapsed)}")
        console.stderr.flush()

    return show


def drop(ctx: Context, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"cannot read {args.file}: no such file", USAGE)
    name = args.name or path.name
    ctx.announce()
    grant = ctx.api.post("registry", "models", args.model, "uploads", admin=True, json={"name": name})
    console = ctx.console
    live = console.live and not console.as_json
    try:
        done = upload(grant["url"], path, overwrite=args.overwrite, progress=_bar(console, name) if live else None)
    except KeyboardInterrupt:
        raise CliError("upload stopped: nothing was dropped (storage discards the blocks already sent)",
                       INTERRUPTED) from None
    if live:
        console.err()
    rate = f"{size(done.bytes / done.seconds)}/s" if done.seconds > 0 else "-"
    result = {"blob": grant["blob"], **done.to_json()}
    if not console.as_json:
        console.err(f"dropped {grant['blob']} ({size(done.bytes)} in {duration(done.seconds)}, {rate})")
    if not args.wait:
        if console.as_json:
            console.json(result)
        else:
            console.out(f"dropped {grant['blob']}\n  follow it: mlops runs {args.model}  (or drop with --wait)")
        return OK
    follower = Follower(ctx, args.model, timeout=args.timeout)
    run = follower.find_drop(grant["blob"], done.etag)
    return follower.watch(str(run["run_id"]), result)


def score(ctx: Context, args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.file == "-" else read_file(args.file)
    csv = args.csv or args.file.lower().endswith(".csv")
    params = {"version": str(args.version)} if args.version else ({"alias": args.alias} if args.alias else {})
    ctx.announce()
    response = ctx.api.response("POST", "models", args.model, "score", data=data, params=params,
                                headers={"content-type": "text/csv" if csv else "application/json"})
    body = json_of(response, ctx.api.target)
    if ctx.console.as_json:
        ctx.console.json(body)
        return OK
    model = body.get("model") or {}
    ctx.console.err(f"{model.get('name')} v{model.get('version')}  request {response.headers.get('x-request-id')}")
    ctx.console.lines(table(*_score_rows(body), ctx.console.style))
    return OK


def _score_rows(body: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ids = body.get("prediction_ids") or []
    probabilities = body.get("probabilities")
    rows = []
    for i, prediction in enumerate(body.get("predictions") or []):
        row = [str(i), short(ids[i] if i < len(ids) else "-", 50), number(prediction)]
        if probabilities:
            row.append(number(max((probabilities[i] or {0: 0}).values())))
        rows.append(row)
    return ["ROW", "PREDICTION ID", "PREDICTION", *(["PROBABILITY"] if probabilities else [])], rows


def feedback(ctx: Context, args: argparse.Namespace) -> int:
    data = read_file(args.file)
    kind = "text/csv" if args.file.lower().endswith(".csv") else "application/json"
    ctx.announce()
    body = ctx.api.post("models", args.model, "feedback", data=data, headers={"content-type": kind})
    if ctx.console.as_json:
        ctx.console.json(body)
        return OK
    counts = ", ".join(f"{body.get(k, 0)} {k}" for k in ("accepted", "duplicates", "replaced", "unmatched"))
    ctx.console.out(f"labels for {args.model}: {counts}")
    if body.get("unmatched"):
        ctx.console.err("  unmatched: ids no monitoring window has joined yet (or unknown ids); they match later")
    return OK
