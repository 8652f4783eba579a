"""The CLI refuses bad names and files as usage errors (exit 2) naming the problem, before touching storage."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared import cli


@pytest.fixture(autouse=True)
def no_storage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no local.settings.json: the CLI would copy its Values into os.environ
    # a storage nobody listens on: a case that reached storage would fail differently (unreachable)
    monkeypatch.setenv("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;"
                       "BlobEndpoint=http://127.0.0.1:9/a;QueueEndpoint=http://127.0.0.1:9/a;")


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
])
def test_bad_names_are_usage_errors_naming_the_argument(argv: list[str], words: tuple[str, ...],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert all(word in err for word in words), err
    assert "Traceback" not in err


def test_a_missing_file_is_exit_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.main(["upload-spec", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "nope.yaml" in err and "Traceback" not in err
