"""First come, first served: how many merchants' messages the Rasa server works on at once.

Rasa handles every incoming message as its own task on one event loop. Each time a message
waits for the action server (one to three times per message) or the tracker store, it goes to
the back of the loop's queue behind every other message in flight. With ten merchants typing at
once, a message that needs three actions ("刷卡显示A0": explain the code, start the walk, ask
the first question) queued three times and took more than twice as long as a greeting, which
made the slowest 1 % of answers (make bench, 10 senders) 2.6 times the median.

The gate lets ``POSBOT_MAX_INFLIGHT`` messages (default 2: one on the Rasa CPU while another
waits for the action server) be worked on at once, and hands each freed place to the message
that has waited longest. Every message then waits about as long as the others, and no message's
answer overtakes the one sent before it. The conversation lock is taken first (rasa.core.agent),
so a merchant who sends twice waits on the lock, not at the gate. ``POSBOT_MAX_INFLIGHT=0``
turns it off.

A place is held while its message waits for the action server, so a stalled action server (or
its database) would hold every place. A message that has waited ``POSBOT_GATE_MAX_WAIT_S``
(2 s; under load it normally waits well under 0.3 s) goes ahead without a place, as without the
gate: a stall then slows the messages that need the stalled part, not every merchant.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Text

from rasa.core.channels.channel import UserMessage
from rasa.core.processor import MessageProcessor

DEFAULT_SLOTS = 2
DEFAULT_MAX_WAIT_S = 2.0


class FifoGate:
    """An asyncio semaphore that serves waiters strictly in arrival order.

    asyncio.Semaphore in Python 3.10 lets a newcomer take a place that was just freed for a
    waiter, and a waiter that loses its place that way queues again at the end (fixed only in
    3.11.1); under steady load that reorders exactly the messages that waited longest.
    Here a freed place is handed to the oldest waiter directly.
    """

    def __init__(self, slots: int, max_wait: Optional[float] = None) -> None:
        self.slots = slots
        self.max_wait = max_wait
        self.busy = 0
        self.went_ahead = 0  # messages that stopped waiting after ``max_wait``
        self._waiters: Deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> bool:
        """Wait for a place; False when ``max_wait`` passed first (the caller holds none)."""
        if self.busy < self.slots and not self._waiters:
            self.busy += 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # release() hands its place over, so ``busy`` stays counted.
            await asyncio.wait_for(asyncio.shield(waiter), self.max_wait)
            return True
        except asyncio.TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # the place came just as the time ran out
            self._forget(waiter)
            self.went_ahead += 1
            return False
        except BaseException:  # cancelled (the client went away), or the loop is closing
            if waiter.done() and not waiter.cancelled():
                self.release()  # the place arrived together with the cancellation: pass it on
            else:
                self._forget(waiter)
            raise

    def _forget(self, waiter: asyncio.Future) -> None:
        waiter.cancel()
        try:
            self._waiters.remove(waiter)
        except ValueError:  # release() already skipped it
            pass

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1

    async def __aenter__(self) -> None:
        if not await self.acquire():
            raise asyncio.TimeoutError(f"no place at the gate within {self.max_wait} s")

    async def __aexit__(self, *_: Any) -> None:
        self.release()


#: Set from ``Settings`` when the speed-ups are installed (:func:`configure`).
SLOTS = DEFAULT_SLOTS
MAX_WAIT_S = DEFAULT_MAX_WAIT_S
_gates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop → its gate
_rasa_handle_message = MessageProcessor.handle_message


def gate() -> Optional[FifoGate]:
    """The gate of the running event loop (each Sanic worker has its own), None when off."""
    if SLOTS == 0:
        return None
    loop = asyncio.get_running_loop()
    current = _gates.get(loop)
    if current is None or current.slots != SLOTS or current.max_wait != MAX_WAIT_S:
        current = _gates[loop] = FifoGate(SLOTS, MAX_WAIT_S)
    return current


async def handle_message(self: MessageProcessor, message: UserMessage) -> Optional[List[Dict[Text, Any]]]:
    current = gate()
    if current is None or not await current.acquire():
        return await _rasa_handle_message(self, message)
    try:
        return await _rasa_handle_message(self, message)
    finally:
        current.release()


def configure(slots: int, max_wait_s: float) -> None:
    """``POSBOT_MAX_INFLIGHT`` and ``POSBOT_GATE_MAX_WAIT_S`` (validated by ``bot.settings``)."""
    global SLOTS, MAX_WAIT_S
    SLOTS, MAX_WAIT_S = slots, max_wait_s
