"""Operator-entered text holds no control or bidirectional characters.

A reason (suspension, offboarding, recall, removing webhook secrets, a requeue), a
token's label and the bank's name reach the audit log, the partner and the terminal:
CR/LF, ESC or a bidirectional override in them is refused at input, with one line,
nothing stored.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import CONFIG_NAME
from gateway.core import Gateway
from gateway.errors import InvalidInput
from gateway.http import create_app
from gateway.onboarding import tokens
from tests.helpers import invoke, workspace_sql

BAD = {
    "CR LF": "complaint\r\nacme-collect  active  fake row",
    "ESC": "complaint \x1b[2J\x1b[31mcleared",
    "NUL": "complaint\x00",
    "C1": "complaint\x85next",
    "bidi override": "complaint \u202edeifitrec",
    "bidi isolate": "complaint \u2066x\u2069",
}


def audit_count(ws: Path) -> int:
    with workspace_sql(ws) as sql:
        return int(sql("SELECT COUNT(*) AS n FROM audit_entries")[0]["n"])


def commands(text: str) -> dict[str, list[str]]:
    return {
        "suspend": ["partners", "suspend", "acme-collect", "--reason", text],
        "offboard": ["partners", "offboard", "acme-collect", "--reason", text],
        "recall": ["recall", "case-1001", "--partner", "acme-collect", "--reason", text],
        "webhook-secret-remove": [
            "partners", "webhook-secret-remove", "acme-collect", "--all", "--reason", text,
        ],
        "tokens create": ["tokens", "create", "--role", "auditor", "--label", text],
    }


@pytest.mark.parametrize("command", list(commands("")))
@pytest.mark.parametrize("kind", list(BAD))
def test_control_characters_in_operator_text_are_refused(onboarded: Path, command: str, kind: str) -> None:
    before = audit_count(onboarded)
    result = invoke("-c", onboarded, *commands(BAD[kind])[command])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1, result.output
    assert "control" in result.output and "U+" in result.output, result.output
    assert not any(c in result.output for c in "\r\x1b\x00\x85\u202e\u2066"), repr(result.output)
    assert audit_count(onboarded) == before
    listed = json.loads(invoke("-c", onboarded, "partners", "list", "--json").output)
    assert {r["id"]: r["status"] for r in listed}["acme-collect"] == "active"


def test_plain_operator_text_is_still_taken(onboarded: Path) -> None:
    label = invoke("-c", onboarded, "tokens", "create", "--role", "auditor", "--label", "ops – 审计")
    assert label.exit_code == 0, label.output
    reason = "complaint under review"
    result = invoke("-c", onboarded, "partners", "suspend", "acme-collect", "--reason", reason)
    assert result.exit_code == 0, result.output


async def test_a_recall_over_the_api_with_a_line_break_is_refused(
    gw: Gateway, aiohttp_client: Any
) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    operator = {"Authorization": "Bearer " + await tokens.create(gw, "operator", "t", actor="test")}
    request = {"case_id": "case-1001", "partner": "acme-collect", "reason": BAD["CR LF"]}
    refused = await client.post("/v1/recalls", json=request, headers=operator)
    assert refused.status == 400
    assert "control character (U+000D)" in (await refused.json())["detail"]
    with pytest.raises(InvalidInput, match=r"label holds a control character \(U\+000A\)"):
        await tokens.create(gw, "auditor", "line\nbreak", actor="test")


def test_the_bank_name_is_written_as_a_toml_string_and_controls_are_refused(tmp_path: Path) -> None:
    quoted = invoke("init", tmp_path / "a", "--bank-name", 'Bank "A" \\ Co\nsigning_alg = "EdDSA"')
    assert quoted.exit_code == 2 and "U+000A" in quoted.output, quoted.output
    assert not (tmp_path / "a" / CONFIG_NAME).exists()
    named = invoke("init", tmp_path / "b", "--bank-name", 'Bank "B" \\ 银行')
    assert named.exit_code == 0, named.output
    config = tomllib.loads((tmp_path / "b" / CONFIG_NAME).read_text())
    assert config["bank_name"] == 'Bank "B" \\ 银行'
