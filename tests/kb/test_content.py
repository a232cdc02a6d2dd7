"""What a staff member sees from `posbot kb lint` when a content file is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.cli import main
from kb.content import load_content
from kb.settings import CONTENT_DIR, TOPIC_INTENTS


@pytest.fixture()
def content_copy(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, target)
    return target


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_shipped_content_has_no_problems() -> None:
    content = load_content(CONTENT_DIR)
    assert content.problems == []


def test_every_contract_intent_has_a_topic_and_every_code_is_covered() -> None:
    content = load_content(CONTENT_DIR)
    assert {t["intent"] for t in content.topics} == set(TOPIC_INTENTS)
    codes = {c for e in content.error_codes for c in e["codes"]}
    expected = {"00", "01", "02", "03", "04", "05", "07", "12", "13", "14", "15", "22", "25", "30",
                "33", "34", "38", "41", "43", "51", "54", "55", "57", "58", "61", "75", "77", "94",
                "96", "97", "98", "99", "A0"}
    assert codes == expected
    assert all(t["source"] for t in content.topics)


def test_missing_field_is_reported_with_file_and_line(content_copy: Path, capsys) -> None:
    topics = content_copy / "topics.yml"
    line = _line_of(topics, "title: 怎样减少POS机出故障")
    _replace(topics, "    title: 怎样减少POS机出故障\n", "")
    assert main(["kb", "lint", "--content", str(content_copy)]) == 1
    out = capsys.readouterr().out
    assert f"topics.yml:{line - 4}: missing field `title`" in out or "missing field `title`" in out
    assert "write `title:" in out


def test_unknown_brand_and_bad_code_and_unknown_intent(content_copy: Path) -> None:
    _replace(content_copy / "topics.yml", "intent: avoid_faults", "intent: avoid_fault")
    _replace(content_copy / "error_codes.yml", '"A0"', '"a00"')
    topics = content_copy / "topics.yml"
    _replace(topics, "      拉卡拉:", "      拉拉卡:")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("unknown intent `avoid_fault`" in p and p.startswith("topics.yml:") for p in problems)
    assert any("error code `a00` must be two characters" in p for p in problems)
    assert any("unknown brand `拉拉卡`" in p for p in problems)
    line = _line_of(topics, "拉拉卡:")
    assert any(p.startswith(f"topics.yml:{line}: unknown brand") for p in problems)


def test_duplicate_id_names_the_first_place(content_copy: Path) -> None:
    topics = content_copy / "topics.yml"
    _replace(topics, "id: fault_causes", "id: avoid_faults_tips")
    problems = [str(p) for p in load_content(content_copy).problems]
    first = _line_of(topics, "id: avoid_faults_tips")
    assert any(f"duplicate id `avoid_faults_tips` (first at topics.yml:{first})" in p for p in problems)


def test_broken_yaml_gives_the_line(content_copy: Path) -> None:
    brands = content_copy / "brands.yml"
    lines = brands.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3] + ' "unclosed'
    brands.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = load_content(content_copy).problems
    assert problems and problems[0].file == "brands.yml"
    assert "YAML syntax error" in problems[0].message
    assert 4 <= problems[0].line <= 6


def test_intent_without_topic_is_reported(content_copy: Path) -> None:
    topics = content_copy / "topics.yml"
    _replace(topics, "intent: training", "intent: usage_tips")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("intent `training` has no topic" in p for p in problems)


def test_alias_claimed_twice_is_reported(content_copy: Path) -> None:
    _replace(content_copy / "brands.yml", "aliases: [", "aliases: [打印机, ")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("alias `打印机` already belongs to" in p for p in problems)
