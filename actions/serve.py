"""``python -m actions.serve --actions actions --port 5055``: rasa_sdk's action server, with
posbot's start-up added in front.

The launcher (ops/launcher.py: ``make run``, ``make shell``, ``make cluster``, the live tests,
``make bench``) starts the action server through this module instead of ``rasa run actions``:

- it reads and validates the settings (kb/settings.py): a bad value stops the server here, with
  one line naming the variable (``posbot: bad setting NAME='value': why``);
- it builds the retrieval indexes (actions/store.py ``warm``) before rasa_sdk opens its port,
  so ``/health`` answers only once a merchant's first question meets warm indexes
  (``POSBOT_WARM_ACTIONS=0`` skips this).

The arguments are rasa_sdk's own (``--actions``, ``--port``, ``-v`` …), and everything after
the start is rasa_sdk unchanged. rasa_sdk imports every module of the ``actions`` package to
register the actions, this one too: importing it does nothing.
"""

from __future__ import annotations

from typing import Optional, Sequence

from actions.store import warm
from kb.settings import Settings, SettingsError


def start(argv: Optional[Sequence[str]] = None) -> None:
    """Validate the settings, warm the indexes, then serve until stopped.

    On a bad setting, exits (status 1) with the message, before anything is built or served.
    """
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        raise SystemExit(f"posbot: {error}") from None
    # rasa_sdk only now: importing it prints warnings that would bury that one line.
    from rasa_sdk.__main__ import main_from_args
    from rasa_sdk.endpoint import create_argument_parser
    from rasa_sdk.utils import configure_colored_logging

    args = create_argument_parser().parse_args(argv)
    if settings.warm_actions:
        configure_colored_logging(args.loglevel)  # rasa_sdk sets the same up again, later
        warm()
    main_from_args(args)


if __name__ == "__main__":
    start()
