"""Rasa's SQL tracker store, with the conversations in use kept in memory between turns.

On every message Rasa 3.6 reads the whole current session back from the database, turns each
row into JSON and then into an event object, and replays them into a tracker: about a quarter of
the Rasa server's CPU per turn in our profile (py-spy, 2026-11-23, 10 concurrent senders). The
database stays the record (every event is still written by Rasa's own ``save``); this store only
remembers, per conversation, the event objects of the session it last wrote.

A remembered session is used only when the database agrees it is current: one indexed query
reads the newest event id of the conversation and compares it with the id seen right after the
last save. Another Rasa server (production: several servers share PostgreSQL and a Redis lock
store) or the HTTP API appending events moves that id, and the session is read from the database
as before. ``POSBOT_TRACKER_CACHE`` sets how many conversations are remembered (0 turns it off).

Saving a remembered session skips Rasa's count of the stored events (a query with a subquery,
rebuilt and re-keyed by SQLAlchemy's ORM on every turn: a tenth of the CPU per message): the
store knows how many events it wrote, checks the newest id once more inside the transaction,
and inserts the new rows with one prepared Core statement. The rows are exactly the ones Rasa's
``save`` writes (same columns, same JSON); anything unexpected takes Rasa's own path.

The tracker handed out for a remembered session is not rebuilt by replaying every event of the
session (as ``from_events`` does on each turn): the store keeps that replayed tracker, brings it
up to date with the events of each save, and hands out a clone (``clone_tracker`` of
bot/speedups/tracker.py).

When the database cannot be reached, every read and save raises ``bot.outage.StoreUnavailable``
(logged once per outage) instead of letting Rasa's ``FailSafeTrackerStore`` answer from an empty
conversation or keep the turn in memory (the registry entries ``outage-read`` and ``outage-save``
of bot/speedups/registry.py let it through; installed by bot/serve.py at start, and by this
store when it is built, wherever that is): the channels then ask the merchant to send the
message again (docs/deploy.md). A read that meets a connection the database closed meanwhile
(after a restart) is tried once more on a fresh one; a save is never repeated.

Configured in bot/endpoints.yml and bot/endpoints.production.yml:
``tracker_store: {type: bot.stores.CachedSQLTrackerStore, dialect: ..., ...}``.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any, Dict, Optional, Sequence, Text, Tuple

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.events import Event, SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

from bot import outage
from bot.outage import StoreUnavailable
from bot.settings import Settings
from bot.speedups import registry
from bot.speedups.lru import LRU, continues
from bot.speedups.tracker import clone_tracker, remember_replay

logger = logging.getLogger(__name__)


def current_session(events: Sequence[Event]) -> Tuple[Event, ...]:
    """The events Rasa's SQL query returns for the latest session of these events.

    Same rule as ``SQLTrackerStore._event_query``: every event whose timestamp is at or after
    the newest ``SessionStarted``; all events when there is none.
    """
    starts = [event.timestamp for event in events if isinstance(event, SessionStarted)]
    if not starts:
        return tuple(events)
    start = max(starts)
    return tuple(event for event in events if event.timestamp >= start)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """Write-ahead log: a commit appends to the log instead of waiting for fsync of the file.

    With ``synchronous=NORMAL`` in WAL mode a crash of the bot loses nothing; a power cut can
    lose the last turns but never corrupts the database (sqlite.org/wal.html).
    """
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class CachedSQLTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` that skips re-reading a session it wrote itself and nobody changed."""

    engine: sa.engine.Engine  # set by Rasa's SQLTrackerStore, replaced below for SQLite

    def __init__(self, *args: Any, cached_conversations: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        registry.install_fixes()  # StoreUnavailable must pass Rasa's FailSafeTrackerStore
        if self.engine.dialect.name == "sqlite":
            # Rasa's engine opens a new SQLite connection for each of the 3-4 queries of a
            # turn (NullPool); one connection per thread (all of them run on the event loop's).
            url = self.engine.url
            self.engine.dispose()
            self.engine = sa.create_engine(url, poolclass=sa.pool.SingletonThreadPool)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)
        if cached_conversations is None:
            cached_conversations = Settings.from_env().tracker_cache  # POSBOT_TRACKER_CACHE
        self.cached_conversations = max(0, int(cached_conversations))
        # sender → (newest id, session events, (domain, the session's events replayed) or None)
        self._sessions = LRU(self.cached_conversations)
        self.hits = 0
        self.misses = 0
        self.fast_saves = 0
        # Built once: SQLAlchemy keys and compiles a statement object once, not on every turn.
        table = self.SQLEvent.__table__
        self._newest_id_query = sa.select(sa.func.max(table.c.id)).where(
            table.c.sender_id == sa.bindparam("sender_id")
        )
        self._insert_events = table.insert()
        self._down = False  # the database failed and we said so; said again once it is back

    def _newest_event_id(self, sender_id: Text, connection: Any = None) -> Optional[int]:
        if connection is None:
            with self.engine.connect() as connection:
                return self._newest_event_id(sender_id, connection)
        return connection.execute(self._newest_id_query, {"sender_id": sender_id}).scalar()

    @staticmethod
    def _row(sender_id: Text, event: Event) -> Dict[Text, Any]:
        """The row Rasa's ``SQLTrackerStore.save`` writes for this event."""
        data = event.as_dict()
        return {
            "sender_id": sender_id,
            "type_name": event.type_name,
            "timestamp": data.get("timestamp"),
            "intent_name": data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
            "action_name": data.get("name"),
            "data": json.dumps(data),
        }

    def _save_remembered(self, tracker: DialogueStateTracker) -> Optional[int]:
        """Append the events after the remembered session; the newest id, or None to fall back.

        Falls back when the tracker does not continue the remembered session event for event,
        when another writer moved the newest id, or when an event broker wants the events.
        """
        cached = self._sessions.get(tracker.sender_id)
        if cached is None or self.event_broker is not None:
            return None
        newest_id, stored, _ = cached
        events = tracker.events
        if newest_id is None or not continues(stored, events):
            return None
        with self.engine.begin() as connection:
            if self._newest_event_id(tracker.sender_id, connection) != newest_id:
                return None
            rows = [
                self._row(tracker.sender_id, event) for event in itertools.islice(events, len(stored), None)
            ]
            if not rows:
                return newest_id
            connection.execute(self._insert_events, rows)
            return self._newest_event_id(tracker.sender_id, connection)

    async def _retrieve(
        self, sender_id: Text, fetch_events_from_all_sessions: bool
    ) -> Optional[DialogueStateTracker]:
        cached = self._sessions.get(sender_id)
        if cached is not None and not fetch_events_from_all_sessions and self.domain:
            newest_id, events, replayed = cached
            if newest_id is not None and self._newest_event_id(sender_id) == newest_id:
                self.hits += 1
                if replayed is not None and replayed[0] is self.domain:
                    tracker = clone_tracker(replayed[1])
                else:
                    tracker = DialogueStateTracker.from_events(sender_id, list(events), self.domain.slots)
                remember_replay(tracker)  # copies of it need not replay the session
                return tracker
            self._sessions.pop(sender_id, None)
        self.misses += 1
        tracker = await super()._retrieve(sender_id, fetch_events_from_all_sessions)
        if tracker is not None:
            remember_replay(tracker)
        return tracker

    # --- outages: the database unreachable ----------------------------------------------------

    def _unavailable(self, doing: Text, sender_id: Optional[Text], error: Exception) -> StoreUnavailable:
        if sender_id is not None:
            self._sessions.pop(sender_id, None)
        reason = outage.describe(error)
        if not self._down:
            self._down = True
            logger.error(
                "tracker store: the database at %s is not usable (%s); merchants are "
                "asked to send their message again until it is back",
                self.engine.url.render_as_string(hide_password=True),
                reason,
            )
        return StoreUnavailable(f"could not {doing} conversation {sender_id!r}: {reason}")

    def _usable(self) -> None:
        if self._down:
            self._down = False
            logger.warning(
                "tracker store: the database at %s is reachable again",
                self.engine.url.render_as_string(hide_password=True),
            )

    async def _read(self, read: Any, sender_id: Text) -> Optional[DialogueStateTracker]:
        """``read(sender_id)``; a database failure becomes ``StoreUnavailable``.

        A connection the database closed while it sat in the pool (PostgreSQL restarted, the
        network cut) fails on first use, and SQLAlchemy then discards every pooled connection:
        the read is tried once more, on a new one.
        """
        try:
            tracker = await read(sender_id)
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise self._unavailable("read", sender_id, error) from error
            logger.info(
                "tracker store: a pooled connection was closed by the database; "
                "reading conversation %s again",
                sender_id,
            )
            try:
                tracker = await read(sender_id)
            except sa.exc.SQLAlchemyError as again:
                raise self._unavailable("read", sender_id, again) from again
        except sa.exc.SQLAlchemyError as error:
            raise self._unavailable("read", sender_id, error) from error
        self._usable()
        return tracker

    async def retrieve(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        return await self._read(super().retrieve, sender_id)

    async def retrieve_full_tracker(self, conversation_id: Text) -> Optional[DialogueStateTracker]:
        return await self._read(super().retrieve_full_tracker, conversation_id)

    async def keys(self) -> Any:
        try:
            return await super().keys()
        except sa.exc.SQLAlchemyError as error:
            raise self._unavailable("list", None, error) from error

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Append the tracker's new events in one transaction; nothing is written on failure."""
        try:
            newest_id = self._save_remembered(tracker) if self.cached_conversations else None
            if newest_id is None:
                await super().save(tracker)
        except sa.exc.SQLAlchemyError as error:
            raise self._unavailable("save", tracker.sender_id, error) from error
        self._usable()
        if newest_id is None:
            if not self.cached_conversations:
                return
            try:
                newest_id = self._newest_event_id(tracker.sender_id)
            except sa.exc.SQLAlchemyError:  # stored; the next turn reads it from the database
                self._sessions.pop(tracker.sender_id, None)
                return
        else:
            self.fast_saves += 1
        session = current_session(tracker.events)
        self._sessions.put(
            tracker.sender_id, (newest_id, session, self._replayed(tracker.sender_id, session))
        )

    def _replayed(
        self, sender_id: Text, session: Tuple[Event, ...]
    ) -> Optional[Tuple[Any, DialogueStateTracker]]:
        """``from_events`` of the session, continued from the one kept before when it can be."""
        if not self.domain:
            return None
        before = self._sessions.get(sender_id)
        kept = before[2] if before is not None else None
        if kept is not None and kept[0] is self.domain and continues(kept[1].events, session):
            for event in session[len(kept[1].events) :]:
                kept[1].update(event)
            return kept
        return self.domain, DialogueStateTracker.from_events(sender_id, list(session), self.domain.slots)
