"""The plugin host: documented hooks, third-party adapters by entry point."""

from __future__ import annotations

import inspect
import logging
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.onboarding.registry import read_profile
from gateway.placement import service as placement
from gateway.plugin import hookspecs
from gateway.plugin.adapter import OutboundPackage, Receipt
from gateway.plugin.manager import adapters, get_plugin_manager
from plugins.agency_http.adapter import AgencyHttpAdapter
from schemas.case import Case
from tests.helpers import sample_case


def test_every_hook_is_prefixed_typed_and_documented() -> None:
    hooks = [f for name, f in vars(hookspecs).items() if name.startswith("gateway_")]
    assert hooks
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert ":param" in doc and ":return:" in doc, hook.__name__
        assert "return" in hook.__annotations__


@pytest.fixture
def third_party_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real installed distribution (dist-info on sys.path) exposing a `gateway` entry point."""
    (tmp_path / "acme_gateway_plugin.py").write_text(
        textwrap.dedent("""
        from gateway import hookimpl
        from gateway.plugin.adapter import Adapter

        class FaxAdapter(Adapter):
            name = "fax"
            kinds = frozenset({"agency"})

        @hookimpl
        def gateway_register_adapters(register):
            register(FaxAdapter)
    """)
    )
    dist = tmp_path / "acme_gateway_plugin-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-gateway-plugin\nVersion: 1.2.3\n"
    )
    (dist / "entry_points.txt").write_text("[gateway]\nfax = acme_gateway_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "acme_gateway_plugin"
    sys.modules.pop("acme_gateway_plugin", None)


def test_third_party_adapter_loads_from_entry_point(third_party_plugin: str) -> None:
    pm = get_plugin_manager()
    assert "fax" in adapters(pm)
    assert "fax" not in adapters(get_plugin_manager(load_entrypoints=False))


def test_sample_profiles_use_registered_adapters() -> None:
    names = adapters(get_plugin_manager(load_entrypoints=False))
    for profile in (Path(__file__).parents[1] / "examples" / "partners").glob("*.toml"):
        assert read_profile(profile)[0].adapter in names


async def test_a_crashing_adapter_is_logged_for_developers_without_the_debtors_data(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A plugin's bug (not a gateway error) is logged with its frames and its type, and
    with its message stripped of the package's personal data, which it may quote."""

    class CrashingAgency(AgencyHttpAdapter):
        async def deliver(self, package: OutboundPackage) -> Receipt:
            name = package.claims["data"]["debtor"]["name"]
            raise RuntimeError(f"could not encode the case of {name} for the agency")

    gw.adapters["agency_http"] = CrashingAgency
    case = Case.model_validate_json(sample_case().read_text())
    await placement.place(gw, case, "acme-collect", "collection", actor="test")
    with caplog.at_level(logging.ERROR, logger="gateway"):
        stats = await Dispatcher(gw).run_once()
    assert stats.retry_wait == 1  # a bug is retried: a fixed deployment then delivers
    [record] = [r for r in caplog.records if "adapter agency_http failed on pkg_" in r.getMessage()]
    logged = record.getMessage()
    assert "RuntimeError: could not encode the case of <redacted> for the agency" in logged
    assert "in deliver" in logged and record.exc_info is None
    assert case.debtor.name not in caplog.text


def test_a_packages_claims_are_read_once_and_only_when_an_adapter_asks_for_them() -> None:
    """The dispatcher hands adapters packages whose claims are read from the signed form
    on first use: an adapter that sends `sealed` as it is never pays for them."""
    reads: list[str] = []

    def read() -> dict[str, object]:
        reads.append("read")
        return {"data": {"debtor": {"name": "Zhang San"}}}

    package = OutboundPackage("pkg_1", "case_1", "collection", "jwe", "a.b.c.d.e", read)
    assert package.sealed == "a.b.c.d.e" and reads == []
    assert package.claims["data"]["debtor"]["name"] == "Zhang San"
    assert package.claims is package.claims and reads == ["read"]
    assert OutboundPackage("pkg_2", "case_2", "collection", "jwe", "x", {"data": {}}).claims == {"data": {}}
