"""The closed loop: run a monitoring window now, list the reports, simulate production traffic."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from mlops_cli.api import unreachable
from mlops_cli.commands.reads import kv
from mlops_cli.console import Context
from mlops_cli.errors import FAILED, OK, USAGE, CliError
from mlops_cli.render import ago, number, parse_time, reason_mark, short, table


def monitor(ctx: Context, args: argparse.Namespace) -> int:
    ctx.announce()
    body = {"window_end": args.window_end} if args.window_end else {}
    report = ctx.api.post("registry", "models", args.model, "monitor", admin=True, json=body)
    if ctx.console.as_json:
        ctx.console.json(report)
        return OK
    ctx.console.lines(report_lines(report, ctx))
    return OK


def _drift(report: dict[str, Any]) -> str:
    features = report.get("features") or {}
    drifted = sorted(name for name, f in features.items() if isinstance(f, dict) and f.get("drifted"))
    if report.get("status") == "failed":  # every delivery of the window failed; the decision says why
        return "failed"
    if report.get("dataset_drift") is None:
        return "-"
    head = "yes" if report["dataset_drift"] else "no"
    return f"{head} ({len(drifted)}/{len(features)} features{': ' + ', '.join(drifted[:6]) if drifted else ''})"


def _live(report: dict[str, Any]) -> str:
    live = report.get("live_metrics") or {}
    validation = report.get("validation_metrics") or {}
    return "  ".join(f"{k} {number(v)}" + (f" (validation {number(validation[k])})" if k in validation else "")
                     for k, v in live.items()) or "-"


def _when(raw: object) -> str:
    parsed = parse_time(raw)
    return parsed.strftime("%Y-%m-%d %H:%M UTC") if parsed else "-"


def report_lines(report: dict[str, Any], ctx: Context) -> list[str]:
    """One monitoring report: window, drift, labels, live metrics, and the retraining decision with reasons."""
    style = ctx.console.style
    window = report.get("window") or {}
    decision = report.get("decision") or {}
    prediction = (report.get("prediction_drift") or {}).get("drifted")
    head = (f"{style.paint(str(report.get('model')) + ' v' + str(report.get('version')), 'bold')}  "
            f"{_when(window.get('start'))} -> {_when(window.get('end'))}  {window.get('rows')} rows  "
            f"{report.get('status')}")
    pairs = [("dataset drift", _drift(report)),
             ("prediction drift", "-" if prediction is None else ("yes" if prediction else "no")),
             ("labelled", f"{report.get('labelled_rows', 0)} ({float(report.get('label_coverage') or 0):.1%})"),
             ("live metrics", _live(report))]
    verdict = style.paint("retrain", "yellow", "bold") if decision.get("retrain") else "no retrain"
    return [head, *kv(pairs), f"decision: {verdict}",
            *(f"  {reason_mark(str(r), style)}" for r in decision.get("reasons") or [])]


def monitoring(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.api.get("registry", "models", args.model, "monitoring")
    if ctx.console.as_json:
        ctx.console.json(body)
        return OK
    now = ctx.console.now()
    rows = [[ago(parse_time((r.get("window") or {}).get("end")), now), f"v{r.get('version')}",
             str((r.get("window") or {}).get("rows")), _drift(r), f"{float(r.get('label_coverage') or 0):.1%}",
             short(_live(r), 40), "yes" if (r.get("decision") or {}).get("retrain") else "no"]
            for r in body.get("reports") or []]
    if not rows:
        ctx.console.err(f"no monitoring reports for {args.model} yet: `mlops monitor {args.model}` runs one")
        return OK
    ctx.console.lines(table(["WINDOW END", "VERSION", "ROWS", "DATASET DRIFT", "LABELLED", "LIVE", "RETRAIN"], rows,
                            ctx.console.style))
    return OK


def _simulator() -> Callable[..., Any]:
    """shared.simulate from the repository checkout around the current folder (its example generators)."""
    checkout = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "shared" / "simulate.py").is_file()), None)
    if checkout is not None and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from shared.simulate import simulate as run_simulation
    except ImportError:
        raise CliError("simulate generates rows with the repository's example generators: run it inside a checkout "
                       "of the repository after `make setup`", USAGE) from None
    return run_simulation


def simulate(ctx: Context, args: argparse.Namespace) -> int:
    run_simulation = _simulator()
    ctx.api.get("models", args.model, "signature")  # the key, the model and its champion, before any traffic
    ctx.announce()
    try:
        result = run_simulation(ctx.api.target.url, ctx.api.target.key.value or "", args.model, rows=args.rows,
                                drift=args.drift, label_share=args.label_share, dataset=args.dataset,
                                progress=ctx.console.err).to_json()
    except requests.ConnectionError:
        raise unreachable(ctx.api.target) from None
    except RuntimeError as exc:  # the simulator's words for an HTTP error answer
        raise CliError(str(exc), FAILED) from None
    if ctx.console.as_json:
        ctx.console.json(result)
        return OK
    feedback = ", ".join(f"{v} {k}" for k, v in result["feedback"].items())
    ctx.console.out(f"scored {result['scored']} rows (versions {', '.join(f'v{v}' for v in result['versions'])}); "
                    f"sent {result['labelled']} labels: {feedback}")
    return OK
