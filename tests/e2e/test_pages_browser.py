"""The model pages in a real headless Chromium, served by the app in the local host on a private Azurite.

Two models go through the real pipeline: a classifier (predictive maintenance) with monitored, partly
labelled traffic and two versions waiting for approval, and a regressor (diabetes) whose spec
description carries a <script> tag. The browser opens the list, opens each model, sees the charts
drawn with no console error, approves one pending version with the admin key, rejects the other with
a reason, rolls the champion back and requests a retrain.
Screenshots go to test-artifacts/pages/ (git-ignored).
"""
from __future__ import annotations

import http.client
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devhost.azurite import ROOT
from devhost.host import DevHost
from examples.datasets import diabetes, predictive_maintenance
from shared import paths, registry
from shared.lifecycle.records import RunStatus, VersionStatus
from shared.simulate import simulate
from shared.storage import AzureStorage
from shared.ui.serve import CSP
from tests.e2e.browser import Browser, require_browser
from tests.e2e.conftest import MASTER_KEY
from tests.e2e.support import drop, example_spec, upload, wait_for_run, wait_for_run_id
from tests.fixtures.devhost_support import wait_for

SHOTS = ROOT / "test-artifacts" / "pages"
XSS = "<script>window.__xss = 1</script><b>bold?</b>"
MONITORING = {"min_rows": 100, "retrain": {"enabled": False}}


@dataclass(frozen=True)
class Site:
    """The app's URLs and keys, and the two models the tests look at."""

    base: str  # http://127.0.0.1:<port>/api
    key: str
    classifier: str
    regressor: str
    storage: AzureStorage

    def page(self, path: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {**params, "code": self.key}.items())
        return f"{self.base}/{path}?{query}"


@pytest.fixture(scope="module")
def site(app_host: DevHost, azurite: Any) -> Site:
    """A monitored classifier with two versions pending approval, and a promoted regressor."""
    from shared.settings import Settings

    store = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))
    suffix = uuid.uuid4().hex[:6]
    classifier, regressor = f"pages-pm-{suffix}", f"pages-dia-{suffix}"
    base = f"http://127.0.0.1:{app_host.port}/api"
    key = app_host.function_key or ""

    upload(store, example_spec("diabetes", regressor, description=XSS))
    drop(store, regressor, "data.csv", diabetes())
    upload(store, example_spec("predictive-maintenance", classifier, monitoring=MONITORING))
    drop(store, classifier, "data.csv", predictive_maintenance(n_rows=2000, seed=3))
    assert wait_for_run(store, classifier, "data.csv").status == RunStatus.PROMOTED
    assert wait_for_run(store, regressor, "data.csv").status == RunStatus.PROMOTED

    result = simulate(base, key, classifier, rows=400, drift=True, label_share=0.5, dataset="predictive-maintenance")
    assert result.scored == 400
    wait_for(lambda: len(store.list(paths.PREDICTIONS, f"{classifier}/")) > 0, "the prediction log", timeout=30)
    monitored = requests.post(f"{base}/registry/models/{classifier}/monitor", headers={"x-functions-key": MASTER_KEY},
                              timeout=60)
    assert monitored.status_code == 200, monitored.text

    upload(store, example_spec("predictive-maintenance", classifier, monitoring=MONITORING, approval="manual",
                               comparison={"roc_auc": {"max_regression": 1.0}}, quality_bar={"roc_auc": {"min": 0.6}}))
    drop(store, classifier, "more.csv", predictive_maintenance(n_rows=2000, seed=5))
    assert wait_for_run(store, classifier, "more.csv").status == RunStatus.PENDING_APPROVAL
    drop(store, classifier, "third.csv", predictive_maintenance(n_rows=2000, seed=6))
    assert wait_for_run(store, classifier, "third.csv").status == RunStatus.PENDING_APPROVAL
    return Site(base, key, classifier, regressor, store)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    chromium = Browser()
    yield chromium
    chromium.close()


def no_problems(browser: Browser) -> None:
    problems = browser.problems()
    assert not problems, f"console errors, page errors or failed requests: {problems}"


def test_the_models_list_shows_each_champion_its_pending_approvals_and_drift(site: Site, browser: Browser) -> None:
    opened = browser.goto(site.page("ui"))
    assert opened["status"] == 200
    assert opened["headers"]["content-security-policy"] == CSP
    row = f'tr[data-model="{site.classifier}"]'
    assert browser.text(f"{row} .champion").strip() == "v1"
    assert browser.text(f"{row} .pending").strip() == "2"
    assert "drift" in browser.text(row)
    assert browser.text(f'tr[data-model="{site.regressor}"] .champion').strip() == "v1"
    assert "no monitoring yet" in browser.text(f'tr[data-model="{site.regressor}"]')
    href = browser.attribute(f"{row} a.model-link", "href") or ""
    assert parse_qs(urlsplit(href).query)["code"] == [site.key], "in-page links carry the function key on"
    browser.screenshot(SHOTS / "01-models.png")
    no_problems(browser)


def test_a_classifier_page_draws_metrics_roc_confusion_and_drift_without_console_errors(site: Site,
                                                                                        browser: Browser) -> None:
    browser.goto(site.page("ui"))
    browser.click(f'tr[data-model="{site.classifier}"] a.model-link')
    assert urlsplit(browser.url()).path.endswith(f"/ui/models/{site.classifier}")
    assert browser.text("#champion").strip() == "v1"
    assert browser.count('canvas[data-chart="metric"]') >= 1
    assert browser.count('canvas[data-chart="roc"]') == 1
    drawn = browser.evaluate("Array.from(document.querySelectorAll('canvas[data-chart]:not([data-chart=histogram])'))"
                             ".map(c => [c.dataset.drawn, c.width, c.height, !!Chart.getChart(c)])")
    assert drawn and all(d[0] == "yes" and d[1] > 0 and d[2] > 0 and d[3] for d in drawn), drawn
    assert browser.count("#confusion td") == 4
    assert "passed" in browser.text('[data-gate="bar"]')
    assert browser.count("#drift tbody tr") > 0 and browser.count("details.histogram") > 0
    browser.click("details.histogram summary")  # drawn when opened (the toggle event comes after the click)
    browser.wait_until("!!Chart.getChart(document.querySelector('details.histogram canvas'))")
    assert "Label coverage" in browser.text("#monitoring")
    browser.screenshot(SHOTS / "02-classifier-champion.png")
    no_problems(browser)


def test_the_pending_version_shows_its_gates_and_its_spec_diff_from_the_champion(site: Site,
                                                                                 browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.classifier}", version="2"))
    assert "pending_approval" in browser.text("#selected h2")
    assert "attention" in browser.text('[data-gate="approval"]')
    diff = browser.text("#spec-diff")
    assert "-approval: auto" in diff and "+approval: manual" in diff
    assert browser.count("#approve") == 1 and browser.count("#reject") == 1
    assert "the same contract as the champion (version 1)" in browser.text("#contract")
    assert browser.count("#signature-inputs tbody tr") == 6 and "machine_type" in browser.text("#signature-inputs")
    assert "class labels, in order" in browser.text("#signature-outputs")
    browser.screenshot(SHOTS / "03-classifier-pending.png")
    no_problems(browser)


def test_a_regressor_page_draws_predicted_against_actual_and_residuals(site: Site, browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.regressor}"))
    for chart in ("scatter", "residuals", "metric"):
        assert browser.evaluate(f"!!Chart.getChart(document.querySelector('canvas[data-chart={chart}]'))"), chart
    browser.screenshot(SHOTS / "04-regressor.png")
    no_problems(browser)


def test_a_spec_description_with_a_script_tag_is_shown_as_text(site: Site, browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.regressor}"))
    assert browser.text("#description") == XSS
    assert browser.evaluate("window.__xss === undefined && document.querySelectorAll('#description *').length === 0")
    browser.goto(site.page("ui"))
    assert XSS in browser.text(f'tr[data-model="{site.regressor}"]')
    assert browser.evaluate("window.__xss === undefined")
    no_problems(browser)


def test_an_unknown_model_is_a_404_page_naming_it_and_a_bad_version_a_400_page(site: Site,
                                                                              browser: Browser) -> None:
    opened = browser.goto(site.page("ui/models/no-such-model"))
    assert opened["status"] == 404 and opened["headers"]["content-security-policy"] == CSP
    assert "no-such-model" in browser.text("#error-message")
    assert parse_qs(urlsplit(browser.attribute("#back-to-list", "href") or "").query)["code"] == [site.key]
    browser.screenshot(SHOTS / "05-not-found.png")
    for bad, status in (("abc", 400), ("0", 400), ("-1", 400), ("99", 404)):
        answer = requests.get(site.page(f"ui/models/{site.classifier}", version=bad), timeout=30)
        assert answer.status_code == status, (bad, answer.text)
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"] == CSP
        assert "Traceback" not in answer.text and "version" in answer.text
    assert requests.get(site.page("ui/models/Bad.Model"), timeout=30).status_code == 400
    browser.problems()  # the 404 page load itself is logged as a failed resource


def test_pages_need_the_function_key_and_static_files_are_an_allow_list(site: Site) -> None:
    assert requests.get(f"{site.base}/ui", timeout=30).status_code == 401
    assert requests.get(f"{site.base}/ui/models/{site.classifier}", timeout=30).status_code == 401
    ok = requests.get(f"{site.base}/ui/static/ui.js", timeout=30)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/javascript")
    assert "immutable" in ok.headers["cache-control"] and ok.headers["x-content-type-options"] == "nosniff"
    for bad in ("..%2f..%2ffunction_app.py", "%2e%2e", "ui.js%00", "views.py", "UI.JS.map", "__init__.py",
                "chart.umd.min.js.map", "%2e%2e%2fviews.py", "..%5cviews.py", "%2e%2e%2f%2e%2e%2fviews.py"):
        answer = requests.get(f"{site.base}/ui/static/{bad}", timeout=30)
        assert answer.status_code == 404, (bad, answer.status_code)
    port = urlsplit(site.base).port
    for raw in ("/api/ui/static/..", "/api/ui/static/../../function_app.py", "/api/ui/static/./ui.js/../views.py"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # sent as is, dots and all
        connection.request("GET", raw)
        assert connection.getresponse().status == 404, raw
        connection.close()


def test_a_wrong_admin_key_shows_the_refusal_and_changes_nothing(site: Site, browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.classifier}", version="2"))
    browser.click("#approve")
    assert "admin key" in browser.wait_for_text("#action-result", "admin key")
    browser.fill("#admin-key", "not-the-admin-key")
    browser.click("#approve")
    assert "refused" in browser.wait_for_text("#action-result", "401")
    assert registry.get_version(site.storage, site.classifier, 2).status == VersionStatus.PENDING_APPROVAL
    browser.problems()  # the 401 answer is logged by Chromium as a failed resource


def test_approving_the_pending_version_with_the_admin_key_makes_it_the_champion(site: Site,
                                                                                browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.classifier}", version="2"))
    browser.fill("#admin-key", MASTER_KEY)
    browser.fill("#reviewer", "e2e-reviewer")
    browser.click("#approve")
    browser.wait_for_text("#champion", "v2")
    browser.wait_for_text("#action-result", "version 2 is the champion")  # the API's message, kept across the reload
    approval = browser.text('[data-gate="approval"]')
    assert "passed" in approval and "e2e-reviewer" in approval
    assert registry.get_aliases(site.storage, site.classifier)[0].champion == 2
    history = registry.get_aliases(site.storage, site.classifier)[0].history
    assert (history[-1].action, history[-1].by) == ("approve", "e2e-reviewer")
    kept = browser.evaluate("[location.href, localStorage.length, sessionStorage.length, document.cookie, "
                            "document.getElementById('admin-key').value]")
    assert MASTER_KEY not in kept[0] and kept[1:] == [0, 0, "", ""], kept
    browser.screenshot(SHOTS / "06-approved.png")
    no_problems(browser)


def test_rolling_back_from_the_page_restores_the_former_champion(site: Site, browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.classifier}"))
    assert "v2" in browser.text("#rollback") and "v1" in browser.text("#rollback")
    browser.fill("#admin-key", MASTER_KEY)
    browser.click("#rollback")
    browser.wait_for_text("#champion", "v1")
    browser.wait_for_text("#action-result", "rolled back from version 2 to version 1")
    aliases = registry.get_aliases(site.storage, site.classifier)[0]
    assert (aliases.champion, aliases.history[-1].action) == (1, "rollback")
    browser.screenshot(SHOTS / "07-rolled-back.png")
    no_problems(browser)


def test_rejecting_a_pending_version_with_a_reason_records_who_and_why(site: Site, browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.classifier}", version="3"))
    browser.fill("#admin-key", MASTER_KEY)
    browser.fill("#reviewer", "e2e-reviewer")
    browser.fill("#reject-reason", "drifted data <b>not</b> trusted")
    browser.click("#reject")
    browser.wait_for_text("#selected h2", "rejected")
    approval = browser.text('[data-gate="approval"]')
    assert "failed" in approval and "rejected by e2e-reviewer: drifted data <b>not</b> trusted" in approval
    record = registry.get_version(site.storage, site.classifier, 3)
    assert record.status == VersionStatus.REJECTED and record.history[-1].by == "e2e-reviewer"
    assert browser.count("#approve") == 0
    no_problems(browser)


def test_requesting_a_retrain_from_the_page_starts_a_run(site: Site, browser: Browser) -> None:
    browser.goto(site.page(f"ui/models/{site.regressor}"))
    browser.fill("#admin-key", MASTER_KEY)
    browser.click("#retrain")
    message = browser.wait_for_text("#action-result", "retrain queued")
    run_id = message.rsplit(" ", 1)[-1].strip()
    run = wait_for_run_id(site.storage, site.regressor, run_id)
    assert run.status == RunStatus.DUPLICATE  # the same data and spec: the pipeline trains nothing twice
    no_problems(browser)
