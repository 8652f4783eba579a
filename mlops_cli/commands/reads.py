"""Read the registry: models, versions, one version in full, runs, one run (function key)."""
from __future__ import annotations

import argparse
from typing import Any

from mlops_cli.console import Context
from mlops_cli.errors import OK, CliError
from mlops_cli.follow import Follower
from mlops_cli.progress import exit_code, final_status, step_lines, steps
from mlops_cli.render import ago, number, parse_time, reason_mark, short, table

PREFERRED_METRICS = ("roc_auc", "accuracy", "f1", "rmse", "mae", "r2")


def key_metrics(version: dict[str, Any], count: int = 2) -> str:
    """'roc_auc 0.991 accuracy 0.956' from the ONNX holdout metrics (else scikit-learn's)."""
    metrics = version.get("metrics") or {}
    found = metrics.get("onnx_holdout") or metrics.get("sklearn_holdout") or {}
    chosen = [m for m in PREFERRED_METRICS if isinstance(found.get(m), (int, float))][:count]
    return "  ".join(f"{m} {number(found[m])}" for m in chosen) or "-"


def decisive(reasons: list[str]) -> str:
    """The reason that decided: a refusal or hold first, then the comparison with the champion, then the first."""
    texts = [str(r) for r in reasons]
    held = [r for r in texts if r.startswith(("rejected", "breaking", "pending"))]
    compared = [r for r in texts if "champion" in r]
    return (held or compared or texts or ["-"])[0]


def models(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.api.get("registry", "models")
    if ctx.console.as_json:
        ctx.console.json(body)
        return OK
    now, style = ctx.console.now(), ctx.console.style
    rows = [[m["name"], str(m.get("task") or "-"), _v(m.get("aliases", {}).get("champion")),
             _v(m.get("aliases", {}).get("previous")), ago(parse_time(m.get("updated")), now)] for m in body["models"]]
    if not rows:
        ctx.console.err("no models yet: upload a spec with `mlops upload-spec <spec.yaml>`")
        return OK
    ctx.console.lines(table(["MODEL", "TASK", "CHAMPION", "PREVIOUS", "UPDATED"], rows, style))
    return OK


def _v(version: object) -> str:
    return f"v{version}" if version else "-"


def versions(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.api.get("registry", "models", args.model, "versions")
    if ctx.console.as_json:
        ctx.console.json(body)
        return OK
    now, style = ctx.console.now(), ctx.console.style
    aliases = {v: k for k, v in (body.get("aliases") or {}).items() if v}
    rows = []
    for v in sorted(body["versions"], key=lambda v: v["version"], reverse=True):
        alias = f" ({aliases[v['version']]})" if v["version"] in aliases else ""
        rows.append([f"v{v['version']}", style.status(v["status"]) + alias, ago(parse_time(v.get("created")), now),
                     key_metrics(v), short(decisive((v.get("decision") or {}).get("reasons") or []), 70)])
    if not rows:
        ctx.console.err(f"{args.model} has no versions yet: drop data with `mlops drop {args.model} <file> --wait`")
        return OK
    ctx.console.lines(table(["VERSION", "STATUS", "CREATED", "METRICS", "DECISION"], rows, style))
    return OK


def show(ctx: Context, args: argparse.Namespace) -> int:
    number_ = args.version or _default_version(ctx, args.model)
    body = ctx.api.get("registry", "models", args.model, "versions", number_)
    if ctx.console.as_json:
        ctx.console.json(body)
        return OK
    ctx.console.lines(version_lines(body, ctx))
    return OK


def _default_version(ctx: Context, model: str) -> int:
    """The champion, else the newest version."""
    body = ctx.api.get("registry", "models", model, "versions")
    champion = (body.get("aliases") or {}).get("champion")
    newest = max((int(v["version"]) for v in body["versions"]), default=None)
    chosen = champion or newest
    if chosen:
        return int(chosen)
    raise CliError(f"{model} has no versions yet: drop data with `mlops drop {model} <file> --wait`")


def kv(pairs: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Aligned 'key  value' lines."""
    width = max((len(k) for k, _ in pairs), default=0)
    return [f"{indent}{k.ljust(width)}  {v}" for k, v in pairs]


def _lineage(lineage: dict[str, Any]) -> list[tuple[str, str]]:
    """Where a version came from: data, spec, estimator, git, monitoring, libraries; the rest as it is."""
    rest = {k: v for k, v in lineage.items() if v not in (None, {}, [], "")}
    data = [str(rest.pop("data_hash", ""))[:12], str(rest.pop("source_blob", "") or "")]
    rows = f"{rest.pop('train_rows', '?')} train + {rest.pop('holdout_rows', '?')} holdout rows"
    spec = [str(rest.pop("spec_hash", ""))[:12], str(rest.pop("estimator", "")), f"seed {rest.pop('seed', '-')}"]
    libraries = rest.pop("libraries", {}) or {}
    pairs = [("data", "  ".join([*filter(None, data), rows])), ("spec", "  ".join(filter(None, spec)))]
    pairs += [(k, short(v, 100)) for k, v in _flat(rest)]
    if libraries:
        pairs.append(("libraries", ", ".join(f"{k} {v}" for k, v in libraries.items())))
    return pairs


def _signature(signature: dict[str, Any]) -> list[tuple[str, str]]:
    """The scoring contract in two lines: inputs (numbers unless marked text; ? optional) and outputs."""
    inputs = [f"{i.get('name')}{'?' if i.get('optional') else ''}{'' if i.get('type') == 'number' else ' (text)'}"
              for i in signature.get("inputs") or []]
    outputs = signature.get("outputs") or {}
    classes = f", classes {outputs['classes']}" if outputs.get("classes") else ""
    return [("inputs", short(f"{len(inputs)}: " + ", ".join(inputs), 110)),
            ("outputs", f"{outputs.get('kind', '-')}{classes}")]


def version_lines(v: dict[str, Any], ctx: Context) -> list[str]:
    """A version in full: status, lineage, metrics, decision with its reasons, history."""
    style, now = ctx.console.style, ctx.console.now()
    lines = [f"{style.paint(v['model'] + ' v' + str(v['version']), 'bold')}  {style.status(v['status'])}  "
             f"created {ago(parse_time(v.get('created')), now)}  run {v.get('run_id', '-')}"]
    lines += kv(_lineage(v.get("lineage") or {}))
    metrics = [(name, "  ".join(f"{m} {number(x)}" for m, x in values.items() if isinstance(x, (int, float))))
               for name, values in (v.get("metrics") or {}).items() if isinstance(values, dict)]
    if v.get("latency"):
        metrics.append(("latency", "  ".join(f"{k} {number(x)}" for k, x in v["latency"].items())))
    lines += ["metrics", *kv(metrics)] if metrics else []
    if v.get("signature"):
        lines += ["signature", *kv(_signature(v["signature"]))]
    decision = v.get("decision") or {}
    if decision:
        against = f" (against champion v{decision['champion_version']})" if decision.get("champion_version") else ""
        lines.append(f"decision: {style.status(str(decision.get('outcome', '-')))}{against}")
        lines += [f"  {reason_mark(str(r), style)}" for r in decision.get("reasons") or []]
    history = [(ago(parse_time(c.get("at")), now), f"{c.get('from', '-')} -> {c['status']} by {c.get('by', '-')}"
                + (f": {short(c['reason'], 80)}" if c.get("reason") else "")) for c in v.get("history") or []]
    return lines + (["history", *kv(history)] if history else [])


def _flat(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested lineage as dotted keys (git.commit, monitoring.report)."""
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        elif value not in (None, [], ""):
            out.append((f"{prefix}{key}", value))
    return out


def list_runs(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.api.get("registry", "models", args.model, "runs")
    if ctx.console.as_json:
        ctx.console.json(body)
        return OK
    now, style = ctx.console.now(), ctx.console.style
    rows = [[r["run_id"], style.status(str(r.get("status"))), _v(r.get("version")),
             ago(parse_time(r.get("created")), now), short(r.get("source_blob") or "-", 40),
             short(r.get("error") or "", 60)] for r in body["runs"]]
    if not rows:
        ctx.console.err(f"{args.model} has no runs yet")
        return OK
    ctx.console.lines(table(["RUN", "STATUS", "VERSION", "CREATED", "SOURCE", "ERROR"], rows, style))
    return OK


def show_run(ctx: Context, args: argparse.Namespace) -> int:
    follower = Follower(ctx, args.model, timeout=args.timeout)
    if args.wait:
        return follower.watch(args.run_id)
    run = ctx.api.get("registry", "models", args.model, "runs", args.run_id)
    if ctx.console.as_json:
        ctx.console.json(run)
        return exit_code(run) if final_status(run) else OK
    ctx.console.lines(run_lines(run, ctx))
    # A settled run exits as `run --wait` would have (1 for rejected or failed); one still going, 0.
    return follower.finish(run) if final_status(run) else OK


def run_lines(run: dict[str, Any], ctx: Context) -> list[str]:
    """A run's header, its stages with their times, and its failed tries."""
    style, now = ctx.console.style, ctx.console.now()
    created = parse_time(run.get("created"))
    lines = [f"{style.paint('run ' + run['run_id'], 'bold')}  {run['model']}  {style.status(str(run['status']))}  "
             f"started {ago(created, now)}" + (f"  from {run['source_blob']}" if run.get("source_blob") else "")]
    lines += step_lines(steps(run, active_seconds=None), style)
    for attempt in run.get("attempts") or []:
        lines.append(f"  attempt {attempt.get('attempt')} of {attempt.get('stage')} "
                     f"({ago(parse_time(attempt.get('at')), now)}): {attempt.get('error_type')}: "
                     f"{short(attempt.get('error'), 100)}")
    return lines

