"""`mlops`: the command line over the HTTP API. main(argv) returns the exit code (0 ok, 1 rejected or failed,
2 usage, 3 unreachable or key refused, 130 Ctrl-C)."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mlops_cli import __version__, names
from mlops_cli.api import Api
from mlops_cli.commands import changes, data, monitoring, reads
from mlops_cli.console import Console, Context
from mlops_cli.errors import INTERRUPTED, USAGE, CliError
from mlops_cli.target import DEFAULT_URL, Choice, resolve

Handler = Callable[[Context, argparse.Namespace], int]
SUPPRESS = argparse.SUPPRESS
EPILOG = f"""\
target: --url, else the profile's url (--profile, MLOPS_PROFILE, or `default` in ~/.config/mlops/profiles.toml),
else MLOPS_URL, else {DEFAULT_URL}. Keys: --key / --admin-key, else the profile's key_env / admin_key_env, else
MLOPS_KEY / MLOPS_ADMIN_KEY, else (loopback URLs) the local host's keys in local.settings.json.
exit codes: 0 ok, 1 rejected or failed, 2 usage, 3 unreachable or key refused, 130 interrupted.
"""


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (SUPPRESS: the one given wins)."""
    common = argparse.ArgumentParser(add_help=False)
    target = common.add_argument_group("target")
    target.add_argument("--url", default=SUPPRESS, help=f"the API (MLOPS_URL; default {DEFAULT_URL})")
    target.add_argument("--key", default=SUPPRESS, help="function key (MLOPS_KEY)")
    target.add_argument("--admin-key", default=SUPPRESS, help="admin key for changes (MLOPS_ADMIN_KEY)")
    target.add_argument("--profile", default=SUPPRESS, help="a named target in profiles.toml (MLOPS_PROFILE)")
    output = common.add_argument_group("output")
    output.add_argument("--json", action="store_true", default=SUPPRESS, help="JSON on stdout, for scripts")
    output.add_argument("--no-color", action="store_true", default=SUPPRESS, help="no colours (also NO_COLOR)")
    return common


def _wait(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"follow {what} live to its decision")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="mlops", description="CI/CD for ML models on Azure Functions, over its "
                                     "HTTP API.", epilog=EPILOG, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=text, description=text, parents=[common])
        command.set_defaults(handler=handler)
        return command

    def model(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("model", type=names.model_name, help=f"model name ({names.MODEL_NAME_RULE})")
        return command

    by = os.environ.get("USER") or "cli"
    add("models", reads.models, "list models with their champion")
    model(add("versions", reads.versions, "list the versions of a model"))
    show = model(add("show", reads.show, "a version in full: lineage, metrics, decision and its reasons"))
    show.add_argument("version", type=names.version, nargs="?", help="default: the champion (else the newest)")
    model(add("runs", reads.list_runs, "list the runs of a model, newest first"))
    run = model(add("run", reads.show_run, "a run's stages and timings"))
    run.add_argument("run_id", type=names.run_id)
    _wait(run, "the run")
    spec = add("upload-spec", changes.upload_spec, "validate and store a training spec (YAML or JSON)")
    spec.add_argument("file")
    spec.add_argument("--model", type=names.model_name, help="the model (default: the spec's name)")
    spec.add_argument("--retrain", action="store_true", help="then retrain on the model's current data")
    _wait(spec, "the retrain (with --retrain)")
    drop = model(add("drop", data.drop, "upload a dataset (CSV, Parquet, JSONL) straight to storage"))
    drop.add_argument("file")
    drop.add_argument("--name", type=names.file_name, help="the name under datasets/<model>/ (default: the file's)")
    drop.add_argument("--overwrite", action="store_true", help="replace an earlier drop of that name")
    _wait(drop, "the run the drop starts")
    score = model(add("score", data.score, "score rows from a JSON or CSV file (- for stdin)"))
    score.add_argument("file")
    score.add_argument("--csv", action="store_true", help="the input is CSV (default: by the file's suffix)")
    pin = score.add_mutually_exclusive_group()
    pin.add_argument("--version", type=names.version, help="score with this version")
    pin.add_argument("--alias", choices=["champion", "previous"])
    for name, handler, text in (("approve", changes.approve, "promote a version that waits for approval"),
                                ("reject", changes.reject, "reject a version that waits for approval")):
        command = model(add(name, handler, text))
        command.add_argument("version", type=names.version)
        command.add_argument("--by", default=by, help="who (default: $USER)")
        if name == "reject":
            command.add_argument("--reason", required=True, help="why (kept in the version's history)")
    rollback = model(add("rollback", changes.rollback, "make a former champion the champion again"))
    rollback.add_argument("--to", type=names.version, help="default: the champion before the current one")
    rollback.add_argument("--from", dest="from_version", type=names.version,
                          help="only if the champion is still this version")
    rollback.add_argument("--by", default=by)
    retrain = model(add("retrain", changes.retrain, "retrain on the model's current data"))
    retrain.add_argument("--reason", default="retrain requested via cli")
    _wait(retrain, "the run")
    _monitoring_commands(add, model)
    return parser


def _monitoring_commands(add: Callable[[str, Handler, str], argparse.ArgumentParser],
                         model: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    feedback = model(add("feedback", data.feedback, "send ground-truth labels (JSON {labels: [...]} or CSV "
                                                    "prediction_id,label)"))
    feedback.add_argument("file")
    monitor = model(add("monitor", monitoring.monitor, "compute a monitoring window now (admin key)"))
    monitor.add_argument("--window-end", help="ISO time with a zone (default: now)")
    model(add("monitoring", monitoring.monitoring, "list monitoring reports, latest first"))
    simulate = model(add("simulate", monitoring.simulate, "score generated traffic and send labels for a share"))
    simulate.add_argument("--rows", type=int, default=1000)
    simulate.add_argument("--drift", action="store_true")
    simulate.add_argument("--label-share", type=float, default=0.5)
    simulate.add_argument("--dataset", choices=["predictive-maintenance", "diabetes", "breast-cancer"],
                          help="the example generator (default: the one the model is named after)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else USAGE
    console = Console.create(as_json=getattr(args, "json", False), no_color=getattr(args, "no_color", False))
    ctx: Context | None = None
    try:
        target = resolve(Choice(getattr(args, "url", None), getattr(args, "key", None),
                                getattr(args, "admin_key", None), getattr(args, "profile", None)))
        ctx = Context(Api(target), console)
        return int(args.handler(ctx, args))
    except CliError as exc:
        return _report(console, _explained(ctx, args, exc))
    except KeyboardInterrupt:
        console.err("interrupted")
        return INTERRUPTED


def _explained(ctx: Context | None, args: argparse.Namespace, exc: CliError) -> CliError:
    """A 404 about an unknown model says which models there are."""
    model = getattr(args, "model", None)
    if ctx is None or exc.status != 404 or not model:
        return exc
    try:
        known = [m["name"] for m in ctx.api.get("registry", "models")["models"]]
    except CliError:
        return exc
    if model in known:
        return exc
    listed = ", ".join(known) if known else "none yet (mlops upload-spec <spec.yaml> adds one)"
    return CliError(f"unknown model {model!r} at {ctx.api.target.label()}; models: {listed}", exc.code,
                    lines=exc.lines, body=exc.body, status=exc.status)


def _report(console: Console, exc: CliError) -> int:
    style = console.err_style
    prefix = "" if exc.code == INTERRUPTED else style.paint("error: ", "red", "bold")
    console.err(prefix + exc.message)
    for line in exc.lines:
        console.err(f"  {line}")
    if console.as_json:
        console.json(exc.to_json())
    return exc.code


if __name__ == "__main__":
    sys.exit(main())
