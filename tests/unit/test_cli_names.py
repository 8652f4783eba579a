"""The CLI's copies of the name rules agree with shared/names.py, the API's own (the CLI cannot import it)."""
from __future__ import annotations

import argparse

from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_cli import names as cli_names
from shared import names
from shared.errors import InvalidParameter

# names near the rules' edges: letters, digits, separators, dots, slashes, unicode digits, controls
ALPHABET = st.sampled_from(list("abzAZ09_-./\\ \n\t٣²é") + ["\x00"])
TEXT = st.text(ALPHABET, max_size=90)


def _accepted(rule: object, raw: str) -> bool:
    try:
        rule(raw)  # type: ignore[operator]
    except (argparse.ArgumentTypeError, InvalidParameter):
        return False
    return True


@settings(max_examples=400)
@given(TEXT)
def test_model_names_version_numbers_and_run_ids_follow_the_apis_rules(raw: str) -> None:
    assert _accepted(cli_names.model_name, raw) == _accepted(names.model_name, raw)
    assert _accepted(cli_names.version, raw) == _accepted(names.version, raw)
    assert _accepted(cli_names.run_id, raw) == _accepted(names.run_id, raw)
    assert cli_names.is_blob_file_name(raw) == names.is_blob_file_name(raw)


def test_the_edges_by_example() -> None:
    for raw in ("a", "a" * 63, "0-x_y", "1", "999999", "abc-DEF_1"):
        assert _accepted(cli_names.model_name, raw) == _accepted(names.model_name, raw)
        assert _accepted(cli_names.version, raw) == _accepted(names.version, raw)
        assert _accepted(cli_names.run_id, raw) == _accepted(names.run_id, raw)
    assert cli_names.MODEL_NAME_RULE == names.MODEL_NAME_RULE and cli_names.MAX_VERSION == names.MAX_VERSION
