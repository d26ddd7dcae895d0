"""Arbitrary bodies and headers thrown at the callback endpoint never cause a 5xx."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_settings
from gateway.core import Gateway
from gateway.http import create_app
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import dumps, event, signed_headers
from tests.conftest import Templates
from tests.helpers import EXAMPLES, SAMPLE_KEY_CURVES, invoke, sample_case, write_partner_keys


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, templates: Templates) -> Iterator[dict[str, Any]]:
    """A real gateway HTTP server on 127.0.0.1, in its own thread and event loop."""
    ws = tmp_path_factory.mktemp("fuzz") / "ws"
    with templates.building(ws):  # set-up against a database of its own
        invoke("init", ws)
        for pid, crv in SAMPLE_KEY_CURVES.items():
            write_partner_keys(ws / "keys", pid, crv)
        invoke("-c", ws, "partners", "add", EXAMPLES / "partners" / "acme-collect.toml")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        state: dict[str, Any] = {}

        async def start() -> None:
            gw = await Gateway.open(load_settings(ws))
            placed = await placement.place(
                gw,
                Case.model_validate_json(sample_case().read_text()),
                "acme-collect",
                "collection",
                actor="t",
            )
            runner = web.AppRunner(create_app(gw.settings, gateway=gw))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            secret = Path(gw.keys.add_webhook_secret("acme-collect")).read_text().split()[-1]
            state.update(gw=gw, runner=runner, port=port, case_ref=placed.case_ref, secret=secret)
            ready.set()

        thread = threading.Thread(
            target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
        )
        thread.start()
        assert ready.wait(30)
    yield state

    async def stop() -> None:
        await state["runner"].cleanup()
        await state["gw"].close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


def send(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300) | json_values.map(lambda v: dumps({"v": v}).encode()),
    headers=st.dictionaries(
        st.sampled_from(
            ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length-x"]
        ),
        header_values,
    ),
    partner=st.sampled_from(["acme-collect", "nobody", "ACME", "a" * 70]),
)
def test_arbitrary_requests_never_5xx(
    server: dict[str, Any], body: bytes, headers: dict[str, str], partner: str
) -> None:
    status = send(server["port"], f"/v1/partners/{partner}/callbacks", body, headers)
    assert 400 <= status < 500


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["channel", "target", "outcome", "staff_count", "text", "amount", "due", "reason", "x"]
        ),
        json_values,
    ),
    type_=st.sampled_from(
        ["contact_attempt", "promise_to_pay", "accepted", "payment_reported", "complaint", "bogus"]
    ),
)
def test_validly_signed_arbitrary_events_never_5xx(
    server: dict[str, Any], fields: dict[str, Any], type_: str
) -> None:
    """Signed correctly, so the body reaches validation, state and compliance checks."""
    body = dumps(event(server["case_ref"], type_, **fields))
    headers = signed_headers(server["secret"], body)
    status = send(server["port"], "/v1/partners/acme-collect/callbacks", body.encode(), headers)
    assert status < 500
