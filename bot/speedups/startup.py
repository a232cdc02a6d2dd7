"""What the Rasa server does once it has started: take the start-up objects out of the GC's way.

Called by the REST channel (bot/channels/rest.py) after the server has started.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from bot.settings import Settings

logger = logging.getLogger(__name__)


async def freeze_loaded_objects(*_: Any) -> None:
    """Exempt everything loaded at start (model, TensorFlow, domain) from garbage collection.

    Python's full collections walk every object the process holds, millions of them once the
    model is loaded, while the objects a message creates are short-lived. ``gc.freeze`` moves
    the start-up objects out of the collector's way (docs.python.org/3/library/gc.html).
    ``POSBOT_GC_FREEZE=0`` (``Settings.gc_freeze``) leaves them in.
    """
    if Settings.from_env().gc_freeze:
        gc.collect()
        gc.freeze()
        logger.debug("froze %d start-up objects", gc.get_freeze_count())
