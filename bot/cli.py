"""The ``posbot`` command: knowledge-base tools for staff and developers.

    posbot kb lint            check kb/content, print file:line: problem
    posbot kb build [--force] lint, then load into the database in one transaction
    posbot kb dict DIR        write the jieba dictionary generated from the KB vocabulary
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from sqlalchemy import create_engine

from kb.build import KbInvalid, build
from kb.content import format_problems, load_content
from kb.settings import content_dir, database_url
from kb.vocabulary import Vocabulary, write_jieba_dictionary

logger = logging.getLogger(__name__)


def _kb_lint(args: argparse.Namespace) -> int:
    content = load_content(args.content)
    if content.problems:
        print(format_problems(content.problems))
        print(f"\n{len(content.problems)} problem(s) in {args.content}", file=sys.stderr)
        return 1
    print(f"kb ok: {len(content.topics)} topics, {len(content.brands)} brands, "
          f"{sum(len(e['codes']) for e in content.error_codes)} error codes, "
          f"{len(content.symptoms)} symptoms")
    return 0


def _kb_build(args: argparse.Namespace) -> int:
    content = load_content(args.content)
    engine = create_engine(args.database)
    try:
        result = build(engine, content, force=args.force)
    except KbInvalid as invalid:
        print(format_problems(invalid.problems))
        print(f"\nnothing was loaded: fix the {len(invalid.problems)} problem(s) above",
              file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posbot", description="posbot staff and developer tools")
    commands = parser.add_subparsers(dest="command", required=True)

    kb = commands.add_parser("kb", help="knowledge base: lint, build, dict").add_subparsers(
        dest="kb_command", required=True)
    lint = kb.add_parser("lint", help="check kb/content")
    lint.set_defaults(func=_kb_lint)
    build_cmd = kb.add_parser("build", help="lint, then load kb/content into the database")
    build_cmd.add_argument("--force", action="store_true", help="reload even if unchanged")
    build_cmd.add_argument("--database", default=None, help="SQLAlchemy URL (POSBOT_DATABASE_URL)")
    build_cmd.set_defaults(func=_kb_build)
    dict_cmd = kb.add_parser("dict", help="write the jieba dictionary for training")
    dict_cmd.add_argument("directory", nargs="?", default="var/jieba")
    dict_cmd.set_defaults(func=_kb_dict)
    for sub in (lint, build_cmd, dict_cmd):
        sub.add_argument("--content", type=Path, default=None, help="content folder (kb/content)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "content", "unset") is None:
        args.content = content_dir()
    if getattr(args, "database", "unset") is None:
        args.database = database_url()
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
