"""``python -m bot.serve run …``: Rasa's own command line, with the API token added in-process.

``make run`` and the launcher start the Rasa server through this module instead of the ``rasa``
script, so that ``--auth-token`` never appears in the process list (``ps`` shows every argument
to every user of the machine) and is never written to a log or a shell history. Everything else
is Rasa's CLI unchanged. Without ``--enable-api`` no token is needed and none is added.
"""

from __future__ import annotations

import sys

from bot.api_token import rasa_token


def rasa_argv(argv: list[str], token: str) -> list[str]:
    """``argv`` for Rasa's CLI: ``--auth-token`` added when the HTTP API is enabled."""
    argv = list(argv)
    if argv[:1] == ["run"] and "--enable-api" in argv and "--auth-token" not in argv:
        argv += ["--auth-token", token]
    return argv


def main() -> None:
    argv = sys.argv[1:]
    token = rasa_token() if "--enable-api" in argv else ""
    sys.argv = ["rasa", *rasa_argv(argv, token)]
    from rasa.__main__ import main as rasa_main

    rasa_main()


if __name__ == "__main__":
    main()
