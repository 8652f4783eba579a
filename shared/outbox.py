"""Messages one invocation hands to the next stage, written by the function's queue output binding.

Why output bindings and not the storage SDK: the Functions host writes a binding's messages after
the function returns, and its shared queue watcher then wakes this instance's listener for that
queue at once; a message sent with the SDK waits for the listener's next poll (up to
maxPollingInterval). Each hop of the pipeline saves that wait, on Azure and locally.

Because the host writes them only after the function returned (and before it completes the
trigger), a crash in between loses them while the trigger's own work is done; every sender
therefore re-sends on a redelivery what its recorded state says is still owed (see the stages'
`on_done`). Code without a binding (tests over the storage fake, the sweeper) passes no outbox and
sends with the SDK at once.
"""
from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# The annotation of a queue output binding's value: func.Out[Messages]. typing.List, not list[str]:
# the worker checks annotations with typing_inspect, which does not see list[str] as a generic, and
# refuses to load the function ('type of ... binding ... "queue" does not match ... "list"').
Messages = typing.List[str]  # noqa: UP006


class Out(Protocol):
    """The part of azure.functions.Out[list[str]] an outbox uses."""

    def set(self, val: Messages) -> None: ...


def message_text(payload: Mapping[str, Any]) -> str:
    """A payload as queue message text, the same JSON the SDK path encodes (shared.storage.encode_message)."""
    return json.dumps(payload, sort_keys=True)


@dataclass
class Outbox:
    """Collects the messages of one invocation, per queue, in order."""

    messages: dict[str, list[str]] = field(default_factory=dict)

    def send(self, queue: str, payload: Mapping[str, Any]) -> None:
        self.messages.setdefault(queue, []).append(message_text(payload))

    def bind(self, outputs: Mapping[str, Out]) -> None:
        """Hand the messages to the function's output bindings, given per queue name.

        Raises RuntimeError when a message is for a queue no binding writes to (a wiring bug, which
        must fail the invocation rather than drop the message).
        """
        unbound = sorted(set(self.messages) - set(outputs))
        if unbound:
            raise RuntimeError(f"messages for queue(s) {', '.join(unbound)} have no output binding on this function")
        for queue, out in outputs.items():
            if self.messages.get(queue):
                out.set(list(self.messages[queue]))
