"""``make cluster``: nginx on CLUSTER_PORT in front of several Rasa servers and one action server.

The production topology on one machine (docs/deploy.md): every Rasa server runs with
bot/endpoints.production.yml (trackers in PostgreSQL, conversation locks in Redis,
bot/lock_store.py), the widget's socket.io fans out through Redis (bot/channels/web.py), the
WeChat channel keeps its state in Redis, and nginx (Debian's package, ``make install-cluster``)
balances between them with the configuration generated from deploy/nginx.conf.template into
``var/cluster/nginx.conf``. The servers themselves are started by ops/launcher.py, exactly as
``make run`` starts one; nginx runs as a child process (no daemon) with its own prefix, pid
file, logs and temporary files under ``var/cluster/``, never as the system service.

Each process's pid is in ``var/cluster/<name>.pid`` (``nginx``, ``actions``, ``rasa-a``,
``rasa-b``, …) while it runs; Ctrl-C or SIGTERM stops everything started here. A Rasa server
that dies is left out by nginx and the cluster keeps serving; when nginx, the action server or
the last Rasa server dies, everything stops and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bot.settings import PROJECT_ROOT
from ops.launcher import DEFAULT_MODEL, RunningBot, free_port, start_bot

TEMPLATE = PROJECT_ROOT / "deploy" / "nginx.conf.template"
PRODUCTION_ENDPOINTS = PROJECT_ROOT / "bot" / "endpoints.production.yml"
NGINX = Path(os.environ.get("POSBOT_NGINX", "/usr/sbin/nginx"))
DEFAULT_DIR = PROJECT_ROOT / "var" / "cluster"
#: nginx leaves a server out for FAIL_TIMEOUT_S after MAX_FAILS failed attempts (passive checks).
MAX_FAILS = 1
FAIL_TIMEOUT_S = 5

#: The machine's services (README): what make cluster uses unless the environment says otherwise.
LOCAL_SERVICES = {
    "POSBOT_PG_HOST": "127.0.0.1",
    "POSBOT_PG_PORT": "5432",
    "POSBOT_PG_DB": "posbot_trackers",
    "POSBOT_PG_LOGIN_DB": "postgres",
    "POSBOT_PG_USER": "postgres",
    "POSBOT_PG_PASSWORD": "",
    "POSBOT_REDIS_HOST": "127.0.0.1",
    "POSBOT_REDIS_PORT": "6379",
    "POSBOT_REDIS_DB": "0",
}


def instance_names(count: int) -> list[str]:
    """``rasa-a``, ``rasa-b``, …: the names of the Rasa servers (pid files, log folders)."""
    if not 1 <= count <= len(string.ascii_lowercase):
        raise ValueError(f"between 1 and 26 Rasa servers, not {count}")
    return [f"rasa-{letter}" for letter in string.ascii_lowercase[:count]]


def cluster_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The production settings for the servers: the environment's, else this machine's services.

    ``POSBOT_REDIS_URL`` (WeChat state, socket.io fan-out) points at the lock store's Redis
    unless it is set.
    """
    environ = dict(os.environ if environ is None else environ)
    env = {key: environ.get(key, default) for key, default in LOCAL_SERVICES.items()}
    # The KB, records and staff accounts: make run's database unless set (posbot staff add …).
    env["POSBOT_DATABASE_URL"] = environ.get("POSBOT_DATABASE_URL") or (
        f"sqlite:///{PROJECT_ROOT / 'var' / 'posbot.sqlite3'}"
    )
    env["POSBOT_REDIS_URL"] = environ.get("POSBOT_REDIS_URL") or (
        f"redis://{env['POSBOT_REDIS_HOST']}:{env['POSBOT_REDIS_PORT']}/{env['POSBOT_REDIS_DB']}"
    )
    return env


def render_nginx_conf(
    directory: Path,
    listen: str,
    rasa_ports: list[int],
    *,
    upstream_header: bool = False,
    max_fails: int = MAX_FAILS,
    fail_timeout_s: int = FAIL_TIMEOUT_S,
    template: Path = TEMPLATE,
) -> str:
    """deploy/nginx.conf.template with this cluster's paths, address and Rasa servers.

    ``upstream_header`` adds ``X-Posbot-Upstream: <server address>`` to every answer (tests;
    never in production: it shows internal addresses). ``max_fails=0``: never leave a server
    out (tests of the retry rules).
    """
    if not rasa_ports:
        raise ValueError("at least one Rasa server")
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails={max_fails} " f"fail_timeout={fail_timeout_s}s;"
        for port in rasa_ports
    )
    # As root, nginx would run its workers as `nobody`, who cannot read the project's folders.
    user = "user root;" if os.geteuid() == 0 else ""
    header = "        add_header X-Posbot-Upstream $upstream_addr always;" if upstream_header else ""
    text = template.read_text("utf-8")
    for key, value in {
        "@@DIR@@": str(directory),
        "@@LISTEN@@": listen,
        "@@SERVERS@@": servers,
        "@@USER@@": user,
        "@@DEBUG_HEADER@@": header,
    }.items():
        text = text.replace(key, value)
    if "@@" in text:
        raise ValueError(f"unfilled placeholder in {template}")
    return text


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def _running_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` when that process still runs."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@dataclass
class Cluster:
    """A started cluster: the balancer's URL and every process behind it."""

    url: str
    directory: Path
    bots: list[RunningBot]
    names: list[str]
    nginx: subprocess.Popen
    token: str = field(default="", repr=False)
    ready_after_s: float = 0.0

    @property
    def rasa_urls(self) -> list[str]:
        return [bot.url for bot in self.bots]

    def processes(self) -> dict[str, subprocess.Popen]:
        """Name → process, in the order they are stopped."""
        named = {"nginx": self.nginx}
        for name, bot in zip(self.names, self.bots, strict=True):
            named[name] = bot.processes[-1]
        named["actions"] = self.bots[0].processes[0]
        return named

    def instance(self, upstream: str) -> str:
        """The name of the Rasa server at ``host:port`` (nginx's ``$upstream_addr``)."""
        for name, bot in zip(self.names, self.bots, strict=True):
            if bot.url.endswith("//" + upstream):
                return name
        raise KeyError(upstream)

    def send(self, sender: str, message: str, timeout: float = 60) -> requests.Response:
        """A merchant's message through the balancer (the REST webhook)."""
        return requests.post(
            f"{self.url}/webhooks/rest/webhook", json={"sender": sender, "message": message}, timeout=timeout
        )

    def write_pids(self) -> None:
        for name, proc in self.processes().items():
            (self.directory / f"{name}.pid").write_text(f"{proc.pid}\n")

    def stop(self) -> None:
        """nginx first (no new requests), then the Rasa servers, then the action server."""
        procs = self.processes()
        with contextlib.suppress(ProcessLookupError):
            if self.nginx.poll() is None:
                self.nginx.send_signal(signal.SIGQUIT)  # finish the requests under way
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.nginx.wait(timeout=10)
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for name in procs:
            (self.directory / f"{name}.pid").unlink(missing_ok=True)


def start_nginx(directory: Path, conf: str, listen: tuple[str, int], timeout: float = 20) -> subprocess.Popen:
    """Write ``conf`` to ``directory/nginx.conf``, check it with ``nginx -t``, start nginx and
    wait until it accepts connections on ``listen``."""
    if not NGINX.exists():
        raise RuntimeError(f"{NGINX} is missing: run `make install-cluster` (Debian's nginx)")
    for sub in ("logs", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    conf_file = directory / "nginx.conf"
    conf_file.write_text(conf, encoding="utf-8")
    command = [
        str(NGINX),
        "-p",
        str(directory),
        "-c",
        str(conf_file),
        "-e",
        str(directory / "logs" / "error.log"),
    ]
    check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx refused {conf_file}:\n{check.stderr[-2000:]}")
    log = (directory / "logs" / "nginx.out").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                "nginx exited at start: " + (directory / "logs" / "error.log").read_text()[-2000:]
            )
        with contextlib.suppress(OSError), socket.create_connection(listen, timeout=1):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"nginx did not start within {timeout} s")


def start_cluster(
    directory: Path = DEFAULT_DIR,
    *,
    port: int = 8080,
    host: str = "127.0.0.1",
    instances: int = 2,
    model: Path = DEFAULT_MODEL,
    env: dict[str, str] | None = None,
    endpoints: Path = PRODUCTION_ENDPOINTS,
    upstream_header: bool = False,
    timeout: float = 600,
) -> Cluster:
    """Start the action server and ``instances`` Rasa servers (ops/launcher.py), then nginx.

    ``env`` is added to the servers' environment (default: :func:`cluster_env`).
    ``POSBOT_RASA_URLS`` is set to the servers started here (model publishing, docs/deploy.md).
    Everything is stopped again if any part fails to start.
    """
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    for pid_file in directory.glob("*.pid"):
        pid = _running_pid(pid_file)
        if pid is not None:
            raise RuntimeError(
                f"a cluster is already running here ({pid_file.name}: pid {pid}); " "stop it first"
            )
        pid_file.unlink()  # left by a cluster that was killed
    if not _port_is_free(host, port):
        raise RuntimeError(f"{host}:{port} is in use: set CLUSTER_PORT to a free port")
    names = instance_names(instances)
    ports = [free_port() for _ in names]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    server_env = {
        **(cluster_env() if env is None else env),
        "POSBOT_RASA_URLS": ",".join(urls),
        # The client's address for the servers (login throttling, audit log): the
        # last X-Forwarded-For entry, the one nginx added.
        "SANIC_PROXIES_COUNT": "1",
    }
    # The first server comes with the action server (and builds the KB); the others start
    # loading their model as soon as that action server answers, while the first loads its own.
    actions_port = free_port()
    shared = RunningBot(
        "",
        f"http://127.0.0.1:{actions_port}",
        server_env.get("POSBOT_DATABASE_URL") or f"sqlite:///{directory / names[0] / 'posbot.sqlite3'}",
        directory / names[0],
    )
    others: dict[str, RunningBot | BaseException] = {}
    stop_waiting = threading.Event()

    def start_other(name: str, rasa_port: int) -> None:
        try:
            deadline = time.monotonic() + timeout
            while not _answers(f"{shared.actions_url}/health"):
                if stop_waiting.is_set() or time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: the action server did not come up")
                time.sleep(0.5)
            others[name] = start_bot(
                directory / name,
                model=model,
                env=server_env,
                endpoints=endpoints,
                rasa_port=rasa_port,
                timeout=timeout,
                share_actions_of=shared,
                interface="127.0.0.1",
            )
        except BaseException as error:  # reported by the main thread
            others[name] = error

    threads = [
        threading.Thread(target=start_other, args=(name, rasa_port), daemon=True)
        for name, rasa_port in zip(names[1:], ports[1:], strict=True)
    ]
    for thread in threads:
        thread.start()
    print(f"starting {', '.join(names)} and the action server …", flush=True)
    bots: list[RunningBot] = []
    nginx: subprocess.Popen | None = None
    try:
        try:
            bots.append(
                start_bot(
                    directory / names[0],
                    model=model,
                    env=server_env,
                    endpoints=endpoints,
                    rasa_port=ports[0],
                    actions_port=actions_port,
                    timeout=timeout,
                    interface="127.0.0.1",
                )
            )
        finally:
            if not bots:
                stop_waiting.set()
            for thread in threads:
                thread.join()
            bots += [b for b in (others.get(n) for n in names[1:]) if isinstance(b, RunningBot)]
        failed = [error for error in others.values() if isinstance(error, BaseException)]
        if failed:
            raise failed[0]
        conf = render_nginx_conf(directory, f"{host}:{port}", ports, upstream_header=upstream_header)
        nginx = start_nginx(directory, conf, ("127.0.0.1" if host == "0.0.0.0" else host, port))
    except BaseException:
        for bot in reversed(bots):
            bot.stop()
        raise
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    cluster = Cluster(f"http://{shown_host}:{port}", directory, bots, names, nginx, token=bots[0].token)
    cluster.write_pids()
    cluster.ready_after_s = time.monotonic() - started
    return cluster


def _watch(cluster: Cluster) -> int:
    """Until Ctrl-C: report a Rasa server that dies; stop when nothing can answer any more."""
    reported: set[str] = set()
    while True:
        procs = cluster.processes()
        for name, proc in procs.items():
            if proc.poll() is not None and name not in reported:
                reported.add(name)
                (cluster.directory / f"{name}.pid").unlink(missing_ok=True)
                print(
                    f"posbot cluster: {name} exited with status {proc.returncode}",
                    file=sys.stderr,
                    flush=True,
                )
        rasa_alive = [n for n in cluster.names if procs[n].poll() is None]
        if procs["nginx"].poll() is not None or procs["actions"].poll() is not None or not rasa_alive:
            print("posbot cluster stopped: nothing left to answer merchants", file=sys.stderr)
            return 1
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """``make cluster``: nginx on CLUSTER_PORT (8080) in front of CLUSTER_INSTANCES (2) Rasa
    servers and the action server, with the production endpoints; Ctrl-C stops everything."""
    parser = argparse.ArgumentParser(prog="python -m ops.cluster", description=main.__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLUSTER_PORT", 8080)))
    parser.add_argument(
        "--host",
        default=os.environ.get("CLUSTER_HOST", "127.0.0.1"),
        help="address nginx listens on (default %(default)s; 0.0.0.0: all)",
    )
    parser.add_argument("--instances", type=int, default=int(os.environ.get("CLUSTER_INSTANCES", 2)))
    parser.add_argument("--model", type=Path, default=Path(os.environ.get("MODEL", DEFAULT_MODEL)))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        cluster = start_cluster(
            DEFAULT_DIR, port=args.port, host=args.host, instances=args.instances, model=args.model
        )
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, ValueError, TimeoutError, subprocess.CalledProcessError) as error:
        print(f"make cluster: {error}", file=sys.stderr)
        return 1
    rel = DEFAULT_DIR.relative_to(PROJECT_ROOT)
    lines = [
        f"posbot cluster is ready after {cluster.ready_after_s:.0f} s: "
        f"{cluster.url}/webhooks/web/ (widget) · {cluster.url}/staff/ (console) · "
        f"REST {cluster.url}/webhooks/rest/webhook · WeChat /webhooks/wechat/webhook",
        f"  nginx      {cluster.url}  pid {cluster.nginx.pid}  logs {rel}/logs/",
    ]
    for name, bot in zip(cluster.names, cluster.bots, strict=True):
        lines.append(f"  {name:<10} {bot.url}  pid {bot.processes[-1].pid}  " f"log {rel}/{name}/rasa.log")
    lines.append(
        f"  actions    {cluster.bots[0].actions_url}  "
        f"pid {cluster.bots[0].processes[0].pid}  log {rel}/{cluster.names[0]}/actions.log"
    )
    print("\n".join(lines), flush=True)
    try:
        return _watch(cluster)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
