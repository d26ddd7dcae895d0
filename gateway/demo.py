"""``make demo``: a throwaway workspace, the sample partners, sample cases placed.

It drives the real ``gateway`` command, printing each command as a newcomer would type
it, and ends with what every partner receives next to the full case, so the
minimization is visible at a glance.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

from gateway.cli import flatten
from gateway.keys import generate_encryption_key

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
WORKSPACE = REPO / "demo-workspace"
#: Which sample case goes to which partner for which purpose.
PLACEMENTS = [
    ("case-1001.json", "acme-collect", "collection"),
    ("case-1001.json", "sz-arbitration", "arbitration"),
    ("case-1001.json", "notify-sms", "reminder"),
    ("case-1001.json", "notify-mail", "reminder"),
    ("case-1002.json", "acme-collect", "collection"),
    ("case-1002.json", "notify-sms", "reminder"),
]
#: Partner key types: one of each, so both sealing paths are shown.
PARTNER_CURVES = {"acme-collect": "P-256", "sz-arbitration": "X25519"}


def gateway(*args: str | Path) -> str:
    shown = " ".join(str(a) for a in args)
    print(f"$ gateway {shown}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "-c", str(WORKSPACE), *map(str, args)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"demo failed at `gateway {shown}`:\n{proc.stderr}")
    return proc.stdout


def play_partners() -> None:
    """What each partner does before onboarding: make a key pair, send the bank its JWKS."""
    side = WORKSPACE / "partner-side"
    for partner, crv in PARTNER_CURVES.items():
        key = generate_encryption_key(crv)
        jwks = WORKSPACE / "keys" / "partners" / f"{partner}.jwks.json"
        jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}, indent=2))
        side.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = side / f"{partner}.private.jwk"
        private.touch(mode=0o600)
        private.write_text(json.dumps(key.as_dict(private=True)))
        print(f"  partner {partner} published a {crv} key: {jwks.relative_to(REPO)}")


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def cell(value: Any, size: int) -> str:
    """``value`` fitted to ``size`` terminal columns (CJK counts double), one space kept."""
    text = "·" if value is None else str(value)
    while width(text) > size - 1:
        text = text[:-2] + "…"
    return text + " " * (size - width(text))


def matrix(case_file: str, sent: dict[str, dict[str, Any]]) -> str:
    full = json.loads((EXAMPLES / "cases" / case_file).read_text())
    partners = list(sent)
    flat = {p: dict(flatten(data)) for p, data in sent.items()}
    cols = [22] + [18] * len(partners)
    lines = [
        cell("field", 32)
        + cell(f"full case {full['case_id']}", cols[0])
        + "".join(cell(p, 18) for p in partners)
    ]
    for path, value in flatten(full):
        lines.append(
            cell(path, 32) + cell(value, cols[0]) + "".join(cell(flat[p].get(path), 18) for p in partners)
        )
    return "\n".join(line.rstrip() for line in lines)


def main() -> None:
    shutil.rmtree(WORKSPACE, ignore_errors=True)
    print("== 1. A fresh workspace: config, the bank's keys, the database")
    gateway("init", WORKSPACE, "--bank-id", "example-bank", "--bank-name", "Example Bank")
    print("== 2. Partners send their public keys; the integration team onboards their profiles")
    play_partners()
    for profile in sorted((EXAMPLES / "partners").glob("*.toml")):
        print("  " + gateway("partners", "add", profile.relative_to(REPO)).strip())
    print(gateway("partners", "list"))
    print("== 3. Bank systems place cases: policy check, minimize, seal, outbox")
    sent: dict[str, dict[str, dict[str, Any]]] = {}
    for case_file, partner, purpose in PLACEMENTS:
        package_id = gateway(
            "place", Path("examples/cases") / case_file, "--partner", partner, "--purpose", purpose
        ).strip()
        shown = json.loads(gateway("package", "show", package_id, "--json"))
        sent.setdefault(case_file, {})[f"{partner}"] = shown["claims"]["data"]
        print(f"  -> {package_id}")
    print("\n== 4. What each partner receives (· = never leaves the bank)")
    for case_file, by_partner in sent.items():
        print()
        print(matrix(case_file, by_partner))
    print(
        f"\nworkspace kept in {WORKSPACE.relative_to(REPO)}/ ; try: gateway -c {WORKSPACE.name} package list"
    )


if __name__ == "__main__":
    main()
