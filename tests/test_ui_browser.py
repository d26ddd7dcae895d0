"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a
real ``gateway serve`` over a populated workspace. Screenshots of every page, at desktop
and phone width, go to test-artifacts/ui/."""

from __future__ import annotations

import asyncio
import os
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import Templates
from tests.partners import PARTNER
from tests.ui_site import CHROMIUM_ARGS, OTHER, Site, install_chromium, populate, serve

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "ui"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, templates: Templates) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui")
    def build() -> tuple[Site, dict[str, str]]:
        # In a thread of its own: the browser's driver may already run a loop in this
        # one, and making the PostgreSQL schema runs one too.
        with templates.building(root / "ws"):
            return asyncio.run(populate(root)), dict(os.environ)

    with ThreadPoolExecutor(1) as pool:
        built, env = pool.submit(build).result()
    server = serve(built, env)
    try:
        yield built
    finally:
        server.terminate()
        server.wait(10)
        assert server.stderr is not None
        server.stderr.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = install_chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, site: Site, token: str) -> None:
    page.goto(site.url + "/ui/")
    assert page.url.startswith(site.url + "/ui/login"), "not signed in: sent to the sign-in form"
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.url + "/ui/")


def shoot(page: Page, name: str) -> None:
    """A full-page screenshot at desktop width, then at phone width."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def metric(page: Page, partner: str, name: str) -> str:
    return page.locator(f'tr[data-partner="{partner}"] [data-metric="{name}"]').inner_text().strip()


def test_sign_in_gives_a_strict_http_only_session_and_sign_out_ends_it(page: Page, site: Site) -> None:
    sign_in(page, site, site.operator)
    cookie = next(c for c in page.context.cookies() if c["name"] == "gw_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert cookie["expires"] > 0, "a session cookie with an expiry"
    headers = page.request.get(site.url + "/ui/").headers
    assert "script-src" not in headers["content-security-policy"]
    assert "style-src 'self'" in headers["content-security-policy"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(site.url + "/ui/login")
    page.context.add_cookies([{**cookie}])  # the old cookie, replayed: refused server-side
    page.goto(site.url + "/ui/")
    assert page.url.startswith(site.url + "/ui/login")


def test_a_wrong_token_is_refused(page: Page, site: Site) -> None:
    page.goto(site.url + "/ui/login")
    page.get_by_label("API token").fill("gwt_000000000000_nope")
    page.get_by_role("button", name="Sign in").click()
    assert "unknown or revoked token" in page.get_by_role("alert").inner_text()


def test_overview_shows_the_numbers_the_api_gives(page: Page, site: Site) -> None:
    sign_in(page, site, site.operator)
    summary: Any = site.api("/v1/metrics/summary", site.operator)
    for partner in (PARTNER, OTHER):
        outbox = summary["outbox"].get(partner, {})
        queue = sum(outbox.get(s, 0) for s in ("queued", "retry_wait", "sending"))
        assert metric(page, partner, "status") == summary["partners"][partner]
        assert metric(page, partner, "queue") == str(queue)
        assert metric(page, partner, "dead") == str(outbox.get("dead", 0))
        assert metric(page, partner, "breaker") == summary["breakers"].get(partner, "closed")
        overdue = summary["attestations_overdue"].get(partner, 0)
        assert metric(page, partner, "attestations_overdue") == str(overdue)
    assert metric(page, PARTNER, "attestations_overdue") == "1"
    assert metric(page, PARTNER, "delivered_today") == "1"
    assert int(metric(page, PARTNER, "violations_7d")) >= 1
    entries = page.locator('[data-metric="audit.log_entries"]').inner_text()
    assert entries == str(int(summary["audit"]["log_entries"]))
    shoot(page, "overview")


def test_partner_page_charts_the_scorecard(page: Page, site: Site) -> None:
    sign_in(page, site, site.operator)
    page.goto(f"{site.url}/ui/partners/{PARTNER}")
    card: Any = site.api(f"/v1/partners/{PARTNER}/scorecard", site.operator)
    assert page.locator('#scorecard [data-metric="cases"]').inner_text() == str(card["cases"])
    assert page.locator("figure.chart > svg").count() == 6
    for chart in ("ack_latency_hours", "right_party_contact_rate", "recovery_rate"):
        points = page.locator(f'[data-chart="{chart}"] circle.point')
        assert points.count() >= 1, chart
        assert points.last.get_attribute("data-value") not in (None, "")
    bars = page.locator('[data-chart="violations_by_rule"] rect.bar')
    assert sum(int(bars.nth(i).get_attribute("data-value") or 0) for i in range(bars.count())) >= 1
    assert page.locator("#contract-state").inner_text().startswith("in force")
    assert page.get_by_text("debtor.name").count() >= 1, "the policy's fields are listed"
    shoot(page, "partner")


def test_an_operator_suspends_and_reinstates_a_partner(page: Page, site: Site) -> None:
    sign_in(page, site, site.operator)
    page.goto(f"{site.url}/ui/partners/{OTHER}")
    page.get_by_label("Reason (goes into the audit log)").fill("complaints under review")
    page.get_by_role("button", name="Suspend").click()
    assert page.locator("#partner-status").inner_text() == "suspended"
    partners: Any = site.api("/v1/partners", site.auditor)
    assert {p["id"]: p["status"] for p in partners}[OTHER] == "suspended"
    shoot(page, "partner-suspended")
    page.get_by_label("Reason (goes into the audit log)").fill("review closed")
    page.get_by_role("button", name="Reinstate").click()
    assert page.locator("#partner-status").inner_text() == "active"
    partners = site.api("/v1/partners", site.auditor)
    assert {p["id"]: p["status"] for p in partners}[OTHER] == "active"


def test_an_operator_requeues_a_dead_package(page: Page, site: Site) -> None:
    sign_in(page, site, site.operator)
    page.goto(f"{site.url}/ui/partners/{PARTNER}")
    package = site.dead[0]
    page.get_by_label(f"Requeue {package}").check()
    page.get_by_label("Reason").last.fill("outage over")
    page.get_by_role("button", name="Requeue selected").click()
    assert "requeued 1, refused 0" in page.locator("#notice").inner_text()
    queued: Any = site.api(f"/v1/deliveries?partner={PARTNER}&state=queued", site.operator)
    assert package in {d["id"] for d in queued}


def test_a_post_without_the_csrf_token_is_refused(page: Page, site: Site) -> None:
    sign_in(page, site, site.operator)
    url = f"{site.url}/ui/partners/{OTHER}/status"
    form = {"action": "suspend", "reason": "forged"}
    assert page.request.post(url, form=form).status == 403
    assert page.request.post(url, form={**form, "csrf": "0" * 64}).status == 403
    partners: Any = site.api("/v1/partners", site.auditor)
    assert {p["id"]: p["status"] for p in partners}[OTHER] == "active"
    fresh = page.context.browser.new_context()  # type: ignore[union-attr]
    assert fresh.request.post(url, form=form, max_redirects=0).status == 401, "no session"
    fresh.close()


def test_an_auditor_reads_but_cannot_act(page: Page, site: Site) -> None:
    sign_in(page, site, site.auditor)
    page.goto(f"{site.url}/ui/partners/{PARTNER}")
    assert page.locator("#status-form").count() == 0
    assert page.get_by_role("button", name="Requeue selected").count() == 0
    csrf = page.locator('form.signout input[name="csrf"]').get_attribute("value")
    url = f"{site.url}/ui/partners/{PARTNER}/status"
    answer = page.request.post(url, form={"csrf": csrf or "", "action": "suspend", "reason": "x"})
    assert answer.status == 403 and "may not do this" in answer.text()
    requeue = page.request.post(f"{site.url}/ui/partners/{PARTNER}/requeue",
                                form={"csrf": csrf or "", "all": "1"})  # fmt: skip
    assert requeue.status == 403
    assert page.request.get(f"{site.url}/ui/cases/{site.case_id}").status == 403
    page.goto(f"{site.url}/ui/audit")
    assert int(page.locator("#log-size").inner_text()) > 0
    with page.expect_download() as download:
        page.get_by_role("button", name="Export bundle").click()
    saved = ARTIFACTS / "audit-bundle.zip"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    download.value.save_as(saved)
    names = zipfile.ZipFile(saved).namelist()
    assert "audit-bundle/entries.jsonl" in names and "audit-bundle/audit-log.vkey" in names
    shoot(page, "audit")


def test_violations_case_timeline_and_attestations(page: Page, site: Site) -> None:
    sign_in(page, site, site.operator)
    page.goto(f"{site.url}/ui/violations")
    page.get_by_label("Rule").select_option("cn.hours")
    page.get_by_role("button", name="Filter").click()
    cards = page.locator("article.violation")
    assert cards.count() == 1
    assert "催收时间" in cards.first.inner_text() and "Contact hours" in cards.first.inner_text()
    csv = page.request.get(site.url + "/ui/violations.csv?rule=cn.hours")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text().splitlines()[0].startswith("id,at,partner_id,case_id,rule,message")
    assert len(csv.text().strip().splitlines()) >= 2
    shoot(page, "violations")
    page.goto(f"{site.url}/ui/cases/{site.case_id}")
    kinds = set(page.locator("#timeline tr[data-kind]").evaluate_all("rows => rows.map(r => r.dataset.kind)"))
    assert {"disclosure", "placed", "accepted", "contact_attempt", "violation"} <= kinds
    assert "Asia/Shanghai" in page.locator("#timeline").inner_text()
    assert "UTC" in page.locator("#timeline").inner_text()
    shoot(page, "case")
    page.goto(f"{site.url}/ui/attestations")
    rows = page.locator("#attestations tbody tr")
    assert rows.first.get_attribute("data-overdue") == "true"
    shoot(page, "attestations")
