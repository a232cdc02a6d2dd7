"""The merchant-set scorer counts an answer right when the merchant got the right explanation."""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import evaluate_merchants as scorer


def test_codes_of_one_kb_entry_are_the_same_answer():
    entries = scorer.code_entries()
    # 04 and 43 share the 没收卡 entry, 99 and A0 the PIN/MAC entry: one explanation each.
    assert scorer.canonical("code:43", entries) == scorer.canonical("code:04", entries)
    assert scorer.canonical("code:a0", entries) == scorer.canonical("code:99", entries)
    # Codes of different entries stay different; other labels are untouched.
    assert scorer.canonical("code:51", entries) != scorer.canonical("code:05", entries)
    assert scorer.canonical("code:?", entries) == "code:?"
    assert scorer.canonical("walk:printer", entries) == "walk:printer"


def test_every_code_of_the_kb_maps_to_its_entry(tmp_path):
    path = tmp_path / "error_codes.yml"
    path.write_text(
        yaml.safe_dump({"error_codes": [{"codes": ["13", "61"]}, {"codes": ["14"]}]}), encoding="utf-8"
    )
    assert scorer.code_entries(path) == {"13": "13", "61": "13", "14": "14"}


def test_report_scores_a_shared_entry_code_as_right():
    entries = scorer.code_entries()
    results = [
        {
            "set": "s",
            "text": "报43",
            "intent": "error_code",
            "topic": "code:43",
            "got_intent": "error_code",
            "got": "code:04",
            "offered": [],
        }
    ]
    for r in results:
        r["topic"], r["got"] = (scorer.canonical(r["topic"], entries), scorer.canonical(r["got"], entries))
    assert "Topic accuracy 1.000" in scorer.report(results, {})


def test_uncovered_questions_are_counted_apart_by_what_the_bot_did():
    def row(text, got, topic="uncovered"):
        return {
            "set": "field",
            "text": text,
            "intent": topic,
            "topic": topic,
            "asks": "x",
            "got_intent": "",
            "got": got,
            "offered": [],
        }

    results = [
        row("营业执照注销了还能刷吗", "clarify"),
        row("能转人工吗", "flow:handoff"),
        row("云音箱不响", "soundbox"),
        row("股票手续费", "decline"),
        row("打印机不出纸", "walk:printer", topic="walk:printer"),
    ]
    text = scorer.uncovered_report(results)
    assert "(4, not in the figures above)" in text
    assert "- asked back or offered a person: 2" in text
    assert "- answered (read it: right only if a newer topic answers the question): 1" in text
    assert "- declined as not about POS: 1" in text
    assert "打印机不出纸" not in text
    assert scorer.uncovered_report([row("打印机不出纸", "walk:printer", topic="walk:printer")]) == ""


def test_an_answer_either_judge_named_is_useful_and_agreement_is_reported(tmp_path, monkeypatch):
    (tmp_path / "second").mkdir()
    second = [
        {"text": "退货和撤销有啥区别", "topic": "void_vs_refund", "also": ["refund_how"]},
        {"text": "报43", "topic": "code:04"},
        {"text": "pos机能刷积分吗", "topic": "card_points"},
        {"text": "机器能当充电宝吗", "topic": "uncovered"},
    ]
    (tmp_path / "second" / "field.yml").write_text(
        yaml.safe_dump({"examples": second}, allow_unicode=True), encoding="utf-8"
    )
    monkeypatch.setattr(scorer, "SETS", tmp_path)

    def row(text, topic, got):
        return {"set": "field", "text": text, "topic": topic, "got": got, "offered": []}

    results = [
        row("退货和撤销有啥区别", "void_how", "refund_how"),  # first judge: wrong; second: also
        row("报43", "code:43", "code:43"),  # same entry as 04: both judges agree
        row("pos机能刷积分吗", "uncovered", "clarify"),  # only the second judge found an answer
        row("机器能当充电宝吗", "uncovered", "decline"),  # neither: not counted
    ]
    entries = scorer.code_entries()
    for r in results:
        r["topic"], r["got"] = scorer.canonical(r["topic"], entries), scorer.canonical(r["got"], entries)
    scorer.attach_second_labels(results, entries)
    assert results[0]["useful"] == ["refund_how", "void_how", "void_vs_refund"]
    assert results[3]["useful"] == []
    text = scorer.judges_report(results)
    # agree 1 of 2 both-covered; strict 1 of 2; useful 2 of 3 (the clarify is wrong).
    assert "| field | 0.500 (2) | 0.500 (2) | 0.667 (3) |" in text
    monkeypatch.setattr(scorer, "SETS", tmp_path / "none")
    fresh = [row("报43", "code:43", "code:43")]
    scorer.attach_second_labels(fresh, entries)
    assert "useful" not in fresh[0] and scorer.judges_report(fresh) == ""
