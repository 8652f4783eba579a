"""Model-based test: random interleavings of drops, deliveries, duplicates, crashes, lease expiry,
approvals, rejections and rollbacks on the storage fake; the registry's invariants hold throughout.

Profiles: `ci` (default, a few hundred examples in `make test`) and `soak` (`make soak`).
"""
from __future__ import annotations

import pandas as pd
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from examples.datasets import diabetes
from shared import registry
from shared.errors import PipelineError
from shared.lifecycle import releases
from shared.lifecycle.sweeper import sweep
from tests.e2e.support import example_spec
from tests.harness import PIPELINE_QUEUES, POISON_QUEUES, Crash, LocalPipeline
from tests.lifecycle_invariants import check_always, check_invariants

MODEL = "m"
FULL = diabetes()
DATA = {  # three different datasets (different data hashes), small enough to train in milliseconds
    "d1": FULL.head(200), "d2": FULL.iloc[100:300].reset_index(drop=True), "d3": FULL.tail(200).reset_index(drop=True),
}
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
SPECS = {  # auto / manual approval; a lenient comparison so that later candidates do get promoted
    "auto": example_spec("diabetes", MODEL, comparison={"rmse": {"max_regression": 1000}}),
    "manual": example_spec("diabetes", MODEL, approval="manual", comparison={"rmse": {"max_regression": 1000}}),
    "strict": example_spec("diabetes", MODEL, comparison={"rmse": {"min_improvement": 0.5}}),
    "fewer": example_spec("diabetes", MODEL, comparison={"rmse": {"max_regression": 1000}},
                          features=[{"name": f, "kind": "numeric"} for f in FEATURES if f != "s6"]),
}
FILES = ("a.csv", "b.csv")
QUEUES = (*PIPELINE_QUEUES, *POISON_QUEUES)

# Examples per run come from the hypothesis profile in tests/conftest.py (ci, or soak for `make soak`).


class Lifecycle(RuleBasedStateMachine):
    """One model's registry driven by everything that can happen to it, in any order."""

    @initialize(spec=st.sampled_from(sorted(SPECS)))
    def start(self, spec: str) -> None:
        self.pipe = LocalPipeline()
        self.pipe.upload(SPECS[spec])
        self.crash_in: int | None = None

    # -- users ----------------------------------------------------------------------------------

    @rule(spec=st.sampled_from(sorted(SPECS)))
    def upload_spec(self, spec: str) -> None:
        self._guard(lambda: self.pipe.upload(SPECS[spec]))

    @rule(data=st.sampled_from(sorted(DATA)), name=st.sampled_from(FILES), twice=st.booleans())
    def drop(self, data: str, name: str, twice: bool) -> None:
        fault, self.pipe.storage.fault = self.pipe.storage.fault, None  # the user's upload, not the app's write
        self.pipe.put_drop(MODEL, name, DATA[data])
        self.pipe.storage.fault = fault
        for _ in range(2 if twice else 1):  # the blob trigger may fire twice for one blob version
            self._guard(lambda: self.pipe.fire_drop(MODEL, name))

    @rule(version=st.integers(1, 6), by=st.sampled_from(["ann", "bob"]))
    def approve(self, version: int, by: str) -> None:
        self._guard(lambda: releases.approve(self.pipe.ctx.fresh(), MODEL, version, by=by))

    @rule(version=st.integers(1, 6))
    def reject(self, version: int) -> None:
        self._guard(lambda: releases.reject(self.pipe.ctx.fresh(), MODEL, version, by="ann", reason="no"))

    @rule(frm=st.one_of(st.none(), st.integers(1, 6)), to=st.one_of(st.none(), st.integers(1, 6)))
    def rollback(self, frm: int | None, to: int | None) -> None:
        body = {k: v for k, v in (("from", frm), ("to", to)) if v is not None}
        self._guard(lambda: releases.rollback(self.pipe.ctx.fresh(), MODEL, body, by="ops"))

    # -- the platform ---------------------------------------------------------------------------

    @rule(queue=st.sampled_from(QUEUES))
    def deliver(self, queue: str) -> None:
        self._guard(lambda: self.pipe.deliver_one(queue))

    @rule(queue=st.sampled_from(PIPELINE_QUEUES))
    def duplicate_a_message(self, queue: str) -> None:
        texts = self.pipe.storage.queue_texts(queue)
        if texts:  # the platform's own at-least-once delivery, not an app write: never faulted
            fault, self.pipe.storage.fault = self.pipe.storage.fault, None
            self.pipe.storage.enqueue_raw(queue, texts[0])
            self.pipe.storage.fault = fault

    @rule(after=st.integers(1, 12))
    def crash_at_a_later_write(self, after: int) -> None:
        self.crash_in = after
        self.pipe.storage.fault = self._fault

    @rule(seconds=st.sampled_from([5, 30, 61, 130, 601]))
    def time_passes(self, seconds: int) -> None:
        self.pipe.clock.advance(seconds)

    @rule()
    def sweeper_runs(self) -> None:
        self._guard(lambda: sweep(self.pipe.ctx.fresh()))

    @precondition(lambda self: self.pipe.pending() > 0 or self.pipe.open_claims())
    @rule()
    def everything_settles(self) -> None:
        self._disarm()
        self.settle()

    # -- plumbing -------------------------------------------------------------------------------

    def _fault(self, op: str, where: str, what: str) -> None:
        if op in ("write", "enqueue", "delete", "delete_message") and self.crash_in is not None:
            self.crash_in -= 1
            if self.crash_in <= 0:
                self.crash_in = None
                self.pipe.storage.fault = None
                raise Crash(f"worker killed before {op} {what}")

    def _disarm(self) -> None:
        self.crash_in = None
        self.pipe.storage.fault = None

    def _guard(self, action) -> None:  # type: ignore[no-untyped-def]
        try:
            action()
        except Crash:
            pass  # the worker died: what it wrote stays, what it did not write never happens
        except PipelineError:
            pass  # refused (409, 400, 404): a refusal changes nothing, the invariants below check that

    def settle(self) -> None:
        self.pipe.run_until_idle(max_steps=2000)
        self.pipe.clock.advance(self.pipe.ctx.lease_seconds)  # what a crash left is old enough to finish
        sweep(self.pipe.ctx.fresh())
        self.pipe.run_until_idle(max_steps=2000)
        check_invariants(self.pipe)

    @invariant()
    def always(self) -> None:
        fault, self.pipe.storage.fault = self.pipe.storage.fault, None
        try:
            if registry.model_exists(self.pipe.storage, MODEL):
                check_always(self.pipe.storage, MODEL)
        finally:
            self.pipe.storage.fault = fault

    def teardown(self) -> None:
        if hasattr(self, "pipe"):
            self._disarm()
            self.settle()  # once the queues drain, no version and no run is left unsettled


TestLifecycle = Lifecycle.TestCase


def test_the_datasets_differ_so_each_trains_its_own_version() -> None:
    hashes = {pd.util.hash_pandas_object(d, index=False).sum() for d in DATA.values()}
    assert len(hashes) == len(DATA)
