"""The staff console's learning queue: every refusal first, then the queue, teaching, ignoring.

The console runs on a copy of kb/content (never the repository's files), the real KB in an
in-memory database (tests/conftest.py ``engine``), and a SQL tracker store seeded with merchants'
messages the way Rasa writes them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from http.cookies import SimpleCookie
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rasa.core.tracker_store import AwaitableTrackerStore, SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Sanic
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.channels.learning import Learning, unanswered_occurrences
from bot.channels.staff import COOKIE, StaffConsole
from kb.loader import LEARNED_FILE, load_content
from kb.settings import CONTENT_DIR
from kb.store import KnowledgeStore
from records.store import Feedback, RecordStore
from staff.accounts import StaffStore
from staff.report import Period, unanswered_questions

PASSWORD = "correct horse battery"
HOST = "127.0.0.1:5005"
NOW = time.time()
ROUTES = [
    ("GET", "/staff/api/learning"),
    ("GET", "/staff/api/learning/answers"),
    ("POST", "/staff/api/learning/teach"),
    ("POST", "/staff/api/learning/ignore"),
]
TEACH = "/staff/api/learning/teach"
IGNORE = "/staff/api/learning/ignore"


def turn(text: str, intent: str, action: str, ts: float) -> list[Event]:
    return [
        ActionExecuted("action_listen", timestamp=ts - 1),
        UserUttered(text, {"name": intent, "confidence": 0.9}, timestamp=ts),
        ActionExecuted(action, timestamp=ts + 1),
        BotUttered("……", timestamp=ts + 2),
    ]


def known_question() -> str:
    """A question the KB has already (a topic's): never in the queue."""
    return load_content(CONTENT_DIR).topics[0]["questions"][0]


CONVERSATIONS = {
    "shop-1": turn("收款码贴纸掉了怎么补", "nlu_fallback", "action_clarify", NOW - 300),
    "shop-2": [
        *turn("收款码的贴纸掉了咋办", "out_of_scope", "utter_out_of_scope", NOW - 200),
        *turn("/deny", "deny", "utter_rephrase_failed", NOW - 190),
    ],
    "shop-3": [
        *turn("pos机能连蓝牙音箱吗", "nlu_fallback", "action_default_fallback", NOW - 100),
        *turn("手续费怎么算", "fees", "action_answer_fees", NOW - 50),
    ],
    "shop-4": turn(known_question(), "nlu_fallback", "action_clarify", NOW - 40),
    "shop-old": turn("去年的问题", "nlu_fallback", "action_clarify", NOW - 40 * 86400),
}


def seed_tracker(path: Path, conversations: dict[str, list[Event]]) -> SQLTrackerStore:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(path))

    async def seed() -> None:
        for sender, events in conversations.items():
            await store.save(DialogueStateTracker.from_events(sender, events))

    asyncio.run(seed())
    return store


def rate(engine: Engine, conversation: str, question: str, topic: str | None, ago: float) -> None:
    from datetime import datetime, timezone

    at = datetime.fromtimestamp(NOW - ago, timezone.utc).replace(tzinfo=None)
    with Session(engine) as session, session.begin():
        session.add(
            Feedback(
                conversation_id=conversation,
                topic_id=topic,
                intent=None,
                question=question,
                helpful=False,
                created_at=at,
            )
        )


class Console:
    """A Sanic app with only the console mounted, the learning queue on ``content``."""

    def __init__(
        self, tmp_path: Path, engine: Engine, content: Path, conversations: dict[str, list[Event]]
    ) -> None:
        self.engine = engine
        self.staff = StaffStore(engine)
        self.records = RecordStore(engine)
        self.content = content
        self.learning = Learning(content, engine=engine, warm=False)
        channel = StaffConsole(self.staff, self.records, learning=self.learning)
        self.app = Sanic(f"learning_test_{uuid.uuid4().hex[:12]}")
        self.app.blueprint(channel.blueprint(lambda _: None), url_prefix="/staff")
        trackers = seed_tracker(tmp_path / "tracker.sqlite3", conversations)
        self.app.ctx.agent = SimpleNamespace(tracker_store=AwaitableTrackerStore(trackers))
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
        # the first queue of a KB fits its answer index (~20 s): more than httpx's default 5 s
        kwargs: dict[str, Any] = {"headers": headers, "timeout": 120}
        if json is not None:
            kwargs["json"] = json
        if content is not None:
            kwargs["content"] = content
        _, response = getattr(self.app.test_client, method.lower())(path, **kwargs)
        return response

    def login(self, name: str) -> tuple[str, str]:
        response = self.request("POST", "/staff/api/login", json={"name": name, "password": PASSWORD})
        assert response.status == 200, response.text
        return SimpleCookie(response.headers["set-cookie"])[COOKIE].value, response.json["csrf"]

    def learned(self) -> bytes:
        return (self.content / LEARNED_FILE).read_bytes()


@pytest.fixture()
def content_copy(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, target)
    return target


@pytest.fixture()
def console(tmp_path: Path, engine: Engine, content_copy: Path) -> Console:
    c = Console(tmp_path, engine, content_copy, CONVERSATIONS)
    rate(engine, "shop-1", "收款码贴纸掉了怎么补", None, 280)  # 都不是 under "您是想问"
    rate(engine, "shop-5", "小票打出来是空白的啊", "paper_side", 30)  # 没帮助
    return c


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("method, path", ROUTES)
def test_every_learning_route_refuses_without_a_session(console: Console, method: str, path: str) -> None:
    body = {"texts": ["x"], "answer": "decline"} if method == "POST" else None
    assert console.request(method, path, json=body).status == 401
    assert console.request(method, path, cookie="forged", csrf="x").status == 401


@pytest.mark.parametrize("method, path", ROUTES)
def test_an_agent_is_refused_every_learning_route(console: Console, method: str, path: str) -> None:
    cookie, csrf = console.login("agent1")
    before = console.learned()
    body = {"texts": ["收款码贴纸掉了怎么补"], "answer": "apply_process"} if method == "POST" else None
    response = console.request(method, path, cookie=cookie, csrf=csrf, json=body)
    assert response.status == 403 and response.json["error"] == "您的账号没有这个权限"
    assert console.learned() == before


@pytest.mark.parametrize("path", [TEACH, IGNORE])
def test_teach_and_ignore_need_the_csrf_token_and_a_same_site_origin(console: Console, path: str) -> None:
    cookie, csrf = console.login("editor1")
    body = {"texts": ["收款码贴纸掉了怎么补"], "answer": "apply_process"}
    before = console.learned()
    assert console.request("POST", path, cookie=cookie, json=body).status == 403
    assert console.request("POST", path, cookie=cookie, csrf="wrong", json=body).status == 403
    assert (
        console.request(
            "POST", path, cookie=cookie, csrf=csrf, json=body, origin="https://evil.example"
        ).status
        == 403
    )
    assert console.learned() == before
    assert [e.action for e in console.staff.audit_entries()] == ["login"]
    assert console.learning.queue(7, console.records, None)["groups"]  # nothing was ignored


BAD_TEXTS = [
    (None, "请求内容必须是 JSON"),
    (["收款码贴纸掉了怎么补"], "JSON 对象"),
    ({}, "texts"),
    ({"texts": "收款码贴纸掉了怎么补"}, "texts"),
    ({"texts": []}, "texts"),
    ({"texts": [5]}, "不为空的文字"),
    ({"texts": ["  "]}, "不为空的文字"),
    ({"texts": ["问"] * 51}, "最多 50 个"),
    ({"texts": ["问" * 201]}, "最多 200 个字"),
    ({"texts": ["第一行\n第二行"]}, "换行"),
]


@pytest.mark.parametrize("path", [TEACH, IGNORE])
@pytest.mark.parametrize("body, says", BAD_TEXTS)
def test_bad_input_is_a_clear_400_and_changes_nothing(
    console: Console, path: str, body: Any, says: str
) -> None:
    cookie, csrf = console.login("editor1")
    before = console.learned()
    if body is None:
        response = console.request("POST", path, cookie=cookie, csrf=csrf, content=b"{texts: [")
    else:
        if isinstance(body, dict) and path == TEACH:
            body = {**body, "answer": "apply_process"}
        response = console.request("POST", path, cookie=cookie, csrf=csrf, json=body)
    assert response.status == 400 and says in response.json["error"], response.text
    assert console.learned() == before
    assert console.learning.queue(7, console.records, None)["groups"]  # nothing ignored


@pytest.mark.parametrize(
    "answer, says",
    [
        (None, "请选择一个回答"),
        ("", "请选择一个回答"),
        (7, "请选择一个回答"),
        ("no_such_topic", "没有这个回答"),
        ("walk:no_such_symptom", "没有这个回答"),
        ("code:XX", "没有这个回答"),
    ],
)
def test_teaching_an_unknown_answer_is_a_400(console: Console, answer: Any, says: str) -> None:
    cookie, csrf = console.login("editor1")
    before = console.learned()
    response = console.request(
        "POST", TEACH, cookie=cookie, csrf=csrf, json={"texts": ["收款码贴纸掉了怎么补"], "answer": answer}
    )
    assert response.status == 400 and says in response.json["error"]
    assert console.learned() == before


@pytest.mark.parametrize("days", ["abc", "0", "91", "-1", "7.5"])
def test_a_bad_period_is_a_400(console: Console, days: str) -> None:
    cookie, _ = console.login("editor1")
    response = console.request("GET", f"/staff/api/learning?days={days}", cookie=cookie)
    assert response.status == 400 and "days" in response.json["error"]


def test_a_linter_problem_is_a_400_with_its_lines_and_the_file_is_unchanged(console: Console) -> None:
    first = load_content(console.content).learned[0]
    other = "paper_side" if first["answer"] != "paper_side" else "paper_jam"
    cookie, csrf = console.login("editor1")
    before = console.learned()
    response = console.request(
        "POST",
        TEACH,
        cookie=cookie,
        csrf=csrf,
        json={"texts": ["收款码贴纸掉了怎么补", first["text"]], "answer": other},
    )
    assert response.status == 400
    [problem] = response.json["problems"]
    assert problem.startswith(f"{LEARNED_FILE}:") and "already learned with answer" in problem
    assert problem in response.json["error"]
    assert console.learned() == before
    assert "teach" not in [e.action for e in console.staff.audit_entries()]


# ------------------------------------------------------------------ the queue
def test_the_queue_groups_what_the_bot_could_not_answer_most_frequent_first(console: Console) -> None:
    cookie, _ = console.login("editor1")
    response = console.request("GET", "/staff/api/learning", cookie=cookie)
    assert response.status == 200, response.text
    body = response.json
    assert body["days"] == 7 and body["threshold"] == 0.95 and body["warnings"] == []
    groups = {g["text"]: g for g in body["groups"]}
    # two near-identical questions, one group of two; unrelated questions, groups of their own
    first = body["groups"][0]
    assert (first["count"], sorted(first["texts"])) == (2, ["收款码的贴纸掉了咋办", "收款码贴纸掉了怎么补"])
    assert set(groups) == {first["text"], "pos机能连蓝牙音箱吗", "小票打出来是空白的啊"}
    assert first["reasons"] == {"fallback": 1, "clarify": 1, "none_of_these": 1, "decline": 1}
    by_conversation = {e["conversation_id"]: e for e in first["examples"]}
    assert [r["code"] for r in by_conversation["shop-1"]["reasons"]] == [
        "fallback",
        "clarify",
        "none_of_these",
    ]
    assert by_conversation["shop-2"]["reasons"] == [{"code": "decline"}]
    assert by_conversation["shop-2"]["at"].endswith("Z")
    assert groups["pos机能连蓝牙音箱吗"]["examples"][0]["reasons"] == [{"code": "fallback"}]
    [rated] = groups["小票打出来是空白的啊"]["examples"]
    content = load_content(console.content)
    paper = next(t for t in content.topics if t["id"] == "paper_side")
    assert rated["reasons"] == [{"code": "unhelpful", "topic": "paper_side", "title": paper["question"]}]
    # answered questions, button payloads, the KB's own questions and older days: not here
    asked = {e["text"] for g in body["groups"] for e in g["examples"]}
    assert not asked & {"手续费怎么算", "/deny", known_question(), "去年的问题"}
    # three suggestions from the KB's answer index (topics and walks), titled in Chinese
    for group in body["groups"]:
        assert len(group["suggestions"]) == 3
        for s in group["suggestions"]:
            assert s["title"] and s["title"] != s["id"] and 0 <= s["score"] <= 1.3
            assert s["kind"] in ("topic", "walk")
    assert groups["小票打出来是空白的啊"]["suggestions"][0]["id"] in ("paper_side", "walk:printer")
    longer = console.request("GET", "/staff/api/learning?days=60", cookie=cookie).json
    assert "去年的问题" in {g["text"] for g in longer["groups"]}


def test_the_queue_agrees_with_posbot_report_on_what_was_unanswered(tmp_path: Path) -> None:
    trackers = seed_tracker(tmp_path / "tracker.sqlite3", CONVERSATIONS)
    from datetime import date, timedelta

    period = Period(date.today() - timedelta(days=60), date.today())
    _, ranked = unanswered_questions(trackers.engine, period)
    found = unanswered_occurrences(trackers.engine, period)
    from collections import Counter

    from staff.report import normalise

    assert Counter(normalise(o.text) for o in found) == Counter(
        {normalise(u.question): u.count for u in ranked}
    )
    # every reason the report knows has a name in the queue
    from bot.channels.learning import REASONS
    from staff.report import UNANSWERED_ACTIONS, UNANSWERED_INTENTS

    assert set(REASONS) == {*UNANSWERED_INTENTS, *UNANSWERED_ACTIONS}


def test_the_answers_for_the_picker(console: Console) -> None:
    cookie, _ = console.login("editor1")
    response = console.request("GET", "/staff/api/learning/answers", cookie=cookie)
    assert response.status == 200
    answers = {a["id"]: a for a in response.json["answers"]}
    assert {a["kind"] for a in answers.values()} == {"topic", "walk", "code", "flow", "decline", "smalltalk"}
    assert answers["walk:printer"]["title"] and answers["flow:handoff"]["title"] == "转人工客服"
    assert answers["smalltalk:greet"]["intent"] == "greet"


def test_without_a_sql_tracker_store_the_ratings_are_still_listed(console: Console) -> None:
    console.app.ctx.agent = SimpleNamespace(tracker_store=None)
    cookie, _ = console.login("boss")  # admins may do what editors do
    body = console.request("GET", "/staff/api/learning", cookie=cookie).json
    assert body["warnings"] and "SQL" in body["warnings"][0]
    assert {g["text"] for g in body["groups"]} == {"收款码贴纸掉了怎么补", "小票打出来是空白的啊"}


# ------------------------------------------------------------------ ignoring and teaching
def test_ignored_questions_leave_the_queue_and_the_audit_log_says_who(console: Console) -> None:
    cookie, csrf = console.login("editor1")
    response = console.request(
        "POST", IGNORE, cookie=cookie, csrf=csrf, json={"texts": ["pos机能连蓝牙音箱吗"]}
    )
    assert response.status == 200 and response.json["new"] == 1
    assert "已忽略" in response.json["message"]
    texts = {g["text"] for g in console.request("GET", "/staff/api/learning", cookie=cookie).json["groups"]}
    assert "pos机能连蓝牙音箱吗" not in texts and "小票打出来是空白的啊" in texts
    entry = console.staff.audit_entries()[0]
    assert (entry.staff, entry.action) == ("editor1", "ignore")
    assert json.loads(entry.detail) == ["pos机能连蓝牙音箱吗"]


def test_teaching_writes_learned_yml_builds_the_kb_and_leaves_the_queue(
    tmp_path: Path, engine: Engine, content_copy: Path
) -> None:
    console = Console(tmp_path, engine, content_copy, {k: CONVERSATIONS[k] for k in ("shop-1", "shop-2")})
    cookie, csrf = console.login("editor1")
    queue = console.request("GET", "/staff/api/learning", cookie=cookie).json
    [group] = queue["groups"]
    before = console.learned()
    digest = load_content(content_copy).digest
    response = console.request(
        "POST", TEACH, cookie=cookie, csrf=csrf, json={"texts": group["texts"], "answer": "apply_process"}
    )
    assert response.status == 200, response.text
    body = response.json
    title = next(t["question"] for t in load_content(content_copy).topics if t["id"] == "apply_process")
    assert sorted(body["added"]) == sorted(group["texts"]) and body["already"] == []
    assert body["retrieval_now"] is True and body["nlu_intent"] == "apply_pos"
    assert body["nlu_learns_at"] == "make train"
    assert body["message"].startswith(f"已学会：以后会回答「{title}」")
    after = console.learned()
    assert after.startswith(before)
    learned = load_content(content_copy).learned
    assert {(e["text"], e["answer"]) for e in learned[-2:]} == {(t, "apply_process") for t in group["texts"]}
    from kb.store import KnowledgeStore

    assert KnowledgeStore(engine).digest() == load_content(content_copy).digest != digest
    entry = console.staff.audit_entries()[0]
    assert (entry.staff, entry.action, entry.target) == ("editor1", "teach", "answer:apply_process")
    assert console.request("GET", "/staff/api/learning", cookie=cookie).json["groups"] == []
    again = console.request(
        "POST", TEACH, cookie=cookie, csrf=csrf, json={"texts": group["texts"][:1], "answer": "apply_process"}
    )
    assert again.status == 200 and again.json["added"] == [] and "已经学过" in again.json["message"]
    assert console.learned() == after


def test_teaching_an_answer_only_the_nlu_learns_says_so(console: Console) -> None:
    cookie, csrf = console.login("editor1")
    response = console.request(
        "POST", TEACH, cookie=cookie, csrf=csrf, json={"texts": ["pos机能连蓝牙音箱吗"], "answer": "decline"}
    )
    assert response.status == 200
    assert response.json["retrieval_now"] is False and response.json["nlu_intent"] == "out_of_scope"
    assert "make train" in response.json["message"] and "已记下" in response.json["message"]


def test_a_second_editor_waiting_too_long_gets_a_409(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.channels.learning as learning_module
    from kb.learned import Busy

    def busy(*_args: Any, **_kwargs: Any) -> Any:
        raise Busy()

    monkeypatch.setattr(learning_module, "teach", busy)
    cookie, csrf = console.login("editor1")
    response = console.request(
        "POST",
        TEACH,
        cookie=cookie,
        csrf=csrf,
        json={"texts": ["收款码贴纸掉了怎么补"], "answer": "apply_process"},
    )
    assert response.status == 409 and "另一位同事" in response.json["error"]


def test_a_database_failure_while_building_is_a_503_and_the_file_is_put_back(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    import kb.learned as learned_module

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(learned_module, "build", broken)
    cookie, csrf = console.login("editor1")
    before = console.learned()
    response = console.request(
        "POST",
        TEACH,
        cookie=cookie,
        csrf=csrf,
        json={"texts": ["收款码贴纸掉了怎么补"], "answer": "apply_process"},
    )
    assert response.status == 503 and "没有保存" in response.json["error"]
    assert console.learned() == before


def test_the_page_has_the_learning_view_for_editors(console: Console) -> None:
    page = console.request("GET", "/staff/").text
    for hook in ("learning-tab", "learning-group", "teach", "ignore", "answer-picker"):
        assert f'data-testid="{hook}"' in page
    script = console.request("GET", "/staff/staff.js").text
    # the tab is shown only to the roles the server serves the queue to
    assert 'learning: { roles: ["editor", "admin"]' in script


def test_the_suggestions_index_is_prepared_when_the_server_starts(
    engine: Engine, content_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fitted on the first look at the queue, the answer index made that staff member wait
    25 s after every start; with ``warm`` the console fits it as the server starts."""
    import kb.store
    from kb.retrieval import CachedIndex

    fresh = CachedIndex()
    monkeypatch.setattr(kb.store, "_ANSWER_INDEXES", fresh)
    learning = Learning(content_copy, engine=engine, warm=True)
    channel = StaffConsole(StaffStore(engine), RecordStore(engine), learning=learning)
    blueprint = channel.blueprint(lambda _: None)
    starts = [
        listener
        for listener in blueprint._future_listeners
        if listener.event == "after_server_start" and listener.listener.__name__ == "prepare_suggestions"
    ]
    assert len(starts) == 1
    assert fresh._index is None
    learning.warm_answers().join(timeout=300)
    assert fresh._index is not None and fresh._index.digest == KnowledgeStore(engine).digest()
    assert {"walk:printer", "paper_side"} <= {doc.id for doc in fresh._index.topics}
