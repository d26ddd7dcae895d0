"""The deployment files: the compose file parsed (services, environment), the image
slim and unprivileged with `gateway serve` as its entry, the systemd unit, and alert
rules that name only metrics the gateway exposes."""

from __future__ import annotations

import configparser
import re
from datetime import UTC, datetime

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.core import Gateway
from gateway.ops.metrics import exposition
from tests.helpers import REPO


def test_compose_runs_the_gateway_on_postgresql() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "gateway", "dispatch"}
    assert services["db"]["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    for name in ("gateway", "dispatch"):
        service = services[name]
        env = service["environment"]
        assert env["GATEWAY_DATABASE_URL"].startswith("postgresql://gateway:${GATEWAY_DB_PASSWORD")
        assert env["GATEWAY_DATABASE_URL"].endswith("@db:5432/gateway")
        assert env["GATEWAY_CONFIG"] == "/srv/gateway/gateway.toml" and env["GATEWAY_LOG_FORMAT"] == "json"
        assert service["stop_signal"] == "SIGTERM"
    gateway = services["gateway"]
    assert gateway["depends_on"]["db"]["condition"] == "service_healthy"
    assert gateway["command"][:1] == ["serve"] and "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["ports"] == ["127.0.0.1:8080:8080"]
    assert services["dispatch"]["command"][:1] == ["dispatch"]
    assert "pgdata" in compose["volumes"]


def test_image_is_slim_unprivileged_and_serves() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms and all("-slim" in line for line in froms)
    assert "USER gateway" in lines and not any(line == "USER root" for line in lines)
    assert 'ENTRYPOINT ["gateway"]' in lines
    assert any(line.startswith('CMD ["serve"') for line in lines)


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((REPO / "deploy" / "gateway.service").read_text())
    service = unit["Service"]
    assert service["User"] == "gateway" and service["KillSignal"] == "SIGTERM"
    assert service["ExecStart"].startswith("/opt/gateway/bin/gateway serve")
    assert unit["Install"]["WantedBy"] == "multi-user.target"


async def test_alert_rules_name_only_exposed_metrics(gw: Gateway) -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "gateway-rules.yml").read_text())
    text = (await exposition(gw.db, datetime.now(UTC))).decode()
    exposed = {family.name for family in text_string_to_metric_families(text)}
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 10
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
        for name in re.findall(r"\bgateway_\w+", rule["expr"]):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert base in exposed, f"{rule['alert']}: {name} is not exposed"
        runbook = rule["annotations"].get("runbook", "")
        if runbook:
            anchor = runbook.split("#")[1]
            doc = (REPO / "docs" / "operating.md").read_text()
            headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", doc, re.M)}
            assert anchor in headings, f"{rule['alert']}: no section #{anchor} in docs/operating.md"


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
