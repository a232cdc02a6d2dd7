"""The staff console's server side: sessions, CSRF, roles, throttling, audit — refusals first."""

from __future__ import annotations

import asyncio
import io
import uuid
from http.cookies import SimpleCookie
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, Event, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Sanic
from sqlalchemy import create_engine

from bot.channels import delivery
from bot.channels import staff as staff_module
from bot.channels.delivery import DELIVERED, NOT_ACCEPTED, WECHAT_WINDOW_CLOSED, Delivery
from bot.channels.rest import RestInput
from bot.channels.staff import COOKIE, StaffConsole, push_in_rasa
from bot.channels.wechat import WeChatInput
from records.store import RecordStore
from staff import cli
from staff.accounts import MAX_ADDRESS_FAILURES, MAX_FAILURES, StaffStore
from staff.handoff import ReleaseError
from tests.channels.wechat.kit import FakeMessageApi, FakeWeChatClient, make_settings

PASSWORD = "correct horse battery"
HOST = "127.0.0.1:5005"


class Console:
    """A Sanic app with only the console mounted, on a temporary database."""

    def __init__(self, tmp_path: Path) -> None:
        engine = create_engine(f"sqlite:///{tmp_path / 'staff.sqlite3'}")
        self.staff = StaffStore(engine)
        self.records = RecordStore(engine)
        self.released: list[int] = []
        self.fail_release = False

        async def releaser(records: RecordStore, handoff_id: int, request: Any) -> Any:
            if self.fail_release:
                raise ReleaseError("Rasa is not reachable")
            self.released.append(handoff_id)
            records.mark_released(handoff_id)
            return type("Result", (), {"merchant_notified": True})()

        self.pushed: list[tuple[str, dict]] = []
        self.fail_push = False
        self.delivery = DELIVERED

        async def pusher(request: Any, conversation_id: str, posbot: dict) -> Delivery:
            if self.fail_push:
                return Delivery(False, False, NOT_ACCEPTED)
            self.pushed.append((conversation_id, posbot))
            return self.delivery

        channel = StaffConsole(self.staff, self.records, releaser, pusher=pusher)
        self.app = Sanic(f"staff_test_{uuid.uuid4().hex[:12]}")
        self.app.blueprint(channel.blueprint(lambda _: None), url_prefix="/staff")

    def request(
        self, method: str, path: str, *, cookie: str = "", csrf: str = "", origin: str = "", json: Any = None
    ) -> Any:
        headers = {"Host": HOST}
        if cookie:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        if csrf:
            headers["X-CSRF-Token"] = csrf
        if origin:
            headers["Origin"] = origin
        call = getattr(self.app.test_client, method.lower())
        kwargs = {"headers": headers}
        if json is not None:
            kwargs["json"] = json
        _, response = call(path, **kwargs)
        return response

    def login(self, name: str, password: str = PASSWORD) -> tuple[str, str]:
        response = self.request("POST", "/staff/api/login", json={"name": name, "password": password})
        assert response.status == 200, response.text
        cookie = SimpleCookie(response.headers["set-cookie"])[COOKIE].value
        return cookie, response.json["csrf"]


@pytest.fixture()
def console(tmp_path: Path) -> Console:
    c = Console(tmp_path)
    c.staff.add_user("agent1", "agent", PASSWORD)
    c.staff.add_user("boss", "admin", PASSWORD)
    return c


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/staff/api/me"),
        ("GET", "/staff/api/handoffs"),
        ("GET", "/staff/api/audit"),
        ("POST", "/staff/api/logout"),
        ("POST", "/staff/api/handoffs/1/release"),
    ],
)
def test_every_api_route_refuses_without_a_session(console: Console, method: str, path: str):
    assert console.request(method, path).status == 401
    assert console.request(method, path, cookie="forged-token", csrf="x").status == 401


def test_a_wrong_password_and_an_unknown_name_get_the_same_refusal(console: Console) -> None:
    wrong = console.request("POST", "/staff/api/login", json={"name": "agent1", "password": "nope"})
    unknown = console.request("POST", "/staff/api/login", json={"name": "who", "password": "nope"})
    assert (
        (wrong.status, wrong.json) == (unknown.status, unknown.json) == (401, {"error": "用户名或密码不对"})
    )
    assert "set-cookie" not in wrong.headers
    assert [e.action for e in console.staff.audit_entries()] == ["login_failed", "login_failed"]


@pytest.mark.parametrize(
    "body", [None, {}, {"name": "agent1"}, {"name": 5, "password": "x"}, ["agent1", PASSWORD]]
)
def test_a_malformed_login_is_a_400(console: Console, body: Any) -> None:
    assert console.request("POST", "/staff/api/login", json=body).status == 400


def test_login_sets_a_strict_httponly_cookie_and_gives_the_csrf_token(console: Console) -> None:
    response = console.request("POST", "/staff/api/login", json={"name": "agent1", "password": PASSWORD})
    assert response.status == 200
    assert response.json["name"] == "agent1" and response.json["role"] == "agent"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/staff" in cookie
    token = SimpleCookie(response.headers["set-cookie"])[COOKIE].value
    me = console.request("GET", "/staff/api/me", cookie=token)
    assert me.status == 200 and me.json["csrf"] == response.json["csrf"]
    assert me.headers["cache-control"] == "no-store"


def test_a_login_from_another_site_is_refused(console: Console) -> None:
    response = console.request(
        "POST",
        "/staff/api/login",
        origin="https://evil.example",
        json={"name": "agent1", "password": PASSWORD},
    )
    assert response.status == 403


def test_logins_are_throttled_even_with_the_right_password(console: Console) -> None:
    for _ in range(MAX_FAILURES):
        console.request("POST", "/staff/api/login", json={"name": "agent1", "password": "nope"})
    response = console.request("POST", "/staff/api/login", json={"name": "agent1", "password": PASSWORD})
    assert response.status == 429
    assert "15 分钟" in response.json["error"]


def test_one_colleagues_typos_do_not_lock_out_the_office(console: Console) -> None:
    """Same address (one office behind a router): agent1 is locked after its own failures,
    boss still logs in; only many failures across names lock the address itself."""
    console.staff.add_user("agent2", "agent", PASSWORD)
    for _ in range(MAX_FAILURES):
        console.request("POST", "/staff/api/login", json={"name": "agent1", "password": "nope"})
    locked = console.request("POST", "/staff/api/login", json={"name": "agent1", "password": PASSWORD})
    assert locked.status == 429
    colleague = console.request("POST", "/staff/api/login", json={"name": "boss", "password": PASSWORD})
    assert colleague.status == 200 and colleague.json["name"] == "boss"
    for n in range(MAX_ADDRESS_FAILURES - MAX_FAILURES):
        console.request("POST", "/staff/api/login", json={"name": f"guess{n}", "password": "nope"})
    sprayed = console.request("POST", "/staff/api/login", json={"name": "agent2", "password": PASSWORD})
    assert sprayed.status == 429


def test_waiting_handoffs_are_listed_with_what_the_merchant_asked(console: Console) -> None:
    console.records.add_handoff("shop-7", brand="拉卡拉", symptom=None, question="打印机不出纸 / 转人工")
    cookie, _ = console.login("agent1")
    response = console.request("GET", "/staff/api/handoffs", cookie=cookie)
    assert response.status == 200
    [item] = response.json["handoffs"]
    assert (item["conversation_id"], item["brand"], item["status"]) == ("shop-7", "拉卡拉", "waiting")
    assert item["question"] == "打印机不出纸 / 转人工"


def test_release_needs_the_csrf_token_and_a_same_site_origin(console: Console) -> None:
    handoff = console.records.add_handoff("shop-8", brand=None, symptom=None, question="人呢")
    cookie, csrf = console.login("agent1")
    path = f"/staff/api/handoffs/{handoff.id}/release"
    missing = console.request("POST", path, cookie=cookie)
    assert missing.status == 403 and "CSRF" in missing.json["error"]
    assert console.request("POST", path, cookie=cookie, csrf="wrong").status == 403
    foreign = console.request("POST", path, cookie=cookie, csrf=csrf, origin="https://evil.example")
    assert foreign.status == 403 and "其他网站" in foreign.json["error"]  # not a CSRF-token story
    assert console.released == [] and console.records.handoff(handoff.id).status == "waiting"

    response = console.request("POST", path, cookie=cookie, csrf=csrf, origin=f"http://{HOST}")
    assert response.status == 200 and response.json["released"] is True
    assert console.released == [handoff.id]
    assert console.records.handoff(handoff.id).status == "released"
    assert console.staff.audit_entries()[0].action == "release"


def test_release_of_an_unknown_handoff_is_a_404(console: Console) -> None:
    cookie, csrf = console.login("agent1")
    assert console.request("POST", "/staff/api/handoffs/999/release", cookie=cookie, csrf=csrf).status == 404


def test_a_failed_release_changes_nothing_and_says_so(console: Console) -> None:
    handoff = console.records.add_handoff("shop-9", brand=None, symptom=None, question="人呢")
    cookie, csrf = console.login("agent1")
    console.fail_release = True
    response = console.request("POST", f"/staff/api/handoffs/{handoff.id}/release", cookie=cookie, csrf=csrf)
    assert response.status == 502
    assert console.records.handoff(handoff.id).status == "waiting"


def test_the_audit_log_is_for_admins_only(console: Console) -> None:
    agent_cookie, _ = console.login("agent1")
    assert console.request("GET", "/staff/api/audit", cookie=agent_cookie).status == 403
    admin_cookie, _ = console.login("boss")
    response = console.request("GET", "/staff/api/audit", cookie=admin_cookie)
    assert response.status == 200
    assert [e["action"] for e in response.json["entries"]][:2] == ["login", "login"]


def test_logout_ends_the_session(console: Console) -> None:
    cookie, csrf = console.login("agent1")
    assert console.request("POST", "/staff/api/logout", cookie=cookie).status == 403  # no CSRF
    assert console.request("POST", "/staff/api/logout", cookie=cookie, csrf=csrf).status == 200
    assert console.request("GET", "/staff/api/me", cookie=cookie).status == 401


def test_a_disabled_account_loses_its_session_and_cannot_log_in(console: Console) -> None:
    cookie, _ = console.login("agent1")
    console.staff.set_disabled("agent1", True)
    assert console.request("GET", "/staff/api/me", cookie=cookie).status == 401
    assert (
        console.request("POST", "/staff/api/login", json={"name": "agent1", "password": PASSWORD}).status
        == 401
    )


def test_the_page_is_served_with_a_strict_content_security_policy(console: Console) -> None:
    response = console.request("GET", "/staff/")
    assert response.status == 200
    assert 'data-testid="login-username"' in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert console.request("GET", "/staff/../../etc/passwd").status == 404


def test_the_page_scripts_are_served_and_nothing_else_is(console: Console) -> None:
    script = console.request("GET", "/staff/staff.js")
    assert script.status == 200 and "javascript" in script.headers["content-type"]
    assert "posbotStaff" in script.text
    assert "text/css" in console.request("GET", "/staff/staff.css").headers["content-type"]
    for name in ("nope.js", "index.html", "Staff.js", ".staff.js", "staff.js.map", "x.py"):
        assert console.request("GET", f"/staff/{name}").status == 404, name


def test_staff_accounts_are_made_from_the_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["staff", "add", "carol", "--role", "editor", "--password-stdin", "--database", url]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["staff", "add", "dave", "--role", "agent", "--password-stdin", "--database", url]) == 1
    assert "at least 10 characters" in capsys.readouterr().err
    store = StaffStore(create_engine(url))
    assert [(u.name, u.role) for u in store.users()] == [("carol", "editor")]
    assert store.authenticate("carol", PASSWORD, "127.0.0.1") is not None
    assert PASSWORD not in open(tmp_path / "cli.sqlite3", "rb").read().decode("latin-1")


def test_merchants_see_an_agents_display_name_never_the_login(
    console: Console, tmp_path: Path, capsys
) -> None:
    console.staff.add_user("wang.f", "agent", PASSWORD, display_name=" 小王 ")
    handoff = console.records.add_handoff("shop-12", brand=None, symptom=None, question="人呢")
    cookie, csrf = console.login("wang.f")
    path = f"/staff/api/handoffs/{handoff.id}"
    assert console.request("POST", f"{path}/claim", cookie=cookie, csrf=csrf).status == 200
    reply = {"text": "您好，请把屏幕拍给我看看"}
    assert console.request("POST", f"{path}/reply", cookie=cookie, csrf=csrf, json=reply).status == 200
    (_, joined), (_, replied) = console.pushed
    assert joined["agent_message"]["name"] == "小王"
    assert replied["agent_message"] == {"name": "小王", "text": "您好，请把屏幕拍给我看看"}
    assert not any("wang.f" in str(said) for _, said in console.pushed)
    assert console.records.handoff(handoff.id).agent == "wang.f"  # staff still see who took it

    url = f"sqlite:///{tmp_path / 'names.sqlite3'}"
    StaffStore(create_engine(url)).add_user("li", "agent", PASSWORD)
    assert cli.main(["staff", "display", "li", "李姐", "--database", url]) == 0
    assert cli.main(["staff", "display", "li", "名" * 21, "--database", url]) == 1
    assert "at most 20 characters" in capsys.readouterr().err
    assert cli.main(["staff", "display", "nobody", "小张", "--database", url]) == 1
    assert [u.shown_name for u in StaffStore(create_engine(url)).users()] == ["李姐"]
    assert cli.main(["staff", "display", "li", "", "--database", url]) == 0
    assert [u.shown_name for u in StaffStore(create_engine(url)).users()] == ["li"]


def test_an_accounts_table_from_before_display_names_gets_the_column(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old-staff.sqlite3'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE staff_users (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(60) NOT NULL "
            "UNIQUE, role VARCHAR(20) NOT NULL, password_hash TEXT NOT NULL, disabled BOOLEAN NOT NULL, "
            "created_at DATETIME NOT NULL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO staff_users (name, role, password_hash, disabled, created_at) "
            "VALUES ('old', 'agent', 'x', 0, '2026-11-01 10:00:00')"
        )
    store = StaffStore(engine)
    assert [(u.name, u.shown_name) for u in store.users()] == [("old", "old")]
    assert store.set_display_name("old", "老王").shown_name == "老王"
    assert StaffStore(engine).users()[0].display_name == "老王"  # a second start changes nothing


def test_one_agent_claims_a_handoff_and_the_merchant_is_told_who_joined(console: Console) -> None:
    console.staff.add_user("agent2", "agent", PASSWORD)
    handoff = console.records.add_handoff("shop-10", brand=None, symptom=None, question="人呢")
    first, first_csrf = console.login("agent1")
    second, second_csrf = console.login("agent2")
    path = f"/staff/api/handoffs/{handoff.id}/claim"
    assert console.request("POST", path, cookie=first).status == 403  # no CSRF
    assert console.request("POST", path, cookie=first, csrf=first_csrf).status == 200
    taken = console.request("POST", path, cookie=second, csrf=second_csrf)
    assert taken.status == 409 and "agent1" in taken.json["error"]
    assert console.records.handoff(handoff.id).agent == "agent1"
    [(conversation, said)] = console.pushed
    assert conversation == "shop-10" and said["agent_message"]["name"] == "agent1"
    listed = console.request("GET", "/staff/api/handoffs", cookie=second).json["handoffs"]
    assert [(h["status"], h["agent"], h["mine"]) for h in listed] == [("active", "agent1", False)]


def test_only_the_agent_who_claimed_it_replies_and_the_reply_reaches_the_chat(console: Console) -> None:
    console.staff.add_user("agent2", "agent", PASSWORD)
    handoff = console.records.add_handoff("shop-11", brand=None, symptom=None, question="人呢")
    first, first_csrf = console.login("agent1")
    second, second_csrf = console.login("agent2")
    path = f"/staff/api/handoffs/{handoff.id}/reply"
    text = {"text": "您好，请把屏幕上的提示拍给我看看"}
    assert console.request("POST", path, cookie=first, csrf=first_csrf, json=text).status == 409
    console.request("POST", f"/staff/api/handoffs/{handoff.id}/claim", cookie=first, csrf=first_csrf)
    assert console.request("POST", path, cookie=second, csrf=second_csrf, json=text).status == 409
    assert console.request("POST", path, cookie=first, json=text).status == 403
    for bad in ({"text": " "}, {"text": "字" * 1001}, {"text": 5}, {}):
        assert console.request("POST", path, cookie=first, csrf=first_csrf, json=bad).status == 400
    ok = console.request("POST", path, cookie=first, csrf=first_csrf, json=text)
    assert ok.status == 200 and ok.json == {"id": handoff.id, "delivered": True, "reason": None}
    assert console.pushed[-1] == (
        "shop-11",
        {"agent_message": {"name": "agent1", "text": "您好，请把屏幕上的提示拍给我看看"}},
    )
    console.fail_push = True
    assert console.request("POST", path, cookie=first, csrf=first_csrf, json=text).status == 502


def test_an_older_records_database_gets_the_new_handoff_columns(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE handoffs (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id "
            "VARCHAR(255) NOT NULL, brand VARCHAR(40), symptom VARCHAR(60), question TEXT NOT "
            "NULL, status VARCHAR(20) NOT NULL, created_at DATETIME NOT NULL, released_at DATETIME)"
        )
        conn.exec_driver_sql(
            "INSERT INTO handoffs (conversation_id, question, status, created_at) "
            "VALUES ('old-1', '转人工', 'waiting', '2026-11-01 10:00:00')"
        )
    records = RecordStore(engine)
    claimed = records.claim(1, "agent1")
    assert claimed is not None and claimed.agent == "agent1" and claimed.status == "active"


def test_a_reply_that_could_not_be_pushed_now_says_why_and_is_not_an_error(console: Console) -> None:
    handoff = console.records.add_handoff("oWeChatMerchant", brand=None, symptom=None, question="人呢")
    cookie, csrf = console.login("agent1")
    console.delivery = Delivery(True, False, WECHAT_WINDOW_CLOSED)
    claimed = console.request("POST", f"/staff/api/handoffs/{handoff.id}/claim", cookie=cookie, csrf=csrf)
    assert claimed.status == 200
    assert (claimed.json["delivered"], claimed.json["reason"]) == (False, WECHAT_WINDOW_CLOSED)
    assert claimed.json["text"] == console.pushed[-1][1]["agent_message"]["text"]
    answer = console.request(
        "POST",
        f"/staff/api/handoffs/{handoff.id}/reply",
        cookie=cookie,
        csrf=csrf,
        json={"text": "请把屏幕拍给我看看"},
    )
    assert answer.status == 200
    assert answer.json == {"id": handoff.id, "delivered": False, "reason": WECHAT_WINDOW_CLOSED}
    assert [e.action for e in console.staff.audit_entries()][:2] == ["reply", "claim"]


# ------------------------------------------------------------------ push_in_rasa, for real
# The console's pusher against a stand-in for Rasa's API that does what Rasa 3.6 does for
# POST /conversations/{id}/tracker/events?execute_side_effects=true&output_channel=latest:
# hand the bot event to the latest input channel's get_output_channel().send_response(), then
# answer with the tracker state (which names the latest input channel).

TOKEN = "unit-test-rasa-token-0123456789abcdef"


class FakeRasa:
    def __init__(self, channels: list[Any], latest: str, status: int = 200) -> None:
        self.channels, self.latest, self.status = channels, latest, status
        self.calls: list[tuple[str, dict, dict]] = []

    def post(self, url: str, json: dict, params: dict, timeout: float) -> Any:
        self.calls.append((url, json, params))
        if self.status == 200:
            event = Event.from_parameters(json)
            channel = delivery.input_channel(self.request().app, self.latest)
            output = channel.get_output_channel() if channel else None
            if output is not None:  # Rasa runs this on its own loop; here: in the pusher's thread
                asyncio.run(output.send_response(url.split("/")[-3], event.message()))
        return SimpleNamespace(
            ok=self.status == 200,
            status_code=self.status,
            text="",
            json=lambda: {"latest_input_channel": self.latest, "events": None},
        )

    def request(self) -> Any:
        # behind a balancer the Host header names its port (443); the server listens on 5005
        return SimpleNamespace(
            server_port=443,
            conn_info=SimpleNamespace(server_port=5005),
            app=SimpleNamespace(ctx=SimpleNamespace(input_channels=self.channels)),
        )


async def _push(
    monkeypatch: pytest.MonkeyPatch, rasa: FakeRasa, conversation: str, text: str = "请把屏幕拍给我看看"
) -> Delivery:
    monkeypatch.setenv("POSBOT_RASA_TOKEN", TOKEN)
    monkeypatch.setattr(staff_module.requests, "post", rasa.post)
    return await push_in_rasa(
        rasa.request(), conversation, {"agent_message": {"name": "agent1", "text": text}}
    )


@pytest.mark.asyncio
async def test_a_wechat_merchant_gets_the_reply_as_a_customer_service_message(monkeypatch) -> None:
    client = FakeWeChatClient()
    wechat = WeChatInput(make_settings(), wechat_client=client)
    rasa = FakeRasa([RestInput(), wechat], "wechat")
    result = await _push(monkeypatch, rasa, "oWeChatMerchant")
    assert result == delivery.DELIVERED
    assert client.message.sent == [("oWeChatMerchant", "【人工客服 agent1】\n请把屏幕拍给我看看")]
    [(url, body, params)] = rasa.calls
    assert url == "http://127.0.0.1:5005/conversations/oWeChatMerchant/tracker/events"
    assert params["execute_side_effects"] == "true" and params["output_channel"] == "latest"
    assert params["token"] == TOKEN and params["include_events"] == "NONE"
    assert body["data"]["custom"]["posbot"]["agent_message"]["text"] == "请把屏幕拍给我看看"
    assert body["metadata"][delivery.RECEIPT_KEY]


@pytest.mark.asyncio
async def test_a_closed_wechat_window_is_reported_and_the_reply_kept(monkeypatch) -> None:
    client = FakeWeChatClient(FakeMessageApi(refuse_with=45015))
    wechat = WeChatInput(make_settings(), wechat_client=client)
    result = await _push(monkeypatch, FakeRasa([wechat], "wechat"), "oWeChatMerchant")
    assert result == Delivery(True, False, WECHAT_WINDOW_CLOSED)
    assert await wechat.undelivered("oWeChatMerchant") == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        ("rest", Delivery(True, False, delivery.REST_POLL)),
        ("web", delivery.DELIVERED),
        ("cmdline", Delivery(True, False, delivery.NOT_PUSHABLE)),
        (None, Delivery(True, False, delivery.NOT_PUSHABLE)),
    ],
)
async def test_every_channel_reports_where_the_reply_went(
    monkeypatch, latest: Any, expected: Delivery
) -> None:
    class Widget:  # pushes over socket.io, with no failure signal
        @classmethod
        def name(cls) -> str:
            return "web"

        def get_output_channel(self) -> Any:
            return SimpleNamespace(send_response=lambda *_: asyncio.sleep(0))

    rasa = FakeRasa([RestInput(), Widget()], latest)
    assert await _push(monkeypatch, rasa, "shop-1") == expected


@pytest.mark.asyncio
async def test_a_wechat_channel_without_a_receipt_is_unknown_not_delivered(monkeypatch) -> None:
    class Silent(WeChatInput):
        def get_output_channel(self) -> Any:
            return None  # e.g. another worker handled the API call

    rasa = FakeRasa([Silent(make_settings())], "wechat")
    assert await _push(monkeypatch, rasa, "oX") == Delivery(True, False, delivery.UNKNOWN)


@pytest.mark.asyncio
@pytest.mark.parametrize("failure", ["refused", "unreachable"])
async def test_rasa_not_taking_the_message_is_not_accepted(monkeypatch, failure: str) -> None:
    rasa = FakeRasa([RestInput()], "rest", status=500)
    if failure == "unreachable":

        def unreachable(*_: Any, **__: Any) -> Any:
            raise requests.ConnectionError("connection refused")

        rasa.post = unreachable  # type: ignore[method-assign]
    assert await _push(monkeypatch, rasa, "shop-1") == Delivery(False, False, NOT_ACCEPTED)


def test_the_inbox_shows_the_channel_and_what_waits_for_the_merchant(console: Console) -> None:
    wechat = WeChatInput(make_settings(), wechat_client=None)
    trackers = InMemoryTrackerStore(Domain.empty())
    tracker = DialogueStateTracker("oWeChatMerchant", [])
    tracker.update(UserUttered("转人工", input_channel="wechat"))
    asyncio.run(trackers.save(tracker))
    asyncio.run(wechat.store.append_list("pending:oWeChatMerchant", ['{"text": "稍等"}'], 60))
    console.app.ctx.agent = SimpleNamespace(tracker_store=trackers)
    console.app.ctx.input_channels = [wechat]
    console.records.add_handoff("oWeChatMerchant", brand=None, symptom=None, question="转人工")
    console.records.add_handoff("shop-unknown", brand=None, symptom=None, question="人呢")
    cookie, _ = console.login("agent1")
    listed = console.request("GET", "/staff/api/handoffs", cookie=cookie).json["handoffs"]
    assert [(h["channel"], h["undelivered"]) for h in listed] == [("wechat", 1), (None, 0)]
    assert listed[0]["transcript"] == [{"from": "merchant", "text": "转人工"}]


def test_the_transcript_shows_the_buttons_offered_and_the_one_pressed(console: Console) -> None:
    trackers = InMemoryTrackerStore(Domain.empty())
    tracker = DialogueStateTracker("shop-buttons", [])
    tracker.update(UserUttered("账单在哪查", input_channel="rest"))
    buttons = [{"title": "有帮助", "payload": "/affirm"}, {"title": "没帮助", "payload": "/deny"}]
    tracker.update(BotUttered("这个回答对您有帮助吗？", data={"buttons": buttons}))
    tracker.update(UserUttered("/deny", input_channel="rest"))
    tracker.update(UserUttered("/restart", input_channel="rest"))  # no button offered it
    asyncio.run(trackers.save(tracker))
    console.app.ctx.agent = SimpleNamespace(tracker_store=trackers)
    console.records.add_handoff("shop-buttons", brand=None, symptom=None, question="没帮助")
    cookie, _ = console.login("agent1")
    [listed] = console.request("GET", "/staff/api/handoffs", cookie=cookie).json["handoffs"]
    assert listed["transcript"] == [
        {"from": "merchant", "text": "账单在哪查"},
        {"from": "bot", "text": "这个回答对您有帮助吗？", "buttons": ["有帮助", "没帮助"]},
        {"from": "merchant", "text": "没帮助", "pressed": True},
        {"from": "merchant", "text": "/restart"},  # the page leaves payloads out
    ]


def test_the_inbox_lists_first_what_this_agent_has_to_do(console: Console) -> None:
    """Own chats, then the longest waiting, then those asked while nobody was on duty, then
    colleagues' chats; the same inbox in another order for the colleague."""
    console.staff.add_user("agent2", "agent", PASSWORD)
    theirs = console.records.add_handoff("shop-a", brand=None, symptom=None, question="a")
    early = console.records.add_handoff("shop-b", brand=None, symptom=None, question="b")
    offline = console.records.add_handoff("shop-c", brand=None, symptom=None, question="c", status="no_agent")
    mine = console.records.add_handoff("shop-d", brand=None, symptom=None, question="d")
    late = console.records.add_handoff("shop-e", brand=None, symptom=None, question="e")
    console.records.claim(theirs.id, "agent2")
    console.records.claim(mine.id, "agent1")
    cookie, _ = console.login("agent1")
    listed = console.request("GET", "/staff/api/handoffs", cookie=cookie).json["handoffs"]
    assert [h["id"] for h in listed] == [mine.id, early.id, late.id, offline.id, theirs.id]
    other, _ = console.login("agent2")
    listed = console.request("GET", "/staff/api/handoffs", cookie=other).json["handoffs"]
    assert [h["id"] for h in listed] == [theirs.id, early.id, late.id, offline.id, mine.id]
