"""Teaching from the staff console: learned.yml written under a lock, checked by the linter, built
into the KB; the learning queue's grouping by meaning and its ignore table. Always on a copy of
kb/content (never the repository's files)."""

from __future__ import annotations

import fcntl
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import kb.learned as learned_module
from kb.encoder import get_encoder
from kb.learned import Busy, Refused, answer_choices, known_keys, teach
from kb.learning import GROUP_AT, IgnoreStore, group_questions, question_key
from kb.loader import LEARNED_ANSWERS, LEARNED_FILE, load_content
from kb.schema import QuestionVector
from kb.settings import CONTENT_DIR
from kb.store import KnowledgeStore


@pytest.fixture()
def content_copy(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, target)
    return target


def _learned(directory: Path) -> bytes:
    return (directory / LEARNED_FILE).read_bytes()


# ------------------------------------------------------------------ grouping by meaning
def test_two_near_identical_questions_are_one_group_and_unrelated_ones_are_not() -> None:
    texts = [
        "收款码贴纸掉了怎么补",
        "pos机能连蓝牙音箱吗",
        "收款码的贴纸掉了咋办",
        "小票打出来是空白的啊",
        "POS机能连蓝牙音箱吗？",
    ]
    assert group_questions(texts, get_encoder()) == [[0, 2], [1, 4], [3]]
    # the same domain, another question: "pos机能连蓝牙音箱吗" / "刷卡机能不能连蓝牙音箱" is 0.94
    assert group_questions(["pos机能连蓝牙音箱吗", "刷卡机能不能连蓝牙音箱"], get_encoder()) == [[0], [1]]
    assert group_questions([], get_encoder()) == []
    assert group_questions(["只有一个"], get_encoder()) == [[0]]
    assert GROUP_AT == 0.95


def test_complete_linkage_never_chains_two_different_questions_through_a_third() -> None:
    class Fixed:  # a ≈ b (0.96), b ≈ c (0.96), but a and c only 0.85 alike
        name, dim = "fixed", 3

        def encode(self, texts):
            import numpy as np

            vectors = {"a": [1.0, 0.0, 0.0], "b": [0.96, 0.28, 0.0], "c": [0.85, 0.5268, 0.0]}
            return np.array([vectors[t] for t in texts], dtype=np.float32)

    assert group_questions(["a", "b", "c"], Fixed()) in ([[0, 1], [2]], [[0], [1, 2]])


def test_a_question_has_one_key_whatever_its_spaces_width_and_end_punctuation() -> None:
    assert question_key(" 刷卡 没反应？") == question_key("刷卡没反应") == "刷卡没反应"
    assert question_key("ＰＯＳ机 坏了！") == "pos机坏了"
    assert question_key("？？") == ""


# ------------------------------------------------------------------ the ignore table
def test_ignored_questions_are_remembered_once(tmp_path: Path) -> None:
    store = IgnoreStore(create_engine(f"sqlite:///{tmp_path / 'records.sqlite3'}"))
    assert store.ignore(["今天天气怎么样", "今天 天气怎么样？"], "li") == 1
    assert store.ignore(["今天天气怎么样"], "wang") == 0
    assert store.keys() == {"今天天气怎么样"}
    again = IgnoreStore(create_engine(f"sqlite:///{tmp_path / 'records.sqlite3'}"))
    assert again.keys() == {"今天天气怎么样"}


# ------------------------------------------------------------------ the answers staff can pick
def test_every_answer_learned_yml_accepts_is_offered_with_a_chinese_title() -> None:
    content = load_content(CONTENT_DIR)
    choices = {c["id"]: c for c in answer_choices(content)}
    assert set(LEARNED_ANSWERS) <= set(choices)
    assert {t["id"] for t in content.topics} <= set(choices)
    assert {f"walk:{s['id']}" for s in content.symptoms} <= set(choices)
    assert "code:51" in choices and "余额不足" in choices["code:51"]["title"]
    topic = content.topics[0]
    assert choices[topic["id"]]["title"] == topic["question"]
    assert choices[topic["id"]]["kind"] == "topic" and choices[topic["id"]]["retrieval"] is True
    printer = next(s for s in content.symptoms if s["id"] == "printer")
    assert choices["walk:printer"]["title"] == printer["label"]
    assert choices["decline"]["retrieval"] is False and choices["flow:fee_calc"]["intent"] == "fees"
    assert all(c["title"] and c["title"] != c["id"] for c in choices.values())
    assert question_key(topic["questions"][0]) in known_keys(content)


# ------------------------------------------------------------------ the writer
def test_teaching_appends_to_the_file_and_retrieval_answers_it_after_the_build(
    content_copy: Path, engine: Engine
) -> None:
    before = _learned(content_copy)
    question = "收款码贴纸掉了怎么补"
    taught = teach(
        content_copy,
        [question, " 收款码的贴纸掉了咋办 ", question],
        "apply_process",
        staff="wang li",
        engine=engine,
    )
    assert taught.added == [question, "收款码的贴纸掉了咋办"] and taught.already == []
    assert (taught.intent, taught.retrieval) == ("apply_pos", True)
    after = _learned(content_copy)
    assert after.startswith(before)  # every existing byte, comment and entry as it was
    assert after[len(before) :].decode() == (
        f"  # staff console, wang li, {__import__('datetime').date.today().isoformat()}\n"
        f"  - text: {question}\n    answer: apply_process\n"
        "  - text: 收款码的贴纸掉了咋办\n    answer: apply_process\n"
    )
    content = load_content(content_copy)
    assert content.ok and content.learned[-1] == {
        "text": "收款码的贴纸掉了咋办",
        "answer": "apply_process",
        "intent": "apply_pos",
    }
    store = KnowledgeStore(engine)
    assert store.digest() == content.digest  # built: what `posbot kb build` would load
    with Session(engine) as session:
        owners = session.scalars(select(QuestionVector.topic_id).where(QuestionVector.text == question)).all()
    assert owners == ["apply_process"]
    assert store.topic_index().rank(question, limit=1)[0].topic_id == "apply_process"
    # Teaching it again changes nothing.
    again = teach(content_copy, [question], "apply_process", staff="wang", engine=engine)
    assert again.added == [] and again.already == [question]
    assert _learned(content_copy) == after


def test_texts_yaml_would_misread_are_quoted_and_read_back_exactly(
    content_copy: Path, engine: Engine
) -> None:
    texts = [
        "#号键怎么用",
        "123",
        "yes",
        "a: b",
        "- x",
        "'引号' 和 \"双引号\"",
        "{x}",
        "null",
        "@某人",
        "100%到账吗",
        "[1, 2]",
        "问题 # 不是注释",
    ]
    teach(content_copy, texts, "decline", staff="wang", engine=engine)
    content = load_content(content_copy)
    assert content.ok, content.problems
    assert [(e["text"], e["answer"]) for e in content.learned[-len(texts) :]] == [
        (t, "decline") for t in texts
    ]


def test_a_linter_problem_is_refused_and_the_file_is_left_byte_for_byte(
    content_copy: Path, engine: Engine
) -> None:
    first = load_content(content_copy).learned[0]
    other = "paper_side" if first["answer"] != "paper_side" else "paper_jam"
    before = _learned(content_copy)
    digest = KnowledgeStore(engine).digest()
    with pytest.raises(Refused) as refused:
        teach(content_copy, ["一个新问题", first["text"]], other, staff="wang", engine=engine)
    [problem] = refused.value.problems
    assert problem.file == LEARNED_FILE and "already learned with answer" in problem.message
    assert str(problem).startswith(f"{LEARNED_FILE}:")
    assert _learned(content_copy) == before
    assert KnowledgeStore(engine).digest() == digest  # nothing built


def test_content_broken_elsewhere_is_refused_with_the_linters_lines(
    content_copy: Path, engine: Engine
) -> None:
    fees = content_copy / "fees.yml"
    fees.write_text(fees.read_text(encoding="utf-8") + "\n  broken: [\n", encoding="utf-8")
    before = _learned(content_copy)
    with pytest.raises(Refused) as refused:
        teach(content_copy, ["收款码贴纸掉了怎么补"], "apply_process", staff="wang", engine=engine)
    assert any(p.file == "fees.yml" and "YAML syntax error" in p.message for p in refused.value.problems)
    assert _learned(content_copy) == before


def test_a_file_whose_list_is_not_last_is_extended_by_a_round_trip(
    content_copy: Path, engine: Engine
) -> None:
    path = content_copy / LEARNED_FILE
    path.write_text(
        "# our phrasings\nlearned:\n  # first\n  - text: 你好\n    answer: smalltalk:greet\n"
        "reviewed_by: li  # who looked at them\n",
        encoding="utf-8",
    )
    teach(content_copy, ["收款码贴纸掉了怎么补"], "apply_process", staff="wang", engine=engine)
    written = path.read_text(encoding="utf-8")
    assert written.startswith("# our phrasings\nlearned:\n  # first\n  - text: 你好\n")
    assert "reviewed_by: li  # who looked at them" in written
    assert [e["text"] for e in load_content(content_copy).learned] == ["你好", "收款码贴纸掉了怎么补"]


def test_without_a_learned_file_the_first_teaching_creates_it(content_copy: Path, engine: Engine) -> None:
    (content_copy / LEARNED_FILE).unlink()
    with pytest.raises(Refused):  # refused: no file is left behind
        teach(content_copy, ["x"], "no_such_topic", staff="wang", engine=engine)
    assert not (content_copy / LEARNED_FILE).exists()
    teach(content_copy, ["收款码贴纸掉了怎么补"], "apply_process", staff="wang", engine=engine)
    assert (content_copy / LEARNED_FILE).read_text(encoding="utf-8").startswith("learned:\n  # ")
    assert [e["text"] for e in load_content(content_copy).learned] == ["收款码贴纸掉了怎么补"]


def test_two_editors_at_once_keep_both_their_additions(content_copy: Path, engine: Engine) -> None:
    errors: list[BaseException] = []

    def editor(text: str, answer: str) -> None:
        try:
            teach(content_copy, [text], answer, staff="wang", engine=engine)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=editor, args=("收款码贴纸掉了怎么补", "apply_process")),
        threading.Thread(target=editor, args=("pos机能连蓝牙音箱吗", "decline")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tail = {(e["text"], e["answer"]) for e in load_content(content_copy).learned[-2:]}
    assert tail == {("收款码贴纸掉了怎么补", "apply_process"), ("pos机能连蓝牙音箱吗", "decline")}
    assert errors == []


def test_a_held_lock_makes_the_second_editor_wait_then_give_up(content_copy: Path, engine: Engine) -> None:
    before = _learned(content_copy)
    with open(content_copy / LEARNED_FILE, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(Busy):
            teach(
                content_copy,
                ["收款码贴纸掉了怎么补"],
                "apply_process",
                staff="wang",
                engine=engine,
                lock_timeout=0.3,
            )
    assert _learned(content_copy) == before


def test_a_failed_build_puts_the_file_back(
    content_copy: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(learned_module, "build", broken)
    before = _learned(content_copy)
    with pytest.raises(OperationalError):
        teach(content_copy, ["收款码贴纸掉了怎么补"], "apply_process", staff="wang", engine=engine)
    assert _learned(content_copy) == before
