"""The staff console's knowledge editor routes (/staff/api/kb/…): every refusal first (no session,
an agent, no CSRF, a cross-site origin, bad input, lint problems, a stale version), then listing,
saving, history, restore and "try it".

The console runs on a copy of kb/content (never the repository's files) and a temporary SQLite
database holding the real KB, built with tests/kb/test_editing.py's small bigram encoder.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sanic import Sanic
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from bot.channels.kb_editor import KbEditor
from bot.channels.staff import COOKIE, StaffConsole
from kb.build import build
from kb.editing import HistoryStore
from kb.loader import load_content
from kb.settings import CONTENT_DIR
from kb.store import KnowledgeStore
from records.store import RecordStore
from staff.accounts import StaffStore
from tests.kb.test_editing import ENCODER, FAULT_CAUSES_LINE, NEW_TOPIC

PASSWORD = "correct horse battery"
HOST = "127.0.0.1:5005"
ITEM = "/staff/api/kb/items/topic/fault_causes"
ROUTES = [
    ("GET", "/staff/api/kb/items"),
    ("GET", ITEM),
    ("POST", ITEM),
    ("POST", "/staff/api/kb/items/topic"),
    ("GET", "/staff/api/kb/history"),
    ("POST", "/staff/api/kb/history/1/restore"),
    ("GET", "/staff/api/kb/try?q=打印纸怎么装"),
]
CHANGES = [route for route in ROUTES if route[0] == "POST"]
PROBLEM_LINE = re.compile(r"^[a-z_/]+\.yml:\d+: .+")


@pytest.fixture(scope="module")
def built_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kb_editor") / "kb.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    build(engine, load_content(CONTENT_DIR), encoder=ENCODER)
    # The server fits the answer index when it starts (warm_in_background); the tests' server
    # does not, so fit it here: in "try it" it took > 60 s on a busy CI machine (Sanic's 503).
    KnowledgeStore(engine).answer_index(ENCODER)
    engine.dispose()
    return path


class Console:
    """A Sanic app with only the console mounted, the editor on ``content``."""

    def __init__(self, tmp_path: Path, engine: Engine, content: Path) -> None:
        self.engine = engine
        self.staff = StaffStore(engine)
        self.content = content
        editor = KbEditor(content, engine=engine, encoder=ENCODER, warm=False)
        channel = StaffConsole(self.staff, RecordStore(engine), kb_editor=editor)
        self.app = Sanic(f"kb_editor_test_{uuid.uuid4().hex[:12]}")
        self.app.blueprint(channel.blueprint(lambda _: None), url_prefix="/staff")
        for name, role in (("agent1", "agent"), ("editor1", "editor"), ("boss", "admin")):
            self.staff.add_user(name, role, PASSWORD)

    def request(
        self,
        method: str,
        path: str,
        *,
        cookie: str = "",
        csrf: str = "",
        origin: str = "",
        json: Any = None,
        content: bytes | None = None,
    ) -> Any:
        headers = {"Host": HOST}
        if cookie:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        if csrf:
            headers["X-CSRF-Token"] = csrf
        if origin:
            headers["Origin"] = origin
        kwargs: dict[str, Any] = {"headers": headers, "timeout": 120}
        if json is not None and method != "GET":
            kwargs["json"] = json
        if content is not None:
            kwargs["content"] = content
        _, response = getattr(self.app.test_client, method.lower())(path, **kwargs)
        return response

    def login(self, name: str) -> tuple[str, str]:
        response = self.request("POST", "/staff/api/login", json={"name": name, "password": PASSWORD})
        assert response.status == 200, response.text
        return SimpleCookie(response.headers["set-cookie"])[COOKIE].value, response.json["csrf"]

    def as_editor(self, name: str = "editor1") -> dict[str, str]:
        cookie, csrf = self.login(name)
        return {"cookie": cookie, "csrf": csrf}

    def file(self, relative: str) -> bytes:
        return (self.content / relative).read_bytes()

    def audit(self) -> list[tuple[str, str, str]]:
        return [(e.staff, e.action, e.target) for e in self.staff.audit_entries()]


@pytest.fixture()
def console(tmp_path: Path, built_kb: Path) -> Console:
    content = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, content)
    shutil.copy(built_kb, tmp_path / "posbot.sqlite3")
    engine = create_engine(
        f"sqlite:///{tmp_path / 'posbot.sqlite3'}", connect_args={"check_same_thread": False}
    )
    yield Console(tmp_path, engine, content)
    engine.dispose()


def load(console: Console, who: dict[str, str], path: str = ITEM) -> dict[str, Any]:
    response = console.request("GET", path, cookie=who["cookie"])
    assert response.status == 200, response.text
    return response.json


def post_save(
    console: Console, who: dict[str, str], loaded: dict[str, Any], path: str = ITEM, **changes: Any
) -> Any:
    return console.request(
        "POST", path, **who, json={"fields": {**loaded["fields"], **changes}, "version": loaded["version"]}
    )


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("method, path", ROUTES)
def test_every_editor_route_refuses_without_a_session(console: Console, method: str, path: str) -> None:
    before = console.file("topics/core.yml")
    response = console.request(method, path, json={"fields": {}, "version": "x"})
    assert response.status == 401
    assert response.json == {"error": "请先登录"}
    assert console.file("topics/core.yml") == before


@pytest.mark.parametrize("method, path", ROUTES)
def test_an_agent_may_not_read_or_edit_the_knowledge_base(console: Console, method: str, path: str) -> None:
    cookie, csrf = console.login("agent1")
    before = console.file("topics/core.yml")
    loaded = read_as_admin(console)
    response = console.request(
        method,
        path,
        cookie=cookie,
        csrf=csrf,
        json={"fields": {**loaded["fields"], "answer": "代理改的。"}, "version": loaded["version"]},
    )
    assert response.status == 403
    assert response.json == {"error": "您的账号没有这个权限"}
    assert console.file("topics/core.yml") == before
    assert HistoryStore(console.engine).entries() == []


def read_as_admin(console: Console) -> dict[str, Any]:
    return load(console, console.as_editor("boss"))


@pytest.mark.parametrize("method, path", CHANGES)
def test_changes_need_the_csrf_token_and_the_same_origin(console: Console, method: str, path: str) -> None:
    who = console.as_editor()
    loaded = load(console, who)
    before = console.file("topics/core.yml")
    body = {"fields": {**loaded["fields"], "answer": "伪造的修改。"}, "version": loaded["version"]}
    for attempt, says in (
        ({"cookie": who["cookie"]}, "CSRF"),
        ({"cookie": who["cookie"], "csrf": "wrong"}, "CSRF"),
        ({**who, "origin": "https://evil.example"}, "其他网站"),
    ):
        response = console.request(method, path, json=body, **attempt)
        assert response.status == 403, attempt
        assert says in response.json["error"]
    assert console.file("topics/core.yml") == before
    assert not [a for a in console.audit() if a[1].startswith("kb_")]


def test_bad_requests_get_a_clear_400_and_change_nothing(console: Console) -> None:
    who = console.as_editor()
    loaded = load(console, who)
    before = console.file("topics/core.yml")
    cases = [
        (b"not json", "请求内容必须是 JSON"),
        (b"[1, 2]", "请求内容必须是 JSON 对象"),
        (json.dumps({"fields": loaded["fields"]}).encode(), "缺少 version：请重新打开这个条目再保存"),
        (json.dumps({"version": loaded["version"]}).encode(), "缺少 fields：要保存的字段"),
        (json.dumps({"fields": {"answer": 5}, "version": loaded["version"]}).encode(), "“回答”必须是文字"),
        (
            json.dumps({"fields": {"keywords": []}, "version": loaded["version"]}).encode(),
            "不认识的字段：keywords",
        ),
        (
            json.dumps({"fields": {"answer": "一\n二"}, "version": loaded["version"]}).encode(),
            "“回答”里不能有换行或控制字符（分条的内容请写在列表里，每行一条）",
        ),
        (
            json.dumps({"fields": {"id": "other_id"}, "version": loaded["version"]}).encode(),
            "“id”是这个话题的标识，不能在这里改",
        ),
    ]
    for body, message in cases:
        response = console.request("POST", ITEM, **who, content=body)
        assert (response.status, response.json) == (400, {"error": message}), body
    assert console.request("GET", "/staff/api/kb/try?q=", cookie=who["cookie"]).json == {
        "error": "请输入 1 到 200 个字的问题"
    }
    assert console.request("GET", "/staff/api/kb/try?q=" + "问" * 201, cookie=who["cookie"]).status == 400
    assert console.request("GET", "/staff/api/kb/history?kind=fees", cookie=who["cookie"]).status == 400
    missing = console.request("GET", "/staff/api/kb/items/topic/no_such_topic", cookie=who["cookie"])
    assert (missing.status, missing.json) == (404, {"error": "没有这个话题：no_such_topic"})
    assert console.request("GET", "/staff/api/kb/items/fees/x", cookie=who["cookie"]).status == 404
    assert console.file("topics/core.yml") == before


def test_lint_problems_are_shown_as_file_line_and_the_file_is_untouched(console: Console) -> None:
    who = console.as_editor()
    loaded = load(console, who)
    before = console.file("topics/core.yml")
    response = post_save(
        console,
        who,
        loaded,
        questions=loaded["fields"]["questions"][:2],
        brand_notes={"不存在的牌子": "说明"},
    )
    assert response.status == 400
    problems = response.json["problems"]
    assert problems == [
        # the lines of the entry as it would have been written
        f"topics/core.yml:{FAULT_CAUSES_LINE + 15}: unknown brand `不存在的牌子` in brand_notes: use a "
        "`name` from brands.yml, or add the brand there first",
        f"topics/core.yml:{FAULT_CAUSES_LINE + 4}: `questions` has 2 question(s): "
        "give at least 5 ways merchants ask this",
    ]
    assert all(PROBLEM_LINE.match(p) for p in problems)
    assert response.json["error"].startswith("内容检查没有通过，文件没有改动：")
    assert console.file("topics/core.yml") == before
    assert HistoryStore(console.engine).entries() == []
    assert not [a for a in console.audit() if a[1].startswith("kb_")]


def test_a_stale_version_is_refused_with_409(console: Console) -> None:
    wang, li = console.as_editor(), console.as_editor("boss")
    loaded_by_wang, loaded_by_li = load(console, wang), load(console, li)
    first = post_save(console, li, loaded_by_li, answer="李先改了。")
    assert first.status == 200
    after_first = console.file("topics/core.yml")
    late = post_save(console, wang, loaded_by_wang, answer="王后改的。")
    assert late.status == 409
    assert late.json["error"].startswith("这个条目在您打开之后被别人改过了")
    assert late.json["version"] == first.json["version"]
    assert console.file("topics/core.yml") == after_first
    assert KnowledgeStore(console.engine).topic("fault_causes").answer == "李先改了。"


# ------------------------------------------------------------------ reading, saving, history
def test_the_list_has_every_topic_code_and_brand_with_the_forms(console: Console) -> None:
    data = load(console, console.as_editor(), "/staff/api/kb/items")
    content = load_content(CONTENT_DIR)
    kinds = [item["kind"] for item in data["items"]]
    assert kinds.count("topic") == len(content.topics)
    assert kinds.count("error_code") == len(content.error_codes)
    assert kinds.count("brand") == len(content.brands)
    topic = next(i for i in data["items"] if i["id"] == "fault_causes")
    assert (topic["title"], topic["file"]) == ("POS机为什么会出故障？", "topics/core.yml")
    code = next(i for i in data["items"] if i["kind"] == "error_code" and i["id"] == "51")
    assert code["title"].startswith("51 ")
    assert [f["name"] for f in data["kinds"]["topic"]["fields"]][:4] == ["id", "intent", "family", "question"]
    assert data["kinds"]["brand"]["label"] == "品牌"
    assert "walk:printer" in data["choices"]["flow"] and "拉卡拉" in data["choices"]["brands"]
    assert data["problems"] == []


def test_an_editor_saves_a_topic_it_is_live_audited_and_in_the_history(console: Console) -> None:
    who = console.as_editor()
    loaded = load(console, who)
    assert (loaded["file"], loaded["line"]) == ("topics/core.yml", FAULT_CAUSES_LINE)
    old_answer = loaded["fields"]["answer"]
    response = post_save(console, who, loaded, answer="POS机的问题大致分五类，先判断是哪一类。")
    assert response.status == 200, response.text
    body = response.json
    assert body["saved"] is True and body["file"] == "topics/core.yml"
    assert body["message"].startswith("已保存并发布：话题「fault_causes」写入了 topics/core.yml")
    text = console.file("topics/core.yml").decode()
    assert "    answer: POS机的问题大致分五类，先判断是哪一类。\n" in text and old_answer not in text
    live = KnowledgeStore(console.engine).topic("fault_causes")
    assert live.answer == "POS机的问题大致分五类，先判断是哪一类。"
    assert load(console, who)["version"] == body["version"] != loaded["version"]
    assert ("editor1", "kb_save", "topic:fault_causes") in console.audit()
    history = load(console, who, "/staff/api/kb/history?kind=topic&id=fault_causes")["history"]
    assert len(history) == 1 and history[0]["id"] == body["history_id"]
    shown = (history[0]["staff"], history[0]["action"], history[0]["file"])
    assert shown == ("editor1", "save", "topics/core.yml")
    assert f"-answer: {old_answer}" in history[0]["diff"]
    assert "+answer: POS机的问题大致分五类，先判断是哪一类。" in history[0]["diff"]
    # saving the same again changes nothing and records nothing
    again = post_save(console, who, load(console, who))
    assert again.status == 200 and again.json["saved"] is False
    assert again.json["message"] == "没有改动，不需要保存"
    assert len(load(console, who, "/staff/api/kb/history")["history"]) == 1


def test_a_brand_with_a_chinese_name_is_edited_through_its_url(console: Console) -> None:
    who = console.as_editor("boss")  # admins may edit too
    path = "/staff/api/kb/items/brand/" + quote("银盛")
    loaded = load(console, who, path)
    assert loaded["fields"]["aliases"] == [] and loaded["fields"]["hotline"] == ""
    response = post_save(console, who, loaded, path, aliases=["YS"])
    assert response.status == 200, response.text
    assert "    aliases: [YS]\n" in console.file("brands.yml").decode()
    assert KnowledgeStore(console.engine).canonical("brand", "ys") == "银盛"
    assert ("boss", "kb_save", "brand:银盛") in console.audit()


def test_restore_puts_the_previous_version_back(console: Console) -> None:
    who = console.as_editor()
    original = console.file("topics/core.yml")
    loaded = load(console, who)
    saved = post_save(console, who, loaded, answer="要撤回的修改。").json
    restore_path = f"/staff/api/kb/history/{saved['history_id']}/restore"
    stale = console.request("POST", restore_path, **who, json={"version": loaded["version"]})
    assert stale.status == 409  # the page must have the current version
    assert console.request("POST", restore_path, **who, json={}).status == 400
    missing = console.request(
        "POST", "/staff/api/kb/history/999/restore", **who, json={"version": saved["version"]}
    )
    assert (missing.status, missing.json) == (404, {"error": "没有这条修改记录"})
    response = console.request("POST", restore_path, **who, json={"version": saved["version"]})
    assert response.status == 200, response.text
    assert response.json["saved"] is True
    assert console.file("topics/core.yml") == original
    assert KnowledgeStore(console.engine).topic("fault_causes").answer == loaded["fields"]["answer"]
    assert ("editor1", "kb_restore", "topic:fault_causes") in console.audit()
    history = load(console, who, "/staff/api/kb/history?id=fault_causes")["history"]
    assert [(h["action"], h["restored_from"]) for h in history] == [
        ("restore", saved["history_id"]),
        ("save", None),
    ]


def test_try_it_shows_what_retrieval_picks_with_scores(console: Console) -> None:
    who = console.as_editor()
    topic = next(t for t in load_content(CONTENT_DIR).topics if t["id"] == "paper_load")
    question = topic["question"]
    data = load(console, who, "/staff/api/kb/try?q=" + quote(question))
    assert data["question"] == question
    assert 1 <= len(data["matches"]) <= 5
    best = data["matches"][0]
    assert best["id"] == "paper_load" and best["kind"] == "topic"
    assert best["title"] == question and best["nearest"] == question
    scores = [m["score"] for m in data["matches"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.3
    assert data["verdict"]["kind"] in ("answer", "clarify")
    if data["verdict"]["kind"] == "answer":
        assert data["verdict"]["text"] == f"会直接回答「{question}」（paper_load）"
    else:
        assert data["verdict"]["text"].startswith(f"不够确定，会问“您是想问”：「{question}」")
    # a question that is a fault report: the walk is among the answers, as the bot weighs them
    walk = load(console, who, "/staff/api/kb/try?q=" + quote("打印机不出纸了"))
    assert any(m["kind"] == "walk" and m["id"].startswith("walk:") for m in walk["matches"])
    assert data["digest"] == KnowledgeStore(console.engine).digest()


def test_an_editor_adds_a_topic_and_undoes_it(console: Console) -> None:
    who = console.as_editor()
    original = console.file("topics/service.yml")
    files = load(console, who, "/staff/api/kb/items")["files"]
    assert "topics/service.yml" in files["topic"] and files["brand"] == ["brands.yml"]
    for body, message in (
        (NEW_TOPIC, "请选择新条目要加到哪个文件（file）"),
        ({"file": "brands.yml", "fields": NEW_TOPIC}, None),
        ({"file": "topics/service.yml", "fields": {**NEW_TOPIC, "id": ""}}, "请填写新话题的“id”"),
    ):
        response = console.request("POST", "/staff/api/kb/items/topic", **who, json=body)
        assert response.status == 400
        if message:
            assert response.json == {"error": message}
    assert console.file("topics/service.yml") == original
    response = console.request(
        "POST", "/staff/api/kb/items/topic", **who, json={"file": "topics/service.yml", "fields": NEW_TOPIC}
    )
    assert response.status == 200, response.text
    assert response.json["message"].startswith("已保存并发布：话题「sticker_lost」写入了 topics/service.yml")
    assert KnowledgeStore(console.engine).topic("sticker_lost").answer == NEW_TOPIC["answer"]
    assert ("editor1", "kb_create", "topic:sticker_lost") in console.audit()
    again = console.request(
        "POST", "/staff/api/kb/items/topic", **who, json={"file": "topics/core.yml", "fields": NEW_TOPIC}
    )
    assert again.status == 400 and again.json["error"].startswith("已经有话题「sticker_lost」了")
    loaded = load(console, who, "/staff/api/kb/items/topic/sticker_lost")
    undo = console.request(
        "POST",
        f"/staff/api/kb/history/{response.json['history_id']}/restore",
        **who,
        json={"version": loaded["version"]},
    )
    assert undo.status == 200, undo.text
    assert "已从 topics/service.yml 里删掉" in undo.json["message"]
    assert console.file("topics/service.yml") == original
    assert KnowledgeStore(console.engine).topic("sticker_lost") is None
