"""docs/rules.md names every rule of every pack, with its source at the article and the
tests that prove it; every test it names exists; every source names its article."""

from __future__ import annotations

import ast
import re

import pytest

from gateway.supervision.rules import load_rule_pack
from gateway.supervision.rules_text import BannedPhrases
from tests.helpers import REPO

DOC = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
PACKS = {"cn": "## China (`cn`)", "us-reg-f": "## United States (`us-reg-f`)"}
#: An article, chapter, clause or paragraph: what a citation must come down to.
ARTICLE = re.compile(
    r"第[一二三四五六七八九十百零]+[条章]|GB/T 45251-2025 \d(?:\.\d+)+|1006\.\d+(?:\([0-9a-zA-Z]+\))+"
)
#: Each text a source may name, and what must follow its name: its article (or chapter,
#: or clause), never the bare title.
CITED_AS = {
    "《金融机构个人消费类贷款催收工作指引（试行）》": r"第[一二三四五六七八九十]+[章条]",
    "CBA guideline": r"第[一二三四五六七八九十]+[章条]",
    "GB/T 45251-2025": r"\d(?:\.\d+)+",
    "《商业银行信用卡业务监督管理办法》": r"第[一二三四五六七八九十]+条",
    "《个人信息保护法》": r"第[一二三四五六七八九十]+条",
    "《民法典》": r"第[一二三四五六七八九十百零]+条",
    "12 CFR": r"1006\.\d+\(",
}


def rows(pack: str) -> dict[str, list[str]]:
    """The table rows of ``pack``'s section: rule id -> cells after the first."""
    section = DOC.split(PACKS[pack], 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        if match := re.match(r"^\| `([a-z]+\.[a-z0-9-]+)`[^|]* \|", line):
            found[match.group(1)] = [cell.strip() for cell in line.strip().strip("|").split(" | ")][1:]
    return found


def sources(pack: str) -> dict[str, str]:
    """Every source the pack gives: per rule, and per group of banned phrases."""
    found = {}
    for rule in load_rule_pack(pack).rules():
        found[rule.id] = rule.source
        if isinstance(rule, BannedPhrases):
            for n, group in enumerate(rule.groups):
                found[f"{rule.id} group {n + 1}"] = group.source
    return found


@pytest.mark.parametrize("pack", PACKS)
def test_every_rule_has_a_row_with_what_it_enforces_its_source_and_its_tests(pack: str) -> None:
    table = rows(pack)
    missing = {rule.id for rule in load_rule_pack(pack).rules()} - set(table)
    assert not missing, f"docs/rules.md has no row for {sorted(missing)} in the {pack} section"
    for rule, (enforces, source, proved_by) in table.items():
        assert enforces and ARTICLE.search(source), f"{rule}: no article in {source!r}"
        assert re.search(r"`tests/[a-z_]+\.py::[a-z0-9_]+`", proved_by), f"{rule}: no test named"


@pytest.mark.parametrize("pack", PACKS)
def test_the_table_cites_the_articles_the_pack_cites(pack: str) -> None:
    table = rows(pack)
    for rule in load_rule_pack(pack).rules():
        cited = set(ARTICLE.findall(rule.source))
        assert cited, f"{pack} {rule.id}: its source names no article: {rule.source!r}"
        listed = set(ARTICLE.findall(table[rule.id][1]))
        assert cited <= listed, f"{pack} {rule.id}: docs/rules.md does not cite {sorted(cited - listed)}"


@pytest.mark.parametrize("pack", PACKS)
def test_every_text_a_source_names_is_cited_at_its_article(pack: str) -> None:
    cells = {f"row {rule}": cells[1] for rule, cells in rows(pack).items()}
    for where, source in {**sources(pack), **cells}.items():
        for name, article in CITED_AS.items():
            for match in re.finditer(re.escape(name), source):
                after = source[match.end():]
                assert re.match(r"\s*(?:\(2020 revision\) )?" + article, after), (
                    f"{pack} {where}: {name} cited without its article: {source!r}"
                )


def test_no_source_rests_on_an_unchecked_chapter_or_a_working_note() -> None:
    """The CBA guideline has no chapter called 催收禁止行为; sources name published texts."""
    for pack in PACKS:
        for where, source in sources(pack).items():
            for wrong in ("催收禁止行为", "seeds"):
                assert wrong not in source, f"{pack} {where}: {wrong!r}"
    assert "催收禁止行为" not in DOC and "seeds" not in DOC


def test_every_test_named_exists() -> None:
    named = set(re.findall(r"`(tests/[a-z_]+\.py)::([a-z0-9_]+)`", DOC))
    assert len(named) > 30
    for path, function in sorted(named):
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert function in defined, f"docs/rules.md names {path}::{function}, which does not exist"
