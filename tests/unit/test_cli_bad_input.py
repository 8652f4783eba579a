"""`mlops` refuses bad names, files and option mixes as usage errors (exit 2) naming the problem, before any request."""
from __future__ import annotations

from pathlib import Path

import pytest

from mlops_cli.main import main


@pytest.fixture(autouse=True)
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no local.settings.json around
    monkeypatch.setenv("MLOPS_PROFILES", str(tmp_path / "none.toml"))
    monkeypatch.delenv("MLOPS_PROFILE", raising=False)
    # an API nobody listens on: a case that reached the network would fail differently (exit 3)
    monkeypatch.setenv("MLOPS_URL", "http://127.0.0.1:9/api")


@pytest.mark.parametrize(("argv", "words"), [
    (["show", "../etc", "1"], ("argument model", "lowercase letters")),
    (["versions", "Churn"], ("argument model", "lowercase letters")),
    (["runs", "a.b"], ("argument model",)),
    (["show", "churn", "\u0663"], ("argument version", "whole number")),
    (["show", "churn", "0"], ("argument version",)),
    (["approve", "churn", "1000000"], ("argument version",)),
    (["rollback", "churn", "--to", "\u00b2"], ("argument --to", "whole number")),
    (["run", "churn", "../x"], ("argument run_id", "run id")),
    (["drop", "churn", "data.csv", "--name", "../other/x.csv"], ("argument --name", "'..'")),
    (["reject", "churn", "2"], ("--reason",)),
    (["score", "churn", "x.json", "--version", "2", "--alias", "previous"], ("not allowed with",)),
    (["nosuch"], ("invalid choice",)),
])
def test_bad_arguments_are_usage_errors_naming_the_argument(argv: list[str], words: tuple[str, ...],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["upload-spec", "nope.yaml"],
    ["drop", "churn", "nope.csv"],
    ["score", "churn", "nope.json"],
    ["feedback", "churn", "nope.csv"],
])
def test_a_missing_file_is_exit_2_naming_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and argv[-1] in err and "Traceback" not in err


def test_a_spec_without_a_name_needs_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "spec.yaml").write_text("task: regression\n")
    assert main(["upload-spec", "spec.yaml"]) == 2
    assert "--model" in capsys.readouterr().err


def test_a_spec_named_against_the_rule_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "spec.yaml").write_text("name: Bad.Name\n")
    assert main(["upload-spec", "spec.yaml"]) == 2
    assert "lowercase letters" in capsys.readouterr().err


def test_wait_on_a_spec_upload_without_retrain_is_a_usage_error(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "spec.yaml").write_text("name: churn\n")
    assert main(["upload-spec", "spec.yaml", "--wait"]) == 2
    assert "--retrain" in capsys.readouterr().err


def test_an_unknown_profile_is_a_usage_error_listing_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--profile", "staging"]) == 2
    err = capsys.readouterr().err
    assert "profile 'staging'" in err and "known: local" in err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "drop" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("mlops ")
