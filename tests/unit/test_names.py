"""shared/names.py: what a model name, alias, version, run id and delivery id may be."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import names
from shared.errors import BadRequest, InvalidParameter
from shared.messages import RetrainRequest, StageRequest, parse_message

PATH_SAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.mark.parametrize("good", ["a", "0", "breast-cancer", "churn_v2", "a" * 63])
def test_model_names_that_fit_the_rule_pass(good: str) -> None:
    assert names.model_name(good) == good


@pytest.mark.parametrize("bad", [
    "", ".", "..", "a.b", "../x", "a/b", "A", "Churn", "-a", "_a", "a" * 64, "a\n", "\u00e9t\u00e9", "a b", "%2e%2e",
    "\uff41",  # fullwidth a: NFKC would fold it, the rule does not
])
def test_model_names_that_break_the_rule_are_400_naming_the_rule(bad: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        names.model_name(bad)
    assert err.value.status == 400 and err.value.code == "INVALID_PARAMETER_VALUE"
    assert "lowercase letters" in err.value.message and repr(bad)[:20] in err.value.message


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("007", 7), ("999999", 999_999), (12, 12)])
def test_versions_from_ascii_digits_pass(raw: str | int, expected: int) -> None:
    assert names.version(raw) == expected


@pytest.mark.parametrize("bad", ["", "0", "-1", "1.0", " 1", "1\n", "\u00b2", "\u0663", "\uff11", "1000000",
                                 "9" * 30, True, 0, -3, None, 1.5])
def test_versions_that_are_not_ascii_digits_in_range_are_400(bad: object) -> None:
    with pytest.raises(InvalidParameter, match="whole number from 1 to 999999"):
        names.version(bad)  # type: ignore[arg-type]


def test_only_the_two_aliases_exist() -> None:
    assert [names.alias(a) for a in ("champion", "previous")] == ["champion", "previous"]
    for bad in ("history", "__class__", "Champion", "", None):
        with pytest.raises(InvalidParameter, match="champion, previous"):
            names.alias(bad)


@pytest.mark.parametrize("raw", ["../../x", "a/b", "x" * 200, "\u2028x", "..", "a b"])
def test_an_unsafe_delivery_id_is_hashed_before_it_names_a_blob(raw: str) -> None:
    key = names.delivery_key(raw)
    assert key is not None and key.startswith("sha256-") and PATH_SAFE.fullmatch(key)
    assert names.delivery_key(raw) == key  # stable: a redelivery maps to the same claim


def test_a_plain_delivery_id_is_kept_readable() -> None:
    assert names.delivery_key("72d3162e-cc78-11e3-81ab-4c9367dc0958") == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert names.delivery_key("") is None and names.delivery_key(None) is None


@pytest.mark.parametrize(("raw", "ok"), [
    ("data.csv", True), ("2026/11/data.csv", True), ("../x.csv", False), ("a//b.csv", False), ("./x", False),
    ("x\n.csv", False), ("a\\b.csv", False), ("", False),
])
def test_dropped_file_names_may_not_climb_folders(raw: str, ok: bool) -> None:
    assert names.is_blob_file_name(raw) is ok


def test_queue_messages_refuse_fields_that_would_name_a_blob_outside_its_folder() -> None:
    with pytest.raises(BadRequest, match="model"):
        parse_message(RetrainRequest, b'{"model": "../etc"}')
    with pytest.raises(BadRequest, match="version"):
        parse_message(StageRequest, b'{"run_id": "r1", "model": "m", "version": 0}')
    with pytest.raises(BadRequest, match="run_id"):
        parse_message(StageRequest, b'{"run_id": "../r", "model": "m", "version": 1}')


# -- fuzz: whatever comes in, a name is either accepted as safe or refused with our error --------


@given(st.text(max_size=80))
def test_any_text_is_a_safe_model_name_or_invalid_parameter(raw: str) -> None:
    try:
        name = names.model_name(raw)
    except InvalidParameter:
        return
    assert PATH_SAFE.fullmatch(name) and name == name.lower() and len(name) <= 63


@given(st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(), st.floats()))
def test_any_value_is_a_bounded_version_or_invalid_parameter(raw: object) -> None:
    try:
        number = names.version(raw)  # type: ignore[arg-type]
    except InvalidParameter:
        return
    assert 1 <= number <= names.MAX_VERSION


@given(st.text(max_size=200))
def test_any_delivery_id_becomes_a_path_safe_key(raw: str) -> None:
    key = names.delivery_key(raw)
    assert key is None or (PATH_SAFE.fullmatch(key) and len(key) <= 80)


@given(st.text(max_size=200))
def test_safe_segment_is_always_a_valid_model_name(raw: str) -> None:
    assert names.is_model_name(names.safe_segment(raw))
