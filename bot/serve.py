"""``python -m bot.serve run …``: Rasa's own command line, with posbot's start-up added in-process.

``make run``, the launcher (ops/launcher.py: ``make cluster``, the live tests, ``make bench``)
start the Rasa server through this module instead of the ``rasa`` script:

- it reads and validates the settings (bot/settings.py): a bad value stops the server here,
  with one line naming the variable;
- it installs the speed-ups and the outage fix (bot/speedups/registry.py), the only place they
  are installed; one log line per patch and a summary;
- it adds ``--auth-token`` in-process, so that the token never appears in the process list
  (``ps`` shows every argument to every user of the machine) and is never written to a log or a
  shell history. Without ``--enable-api`` no token is needed and none is added.

Everything else is Rasa's CLI unchanged. ``run actions`` (the action server) gets neither the
speed-ups nor the token.
"""

from __future__ import annotations

import logging
import sys

from bot.api_token import rasa_token


def rasa_argv(argv: list[str], token: str) -> list[str]:
    """``argv`` for Rasa's CLI: ``--auth-token`` added when the HTTP API is enabled.

    One ``--auth-token=<token>`` word: a generated token may begin with "-", which argparse
    would take for an option if the token were a word of its own (the server then refused to
    start, about once in 64 fresh secrets).
    """
    argv = list(argv)
    given = any(word.split("=", 1)[0] == "--auth-token" for word in argv)
    if argv[:1] == ["run"] and "--enable-api" in argv and not given:
        argv.append(f"--auth-token={token}")
    return argv


def serves_the_bot(argv: list[str]) -> bool:
    """``run`` (the Rasa server), not ``run actions`` (the action server)."""
    return argv[:1] == ["run"] and argv[1:2] != ["actions"]


def install_speedups() -> list[str]:
    """Validate the settings and install the patches, logging to stderr (Rasa's logging is set
    up later by its CLI). Exits with status 2 and the message on a bad setting."""
    from bot.settings import Settings, SettingsError
    from bot.speedups import registry
    from kb import settings as kb_settings

    try:
        settings = Settings.from_env()
        kb_settings.Settings.from_env()  # the console and the NLU's KB reads use these too
    except SettingsError as error:  # both sides' (kb/settings.py)
        raise SystemExit(f"posbot: {error}") from None
    log = logging.getLogger("bot.speedups")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s  - %(message)s"))
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        return registry.install(settings)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def main() -> None:
    argv = sys.argv[1:]
    if serves_the_bot(argv):
        install_speedups()
    token = rasa_token() if "--enable-api" in argv else ""
    sys.argv = ["rasa", *rasa_argv(argv, token)]
    from rasa.__main__ import main as rasa_main

    rasa_main()


if __name__ == "__main__":
    main()
