"""A knowledge-base edit reaches every instance, with no restart (issue 17).

How it works: the console's editor (bot/channels/kb_editor.py → kb/editing.py ``save``) writes
the YAML and rebuilds the shared KB database (``POSBOT_DATABASE_URL``) in one transaction,
with a new digest. Every process that answers from the KB (each action server; each Rasa
server's NLU component ``KBTopicIntent``) reads that digest at most once a second
(``shared_store``, ``DIGEST_TTL_S``) and rebuilds its retrieval index in the background when it
changed, answering from the previous one meanwhile; answers are read from the database per
request.

Here two separate processes stand for two instances: each opens the shared SQLite KB through
``shared_store()`` as the servers do (``POSBOT_DATABASE_URL``), builds its index, then
answers questions read from stdin.
The test edits a topic the way the console does and asks both again: both rank the new
phrasing to the topic and give the new answer, each having rebuilt its index once. (The
encoder is a hashed-bigram stand-in so that no e5 model is loaded in three processes.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine

from kb.build import build
from kb.editing import read_entity, save
from kb.loader import load_content
from kb.settings import CONTENT_DIR
from kb.store import DIGEST_TTL_S, KnowledgeStore

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "fault_causes"
NEW_QUESTION = "收银机屏幕上全是雪花点到底是哪里坏了"
NEW_ANSWER = "POS机的问题大致分五类，先判断是哪一类再处理（新版答案）。"

ENCODER_SOURCE = '''
import hashlib
import numpy as np


class BigramEncoder:
    """Hashed character bigrams, L2-normalised: fast, deterministic, alike texts alike."""

    name, dim = "test-bigrams", 64

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            kept = text.lower()
            for gram in [kept[j:j + 2] for j in range(max(len(kept) - 1, 1))]:
                out[i, hashlib.sha256(gram.encode()).digest()[0] % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)
'''

INSTANCE = (
    ENCODER_SOURCE
    + """
import json, logging, sys
from kb.store import shared_store

builds = []
logging.basicConfig(level=logging.INFO, stream=sys.stderr)


class Count(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("retrieval index built"):
            builds.append(record.getMessage())


logging.getLogger("kb.retrieval").addHandler(Count())
store = shared_store()
encoder = BigramEncoder()
store.topic_index(encoder)  # warm, as the servers do at start
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    question = line.strip()
    index = store.topic_index(encoder)
    best = index.rank(question)[0]
    print(json.dumps({"digest": store.digest(), "topic": best.topic_id,
                      "nearest": best.question, "answer": store.topic(best.topic_id).answer,
                      "builds": len(builds)}, ensure_ascii=False), flush=True)
"""
)


def _encoder() -> Any:
    namespace: dict[str, Any] = {}
    exec(ENCODER_SOURCE, namespace)
    return namespace["BigramEncoder"]()


class Instance:
    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", INSTANCE],
            cwd=ROOT,
            env={**os.environ, "POSBOT_DATABASE_URL": url},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
        )
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def ask(self, question: str) -> dict[str, Any]:
        self.proc.stdin.write(question + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(20)


@pytest.fixture()
def shared_kb(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    content = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, content)
    url = f"sqlite:///{tmp_path / 'posbot.sqlite3'}"
    engine = create_engine(url)
    build(engine, load_content(content), encoder=_encoder())
    engine.dispose()
    yield content, url


def test_a_console_edit_reaches_both_instances_without_restart(shared_kb: tuple[Path, str]) -> None:
    content, url = shared_kb
    instances = [Instance(url), Instance(url)]
    try:
        before = [i.ask(NEW_QUESTION) for i in instances]
        assert before[0]["digest"] == before[1]["digest"]
        assert all(b["nearest"] != NEW_QUESTION and b["builds"] == 1 for b in before)
        # an editor saves the topic in the console (a new phrasing and a new answer)
        engine = create_engine(url)
        loaded = read_entity(content, "topic", TOPIC)
        fields = {
            **loaded["fields"],
            "answer": NEW_ANSWER,
            "questions": [*loaded["fields"]["questions"], NEW_QUESTION],
        }
        saved = save(
            content,
            "topic",
            TOPIC,
            fields,
            loaded["version"],
            staff="editor1",
            engine=engine,
            encoder=_encoder(),
        )
        assert saved.changed
        digest = KnowledgeStore(engine).digest()
        engine.dispose()
        assert digest != before[0]["digest"]
        saved_at = time.monotonic()
        for instance in instances:
            after = instance.ask(NEW_QUESTION)
            # the instance trusts the digest it read for DIGEST_TTL_S, then answers from its
            # previous index while the new build's is fitted in the background
            while after["nearest"] != NEW_QUESTION and time.monotonic() - saved_at < DIGEST_TTL_S + 60:
                time.sleep(0.2)
                after = instance.ask(NEW_QUESTION)
            assert after == {
                "digest": digest,
                "topic": TOPIC,
                "nearest": NEW_QUESTION,
                "answer": NEW_ANSWER,
                "builds": 2,
            }
            # and only once: the next question uses the rebuilt index
            assert instance.ask("刷卡机坏了是什么原因")["builds"] == 2
    finally:
        for instance in instances:
            instance.stop()
