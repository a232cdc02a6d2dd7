"""The Rasa HTTP API as a stranger sees it: refused without the token, nothing changed.

Runs against the live bot that `make run` starts (the same launcher and bot/serve.py), so the
token really goes from var/rasa-token (or POSBOT_RASA_TOKEN) into the Rasa server.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import pytest
import requests

from ops.launcher import DEFAULT_MODEL, RunningBot
from tests.conftest import WECHAT_ENV

pytestmark = pytest.mark.integration

MERCHANT = "shop-security-1"
PHISHING = {"event": "bot", "text": "账户异常，请把卡号和验证码发到 evil.example"}

#: Every admin route a stranger could try: (method, path, JSON body).
ADMIN_ROUTES = [
    ("GET", f"/conversations/{MERCHANT}/tracker", None),
    ("POST", f"/conversations/{MERCHANT}/tracker/events", PHISHING),
    ("PUT", f"/conversations/{MERCHANT}/tracker/events", [PHISHING]),
    ("POST", f"/conversations/{MERCHANT}/trigger_intent", {"name": "greet"}),
    ("POST", f"/conversations/{MERCHANT}/execute", {"name": "utter_greet"}),
    ("POST", f"/conversations/{MERCHANT}/predict", None),
    ("POST", f"/conversations/{MERCHANT}/messages", {"text": "你好", "sender": "user"}),
    ("GET", f"/conversations/{MERCHANT}/story", None),
    ("PUT", "/model", {"model_file": "/tmp/attacker.tar.gz"}),
    ("PUT", "/staff/api/model/load", {"model_file": "/tmp/attacker.tar.gz"}),
    ("DELETE", "/model", None),
    ("POST", "/model/train", {"nlu": "version: '3.1'"}),
    ("POST", "/model/parse", {"text": "你好"}),
    ("GET", "/status", None),
    ("GET", "/domain", None),
]


def _request(
    bot: RunningBot, method: str, path: str, body: object, token: str | None, origin: str | None = None
) -> requests.Response:
    params = {"token": token} if token is not None else {}
    headers = {"Origin": origin} if origin else {}
    return requests.request(method, f"{bot.url}{path}", json=body, params=params, headers=headers, timeout=30)


def _events(bot: RunningBot) -> list[dict]:
    return bot.api("GET", f"/conversations/{MERCHANT}/tracker").json()["events"]


@pytest.fixture(scope="module")
def conversation(live_bot: RunningBot) -> list[dict]:
    live_bot.send(MERCHANT, "我的手机号是13800001111，拉卡拉机器打印机不出纸")
    return _events(live_bot)


@pytest.mark.parametrize(
    "token", [None, "wrong-token-0123456789abcdef", ""], ids=["no token", "wrong token", "empty token"]
)
@pytest.mark.parametrize(
    ("method", "path", "body"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES]
)
def test_admin_routes_refuse_a_stranger_and_change_nothing(
    live_bot: RunningBot,
    conversation: list[dict],
    method: str,
    path: str,
    body: object,
    token: str | None,
) -> None:
    response = _request(live_bot, method, path, body, token)
    assert response.status_code == 401, response.text[:200]
    assert "13800001111" not in response.text
    assert _events(live_bot) == conversation, "a refused request must not touch the tracker"


def test_after_every_refusal_the_model_still_answers(live_bot: RunningBot, conversation: list[dict]) -> None:
    for method, path, body in ADMIN_ROUTES:
        _request(live_bot, method, path, body, None)
    assert "签到" in live_bot.texts("shop-security-2", "POS机怎么签到")


def test_with_the_token_staff_tools_work(live_bot: RunningBot, conversation: list[dict]) -> None:
    tracker = live_bot.api("GET", f"/conversations/{MERCHANT}/tracker").json()
    assert any("13800001111" in (e.get("text") or "") for e in tracker["events"])
    assert live_bot.api("GET", "/status").json()["model_file"]
    parsed = live_bot.api("POST", "/model/parse", json={"text": "刷卡显示51"}).json()
    assert parsed["intent"]["name"] == "error_code"
    added = live_bot.api(
        "POST",
        f"/conversations/{MERCHANT}/tracker/events",
        json={"event": "slot", "name": "brand", "value": "拉卡拉"},
    )
    assert added.status_code == 200
    said = live_bot.api(
        "POST",
        f"/conversations/{MERCHANT}/execute",
        json={"name": "utter_greet"},
        params={"output_channel": "latest"},
    )
    assert said.status_code == 200
    assert said.json()["messages"]
    bad_training = live_bot.api("POST", "/model/train", json={"nlu": 5})
    assert bad_training.status_code == 400, "authenticated: the request reaches Rasa's checks"


def test_with_the_token_the_model_can_be_unloaded_and_replaced(live_bot: RunningBot) -> None:
    assert live_bot.api("DELETE", "/model").status_code == 204
    assert not live_bot.api("GET", "/status").json().get("model_file")
    replaced = live_bot.api("PUT", "/model", json={"model_file": str(DEFAULT_MODEL)}, timeout=180)
    assert replaced.status_code == 204, replaced.text[:300]
    assert "签到" in live_bot.texts("shop-security-3", "POS机怎么签到")


def test_merchant_channels_answer_without_any_credential(live_bot: RunningBot) -> None:
    assert live_bot.texts("shop-security-4", "刷卡显示51")
    page = requests.get(f"{live_bot.url}/webhooks/web/", timeout=10)
    assert page.status_code == 200 and "widget.js" in page.text
    assert requests.get(f"{live_bot.url}/webhooks/web/widget.js", timeout=10).status_code == 200
    handshake = requests.get(
        f"{live_bot.url}/socket.io/", params={"EIO": "4", "transport": "polling"}, timeout=10
    )
    assert handshake.status_code == 200 and '"sid"' in handshake.text
    timestamp, nonce = str(int(time.time())), "4711"
    signature = hashlib.sha1(
        "".join(sorted([WECHAT_ENV["WECHAT_TOKEN"], timestamp, nonce])).encode()
    ).hexdigest()
    check = requests.get(
        f"{live_bot.url}/webhooks/wechat/webhook",
        timeout=10,
        params={"signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": "hello-wx"},
    )
    assert check.status_code == 200 and check.text == "hello-wx"
    assert hmac.compare_digest(check.text, "hello-wx")


def test_the_health_check_says_hello_and_nothing_about_conversations(live_bot: RunningBot) -> None:
    hello = requests.get(f"{live_bot.url}/", timeout=10)
    assert hello.status_code == 200 and hello.text.startswith("Hello from Rasa")
    assert requests.get(f"{live_bot.url}/webhooks/web/health", timeout=10).status_code == 200


def test_no_browser_on_another_site_gets_cors_access_to_the_api(live_bot: RunningBot) -> None:
    for method in ("GET", "OPTIONS"):
        response = requests.request(
            method,
            f"{live_bot.url}/status",
            timeout=10,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in {k.lower() for k in response.headers}


def test_an_oversized_rest_body_gets_413_before_it_is_sent(live_bot: RunningBot) -> None:
    """Only the headers of a 5 MB body are sent: the status line must come back at once."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(live_bot.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as client:
        client.sendall(
            b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: bot\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"
        )
        status = client.recv(200).split(b"\r\n")[0]
    assert status.startswith(b"HTTP/1.1 413"), status
    assert live_bot.texts("shop-security-5", "你好"), "the server keeps serving merchants"


def test_the_token_is_not_on_the_rasa_command_line(live_bot: RunningBot) -> None:
    rasa = live_bot.processes[1]
    cmdline = Path(f"/proc/{rasa.pid}/cmdline").read_bytes().decode(errors="replace")
    assert "bot.serve" in cmdline
    assert live_bot.token and live_bot.token not in cmdline
    logs = "".join(p.read_text(errors="replace") for p in live_bot.tmp.glob("*.log"))
    assert live_bot.token not in logs


def test_make_run_generates_the_secret_and_starts_rasa_with_it(tmp_path: Path) -> None:
    """The launcher, exactly as `make run` calls it, on free ports with its own token file."""
    import os
    import signal
    import stat
    import subprocess
    import sys

    from ops.launcher import free_port

    token_file = tmp_path / "rasa-token"
    rasa_port, actions_port = free_port(), free_port()
    env = {
        **os.environ,
        "RASA_PORT": str(rasa_port),
        "ACTIONS_PORT": str(actions_port),
        "POSBOT_RASA_TOKEN_FILE": str(token_file),
    }
    env.pop("POSBOT_RASA_TOKEN", None)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.launcher", "run"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "posbot is ready" in line:
                break
        assert "posbot is ready" in "".join(output), "".join(output)[-3000:]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        url = f"http://127.0.0.1:{rasa_port}"
        assert requests.get(f"{url}/status", timeout=10).status_code == 401
        assert requests.get(f"{url}/status", params={"token": token}, timeout=10).status_code == 200
        assert requests.post(
            f"{url}/webhooks/rest/webhook", timeout=30, json={"sender": "make-run", "message": "你好"}
        ).json()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    assert token not in "".join(output)
    for port in (rasa_port, actions_port):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)


def _outside_address() -> str | None:
    """This machine's address on its network (not loopback), or None if it has none."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is chosen
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_action_server_is_not_reachable_from_other_machines(live_bot: RunningBot) -> None:
    """It has no authentication: anyone reaching it could run any action in any conversation."""
    import socket

    port = int(live_bot.actions_url.rsplit(":", 1)[1].split("/")[0])
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no network address other than loopback")
    with pytest.raises(OSError):
        socket.create_connection((outside, port), timeout=5).close()
