"""The balancer of ``make cluster`` (ops/cluster.py, deploy/nginx.conf.template) with stand-in
servers: which requests nginx retries on the other Rasa server, and which it must not.

A merchant's message is a POST: retried only when it never reached a server (connection
refused: the instance is dead), never when a server took it and then failed (it may have been
handled: retrying would answer it twice). GETs are retried on any failure. Needs Debian's nginx
(``make install-cluster``); no trained model.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import requests

from ops import cluster
from ops.cluster import NGINX, cluster_env, instance_names, render_nginx_conf, start_nginx
from ops.launcher import free_port

pytestmark = pytest.mark.integration


class Stub(ThreadingHTTPServer):
    """A stand-in Rasa server that records every request body; ``drop`` closes the connection
    after reading the request, without an answer (a server killed while working on it)."""

    daemon_threads = True

    def __init__(self, name: str, drop: bool = False) -> None:
        self.name, self.drop = name, drop
        self.seen: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        server: Stub = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else self.path
        server.seen.append((self.command, body))
        if server.drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        payload = json.dumps(
            {
                "server": server.name,
                "client": self.headers.get("X-Forwarded-For", ""),
                "host": self.headers.get("Host", ""),
                "upgrade": self.headers.get("Upgrade", ""),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def running(*stubs: Stub) -> Iterator[None]:
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in stubs]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for stub in stubs:
            stub.shutdown()
            stub.server_close()


@contextlib.contextmanager
def balancer(tmp_path: Path, ports: list[int], **options: int) -> Iterator[str]:
    if not NGINX.exists():
        pytest.fail(f"{NGINX} is missing: run `make install-cluster`")
    port = free_port()
    conf = render_nginx_conf(tmp_path, f"127.0.0.1:{port}", ports, upstream_header=True, **options)
    proc = start_nginx(tmp_path, conf, ("127.0.0.1", port))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def post(url: str, text: str) -> requests.Response:
    return requests.post(
        f"{url}/webhooks/rest/webhook", json={"sender": "shop-7", "message": text}, timeout=20
    )


def test_the_generated_configuration(tmp_path: Path) -> None:
    conf = render_nginx_conf(tmp_path, "127.0.0.1:8080", [5101, 5102])
    assert conf.count("server 127.0.0.1:5101 max_fails=1 fail_timeout=5s;") == 2  # both pools
    assert conf.count("server 127.0.0.1:5102 ") == 2
    assert "hash $remote_addr consistent;" in conf  # socket.io sticky
    assert "non_idempotent" not in conf.replace("`non_idempotent`", "")
    assert f"pid {tmp_path}/nginx.pid;" in conf and "daemon off;" in conf
    assert "X-Posbot-Upstream" not in conf  # only when a test asks for it
    assert '"$request_method $uri"' in conf  # never the query string (the API token)
    assert "@@" not in conf
    with pytest.raises(ValueError):
        render_nginx_conf(tmp_path, "127.0.0.1:8080", [])


def test_the_model_load_route_is_not_reachable_through_the_balancer(tmp_path: Path) -> None:
    """Publishing loads a model on each server at its own address, never through nginx."""
    a = Stub("a")
    with running(a), balancer(tmp_path, [a.server_address[1]]) as url:
        refused = requests.put(
            f"{url}/staff/api/model/load",
            params={"token": "x" * 20},
            json={"model_file": "/tmp/model.tar.gz"},
            timeout=20,
        )
        assert refused.status_code == 403
        assert requests.get(f"{url}/staff/api/model", timeout=20).json()["server"] == "a"
    assert a.seen == [("GET", "/staff/api/model")]


def test_settings_for_the_servers() -> None:
    env = cluster_env({"POSBOT_REDIS_PORT": "6390", "POSBOT_PG_DB": "trackers"})
    assert env["POSBOT_REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert env["POSBOT_PG_DB"] == "trackers" and env["POSBOT_PG_HOST"] == "127.0.0.1"
    assert env["POSBOT_DATABASE_URL"].endswith("/var/posbot.sqlite3")
    assert (
        cluster_env({"POSBOT_REDIS_URL": "redis://cache:6379/2"})["POSBOT_REDIS_URL"]
        == "redis://cache:6379/2"
    )
    assert instance_names(2) == ["rasa-a", "rasa-b"]
    with pytest.raises(ValueError):
        instance_names(0)


def test_a_message_to_a_dead_server_is_answered_by_the_other_exactly_once(tmp_path: Path) -> None:
    live = Stub("b")
    dead_port = free_port()  # nothing listens: connection refused, like a SIGKILLed server
    with running(live), balancer(tmp_path, [dead_port, live.server_address[1]]) as url:
        answers = [post(url, f"第{i}条") for i in range(6)]
        page = requests.get(f"{url}/staff/", timeout=20)
    assert [a.status_code for a in answers] == [200] * 6
    assert {a.json()["server"] for a in answers} == {"b"}
    assert Counter(body for _, body in live.seen if body.startswith("{")) == Counter(
        json.dumps({"sender": "shop-7", "message": f"第{i}条"}) for i in range(6)
    )
    assert page.status_code == 200
    # The server sees the merchant's address as the last X-Forwarded-For entry.
    assert answers[0].json()["client"].split(",")[-1].strip() == "127.0.0.1"


def test_a_message_a_server_took_is_never_sent_to_the_other(tmp_path: Path) -> None:
    """The server dies after reading the message: 502, and the other server never sees it."""
    dying, live = Stub("a", drop=True), Stub("b")
    ports = [dying.server_address[1], live.server_address[1]]
    with running(dying, live), balancer(tmp_path, ports, max_fails=0) as url:
        answers = {f"消息{i}": post(url, f"消息{i}") for i in range(6)}
        pages = [requests.get(f"{url}/webhooks/web/health?n={i}", timeout=20) for i in range(4)]
    took = {json.loads(body)["message"] for m, body in dying.seen if m == "POST"}
    answered = {json.loads(body)["message"] for m, body in live.seen if m == "POST"}
    assert took, "round robin never chose the dying server: nothing tested"
    assert took.isdisjoint(answered) and took | answered == set(answers)
    assert {t for t, a in answers.items() if a.status_code == 502} == took
    assert {t for t, a in answers.items() if a.status_code == 200} == answered
    # A GET is safe to repeat: the one the dying server took is answered by the other.
    assert [p.status_code for p in pages] == [200] * 4
    assert any(m == "GET" for m, _ in dying.seen)


def test_one_widget_connection_stays_on_one_server(tmp_path: Path) -> None:
    """socket.io long-polling: every request of a client goes to the same server, with the
    browser's Host (the widget's same-origin check) and address."""
    a, b = Stub("a"), Stub("b")
    with running(a, b), balancer(tmp_path, [a.server_address[1], b.server_address[1]]) as url:
        polls = [
            requests.get(f"{url}/socket.io/?EIO=4&transport=polling&n={i}", timeout=20) for i in range(6)
        ]
        upgrade = requests.get(
            f"{url}/socket.io/?EIO=4&transport=websocket",
            timeout=20,
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )
        # REST is not sticky: requests are spread over both servers.
        spread = {post(url, f"m{i}").json()["server"] for i in range(6)}
    answers = [p.json() for p in polls]
    assert len({answer["server"] for answer in answers}) == 1  # sticky
    assert answers[0]["host"] == url.removeprefix("http://")
    assert answers[0]["client"] == "127.0.0.1"
    assert upgrade.json()["upgrade"] == "websocket"
    assert spread == {"a", "b"}


def test_nginx_missing_is_reported_with_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "NGINX", tmp_path / "no-nginx")
    with pytest.raises(RuntimeError, match="make install-cluster"):
        start_nginx(tmp_path, "events {}", ("127.0.0.1", free_port()))


def test_a_running_cluster_is_not_started_twice(tmp_path: Path) -> None:
    (tmp_path / "rasa-a.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "nginx.pid").write_text("999999999\n")  # left by a killed cluster
    with pytest.raises(RuntimeError, match="already running"):
        cluster.start_cluster(tmp_path, port=free_port())
