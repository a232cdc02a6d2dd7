"""The knowledge editor's writer (kb/editing.py): one entity changed in its YAML file and nothing
else, the whole content linted before the file is written, built into the KB at once, history and
restore, optimistic versions and the content lock. Always on a copy of kb/content (never the
repository's files) and a temporary SQLite database.

The KB is built with a small deterministic encoder (hashed character bigrams) instead of e5: what
is tested here is the files, the linter, the history and the build, not the encoder's quality.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from ruamel.yaml import YAML
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

import kb.editing as editing_module
from kb.build import build
from kb.editing import (
    Busy,
    HistoryStore,
    Invalid,
    NotFound,
    Refused,
    Stale,
    create,
    files_of,
    read_entity,
    restore,
    save,
)
from kb.loader import load_content
from kb.settings import CONTENT_DIR
from kb.store import KnowledgeStore


class BigramEncoder:
    """Hashed character bigrams, L2-normalised: fast, deterministic, alike texts alike."""

    name, dim = "test-bigrams", 64

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            kept = text.lower()
            for gram in [kept[j : j + 2] for j in range(max(len(kept) - 1, 1))]:
                out[i, hashlib.sha256(gram.encode()).digest()[0] % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


ENCODER = BigramEncoder()
#: Where the topic these tests edit starts in topics/core.yml (its `questions:` are 4 lines below).
FAULT_CAUSES_LINE = 1 + (CONTENT_DIR / "topics/core.yml").read_text(encoding="utf-8").split("\n").index(
    "  - id: fault_causes"
)


@pytest.fixture(scope="session")
def built_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real content built once into a SQLite file; each test works on a copy of it."""
    path = tmp_path_factory.mktemp("kb") / "kb.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    build(engine, load_content(CONTENT_DIR), encoder=ENCODER)
    engine.dispose()
    return path


@pytest.fixture()
def kb_engine(built_kb: Path, tmp_path: Path) -> Engine:
    path = tmp_path / "posbot.sqlite3"
    shutil.copy(built_kb, path)
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
    yield engine
    engine.dispose()


@pytest.fixture()
def content_copy(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, target)
    return target


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.yml"))}


def changed_lines(before: bytes, after: bytes) -> tuple[list[str], list[str]]:
    """Lines only in before, lines only in after (a line diff, as git shows it)."""
    import difflib

    old, new = before.decode().splitlines(), after.decode().splitlines()
    removed, added = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += old[i1:i2]
            added += new[j1:j2]
    return removed, added


def edit(directory: Path, engine: Engine, kind: str, entity_id: str, staff: str = "li", **changes: object):
    loaded = read_entity(directory, kind, entity_id)
    fields = {**loaded["fields"], **changes}
    return save(
        directory, kind, entity_id, fields, loaded["version"], staff=staff, engine=engine, encoder=ENCODER
    )


# ------------------------------------------------------------------ files stay as they were
def test_every_editable_file_round_trips_byte_for_byte() -> None:
    """The editor rewrites a file through ruamel.yaml's round trip: this must give the file back
    unchanged, or a save would touch lines staff did not edit."""
    yaml = editing_module._yaml()
    for relative in files_of(CONTENT_DIR):
        text = (CONTENT_DIR / relative).read_text(encoding="utf-8")
        buffer = io.StringIO()
        yaml.dump(yaml.load(text), buffer)
        assert buffer.getvalue() == text, relative


def test_saving_unchanged_fields_writes_nothing(content_copy: Path, kb_engine: Engine) -> None:
    before = snapshot(content_copy)
    for kind, entity_id in (("topic", "fault_causes"), ("error_code", "99"), ("brand", "银盛")):
        saved = edit(content_copy, kb_engine, kind, entity_id)
        assert saved.changed is False and saved.history_id == 0
    assert snapshot(content_copy) == before
    assert HistoryStore(kb_engine).entries() == []


def test_a_topic_edit_changes_only_its_lines_and_is_live_at_once(
    content_copy: Path, kb_engine: Engine
) -> None:
    before = (content_copy / "topics/core.yml").read_bytes()
    others = {k: v for k, v in snapshot(content_copy).items() if k != "topics/core.yml"}
    loaded = read_entity(content_copy, "topic", "fault_causes")
    assert (loaded["file"], loaded["line"]) == ("topics/core.yml", FAULT_CAUSES_LINE)
    steps = loaded["fields"]["steps"]
    saved = edit(
        content_copy,
        kb_engine,
        "topic",
        "fault_causes",
        answer="POS机的问题大致分五类，先判断是哪一类再处理。",
        steps=steps[:-1],
        brand_notes={"拉卡拉": "拉卡拉的机器可以先在拉卡拉App里自助报修。"},
    )
    assert saved.changed and saved.file == "topics/core.yml" and saved.history_id > 0
    after = (content_copy / "topics/core.yml").read_bytes()
    removed, added = changed_lines(before, after)
    assert removed == [f"    answer: {loaded['fields']['answer']}", f"      - {steps[-1]}"]
    assert added == [
        "    answer: POS机的问题大致分五类，先判断是哪一类再处理。",
        "    brand_notes:",
        "      拉卡拉: 拉卡拉的机器可以先在拉卡拉App里自助报修。",
    ]
    assert {k: v for k, v in snapshot(content_copy).items() if k != "topics/core.yml"} == others
    assert b"# ---------- contact_support ----------" in after  # the comment after it stays
    content = load_content(content_copy)
    assert content.ok
    store = KnowledgeStore(kb_engine)
    assert store.digest() == content.digest  # built: what `posbot kb build` would load
    topic = store.topic("fault_causes")
    assert topic.answer == "POS机的问题大致分五类，先判断是哪一类再处理。"
    assert topic.steps == steps[:-1]
    assert topic.brand_notes == {"拉卡拉": "拉卡拉的机器可以先在拉卡拉App里自助报修。"}
    assert read_entity(content_copy, "topic", "fault_causes")["version"] == saved.version


def test_an_error_code_keeps_its_quoting_and_flow_lists(content_copy: Path, kb_engine: Engine) -> None:
    before = (content_copy / "error_codes.yml").read_bytes()
    loaded = read_entity(content_copy, "error_code", "99")
    aliases = loaded["fields"]["aliases"]
    edit(
        content_copy,
        kb_engine,
        "error_code",
        "99",
        aliases=[*aliases, "密码校验错"],
        retry=not loaded["fields"]["retry"],
    )
    removed, added = changed_lines(before, (content_copy / "error_codes.yml").read_bytes())
    assert added == [
        f"    aliases: [{', '.join([*aliases, '密码校验错'])}]",
        f"    retry: {str(not loaded['fields']['retry']).lower()}",
    ]
    assert len(removed) == 2
    assert (content_copy / "error_codes.yml").read_text().count('codes: ["99"') == 1
    assert KnowledgeStore(kb_engine).error_code("99").retry is (not loaded["fields"]["retry"])
    assert KnowledgeStore(kb_engine).canonical("error_code", "密码校验错") == "99"


def test_a_brand_hotline_is_quoted_and_an_emptied_optional_field_is_removed(
    content_copy: Path, kb_engine: Engine
) -> None:
    before = (content_copy / "brands.yml").read_bytes()
    edit(content_copy, kb_engine, "brand", "银盛", aliases=["YS"], hotline="95000")
    removed, added = changed_lines(before, (content_copy / "brands.yml").read_bytes())
    assert (removed, added) == (["    aliases: []"], ["    aliases: [YS]", '    hotline: "95000"'])
    assert KnowledgeStore(kb_engine).brand("ys").hotline == "95000"
    edit(content_copy, kb_engine, "brand", "银盛", aliases=[], hotline="")
    assert (content_copy / "brands.yml").read_bytes() == before


# ------------------------------------------------------------------ refusals
def test_lint_problems_are_refused_with_file_and_line_and_nothing_is_written(
    content_copy: Path, kb_engine: Engine
) -> None:
    before, digest = snapshot(content_copy), KnowledgeStore(kb_engine).digest()
    questions = read_entity(content_copy, "topic", "fault_causes")["fields"]["questions"]
    with pytest.raises(Refused) as refused:
        edit(content_copy, kb_engine, "topic", "fault_causes", questions=questions[:3])
    assert [str(p) for p in refused.value.problems] == [
        f"topics/core.yml:{FAULT_CAUSES_LINE + 4}: `questions` has 3 question(s): "
        "give at least 5 ways merchants ask this"
    ]
    with pytest.raises(Refused) as refused:
        edit(content_copy, kb_engine, "topic", "fault_causes", brand_notes={"不存在的牌子": "……"})
    assert "unknown brand `不存在的牌子`" in str(refused.value.problems[0])
    other = load_content(CONTENT_DIR).topics[5]
    with pytest.raises(Refused) as refused:  # a question of another topic: the whole KB is checked
        edit(content_copy, kb_engine, "topic", "fault_causes", questions=[*questions, other["questions"][0]])
    assert f"is also a question of topic `{other['id']}`" in str(refused.value.problems[0])
    assert snapshot(content_copy) == before
    assert KnowledgeStore(kb_engine).digest() == digest
    assert HistoryStore(kb_engine).entries() == []


def test_bad_fields_unknown_entities_and_renames_are_refused(content_copy: Path, kb_engine: Engine) -> None:
    before = snapshot(content_copy)
    loaded = read_entity(content_copy, "topic", "fault_causes")
    cases = [
        {"answer": 5},
        {"questions": "一个问题"},
        {"keywords": ["x"]},
        {"answer": "第一行\n第二行"},
        {"brand_notes": ["拉卡拉"]},
        {"id": "fault_reasons"},
    ]
    for change in cases:
        with pytest.raises(Invalid):
            save(
                content_copy,
                "topic",
                "fault_causes",
                {**loaded["fields"], **change},
                loaded["version"],
                staff="li",
                engine=kb_engine,
                encoder=ENCODER,
            )
    with pytest.raises(Invalid):
        edit(content_copy, kb_engine, "error_code", "99", retry="yes")
    with pytest.raises(NotFound):
        read_entity(content_copy, "topic", "no_such_topic")
    with pytest.raises(NotFound):
        read_entity(content_copy, "fee", "x")
    assert snapshot(content_copy) == before


def test_a_save_against_a_changed_entity_is_stale(content_copy: Path, kb_engine: Engine) -> None:
    loaded = read_entity(content_copy, "topic", "fault_causes")
    first = save(
        content_copy,
        "topic",
        "fault_causes",
        {**loaded["fields"], "answer": "甲的修改。"},
        loaded["version"],
        staff="jia",
        engine=kb_engine,
        encoder=ENCODER,
    )
    after_first = snapshot(content_copy)
    with pytest.raises(Stale) as stale:
        save(
            content_copy,
            "topic",
            "fault_causes",
            {**loaded["fields"], "answer": "乙的修改。"},
            loaded["version"],
            staff="yi",
            engine=kb_engine,
            encoder=ENCODER,
        )
    assert stale.value.current == first.version
    assert snapshot(content_copy) == after_first
    assert KnowledgeStore(kb_engine).topic("fault_causes").answer == "甲的修改。"


def test_a_failed_build_puts_the_file_back_and_keeps_no_history(
    content_copy: Path, kb_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(editing_module, "build", broken)
    before = snapshot(content_copy)
    with pytest.raises(OperationalError):
        edit(content_copy, kb_engine, "topic", "fault_causes", answer="不会留下的修改。")
    assert snapshot(content_copy) == before
    assert HistoryStore(kb_engine).entries() == []


def test_a_held_content_lock_makes_the_save_wait_then_give_up(content_copy: Path, kb_engine: Engine) -> None:
    before = snapshot(content_copy)
    loaded = read_entity(content_copy, "topic", "fault_causes")
    for held_path in (content_copy, content_copy / "learned.yml"):  # editors, then the learning queue
        fd = os.open(held_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with pytest.raises(Busy):
                save(
                    content_copy,
                    "topic",
                    "fault_causes",
                    {**loaded["fields"], "answer": "等不到。"},
                    loaded["version"],
                    staff="li",
                    engine=kb_engine,
                    encoder=ENCODER,
                    lock_timeout=0.3,
                )
        finally:
            os.close(fd)
    assert snapshot(content_copy) == before


def test_two_editors_at_once_keep_both_changes(content_copy: Path, kb_engine: Engine) -> None:
    errors: list[BaseException] = []

    def editor(kind: str, entity_id: str, **change: object) -> None:
        try:
            edit(content_copy, kb_engine, kind, entity_id, **change)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=editor, args=("topic", "fault_causes"), kwargs={"answer": "甲。"}),
        threading.Thread(target=editor, args=("brand", "银盛"), kwargs={"hotline": "95000"}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = KnowledgeStore(kb_engine)
    assert store.topic("fault_causes").answer == "甲。" and store.brand("银盛").hotline == "95000"
    assert store.digest() == load_content(content_copy).digest  # the last build had both


# ------------------------------------------------------------------ history and restore
def test_history_records_who_changed_what_and_restore_puts_it_back(
    content_copy: Path, kb_engine: Engine
) -> None:
    original = snapshot(content_copy)
    old_answer = read_entity(content_copy, "topic", "fault_causes")["fields"]["answer"]
    first = edit(content_copy, kb_engine, "topic", "fault_causes", staff="wang", answer="王的修改。")
    edit(content_copy, kb_engine, "brand", "银盛", staff="li", hotline="95000")
    history = HistoryStore(kb_engine)
    rows = history.entries()
    assert [(r.staff, r.action, r.kind, r.entity, r.file) for r in rows] == [
        ("li", "save", "brand", "银盛", "brands.yml"),
        ("wang", "save", "topic", "fault_causes", "topics/core.yml"),
    ]
    topic_row = history.entries("topic", "fault_causes")[0]
    assert topic_row.id == first.history_id
    assert f"answer: {old_answer}" in topic_row.before and "answer: 王的修改。" in topic_row.after
    shown = topic_row.as_json()
    assert f"-answer: {old_answer}" in shown["diff"] and "+answer: 王的修改。" in shown["diff"]
    assert shown["at"].endswith("Z")
    # restoring needs the entity's current version, like a save
    with pytest.raises(Stale):
        restore(content_copy, first.history_id, "0" * 16, staff="li", engine=kb_engine, encoder=ENCODER)
    current = read_entity(content_copy, "topic", "fault_causes")["version"]
    restored = restore(content_copy, first.history_id, current, staff="li", engine=kb_engine, encoder=ENCODER)
    assert restored.changed
    assert snapshot(content_copy)["topics/core.yml"] == original["topics/core.yml"]
    assert KnowledgeStore(kb_engine).topic("fault_causes").answer == old_answer
    newest = history.entries("topic", "fault_causes")[0]
    assert (newest.action, newest.staff, newest.restored_from) == ("restore", "li", first.history_id)
    with pytest.raises(NotFound):
        restore(content_copy, 9999, current, staff="li", engine=kb_engine, encoder=ENCODER)


def test_a_restore_that_the_linter_refuses_writes_nothing(content_copy: Path, kb_engine: Engine) -> None:
    """A restore is a save: an old version that no longer fits the KB (its brand note names a
    brand that was removed meanwhile) is refused like any save."""
    first = edit(content_copy, kb_engine, "topic", "fault_causes", brand_notes={"银盛": "银盛的说明。"})
    edit(content_copy, kb_engine, "topic", "fault_causes", brand_notes={})
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    doc = yaml.load((content_copy / "brands.yml").read_text())
    doc["brands"] = [b for b in doc["brands"] if b["name"] != "银盛"]
    with open(content_copy / "brands.yml", "w", encoding="utf-8") as handle:
        yaml.dump(doc, handle)
    second = HistoryStore(kb_engine).entries("topic", "fault_causes")[0]
    before = snapshot(content_copy)
    current = read_entity(content_copy, "topic", "fault_causes")["version"]
    with pytest.raises(Refused) as refused:
        restore(content_copy, second.id, current, staff="li", engine=kb_engine, encoder=ENCODER)
    assert "unknown brand `银盛`" in str(refused.value.problems[0])
    assert snapshot(content_copy) == before
    assert first.history_id < second.id


def test_a_file_broken_by_hand_blocks_every_save_with_its_line(content_copy: Path, kb_engine: Engine) -> None:
    """The linter checks the whole KB: while brands.yml is broken, no topic can be saved (the
    build would fail anyway), and the console says where the break is."""
    brands = content_copy / "brands.yml"
    text = brands.read_text(encoding="utf-8")
    brands.write_text(text.replace("  - name: 银盛\n", "  - name: 银盛\n   bad\n"), encoding="utf-8")
    before = snapshot(content_copy)
    with pytest.raises(Refused) as refused:
        edit(content_copy, kb_engine, "topic", "fault_causes", answer="修好之前存不了。")
    assert any(
        str(p).startswith("brands.yml:") and "YAML syntax error" in str(p) for p in refused.value.problems
    )
    with pytest.raises(Refused):  # an entry of the broken file itself cannot even be opened
        read_entity(content_copy, "brand", "银盛")
    assert snapshot(content_copy) == before
    assert HistoryStore(kb_engine).entries() == []


NEW_TOPIC = {
    "id": "sticker_lost",
    "intent": "apply_pos",
    "family": "apply",
    "question": "收款码贴纸掉了怎么补？",
    "questions": [
        "收款码贴纸掉了咋办",
        "二维码贴纸丢了",
        "收款码牌子坏了怎么换",
        "码牌掉了能补吗",
        "收款贴纸没了",
    ],
    "answer": "请联系为您安装机器的业务员或服务商补一张新的收款码贴纸。",
    "steps": [],
    "brand_notes": {},
    "flow": "",
    "source": "seed:test",
}


def test_a_new_topic_is_appended_live_and_its_restore_removes_it(
    content_copy: Path, kb_engine: Engine
) -> None:
    original = snapshot(content_copy)
    saved = create(
        content_copy, "topic", "topics/service.yml", NEW_TOPIC, staff="li", engine=kb_engine, encoder=ENCODER
    )
    assert (saved.changed, saved.file, saved.id) == (True, "topics/service.yml", "sticker_lost")
    before, after = original["topics/service.yml"], (content_copy / "topics/service.yml").read_bytes()
    assert after.startswith(before)  # every existing byte stays
    assert after[len(before) :].decode() == (
        "\n  - id: sticker_lost\n    intent: apply_pos\n    family: apply\n"
        "    question: 收款码贴纸掉了怎么补？\n    questions:\n      - 收款码贴纸掉了咋办\n"
        "      - 二维码贴纸丢了\n      - 收款码牌子坏了怎么换\n      - 码牌掉了能补吗\n      - 收款贴纸没了\n"
        "    answer: 请联系为您安装机器的业务员或服务商补一张新的收款码贴纸。\n    source: seed:test\n"
    )
    assert KnowledgeStore(kb_engine).topic("sticker_lost").title == "收款码贴纸掉了怎么补？"
    row = HistoryStore(kb_engine).entries()[0]
    assert (row.action, row.before, row.entity) == ("create", "", "sticker_lost")
    with pytest.raises(Invalid, match="已经有话题「sticker_lost」了"):
        create(
            content_copy, "topic", "topics/core.yml", NEW_TOPIC, staff="li", engine=kb_engine, encoder=ENCODER
        )
    current = read_entity(content_copy, "topic", "sticker_lost")["version"]
    removed = restore(content_copy, row.id, current, staff="wang", engine=kb_engine, encoder=ENCODER)
    assert removed.changed and snapshot(content_copy) == original
    assert KnowledgeStore(kb_engine).topic("sticker_lost") is None
    assert HistoryStore(kb_engine).entries()[0].after == ""


def test_a_new_entry_the_linter_refuses_is_not_written(content_copy: Path, kb_engine: Engine) -> None:
    before = snapshot(content_copy)
    taken = load_content(CONTENT_DIR).topics[3]["questions"][0]
    with pytest.raises(Refused) as refused:
        create(
            content_copy,
            "topic",
            "topics/service.yml",
            {**NEW_TOPIC, "questions": [*NEW_TOPIC["questions"], taken]},
            staff="li",
            engine=kb_engine,
            encoder=ENCODER,
        )
    assert str(refused.value.problems[0]).startswith("topics/service.yml:")
    for bad in ({**NEW_TOPIC, "id": ""}, NEW_TOPIC):
        with pytest.raises(Invalid):
            create(
                content_copy,
                "topic",
                "brands.yml" if bad["id"] else "topics/core.yml",
                bad,
                staff="li",
                engine=kb_engine,
                encoder=ENCODER,
            )
    assert snapshot(content_copy) == before
    assert HistoryStore(kb_engine).entries() == []
