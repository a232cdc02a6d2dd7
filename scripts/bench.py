"""`make bench`: what a merchant waits for, and what the bot costs, on this machine.

Starts the bot exactly as `make run` does (ops/launcher.py), then measures REST round trips
sequentially and with 10 concurrent senders, throughput, resident memory, start-up time, and
the time of a full training from scratch; then the same load on a bare Rasa bot (the same Rasa
and NLU data, stock pipeline, no custom actions: scripts/bare_rasa.py) and posbot's ratios to it,
which do not move with the machine. Prints a table and writes reports/bench.md.

Both bots are up at the same time and the 10-sender load goes to them in alternating rounds
(POSBOT_BENCH_ROUNDS, default 3: posbot, bare, posbot, bare, …), so that both meet the machine
in the same state; each side's figures pool its rounds. (Measured one after the other, bare
Rasa's throughput moved between 53 and 68 msg/s from one run to the next on an idle machine.)
Issue 14's targets: throughput ≥ 0.75× bare Rasa's, p99 at 10 senders no worse than its p99.
Targets (2 cores): p99 ≤ 300 ms at 10 senders, ≥ 40 msg/s, ready ≤ 30 s, ≤ 1.2 GB, training ≤ 3 min.

POSBOT_BENCH_PRODUCTION=1 measures bot/endpoints.production.yml instead (trackers in this
machine's PostgreSQL, locks in its Redis, a throw-away database), with SANIC_WORKERS Rasa
workers (default 2); the report goes to reports/bench-production.md.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts"))
import bare_rasa as bare  # noqa: E402

from ops.launcher import BIN, SERVING_TF_THREADS, free_port, start_bot  # noqa: E402

MESSAGES = [
    "打印机不出纸",
    "刷卡显示A0",
    "刷一万块扣多少手续费",
    "拉卡拉客服电话多少",
    "POS机连不上网",
    "机器死机了怎么办",
    "怎么申请POS机",
    "每天要签到吗",
    "结算多久到账",
    "你好",
    "谢谢",
    "刷了10000元信用卡,费率0.6%",
    "報錯51是什麼意思",
    "哪个牌子的pos机好",
    "有操作视频吗",
]
SEQUENTIAL = int(os.environ.get("POSBOT_BENCH_SEQUENTIAL", "150"))
MODEL = Path(os.environ.get("POSBOT_BENCH_MODEL", str(ROOT / "models" / "posbot.tar.gz")))
TRAIN = os.environ.get("POSBOT_BENCH_TRAIN", "1") != "0"  # 0: skip the training measurement
CONCURRENCY = 10
PER_SENDER = int(os.environ.get("POSBOT_BENCH_PER_SENDER", "30"))
ROUNDS = max(1, int(os.environ.get("POSBOT_BENCH_ROUNDS", "3")))
PRODUCTION = os.environ.get("POSBOT_BENCH_PRODUCTION", "0") == "1"
BARE = os.environ.get("POSBOT_BENCH_BARE", "1") != "0"  # 0: skip the bare Rasa reference
PG = os.environ.get("POSBOT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


def memory_mb(pid: int, field: str = "Rss") -> float:
    """Memory of a process and its children in MB, from /proc/*/smaps_rollup.

    ``Rss`` counts pages shared between processes (libraries, forked workers) once per process;
    ``Pss`` divides each shared page among the processes that map it, so sums are honest.
    """
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def rss_mb(pid: int) -> float:
    return memory_mb(pid, "Rss")


def timed_send(url: str, sender: str, text: str) -> float:
    start = time.perf_counter()
    response = requests.post(
        f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": text}, timeout=30
    )
    response.raise_for_status()
    return (time.perf_counter() - start) * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def train_time() -> float:
    """A full training with an empty cache, as on a fresh clone (RASA_CACHE_DIRECTORY)."""
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
        start = time.monotonic()
        subprocess.run(
            [
                str(BIN / "rasa"),
                "train",
                "--config",
                "bot/config.yml",
                "--domain",
                "bot/domain",
                "--data",
                "data",
                "--out",
                out,
                "--force",
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RASA_TELEMETRY_ENABLED": "false", "RASA_CACHE_DIRECTORY": cache},
        )
        return time.monotonic() - start


def production_setup() -> tuple[dict[str, str], Path, str]:
    """Environment for bot/endpoints.production.yml with a throw-away tracker database."""
    database = f"posbot_bench_{uuid.uuid4().hex[:8]}"
    host, port = PG.rsplit("@", 1)[1].split(":")
    env = {
        "POSBOT_PG_HOST": host,
        "POSBOT_PG_PORT": port,
        "POSBOT_PG_DB": database,
        "POSBOT_PG_USER": "postgres",
        "POSBOT_PG_PASSWORD": "",
        "POSBOT_PG_LOGIN_DB": "test",
        "POSBOT_REDIS_HOST": "127.0.0.1",
        "POSBOT_REDIS_PORT": "6379",
        "POSBOT_REDIS_DB": "13",
        "SANIC_WORKERS": os.environ.get("SANIC_WORKERS", "2"),
    }
    return env, ROOT / "bot" / "endpoints.production.yml", database


def drop_database(database: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    admin.dispose()


def sequential_load(url: str, tag: str) -> list[float]:
    return [timed_send(url, f"{tag}-seq-{i % 5}", MESSAGES[i % len(MESSAGES)]) for i in range(SEQUENTIAL)]


def concurrent_load(url: str, tag: str) -> tuple[list[float], float]:
    """10 senders at once, each with its own new conversation: (round trips in ms, seconds)."""

    def sender(n: int) -> list[float]:
        return [
            timed_send(url, f"{tag}-conc-{n}", MESSAGES[(n + i) % len(MESSAGES)]) for i in range(PER_SENDER)
        ]

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        concurrent = [ms for batch in pool.map(sender, range(CONCURRENCY)) for ms in batch]
    return concurrent, time.perf_counter() - start


class Side:
    """One bot's figures, pooled over the rounds."""

    def __init__(self, url: str, tag: str) -> None:
        self.url, self.tag = url, tag
        self.sequential: list[float] = []
        self.concurrent: list[float] = []
        self.elapsed = 0.0
        self.rounds: list[str] = []  # "throughput / p99" of each round, for the report

    def round(self, number: int) -> None:
        latencies, seconds = concurrent_load(self.url, f"{self.tag}-r{number}")
        self.concurrent += latencies
        self.elapsed += seconds
        self.rounds.append(f"{len(latencies) / seconds:.0f} / {percentile(latencies, 0.99):.0f}")

    @property
    def throughput(self) -> float:
        return len(self.concurrent) / self.elapsed if self.elapsed else float("nan")


def start_bare(folder: Path) -> tuple[subprocess.Popen, str]:
    """The bare Rasa bot (scripts/bare_rasa.py), trained and served in ``folder``."""
    bare.write_project(folder)
    bare.train(folder, BIN / "rasa")
    port = free_port()
    return bare.serve(folder, BIN / "rasa", port, SERVING_TF_THREADS), f"http://127.0.0.1:{port}"


def main() -> int:
    env, endpoints, database = production_setup() if PRODUCTION else ({}, None, "")
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as bare_tmp:
        bot = start_bot(Path(tmp), model=MODEL, env=env, endpoints=endpoints)
        bare_proc = None
        try:
            ours = Side(bot.url, "bench")
            ours.sequential = sequential_load(bot.url, "bench")
            ours.round(0)
            memory = {"rasa": rss_mb(bot.processes[1].pid), "actions": rss_mb(bot.processes[0].pid)}
            pss = sum(memory_mb(p.pid, "Pss") for p in bot.processes)
            ready = bot.ready_after_s
            theirs = None
            if BARE:
                bare_proc, bare_url = start_bare(Path(bare_tmp))
                theirs = Side(bare_url, "bare")
                theirs.sequential = sequential_load(bare_url, "bare")
                theirs.round(0)
            for number in range(1, ROUNDS):  # alternate: both meet the machine in the same state
                ours.round(number)
                if theirs is not None:
                    theirs.round(number)
        finally:
            bot.stop()
            if bare_proc is not None:
                bare_proc.terminate()
                bare_proc.wait(timeout=30)
            if PRODUCTION:
                drop_database(database)
    training = train_time() if TRAIN else float("nan")
    sequential, concurrent = ours.sequential, ours.concurrent
    bare_seq, bare_conc = (theirs.sequential, theirs.concurrent) if theirs else ([], [])
    throughput = ours.throughput
    ratio_rows = []
    if theirs is not None and bare_conc:
        bare_throughput = theirs.throughput
        ratio_rows = [
            ("posbot, each round: msg/s / p99 ms", " · ".join(ours.rounds), ""),
            ("bare Rasa, each round: msg/s / p99 ms", " · ".join(theirs.rounds), ""),
            ("bare Rasa: 10 senders p99", f"{percentile(bare_conc, 0.99):.0f} ms", ""),
            ("bare Rasa: throughput (10 senders)", f"{bare_throughput:.1f} msg/s", ""),
            ("posbot / bare Rasa: throughput", f"{throughput / bare_throughput:.2f}×", "≥ 0.75×"),
            (
                "posbot / bare Rasa: 10 senders p99",
                f"{percentile(concurrent, 0.99) / percentile(bare_conc, 0.99):.2f}×",
                "≤ 1.00×",
            ),
            (
                "posbot / bare Rasa: sequential p50",
                f"{statistics.median(sequential) / statistics.median(bare_seq):.2f}×",
                "",
            ),
        ]
    rows = [
        ("sequential p50", f"{statistics.median(sequential):.0f} ms", ""),
        ("sequential p99", f"{percentile(sequential, 0.99):.0f} ms", ""),
        ("10 senders p50", f"{statistics.median(concurrent):.0f} ms", ""),
        ("10 senders p99", f"{percentile(concurrent, 0.99):.0f} ms", "≤ 300 ms"),
        ("throughput (10 senders)", f"{throughput:.1f} msg/s", "≥ 40 msg/s"),
        ("resident memory, Rasa server", f"{memory['rasa']:.0f} MB", ""),
        ("resident memory, action server", f"{memory['actions']:.0f} MB", ""),
        ("resident memory, total (RSS)", f"{sum(memory.values()):.0f} MB", "≤ 1200 MB"),
        ("proportional memory, total (PSS: shared pages counted once)", f"{pss:.0f} MB", ""),
        ("start-up until warm (KB build, both servers, warm-up)", f"{ready:.1f} s", "≤ 30 s"),
        ("full training from scratch", f"{training:.0f} s", "≤ 180 s"),
        *ratio_rows,
    ]
    setup = (
        f"PostgreSQL trackers, Redis locks, {env['SANIC_WORKERS']} Rasa workers"
        if PRODUCTION
        else "SQLite trackers, one Rasa process (make run)"
    )
    lines = [
        "# posbot benchmark",
        "",
        f"{os.cpu_count()} cores · {SEQUENTIAL} sequential messages · {CONCURRENCY} senders × "
        f"{PER_SENDER} messages × {ROUNDS} rounds, alternating with bare Rasa · REST webhook round "
        f"trips incl. actions · {setup}",
        "",
        "| measure | value | target |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    report = "\n".join(lines) + "\n"
    (ROOT / "reports").mkdir(exist_ok=True)
    name = "bench-production.md" if PRODUCTION else "bench.md"
    (ROOT / "reports" / name).write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
