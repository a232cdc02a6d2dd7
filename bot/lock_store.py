"""Conversation locks in Redis that stay correct when several Rasa servers share them.

Rasa takes ``lock_store.lock(conversation_id)`` around every message of a conversation, so that
its messages are handled one after another. Rasa's ``RedisLockStore`` keeps the whole ticket
queue of a conversation as one JSON string and changes it by *read, change in Python, write
back* (``issue_ticket``, ``finish_serving``, ``update_lock``, ``cleanup``). Two servers doing that
at the same moment overwrite each other (RasaHQ/rasa#9213): both read "no tickets", both issue
ticket 0 and both are served at once; or a release writes back a queue without the ticket
another server has just issued, which is then never served in turn. Rasa's attempt to fix it
(``ConcurrentRedisLockStore``, RasaHQ/rasa#11256) was reverted (#11428).

``TicketLockStore`` keeps the same ticket-lock algorithm, but every change is one Lua script,
which Redis runs atomically (no other command of any client runs in between):

* per conversation, ``<prefix>:ticketlock:{<id>}:tickets`` is a hash ticket → expiry (ms, Redis
  clock) and ``<prefix>:ticketlock:{<id>}:last`` the last ticket number (``INCR``);
* issuing a ticket = ``INCR`` + add it with its expiry, in one script: numbers are unique and
  increase in the order the servers reached Redis;
* the holder is the smallest live ticket; a message proceeds when its ticket is the holder;
* releasing removes the ticket (and the hash when it is empty), in one script.

Expiry (``lock_lifetime``, default Rasa's ``TICKET_LOCK_LIFETIME`` / 60 s): every script first
drops expired tickets. A ticket is given ``lock_lifetime`` when issued; a waiting message renews
its ticket each time it polls and the holder renews its ticket every ``lock_lifetime / 3`` while
it works. A server that is killed renews nothing: its tickets expire at most ``lock_lifetime``
later and the next message of the conversation goes ahead. Expiry uses Redis's clock (``TIME``),
so the servers' clocks need not agree. Keys carry a TTL as well, so nothing is left behind.

Redis unreachable or failing: ``lock`` raises Rasa's ``LockError`` before the message is
handled (nothing is stored for it; the channels answer it with one polite "请稍后再发一次",
bot/outage.py; the server keeps running), logged once per outage here, and "reachable again"
once when it comes back. A release that fails is logged and not raised: the
message was handled, and its ticket expires on its own.

Configured in bot/endpoints.production.yml (same settings as Rasa's ``type: redis``)::

    lock_store:
      type: bot.lock_store.TicketLockStore
      url: <host>            port: <port>         db: <db>
      key_prefix: posbot     # alphanumeric
      password: ...          # optional; also username, use_ssl, ssl_*, socket_timeout
      lock_lifetime: 60      # optional, seconds
      wait_time: 0.1         # optional, seconds between two polls of a waiting message

``POSBOT_LOCK_TRACE=1`` logs each grant at INFO ("ticket N granted") instead of DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, Deque, Optional, Text

from rasa.core.lock import Ticket, TicketLock
from rasa.core.lock_store import (
    DEFAULT_SOCKET_TIMEOUT_IN_SECONDS,
    LOCK_LIFETIME,
    LockError,
    LockStore,
)
from rasa.utils.endpoints import EndpointConfig

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "posbot"
#: Seconds between two polls of a waiting message. Rasa's default is 1 s, which adds up to a
#: second to every message that had to wait; a poll is one short script.
DEFAULT_WAIT_TIME = 0.1

# Shared by the scripts: drop the expired tickets of KEYS[1] at `now` (ms); the live ones.
_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #flat, 2 do
  if tonumber(flat[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], flat[i])
  else
    live[#live + 1] = {tonumber(flat[i]), tonumber(flat[i + 1])}
  end
end
local function keep_keys(extra)
  -- the hash lives as long as its last ticket; the counter `extra` ms longer, so a ticket
  -- number is never issued twice while anyone could still be waiting with it
  local latest = 0
  for _, ticket in ipairs(live) do
    if ticket[2] > latest then latest = ticket[2] end
  end
  if latest > 0 then
    redis.call('PEXPIREAT', KEYS[1], latest)
    redis.call('PEXPIREAT', KEYS[2], latest + extra)
  end
end
"""

#: KEYS: tickets, last. ARGV: lifetime ms. → the new ticket number.
_ISSUE = (
    _PURGE
    + """
local lifetime = tonumber(ARGV[1])
local number = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], number, now + lifetime)
live[#live + 1] = {number, now + lifetime}
keep_keys(lifetime)
return number
"""
)

#: KEYS: tickets, last. ARGV: ticket, lifetime ms. Renews the ticket.
#: → 0: it is the holder; n > 0: n tickets are ahead of it; -1: it is gone (expired).
_POLL = (
    _PURGE
    + """
local mine = tonumber(ARGV[1])
local lifetime = tonumber(ARGV[2])
local ahead, found = 0, false
for _, ticket in ipairs(live) do
  if ticket[1] == mine then
    found = true
    ticket[2] = now + lifetime
  elseif ticket[1] < mine then
    ahead = ahead + 1
  end
end
if not found then return -1 end
redis.call('HSET', KEYS[1], mine, now + lifetime)
keep_keys(lifetime)
return ahead
"""
)

#: KEYS: tickets, last. ARGV: ticket. Removes it; → the number of tickets left.
_RELEASE = (
    _PURGE
    + """
redis.call('HDEL', KEYS[1], ARGV[1])
local left = redis.call('HLEN', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[1]) end
return left
"""
)

#: KEYS: tickets, last. → flat list ticket, expiry (ms) of the live tickets.
_READ = (
    _PURGE
    + """
local out = {}
for _, ticket in ipairs(live) do
  out[#out + 1] = ticket[1]
  out[#out + 1] = ticket[2]
end
return out
"""
)

#: KEYS: tickets, last. ARGV: ticket, expiry ms, ticket, expiry ms, ... Replaces the queue.
_SAVE = """
redis.call('DEL', KEYS[1])
local latest, highest = 0, 0
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if tonumber(ARGV[i + 1]) > latest then latest = tonumber(ARGV[i + 1]) end
  if tonumber(ARGV[i]) > highest then highest = tonumber(ARGV[i]) end
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if highest > last then redis.call('SET', KEYS[2], highest) end
if latest > 0 then
  redis.call('PEXPIREAT', KEYS[1], latest)
  redis.call('PEXPIREAT', KEYS[2], latest + 3600000)
end
return 1
"""


class TicketLockStore(LockStore):
    """Rasa ``LockStore`` whose ticket queue lives in Redis and changes only atomically."""

    def __init__(
        self,
        endpoint_config: Optional[EndpointConfig] = None,
        *,
        host: Text = "localhost",
        port: int = 6379,
        db: int = 1,
        username: Optional[Text] = None,
        password: Optional[Text] = None,
        use_ssl: bool = False,
        ssl_certfile: Optional[Text] = None,
        ssl_keyfile: Optional[Text] = None,
        ssl_ca_certs: Optional[Text] = None,
        key_prefix: Optional[Text] = DEFAULT_KEY_PREFIX,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_IN_SECONDS,
        lock_lifetime: Optional[float] = None,
        wait_time: float = DEFAULT_WAIT_TIME,
    ) -> None:
        import redis

        if endpoint_config is not None:  # Rasa: `lock_store: {type: bot.lock_store....}`
            settings: dict[str, Any] = dict(endpoint_config.kwargs)
            host = endpoint_config.url or host
            port = settings.pop("port", port)
            db = settings.pop("db", db)
            username = settings.pop("username", username)
            password = settings.pop("password", password)
            use_ssl = _flag(settings.pop("use_ssl", use_ssl))
            ssl_certfile = settings.pop("ssl_certfile", ssl_certfile)
            ssl_keyfile = settings.pop("ssl_keyfile", ssl_keyfile)
            ssl_ca_certs = settings.pop("ssl_ca_certs", ssl_ca_certs)
            key_prefix = settings.pop("key_prefix", key_prefix)
            socket_timeout = settings.pop("socket_timeout", socket_timeout)
            lock_lifetime = settings.pop("lock_lifetime", lock_lifetime)
            wait_time = settings.pop("wait_time", wait_time)
            if settings:
                logger.warning("lock store: ignoring unknown settings %s", sorted(settings))
        self.lock_lifetime = float(lock_lifetime or LOCK_LIFETIME)
        self.wait_time = float(wait_time)
        self.red = redis.StrictRedis(
            host=host,
            port=int(port),
            db=int(db),
            username=username or None,
            password=password or None,
            ssl=use_ssl,
            ssl_certfile=ssl_certfile or None,
            ssl_keyfile=ssl_keyfile or None,
            ssl_ca_certs=ssl_ca_certs or None,
            socket_timeout=float(socket_timeout),
            socket_connect_timeout=float(socket_timeout),
        )
        self.where = f"redis://{host}:{port}/{db}"
        self.key_prefix = f"{DEFAULT_KEY_PREFIX}:ticketlock:"
        if isinstance(key_prefix, str) and key_prefix.isalnum():
            self.key_prefix = f"{key_prefix}:ticketlock:"
        elif key_prefix:
            logger.warning(
                "lock store: key_prefix %r is not alphanumeric, using %r", key_prefix, self.key_prefix
            )
        self._issue = self.red.register_script(_ISSUE)
        self._poll = self.red.register_script(_POLL)
        self._release = self.red.register_script(_RELEASE)
        self._read = self.red.register_script(_READ)
        self._save = self.red.register_script(_SAVE)
        self._down = False  # Redis failed and we said so; said again only once it is back
        if _grant_level() == logging.INFO:
            # its own level: the Rasa server later sets the root logger to WARNING
            logger.setLevel(logging.INFO)
        super().__init__()

    # --- keys and Redis calls ------------------------------------------------------------

    def _keys(self, conversation_id: Text) -> list[str]:
        # {…}: a Redis Cluster hash tag, so both keys of a conversation are on one node.
        base = f"{self.key_prefix}{{{conversation_id}}}"
        return [f"{base}:tickets", f"{base}:last"]

    def _call(self, script: Any, conversation_id: Text, *args: Any) -> Any:
        """Run a script for the conversation; a Redis failure becomes a (logged) ``LockError``."""
        import redis

        try:
            result = script(keys=self._keys(conversation_id), args=list(args))
        except redis.RedisError as error:
            if not self._down:
                self._down = True
                logger.error(
                    "lock store: Redis at %s is not usable (%s: %s); messages are not "
                    "handled until it is back",
                    self.where,
                    type(error).__name__,
                    error,
                )
            raise LockError(f"Redis lock store at {self.where} is not usable: {error}") from error
        if self._down:
            self._down = False
            logger.warning("lock store: Redis at %s is reachable again", self.where)
        return result

    def _ms(self, lifetime: Optional[float]) -> int:
        return max(1, int(float(lifetime if lifetime is not None else self.lock_lifetime) * 1000))

    # --- Rasa's LockStore API --------------------------------------------------------------

    def issue_ticket(self, conversation_id: Text, lock_lifetime: Optional[float] = None) -> int:
        """A new ticket for the conversation, behind every live ticket issued before it."""
        return int(self._call(self._issue, conversation_id, self._ms(lock_lifetime)))

    def poll(self, conversation_id: Text, ticket: int, lock_lifetime: Optional[float] = None) -> int:
        """Renew ``ticket``: 0 = it holds the lock, n = n tickets ahead, -1 = it expired."""
        return int(self._call(self._poll, conversation_id, ticket, self._ms(lock_lifetime)))

    @asynccontextmanager
    async def lock(
        self,
        conversation_id: Text,
        lock_lifetime: Optional[float] = None,
        wait_time_in_seconds: Optional[float] = None,
    ) -> AsyncGenerator[TicketLock, None]:
        """Wait for the conversation's lock (in ticket order), hold it, release it.

        Raises ``LockError`` when the ticket expired while waiting or Redis is not usable.
        """
        lifetime = self.lock_lifetime if lock_lifetime is None else float(lock_lifetime)
        wait = self.wait_time if wait_time_in_seconds is None else float(wait_time_in_seconds)
        ticket = self.issue_ticket(conversation_id, lifetime)
        renewing: Optional[asyncio.Task] = None
        try:
            lock = await self._wait_for(conversation_id, ticket, lifetime, wait)
            renewing = asyncio.ensure_future(self._renew(conversation_id, ticket, lifetime))
            yield lock
        finally:
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            self.cleanup(conversation_id, ticket)

    async def _wait_for(self, conversation_id: Text, ticket: int, lifetime: float, wait: float) -> TicketLock:
        waited = 0
        while True:
            ahead = self.poll(conversation_id, ticket, lifetime)
            if ahead == 0:
                logger.log(
                    _grant_level(),
                    "lock %s: ticket %d granted after %d poll(s)",
                    conversation_id,
                    ticket,
                    waited,
                )
                return self.get_lock(conversation_id) or TicketLock(conversation_id)
            if ahead < 0:
                raise LockError(
                    f"Could not acquire lock for conversation_id "
                    f"'{conversation_id}': ticket {ticket} expired while waiting."
                )
            logger.debug("lock %s: ticket %d waits for %d earlier message(s)", conversation_id, ticket, ahead)
            waited += 1
            await asyncio.sleep(wait)

    async def _renew(self, conversation_id: Text, ticket: int, lifetime: float) -> None:
        """Keep a working holder's ticket alive (a killed server stops renewing it)."""
        while True:
            await asyncio.sleep(max(lifetime / 3, 0.05))
            try:
                ahead = self.poll(conversation_id, ticket, lifetime)
            except LockError:
                continue  # logged; the ticket simply is not renewed this time
            if ahead != 0:
                logger.warning(
                    "lock %s: ticket %d lost the lock while its message was still "
                    "being handled (the server was blocked for over %.0f s)",
                    conversation_id,
                    ticket,
                    lifetime,
                )
                return

    def get_lock(self, conversation_id: Text) -> Optional[TicketLock]:
        """The conversation's live tickets as Rasa's ``TicketLock``; None when there are none."""
        flat = self._call(self._read, conversation_id)
        tickets = sorted((int(flat[i]), int(flat[i + 1]) / 1000) for i in range(0, len(flat), 2))
        if not tickets:
            return None
        queue: Deque[Ticket] = TicketLock(conversation_id).tickets
        queue.extend(Ticket(number, expires) for number, expires in tickets)
        return TicketLock(conversation_id, queue)

    def save_lock(self, lock: TicketLock) -> None:
        """Replace the conversation's tickets with ``lock``'s (atomically). Rasa's own paths
        (``issue_ticket``, ``finish_serving``, ``update_lock``) do not use it here."""
        args: list[Any] = []
        for ticket in lock.tickets:
            args += [int(ticket.number), int(ticket.expires * 1000)]
        self._call(self._save, lock.conversation_id, *args)

    def delete_lock(self, conversation_id: Text) -> None:
        import redis

        try:
            deleted = self.red.delete(*self._keys(conversation_id))
        except redis.RedisError as error:
            raise LockError(f"Redis lock store at {self.where} is not usable: {error}") from error
        self._log_deletion(conversation_id, bool(deleted))

    def update_lock(self, conversation_id: Text) -> None:
        """Drop expired tickets (every script does it anyway)."""
        self._call(self._read, conversation_id)

    def is_someone_waiting(self, conversation_id: Text) -> bool:
        return bool(self._call(self._read, conversation_id))

    def finish_serving(self, conversation_id: Text, ticket_number: int) -> None:
        """Remove the ticket (atomically; the hash goes with its last ticket)."""
        self._call(self._release, conversation_id, ticket_number)

    def cleanup(self, conversation_id: Text, ticket_number: int) -> None:
        """Release the ticket; a failure is logged, not raised (the ticket expires anyway)."""
        try:
            self.finish_serving(conversation_id, ticket_number)
        except LockError:  # the outage itself is logged once by `_call`
            logger.debug(
                "lock %s: could not release ticket %d; it expires within %.0f s",
                conversation_id,
                ticket_number,
                self.lock_lifetime,
            )


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


def _grant_level() -> int:
    return logging.INFO if os.environ.get("POSBOT_LOCK_TRACE") == "1" else logging.DEBUG
