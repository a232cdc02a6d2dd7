"""The staff console with only its own routes, for the knowledge editor's browser test: no Rasa
and no trained model. On a copy of kb/content and a temporary SQLite database holding the real KB
(built with tests/kb/test_editing.py's bigram encoder), with an editor account.

    python -m tests.browser.kb_editor_server PORT FOLDER EDITOR PASSWORD [TRACKER]

TRACKER, a SQLite file of Rasa's SQL tracker store (``seed_tracker``), gives the learning queue and
the dashboard their conversations. The learning queue and 训练发布 work on FOLDER too (never the
checkout's kb/content, models/ or var/). scripts/screenshots.py builds the same console with
``console_app`` and the real e5 encoder.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from rasa.core.tracker_store import AwaitableTrackerStore, SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Sanic
from sqlalchemy import create_engine

from bot.channels.kb_editor import KbEditor
from bot.channels.learning import Learning
from bot.channels.publish import Publish
from bot.channels.staff import StaffConsole
from bot.training import Trainer
from kb.build import build
from kb.encoder import SentenceEncoder
from kb.loader import load_content
from kb.settings import CONTENT_DIR
from records.store import RecordStore
from staff.accounts import StaffStore
from tests.kb.test_editing import ENCODER

#: The learning queue's grouping threshold for the bigram stand-in: 0.95 is e5's (kb/learning.py
#: GROUP_AT); hashed bigrams give lower cosines to the same question in other words.
BIGRAM_GROUP_AT = 0.8


def tracker_store(path: Path) -> SQLTrackerStore:
    return SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(path))


def seed_tracker(path: Path, conversations: dict[str, list[Event]]) -> None:
    """Write conversations into Rasa's SQL tracker store at ``path``, as Rasa saves them."""
    store = tracker_store(path)

    async def save() -> None:
        for sender, events in conversations.items():
            await store.save(DialogueStateTracker.from_events(sender, events))

    # in a thread of its own: Playwright's sync API keeps an event loop in the test's thread
    worker = threading.Thread(target=lambda: asyncio.run(save()))
    worker.start()
    worker.join()
    store.engine.dispose()


def console_app(
    folder: Path,
    editor: str,
    password: str,
    *,
    encoder: SentenceEncoder = ENCODER,
    tracker: Optional[Path] = None,
    threshold: float = BIGRAM_GROUP_AT,
) -> Sanic:
    """The console on FOLDER: content/ (a copy of kb/content), posbot.sqlite3 (the KB built with
    ``encoder``, accounts, records), project/ (the root 训练发布 looks at)."""
    content = folder / "content"
    shutil.copytree(CONTENT_DIR, content)
    engine = create_engine(
        f"sqlite:///{folder / 'posbot.sqlite3'}", connect_args={"check_same_thread": False}
    )
    build(engine, load_content(content), encoder=encoder)
    staff = StaffStore(engine)
    staff.add_user(editor, "editor", password)
    channel = StaffConsole(
        staff,
        RecordStore(engine),
        learning=Learning(content, engine=engine, encoder=encoder, warm=False, threshold=threshold),
        kb_editor=KbEditor(content, engine=engine, encoder=encoder, warm=False),
        publish=Publish(trainer=Trainer(root=folder / "project")),
    )
    app = Sanic("kb_editor_browser")
    app.blueprint(channel.blueprint(lambda _: None), url_prefix="/staff")
    if tracker is not None:  # where the console finds Rasa's tracker store (app.ctx.agent)
        app.ctx.agent = SimpleNamespace(tracker_store=AwaitableTrackerStore(tracker_store(tracker)))
    return app


def main(port: int, folder: Path, editor: str, password: str, tracker: Optional[Path] = None) -> None:
    app = console_app(folder, editor, password, tracker=tracker)
    app.run(host="127.0.0.1", port=port, access_log=False)


if __name__ == "__main__":
    main(
        int(sys.argv[1]),
        Path(sys.argv[2]),
        sys.argv[3],
        sys.argv[4],
        Path(sys.argv[5]) if len(sys.argv) > 5 else None,
    )
