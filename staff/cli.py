"""The ``posbot`` command: knowledge-base tools, handoffs and reports for staff and developers.

posbot kb lint            check kb/content, print file:line: problem
posbot kb build [--force] lint, then load into the database in one transaction
posbot kb dict DIR        write the jieba dictionary generated from the KB vocabulary
posbot kb nlu DIR         write DIR/kb.yml: the KB's questions as NLU training examples
posbot handoff list [--all]            conversations waiting for a person
posbot handoff release ID [--rasa-url URL]   resume the bot for that conversation
posbot api-token rotate   new Rasa API secret in var/rasa-token (restart the bot after)
posbot staff add NAME --role agent|editor|admin [--password-stdin]   console account
posbot staff list | disable NAME
posbot report [--since YYYY-MM-DD] [--until YYYY-MM-DD] [--tracker-db URL]
                          most frequent unanswered questions and answers rated 没帮助
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from bot.api_token import TokenError, fingerprint, rasa_token, rotate
from kb.build import KbInvalid, build
from kb.loader import format_problems, load_content
from kb.nlu_data import write_kb_nlu
from kb.settings import SettingsError, content_dir, database_url
from kb.store import KnowledgeStore
from kb.vocabulary import Vocabulary, write_jieba_dictionary
from records.store import HANDOFF_WAITING, RecordStore
from staff.accounts import ROLES, StaffError, StaffStore
from staff.handoff import ReleaseError, format_handoffs, rasa_url_from_env, release
from staff.report import Period, build_report, default_tracker_url, format_report

logger = logging.getLogger(__name__)


def _kb_lint(args: argparse.Namespace) -> int:
    content = load_content(args.content)
    if content.problems:
        print(format_problems(content.problems))
        print(f"\n{len(content.problems)} problem(s) in {args.content}", file=sys.stderr)
        return 1
    print(
        f"kb ok: {len(content.topics)} topics, {len(content.brands)} brands, "
        f"{sum(len(e['codes']) for e in content.error_codes)} error codes, "
        f"{len(content.symptoms)} symptoms"
    )
    return 0


def _kb_build(args: argparse.Namespace) -> int:
    content = load_content(args.content)
    engine = create_engine(args.database)
    try:
        result = build(engine, content, force=args.force)
    except KbInvalid as invalid:
        print(format_problems(invalid.problems))
        print(f"\nnothing was loaded: fix the {len(invalid.problems)} problem(s) above", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    state = "loaded" if result.changed else "unchanged"
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items())
    print(f"kb {state} ({counts}) into {engine.url.render_as_string(hide_password=True)}")
    return 0


def _kb_dict(args: argparse.Namespace) -> int:
    content = load_content(args.content)
    if content.problems:
        print(format_problems(content.problems))
        return 1
    path = write_jieba_dictionary(Vocabulary.from_content(content), Path(args.directory))
    print(f"wrote {path}")
    return 0


def _kb_nlu(args: argparse.Namespace) -> int:
    content = load_content(args.content)
    if content.problems:
        print(format_problems(content.problems))
        return 1
    path = write_kb_nlu(content, Path("data/nlu"), Path(args.directory))
    print(f"wrote {path}")
    return 0


def _handoff_list(args: argparse.Namespace) -> int:
    engine = create_engine(args.database)
    try:
        store = RecordStore(engine)
        print(format_handoffs(store.handoffs(None if args.all else HANDOFF_WAITING)))
    finally:
        engine.dispose()
    return 0


def _api_token_rotate(_args: argparse.Namespace) -> int:
    try:
        path = rotate()
    except TokenError as error:
        print(f"not rotated: {error}", file=sys.stderr)
        return 1
    print(
        f"new Rasa API token {fingerprint(rasa_token())} written to {path}; restart the bot "
        "(`make run`) so the server and the tools use it"
    )
    return 0


def _handoff_release(args: argparse.Namespace) -> int:
    engine = create_engine(args.database)
    try:
        result = release(RecordStore(engine), args.id, args.rasa_url, token=rasa_token(create=False))
    except (ReleaseError, TokenError, FileNotFoundError) as error:
        print(f"not released: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    handoff = result.handoff
    if result.already_released:
        print(
            f"handoff {handoff.id} was already released; conversation {handoff.conversation_id} "
            "resumed again"
        )
    else:
        told = (
            "release message sent to the merchant"
            if result.merchant_notified
            else "release message NOT sent (see the log)"
        )
        print(f"handoff {handoff.id} released: conversation {handoff.conversation_id} resumed, {told}")
    return 0


def _report(args: argparse.Namespace) -> int:
    try:
        period = Period.parse(args.since, args.until)
    except ValueError as error:
        print(f"bad date: {error} (write YYYY-MM-DD)", file=sys.stderr)
        return 2
    tracker_engine = create_engine(args.tracker_db)
    engine = create_engine(args.database)
    try:
        report = build_report(tracker_engine, RecordStore(engine), KnowledgeStore(engine), period)
    except OperationalError as error:
        print(f"cannot read the tracker store {args.tracker_db}: {error.orig}", file=sys.stderr)
        return 1
    finally:
        tracker_engine.dispose()
        engine.dispose()
    print(format_report(report, args.limit))
    return 0


def _read_password(args: argparse.Namespace) -> Optional[str]:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        print("the two passwords differ; nothing was changed", file=sys.stderr)
        return None
    return first


def _staff_add(args: argparse.Namespace) -> int:
    password = _read_password(args)
    if password is None:
        return 1
    try:
        user = StaffStore(create_engine(args.database)).add_user(
            args.name, args.role, password, display_name=args.display or ""
        )
    except StaffError as error:
        print(f"not added: {error}", file=sys.stderr)
        return 1
    print(f"staff account {user.name} ({user.role}) added; log in at /staff/")
    if not user.display_name:
        print(
            f"merchants will see the name {user.name!r}; `posbot staff display {user.name} 小王` changes it"
        )
    return 0


def _staff_display(args: argparse.Namespace) -> int:
    try:
        user = StaffStore(create_engine(args.database)).set_display_name(args.name, args.display)
    except StaffError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(f"merchants now see {user.name} as {user.shown_name!r}")
    return 0


def _staff_list(args: argparse.Namespace) -> int:
    for user in StaffStore(create_engine(args.database)).users():
        state = "disabled" if user.disabled else "active"
        print(f"{user.name:20}  {user.role:7}  {state:8}  {user.shown_name}")
    return 0


def _staff_disable(args: argparse.Namespace) -> int:
    try:
        StaffStore(create_engine(args.database)).set_disabled(args.name, True)
    except StaffError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(f"{args.name} disabled; their console sessions are ended")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posbot", description="posbot staff and developer tools")
    commands = parser.add_subparsers(dest="command", required=True)

    kb = commands.add_parser("kb", help="knowledge base: lint, build, dict").add_subparsers(
        dest="kb_command", required=True
    )
    lint = kb.add_parser("lint", help="check kb/content")
    lint.set_defaults(func=_kb_lint)
    build_cmd = kb.add_parser("build", help="lint, then load kb/content into the database")
    build_cmd.add_argument("--force", action="store_true", help="reload even if unchanged")
    build_cmd.add_argument("--database", default=None, help="SQLAlchemy URL (POSBOT_DATABASE_URL)")
    build_cmd.set_defaults(func=_kb_build)
    dict_cmd = kb.add_parser("dict", help="write the jieba dictionary for training")
    dict_cmd.add_argument("directory", nargs="?", default="var/jieba")
    dict_cmd.set_defaults(func=_kb_dict)
    nlu_cmd = kb.add_parser("nlu", help="write the KB's questions as NLU training data")
    nlu_cmd.add_argument("directory", nargs="?", default="var/nlu")
    nlu_cmd.set_defaults(func=_kb_nlu)
    for sub in (lint, build_cmd, dict_cmd, nlu_cmd):
        sub.add_argument("--content", type=Path, default=None, help="content folder (kb/content)")

    handoff = commands.add_parser("handoff", help="human handoff: list, release").add_subparsers(
        dest="handoff_command", required=True
    )
    list_cmd = handoff.add_parser("list", help="handoffs waiting for a person")
    list_cmd.add_argument("--all", action="store_true", help="released ones too")
    list_cmd.set_defaults(func=_handoff_list)
    release_cmd = handoff.add_parser("release", help="resume the bot for a handoff's conversation")
    release_cmd.add_argument("id", type=int, help="handoff id from `posbot handoff list`")
    release_cmd.add_argument(
        "--rasa-url",
        default=rasa_url_from_env(),
        help="Rasa server with --enable-api (POSBOT_RASA_URL, default %(default)s)",
    )
    release_cmd.set_defaults(func=_handoff_release)

    token_cmd = commands.add_parser("api-token", help="the Rasa HTTP API secret").add_subparsers(
        dest="action", required=True
    )
    rotate_cmd = token_cmd.add_parser("rotate", help="write a new secret to var/rasa-token")
    rotate_cmd.set_defaults(func=_api_token_rotate)

    report = commands.add_parser("report", help="unanswered questions and answers rated 没帮助")
    report.add_argument("--since", help="first day, YYYY-MM-DD (default: 6 days before --until)")
    report.add_argument("--until", help="last day, YYYY-MM-DD (default: today)")
    report.add_argument(
        "--tracker-db",
        default=default_tracker_url(),
        help="SQLAlchemy URL of Rasa's SQL tracker store (default %(default)s)",
    )
    report.add_argument("--limit", type=int, default=20, help="rows per section")
    report.set_defaults(func=_report)
    staff = commands.add_parser("staff", help="staff console accounts").add_subparsers(
        dest="staff_command", required=True
    )
    add_cmd = staff.add_parser("add", help="create a console account")
    add_cmd.add_argument("name")
    add_cmd.add_argument("--role", choices=ROLES, required=True)
    add_cmd.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    add_cmd.add_argument("--display", help="the name merchants see (e.g. 小王); default: NAME")
    add_cmd.set_defaults(func=_staff_add)
    staff_list = staff.add_parser("list", help="accounts and their roles")
    staff_list.set_defaults(func=_staff_list)
    disable_cmd = staff.add_parser("disable", help="lock an account and end its sessions")
    disable_cmd.add_argument("name")
    disable_cmd.set_defaults(func=_staff_disable)
    display_cmd = staff.add_parser("display", help="set the name merchants see for an account")
    display_cmd.add_argument("name")
    display_cmd.add_argument("display", help='e.g. 小王; "" shows the login name again')
    display_cmd.set_defaults(func=_staff_display)
    for sub in (list_cmd, release_cmd, report, add_cmd, staff_list, disable_cmd, display_cmd):
        sub.add_argument("--database", default=None, help="SQLAlchemy URL (POSBOT_DATABASE_URL)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:  # a bad POSBOT_* value: one line naming it, not a traceback
        args = build_parser().parse_args(argv)
        if getattr(args, "content", "unset") is None:
            args.content = content_dir()
        if getattr(args, "database", "unset") is None:
            args.database = database_url()
    except SettingsError as error:
        raise SystemExit(f"posbot: {error}") from None
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
