"""What the API's answers mean at the terminal (exit codes, which key, field errors), and following a run:
its deadline and Ctrl-C, which stops the watching and says how to pick it up again."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest
import requests

from mlops_cli.api import Api, failure, json_of
from mlops_cli.console import Console, Context
from mlops_cli.errors import FAILED, INTERRUPTED, UNREACHABLE, USAGE, CliError
from mlops_cli.follow import Follower
from mlops_cli.target import Key, Target

TARGET = Target("staging", "https://func.example.net/api", Key("fk", "$STAGING_KEY (named by profile 'staging')"),
                Key(None, "nowhere"))


def answer(status: int, body: Any = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = b"" if body is None else json.dumps(body).encode()
    return response


@pytest.mark.parametrize(("status", "body", "code", "words"), [
    (401, None, UNREACHABLE, "the function key from $STAGING_KEY (named by profile 'staging') was refused"),
    (404, None, UNREACHABLE, "has no route GET /x (404)"),
    (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "model (name=a) not found"}, FAILED,
     "model (name=a) not found (404 RESOURCE_DOES_NOT_EXIST)"),
    (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "model name ('A') is not valid"}, USAGE, "not valid"),
    (409, {"error_code": "ILLEGAL_TRANSITION", "message": "v2 is promoted"}, FAILED, "409 ILLEGAL_TRANSITION"),
    (503, {"error_code": "STORAGE_UNREACHABLE", "message": "storage is unreachable"}, UNREACHABLE, "unreachable"),
    (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "no champion yet"}, FAILED, "no champion"),
    (502, None, UNREACHABLE, "502"),
    (500, {"error_code": "INTERNAL_ERROR", "message": "internal error"}, FAILED, "internal error"),
])
def test_answers_map_to_exit_codes_with_the_apis_words(status: int, body: Any, code: int, words: str) -> None:
    error = failure(answer(status, body), TARGET, admin=False, route="GET /x")
    assert error.code == code and words in error.message, error.message


def test_an_admin_route_without_an_admin_key_says_which_key_and_where_to_set_it() -> None:
    error = failure(answer(401), TARGET, admin=True, route="POST /x")
    assert "no admin (master) key was sent" in error.message and "MLOPS_ADMIN_KEY" in error.message
    assert "needs the admin key" in error.message


def test_a_bad_spec_lists_each_field_problem_on_its_own_line() -> None:
    body = {"error_code": "INVALID_SPEC", "message": "training spec is invalid: 2 problem(s)",
            "details": [{"field": "features", "message": "at least 1 item"}, {"field": "estimator.type",
                                                                               "message": "not allowed"}]}
    error = failure(answer(400, body), TARGET, admin=True, route="PUT /x")
    assert error.code == FAILED and error.lines == ["features: at least 1 item", "estimator.type: not allowed"]
    assert error.to_json()["error"]["api"]["error_code"] == "INVALID_SPEC"


class Runs:
    """The API's side of a run that never settles (only the calls the follower makes)."""

    def __init__(self) -> None:
        self.calls = 0

    def get(self, *segments: Any, **_: Any) -> dict[str, Any]:
        self.calls += 1
        if segments[-1] == "runs":
            return {"runs": []}
        return {"run_id": "r1", "model": "churn", "status": "prepared", "source_etag": '"1"',
                "timeline": [{"status": "received", "at": "2026-11-24T12:00:00+00:00"},
                             {"status": "prepared", "at": "2026-11-24T12:00:01+00:00"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def follower(api: Runs, clock: Clock, sleep: Any = None) -> tuple[Follower, io.StringIO]:
    err = io.StringIO()
    ctx = Context(api, Console(io.StringIO(), err))  # type: ignore[arg-type]
    return Follower(ctx, "churn", timeout=3, interval=0.5, clock=clock, sleep=sleep or clock.sleep), err


def test_following_stops_at_the_deadline_saying_the_run_continues_and_how_to_follow_it() -> None:
    clock = Clock()
    watcher, err = follower(Runs(), clock)
    with pytest.raises(CliError) as late:
        watcher.follow("r1")
    assert late.value.code == FAILED and clock.now == pytest.approx(3.0)
    assert "still prepared after 3 s" in late.value.message and "mlops run churn r1 --wait" in late.value.message
    assert err.getvalue().splitlines() == ["  ✓ received", "  ✓ prepared   1.0 s"]  # not a terminal: once each


def test_ctrl_c_stops_watching_not_the_run() -> None:
    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    watcher, _ = follower(Runs(), Clock(), sleep=interrupted)
    with pytest.raises(CliError) as stopped:
        watcher.follow("r1")
    assert stopped.value.code == INTERRUPTED == 130
    assert "the run continues in the app" in stopped.value.message and "mlops run churn r1 --wait" in \
        stopped.value.message


def test_a_drop_the_pipeline_never_picks_up_times_out_pointing_at_runs() -> None:
    watcher, _ = follower(Runs(), Clock())
    with pytest.raises(CliError) as late:
        watcher.find_drop("datasets/churn/x.csv", '"1"')
    assert "no run for datasets/churn/x.csv yet" in late.value.message and "mlops runs churn" in late.value.message


class Refusing(requests.Session):
    """A session whose every request fails before anything is sent, as requests does for a bad URL."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        raise requests.exceptions.TooManyRedirects("Exceeded 30 redirects.")


def test_a_request_that_cannot_be_sent_is_a_message_and_an_exit_code_not_a_traceback() -> None:
    with pytest.raises(CliError) as caught:
        Api(TARGET, session=Refusing()).get("registry", "models")
    assert caught.value.code == UNREACHABLE
    assert "GET /registry/models to staging (https://func.example.net/api) could not be sent" in caught.value.message
    assert "TooManyRedirects" in caught.value.message


def test_a_2xx_answer_that_is_not_a_json_object_is_refused_naming_its_content_type() -> None:
    page = answer(200)
    page._content, page.headers["content-type"] = b"<html>sign in</html>", "text/html"
    for response in (page, answer(200, ["a", "list"])):
        with pytest.raises(CliError) as caught:
            json_of(response, TARGET)
        assert caught.value.code == FAILED and "answered 200 with no JSON object" in caught.value.message
    assert "text/html" in str(pytest.raises(CliError, json_of, page, TARGET).value)
    assert json_of(answer(200, {"predictions": [1]}), TARGET) == {"predictions": [1]}
