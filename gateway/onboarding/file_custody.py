"""The built-in key custody, ``files``, as a plugin: chosen by ``key_custody = "files"``."""

from __future__ import annotations

from gateway.config import Settings
from gateway.onboarding.custody import FileCustody, KeyCustody
from gateway.onboarding.keys import KeyStore
from gateway.plugin.hookspecs import hookimpl


@hookimpl(trylast=True)
def gateway_key_custody(settings: Settings) -> KeyCustody | None:
    if settings.key_custody == FileCustody.name:
        return FileCustody(KeyStore(settings.keys_dir))
    return None
