"""The plugin host: documented hooks, third-party adapters by entry point."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import hookspecs
from gateway.plugins import adapters, get_plugin_manager
from gateway.registry import read_profile


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
        from gateway.adapters import Adapter

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
