"""Fuzz the webhook parsers and verifiers: whatever arrives, only the project's own errors escape."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared import names
from shared.errors import PipelineError
from shared.webhooks import (
    Ignored,
    Ping,
    PushEvent,
    parse_azure_devops,
    parse_github,
    verify_azure_devops,
    verify_github_signature,
)

EVENTS = Path(__file__).parents[1] / "events"
GITHUB_PUSH = json.loads((EVENTS / "github_push.json").read_text())
ADO_PUSH = json.loads((EVENTS / "azure_devops_git_push.json").read_text())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _mutated(template: dict[str, Any], data: st.DataObject) -> bytes:
    """The captured payload with random fields replaced by random JSON (or removed)."""
    doc = copy.deepcopy(template)
    for _ in range(data.draw(st.integers(0, 4))):
        target = doc
        path = data.draw(st.lists(st.sampled_from(["ref", "after", "commits", "repository", "resource", "refUpdates",
                                                   "name", "newObjectId", "eventType", "full_name", "id", "0"]),
                                  min_size=1, max_size=3))
        for key in path[:-1]:
            nxt = target.get(key) if isinstance(target, dict) else None
            if not isinstance(nxt, dict):
                break
            target = nxt
        if isinstance(target, dict):
            if data.draw(st.booleans()):
                target[path[-1]] = data.draw(json_values)
            else:
                target.pop(path[-1], None)
    return json.dumps(doc).encode()


def _accepted_is_sane(result: object) -> None:
    assert isinstance(result, (PushEvent, Ignored, Ping))
    if isinstance(result, PushEvent):
        assert len(result.commit) in (40, 64) and all(c in "0123456789abcdef" for c in result.commit)
        assert result.branch == "main"


@settings(max_examples=300)
@given(st.data(), st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["push", "ping", "issues"])),
       st.one_of(st.none(), st.text(max_size=60)))
def test_github_payloads_and_headers_raise_only_our_errors(data: st.DataObject, event: str | None,
                                                           delivery: str | None) -> None:
    body = data.draw(st.binary(max_size=200)) if data.draw(st.booleans()) else _mutated(GITHUB_PUSH, data)
    try:
        result = parse_github(event, delivery, body, "main", repository="contoso/ml-specs")
    except PipelineError as exc:
        assert 400 <= exc.status < 500
        return
    _accepted_is_sane(result)
    if isinstance(result, PushEvent):
        key = names.delivery_key(result.delivery_id or result.commit)
        assert key is not None and "/" not in key and ".." not in key


@settings(max_examples=300)
@given(st.data())
def test_azure_devops_payloads_raise_only_our_errors(data: st.DataObject) -> None:
    body = data.draw(st.binary(max_size=200)) if data.draw(st.booleans()) else _mutated(ADO_PUSH, data)
    try:
        result = parse_azure_devops(body, "main", repository="ml-specs")
    except PipelineError as exc:
        assert 400 <= exc.status < 500
        return
    _accepted_is_sane(result)


@settings(max_examples=200)
@given(st.binary(max_size=100), st.one_of(st.none(), st.text(max_size=80)),
       st.dictionaries(st.sampled_from(["Authorization", "X-Webhook-Secret", "authorization", "x-webhook-secret"]),
                       st.text(max_size=60), max_size=3))
def test_signature_and_credential_checks_raise_only_unauthorized(body: bytes, signature: str | None,
                                                                 headers: dict[str, str]) -> None:
    for check in (
        lambda: verify_github_signature("s3cret", body, signature),
        lambda: verify_azure_devops(headers, basic_user="u", basic_password="p", shared_secret="s"),
    ):
        try:
            check()
        except PipelineError as exc:
            assert exc.status == 401
