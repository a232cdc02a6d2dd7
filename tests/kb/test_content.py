"""What a staff member sees from `posbot kb lint` when a content file is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kb.loader import load_content
from kb.settings import CONTENT_DIR, TOPIC_INTENTS
from staff.cli import main


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
    assert len(content.topics) >= 100
    codes = {c for e in content.error_codes for c in e["codes"]}
    # The UnionPay codes a merchant meets (issue: 62, 23, 31, 39, 40, 44, 53, 59, 63-67, 90-95 …)
    assert {
        "00",
        "03",
        "05",
        "14",
        "23",
        "31",
        "39",
        "40",
        "44",
        "51",
        "53",
        "54",
        "55",
        "59",
        "61",
        "62",
        "63",
        "64",
        "65",
        "66",
        "67",
        "90",
        "91",
        "92",
        "93",
        "94",
        "95",
        "96",
        "A0",
    } <= codes
    assert all(t["source"] for t in content.topics)
    assert all(len(t["questions"]) >= 5 for t in content.topics)


def test_screen_texts_stand_for_their_codes() -> None:
    content = load_content(CONTENT_DIR)
    alias_of = {a: e["codes"][0] for e in content.error_codes for a in e["aliases"]}
    assert alias_of["余额不足"] == "51"
    assert alias_of["密码错误"] == "55"
    assert alias_of["无效商户"] == "03"


def test_missing_field_is_reported_with_file_and_line(content_copy: Path, capsys) -> None:
    topics = content_copy / "topics" / "core.yml"
    line = _line_of(topics, "question: 怎样才能减少POS机出故障？")
    _replace(topics, "    question: 怎样才能减少POS机出故障？\n", "")
    assert main(["kb", "lint", "--content", str(content_copy)]) == 1
    out = capsys.readouterr().out
    assert "missing field `question`" in out
    assert "write `question:" in out
    assert f"topics/core.yml:{line - 4}:" in out or f"topics/core.yml:{line - 3}:" in out


def test_unknown_brand_and_bad_code_and_unknown_intent(content_copy: Path) -> None:
    topics = content_copy / "topics" / "core.yml"
    _replace(topics, "intent: avoid_faults", "intent: avoid_fault")
    _replace(content_copy / "error_codes.yml", '"A0"', '"a00"')
    _replace(topics, "      拉卡拉:", "      拉拉卡:")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("unknown intent `avoid_fault`" in p and p.startswith("topics/core.yml:") for p in problems)
    assert any("error code `a00` must be two characters" in p for p in problems)
    line = _line_of(topics, "拉拉卡:")
    assert any(p.startswith(f"topics/core.yml:{line}: unknown brand `拉拉卡`") for p in problems)


def test_duplicate_id_names_the_first_place(content_copy: Path) -> None:
    topics = content_copy / "topics" / "core.yml"
    _replace(topics, "id: fault_causes", "id: avoid_faults_tips")
    problems = [str(p) for p in load_content(content_copy).problems]
    first = _line_of(topics, "id: avoid_faults_tips")
    assert any(f"duplicate id `avoid_faults_tips` (first at topics/core.yml:{first})" in p for p in problems)


def test_a_topic_needs_five_ways_of_asking(content_copy: Path) -> None:
    topics = content_copy / "topics" / "core.yml"
    text = topics.read_text(encoding="utf-8")
    start = text.index("    questions:", text.index("id: fault_causes"))
    end = text.index("    answer:", start)
    topics.write_text(text[:start] + "    questions: [为啥老坏, 故障原因]\n" + text[end:], encoding="utf-8")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("`questions` has 2 question(s): give at least 5" in p for p in problems)


def test_near_identical_standard_questions_are_reported(content_copy: Path) -> None:
    topics = content_copy / "topics" / "core.yml"
    _replace(topics, "question: POS机为什么会出故障？", "question: 怎样才能减少POS机出故障呢？")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("is nearly the same as that of topic `avoid_faults_tips`" in p for p in problems)


def test_one_question_leads_to_one_topic(content_copy: Path) -> None:
    topics = content_copy / "topics" / "core.yml"
    _replace(topics, "question: POS机为什么会出故障？", "question: 怎样才能减少POS机出故障？")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("is also a question of topic `avoid_faults_tips`" in p for p in problems)


def test_a_topic_without_source_or_with_an_unknown_walk_is_refused(content_copy: Path) -> None:
    topics = content_copy / "topics" / "device.yml"
    _replace(topics, "flow: walk:printer", "flow: walk:printr")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any(
        "flow `walk:printr` names no symptom" in p and p.startswith("topics/device.yml:") for p in problems
    )


def test_old_format_keywords_get_a_clear_instruction(content_copy: Path) -> None:
    topics = content_copy / "topics" / "core.yml"
    _replace(topics, "    intent: avoid_faults\n", "    intent: avoid_faults\n    keywords: [预防]\n")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("`keywords` is no longer used" in p for p in problems)


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
    for path in (content_copy / "topics").glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("intent: training", "intent: usage_tips"), encoding="utf-8")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("intent `training` has no topic" in p for p in problems)


def test_alias_claimed_twice_is_reported(content_copy: Path) -> None:
    _replace(content_copy / "brands.yml", "aliases: [", "aliases: [打印机, ")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert any("alias `打印机` already belongs to" in p for p in problems)


def test_learned_phrasings_need_a_known_answer(content_copy: Path) -> None:
    (content_copy / "learned.yml").write_text(
        "learned:\n"
        "  - text: 机器收款的时候声音特别大\n    answer: no_such_topic\n"
        "  - text: 小票有一半是白的\n    answer: walk:printer\n"
        "  - text: 小票有一半是白的\n    answer: paper_side\n"
        "  - text: 刷卡显示九九\n    answer: code:Z9\n"
        "  - text: 给我转个人工\n    answer: flow:handoff\n",
        encoding="utf-8",
    )
    content = load_content(content_copy)
    problems = [str(p) for p in content.problems]
    assert any(p.startswith("learned.yml:3: unknown answer `no_such_topic`") for p in problems)
    assert any(
        p.startswith("learned.yml:6:") and "already learned with answer `walk:printer`" in p for p in problems
    )
    assert any("unknown answer `code:Z9`" in p for p in problems)
    learned = {item["text"]: item["intent"] for item in content.learned}
    assert learned == {"小票有一半是白的": "fault_hardware", "给我转个人工": "human_handoff"}


def test_learned_phrasings_are_optional_and_change_the_digest(content_copy: Path) -> None:
    (content_copy / "learned.yml").unlink(missing_ok=True)
    without = load_content(content_copy)
    assert without.ok and without.learned == []
    (content_copy / "learned.yml").write_text(
        "learned:\n  - text: 我刷了一万 到手多少\n    answer: flow:fee_calc\n", encoding="utf-8"
    )
    with_one = load_content(content_copy)
    assert with_one.ok and with_one.digest != without.digest
    assert with_one.learned == [{"text": "我刷了一万 到手多少", "answer": "flow:fee_calc", "intent": "fees"}]


#: vocabulary.yml word lists the actions read (kb/vocabulary.py names them).
ACTION_WORD_LISTS = [
    "flow_stop_words",
    "acknowledgements",
    "will_try_markers",
    "tried_markers",
    "brand_statement_fillers",
]


@pytest.mark.parametrize("name", ACTION_WORD_LISTS)
def test_an_action_word_list_left_empty_is_reported_on_its_line(
    content_copy: Path, name: str, capsys
) -> None:
    vocabulary = content_copy / "vocabulary.yml"
    line = _line_of(vocabulary, f"{name}: [")
    text = vocabulary.read_text(encoding="utf-8").splitlines()
    text[line - 1] = f"{name}: []"
    vocabulary.write_text("\n".join(text) + "\n", encoding="utf-8")
    assert main(["kb", "lint", "--content", str(content_copy)]) == 1
    assert f"vocabulary.yml:{line}: `{name}` is empty: give at least one item" in capsys.readouterr().out


@pytest.mark.parametrize("name", ACTION_WORD_LISTS)
def test_a_missing_action_word_list_says_what_to_write(content_copy: Path, name: str) -> None:
    vocabulary = content_copy / "vocabulary.yml"
    kept = [
        row for row in vocabulary.read_text(encoding="utf-8").splitlines() if not row.startswith(f"{name}:")
    ]
    vocabulary.write_text("\n".join(kept) + "\n", encoding="utf-8")
    problems = [str(p) for p in load_content(content_copy).problems]
    assert [p for p in problems if name in p] == [
        f"vocabulary.yml:{_line_of(vocabulary, 'components:')}: missing field `{name}`: "
        f"write `{name}: [……, ……]`"
    ]


def test_the_shipped_action_word_lists_hold_the_words_the_walk_relies_on() -> None:
    lists = load_content(CONTENT_DIR).word_lists
    assert {"算了", "不用了"} <= set(lists["flow_stop_words"])
    assert {"好的", "收到", "ok"} <= set(lists["acknowledgements"])
    assert "试试" in lists["will_try_markers"] and "好了" in lists["tried_markers"]
    assert "的" in lists["brand_statement_fillers"]
