"""The knowledge store and builder on SQLite and on the PostgreSQL of this machine."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import kb.store
from kb.build import KbInvalid, build
from kb.loader import Content, Problem, load_content
from kb.schema import Topic
from kb.settings import CONTENT_DIR
from kb.store import KnowledgeStore
from staff.cli import main

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def check_store(store: KnowledgeStore) -> None:
    assert store.brand("Lakala").hotline == "95016"
    assert store.brand("lakala").name == "拉卡拉"
    assert store.brand("京东").hotline == "95118"
    assert store.brand("银盛").hotline is None
    assert store.canonical("component", "小票机") == "打印机"
    assert store.canonical("card_type", "储蓄卡") == "借记卡"
    code = store.error_code("a0")
    assert code is not None and code.code == "A0" and code.retry
    assert store.error_code("41").high_risk
    assert store.error_code("Z9") is None
    credit = store.fee_rule("信用卡")
    assert credit.issuer_rate_cap == 0.45 and credit.issuer_fee_cap is None
    debit = store.fee_rule("储蓄卡")
    assert debit.issuer_fee_cap == 13
    assert [t.intent for t in store.topics("fees")] == ["fees"] * len(store.topics("fees"))
    assert store.topic_index().rank("pos机每天开工要怎么签到")[0].topic_id == "usage_signin"
    assert store.canonical("error_code", "余额不足") == "51"
    printer = store.symptom_for("打印机不出纸")
    assert printer is not None and printer.component == "打印机"
    assert any(stage.data_loss for stage in printer.stages)


def test_store_on_sqlite(store: KnowledgeStore) -> None:
    check_store(store)


@pytest.fixture()
def pg_engine(content: Content) -> Iterator[Engine]:
    schema = f"posbot_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # the server is part of this machine's set-up
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.postgres
def test_store_and_build_on_postgres(pg_engine: Engine, content: Content) -> None:
    assert build(pg_engine, content).changed
    check_store(KnowledgeStore(pg_engine))
    assert not build(pg_engine, content).changed


def test_build_is_idempotent(engine: Engine, content: Content) -> None:
    assert not build(engine, content).changed
    assert build(engine, content, force=True).changed
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Topic)) == len(content.topics)


def test_broken_content_leaves_database_unchanged(tmp_path: Path, capsys) -> None:
    db = tmp_path / "kb.sqlite3"
    url = f"sqlite:///{db}"
    assert main(["kb", "build", "--database", url]) == 0
    before = KnowledgeStore(create_engine(url)).topic("avoid_faults_tips")

    broken = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, broken)
    topics = broken / "topics" / "core.yml"
    topics.write_text(
        topics.read_text(encoding="utf-8")
        .replace(before.answer, "新答案")
        .replace("intent: training", "intent: nonsense"),
        encoding="utf-8",
    )
    assert main(["kb", "build", "--database", url, "--content", str(broken)]) == 1
    assert "nothing was loaded" in capsys.readouterr().err
    after = KnowledgeStore(create_engine(url)).topic("avoid_faults_tips")
    assert after == before


def test_failure_inside_the_transaction_rolls_back(
    engine: Engine, content: Content, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KnowledgeStore(engine)
    before = store.topics("fees")
    changed = load_content(CONTENT_DIR)
    changed.digest = "different"
    changed.topics = [*changed.topics, dict(changed.topics[0])]  # duplicate primary key
    with pytest.raises(Exception):  # noqa: B017 - the database's own integrity error
        build(engine, changed)
    assert store.topics("fees") == before


def test_invalid_content_is_refused_before_touching_the_database(engine: Engine) -> None:
    before = KnowledgeStore(engine).digest()
    content = load_content(CONTENT_DIR)
    content.digest = "changed"
    content.problems.append(Problem("topics.yml", 1, "test"))
    with pytest.raises(KbInvalid):
        build(engine, content)
    assert KnowledgeStore(engine).digest() == before


def test_edited_answer_reaches_the_store_after_build_without_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.sqlite3'}"
    assert main(["kb", "build", "--database", url]) == 0
    store = KnowledgeStore(create_engine(url))
    assert "新的回答" not in store.topic("avoid_faults_tips").answer
    edited = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, edited)
    topics = edited / "topics" / "core.yml"
    original = store.topic("avoid_faults_tips").answer
    topics.write_text(topics.read_text(encoding="utf-8").replace(original, "新的回答。"), encoding="utf-8")
    assert main(["kb", "build", "--database", url, "--content", str(edited)]) == 0
    assert store.topic("avoid_faults_tips").answer == "新的回答。"


NEW_TOPIC = """topics:
  - id: sticker_hotline
    intent: contact_support
    family: test
    question: 机身背面的贴纸掉了，客服电话去哪里找？
    questions:
      - 贴纸撕掉了不知道客服电话
      - 背面标签看不清了咋找售后电话
      - 机器后面的贴纸没了怎么联系客服
      - 标签磨没了 售后号码在哪查
      - 贴纸丢了还能找到服务电话吗
    answer: 贴纸上的号码也印在您的合同和收单机构的官方App里。
    source: test
"""


def test_a_new_topic_is_answered_after_build_without_retraining(tmp_path: Path) -> None:
    """Staff add a topic file, run `posbot kb build`: retrieval finds it at once."""
    url = f"sqlite:///{tmp_path / 'kb.sqlite3'}"
    assert main(["kb", "build", "--database", url]) == 0
    store = KnowledgeStore(create_engine(url))
    question = "机器后背的标签贴纸掉了 找不到客服电话了"
    assert store.topic_index().rank(question)[0].topic_id != "sticker_hotline"
    content = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, content)
    (content / "topics" / "zz_test.yml").write_text(NEW_TOPIC, encoding="utf-8")
    assert main(["kb", "build", "--database", url, "--content", str(content)]) == 0
    best = store.topic_index().rank(question)[0]
    assert best.topic_id == "sticker_hotline"
    assert store.topic("sticker_hotline").answer.startswith("贴纸上的号码")


def test_a_learned_phrasing_teaches_retrieval_and_the_nlu(tmp_path: Path) -> None:
    """Staff confirm which answer a field question needed: after `posbot kb build` retrieval
    ranks that topic (or walk) first for it, and the NLU data of the next training has it."""
    from kb.nlu_data import kb_examples

    question = "老板说这个月对账单上多了一笔看不懂的钱 咋回事"
    content = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, content)
    (content / "learned.yml").write_text(
        "learned:\n"
        f"  - text: {question}\n    answer: reprint_last\n"
        "  - text: 出小票的那个口子卡住了 纸出不来\n    answer: walk:printer\n",
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'kb.sqlite3'}"
    assert main(["kb", "build", "--database", url, "--content", str(content)]) == 0
    store = KnowledgeStore(create_engine(url))
    assert store.topic_index().rank(question)[0].topic_id == "reprint_last"
    assert store.symptom_index().rank("出小票的那个口子卡住了 纸出不来")[0].topic_id == "printer"
    examples = kb_examples(load_content(content), set())
    assert question in examples["usage_tips"]
    assert "出小票的那个口子卡住了 纸出不来" in examples["fault_hardware"]


def test_a_servers_store_sees_a_new_build_within_its_digest_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The servers' store reads the digest at most once per TTL and the word lists once per
    digest: a rebuild by another process reaches it after the TTL, not per message."""
    now = [1000.0]
    monkeypatch.setattr(kb.store, "time", SimpleNamespace(monotonic=lambda: now[0]))
    url = f"sqlite:///{tmp_path / 'kb.sqlite3'}"
    content = load_content(CONTENT_DIR)
    build(create_engine(url), content)
    server = KnowledgeStore(create_engine(url), digest_ttl_s=1.0)
    first = server.digest()
    assert "算了" in server.words("flow_stop_words")
    assert server.mentions("算了不弄了", "flow_stop_words")

    changed = load_content(CONTENT_DIR)
    changed.digest = "rebuilt"
    changed.word_lists = {**changed.word_lists, "flow_stop_words": ["先不弄了"]}
    build(create_engine(url), changed)  # another process: `posbot kb build`

    assert server.digest() == first  # trusted for the TTL: no read per message
    assert server.mentions("算了不弄了", "flow_stop_words")
    now[0] += 0.9
    assert server.digest() == first
    now[0] += 0.2  # the TTL has passed
    assert server.digest() == "rebuilt"
    assert not server.mentions("算了不弄了", "flow_stop_words")
    assert server.words("flow_stop_words") == ["先不弄了"]
    # a store without a TTL (tools, tests) reads the digest every time
    assert KnowledgeStore(create_engine(url)).digest() == "rebuilt"


def test_forget_digest_makes_a_local_build_visible_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.sqlite3'}"
    build(create_engine(url), load_content(CONTENT_DIR))
    server = KnowledgeStore(create_engine(url), digest_ttl_s=60)
    server.digest()
    changed = load_content(CONTENT_DIR)
    changed.digest = "edited here"
    build(create_engine(url), changed)
    assert server.digest() != "edited here"
    server.forget_digest()
    assert server.digest() == "edited here"


@pytest.mark.parametrize("text", ["嗯嗯嗯那个啥", "呃……", "那个 那个", "啥？", "额，就是那个"])
def test_a_message_of_interjections_says_nothing_to_look_up(store: KnowledgeStore, text: str) -> None:
    assert store.says_nothing(text)


@pytest.mark.parametrize("text", ["啥是预授权", "那个打印机", "嗯 刷卡显示A0", "呃 手续费"])
def test_a_message_with_one_real_word_is_looked_up(store: KnowledgeStore, text: str) -> None:
    assert not store.says_nothing(text)
