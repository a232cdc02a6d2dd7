"""Teaching from the staff console: add questions to kb/content/learned.yml and rebuild the KB.

``teach`` is the one writer. Under an exclusive lock on learned.yml it

1. reads the file and checks the whole content as it would be with the new entries — in a
   scratch folder (symlinks to the other content files plus the new learned.yml), with the same
   linter as ``posbot kb lint`` (``load_content``); on any problem it raises ``Refused`` with the
   linter's ``file:line: message`` lines and the real file is never written;
2. appends the entries as text at the end of the file, so every existing byte, comment and the
   order stay as they were (`git diff kb/content/learned.yml` shows exactly what staff taught);
   only a file whose ``learned:`` list is not the last thing in it is rewritten with ruamel.yaml's
   round trip, which keeps comments and order too;
3. builds the KB into the database (``kb.build.build``), reusing the question vectors the last
   build stored, so only the new questions are encoded (0.3 s instead of ~50 s), and retrieval
   answers them as soon as the build commits. If the build fails the file is put back as it was.

The lock is ``fcntl.flock`` on learned.yml itself (the file is written in place, never replaced,
so every writer locks the same file): two editors, in one bot process or in several on this host
or on a shared folder, take turns and neither loses the other's additions. It does not stop
someone editing the file by hand in an editor at the same moment.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO, Optional, Sequence

import numpy as np
from ruamel.yaml import YAML
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from kb.build import _learned_owner, build
from kb.encoder import SentenceEncoder, get_encoder
from kb.learning import question_key
from kb.loader import LEARNED_ANSWERS, LEARNED_FILE, Content, Problem, learned_intent, load_content
from kb.schema import QuestionVector

#: How long a second editor waits for the first one's teaching (lint + build take seconds).
LOCK_TIMEOUT_S = 60.0

#: What staff see for the answers that are neither a topic, a walk nor a code (LEARNED_ANSWERS).
FIXED_TITLES = {
    "walk:?": "故障排查：先问是哪种故障",
    "flow:fee_calc": "手续费计算器",
    "flow:handoff": "转人工客服",
    "flow:ticket": "登记报修工单",
    "decline": "婉拒（不在服务范围内）",
    "smalltalk:greet": "寒暄：问候",
    "smalltalk:goodbye": "寒暄：再见",
    "smalltalk:thanks": "寒暄：感谢",
    "smalltalk:affirm": "寒暄：肯定（是的、好的）",
    "smalltalk:deny": "寒暄：否定（不是、不用）",
    "smalltalk:bot_challenge": "寒暄：问是不是机器人",
}


class Refused(Exception):
    """The content would have problems (or already has): nothing was written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = list(problems)


class Busy(Exception):
    """Another editor held the lock for longer than LOCK_TIMEOUT_S."""


@dataclass(frozen=True)
class Taught:
    answer: str
    title: str
    #: The intent the NLU learns from these questions at the next `make train`.
    intent: str
    #: Added to learned.yml now.
    added: list[str] = field(default_factory=list)
    #: Already in learned.yml with this answer: left as they were.
    already: list[str] = field(default_factory=list)
    #: True when retrieval answers them since this build (a topic's or a walk's questions);
    #: codes, flows, decline and small talk are the NLU's to learn, at the next `make train`.
    retrieval: bool = False


# ------------------------------------------------------------------ the answers staff may pick
def answer_kind(answer: str) -> str:
    if answer.startswith("walk:"):
        return "walk"
    if answer.startswith("code:"):
        return "code"
    if answer.startswith("flow:"):
        return "flow"
    if answer.startswith("smalltalk:"):
        return "smalltalk"
    return "decline" if answer == "decline" else "topic"


def answer_choices(content: Content) -> list[dict[str, Any]]:
    """Every answer learned.yml accepts, with the title staff see: topics (their standard
    question), walks (the symptom's label), codes (code and name), flows, decline, small talk."""
    choices = [{"id": t["id"], "title": t["question"]} for t in content.topics]
    choices += [{"id": f"walk:{s['id']}", "title": s["label"]} for s in content.symptoms]
    choices += [
        {"id": f"code:{code}", "title": f"{code} {entry['name']}"}
        for entry in content.error_codes
        for code in entry["codes"]
    ]
    choices += [{"id": answer, "title": FIXED_TITLES.get(answer, answer)} for answer in LEARNED_ANSWERS]
    out = []
    for choice in choices:
        intent = learned_intent(choice["id"], content)
        if intent:  # a topic with an unknown intent is the linter's to report
            out.append(
                {
                    **choice,
                    "kind": answer_kind(choice["id"]),
                    "intent": intent,
                    "retrieval": bool(_learned_owner(choice["id"])),
                }
            )
    return out


def answer_title(content: Content, answer: str) -> str:
    return next((c["title"] for c in answer_choices(content) if c["id"] == answer), answer)


def known_keys(content: Content) -> set[str]:
    """Questions the KB has already: learned.yml's and every topic's (``question_key``)."""
    texts = [item["text"] for item in content.learned]
    texts += [q for t in content.topics for q in [t["question"], *t["questions"]]]
    return {question_key(text) for text in texts}


class ContentCache:
    """``load_content`` (1-2 s) only when a content file changed (size or modification time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Optional[tuple[Any, ...]] = None
        self._content: Optional[Content] = None

    @staticmethod
    def fingerprint(directory: Path) -> tuple[Any, ...]:
        stats = []
        for path in sorted(directory.rglob("*.yml")):
            try:
                stat = path.stat()
            except OSError:
                continue
            stats.append((str(path), stat.st_mtime_ns, stat.st_size))
        return (str(directory), *stats)

    def get(self, directory: Path) -> Content:
        seen = self.fingerprint(directory)
        with self._lock:
            if seen == self._seen and self._content is not None:
                return self._content
        content = load_content(directory)
        with self._lock:
            self._seen, self._content = seen, content
        return content


# ------------------------------------------------------------------ building without re-encoding
class StoredVectors:
    """The encoder, answering from the vectors the last build stored; encodes only new texts."""

    def __init__(self, engine: Engine, base: SentenceEncoder) -> None:
        self.base, self.name, self.dim = base, base.name, base.dim
        self._known: dict[str, np.ndarray] = {}
        try:
            with Session(engine) as session:
                rows = session.execute(
                    select(QuestionVector.text, QuestionVector.vector).where(
                        QuestionVector.encoder == base.name
                    )
                )
                for text, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (self.dim,):
                        self._known[text] = vector
        except SQLAlchemyError:  # never built: encode everything
            self._known = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = []
        for i, text in enumerate(texts):
            vector = self._known.get(text)
            if vector is None:
                missing.append(i)
            else:
                out[i] = vector
        if missing:
            out[missing] = self.base.encode([texts[i] for i in missing])
        return out


# ------------------------------------------------------------------ the writer
def _lock(handle: BinaryIO, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Busy() from None
            time.sleep(0.1)


def _lint(directory: Path, learned: Optional[bytes]) -> Content:
    """The content of ``directory`` as it would be with ``learned`` as learned.yml (None: none)."""
    with tempfile.TemporaryDirectory(prefix="posbot-learned-") as scratch:
        for child in directory.iterdir():
            if child.name != LEARNED_FILE:
                os.symlink(child.resolve(), Path(scratch) / child.name)
        if learned is not None:
            (Path(scratch) / LEARNED_FILE).write_bytes(learned)
        return load_content(Path(scratch))


def _entry(text: str, answer: str, indent: str) -> str:
    """One learned.yml entry, quoted by ruamel.yaml only where YAML needs it."""
    yaml = YAML()
    yaml.width = 4096  # type: ignore[assignment]  # unannotated in ruamel.yaml 0.17 (None)
    buffer = io.StringIO()
    yaml.dump({"text": text, "answer": answer}, buffer)
    lines = buffer.getvalue().splitlines()
    return "".join(f"{indent}{'- ' if i == 0 else '  '}{line}\n" for i, line in enumerate(lines))


def _appended(before: bytes, texts: Sequence[str], answer: str, note: str) -> bytes:
    """``before`` with the entries appended as text (a new file starts with ``learned:``)."""
    text = before.decode("utf-8")
    if not text.strip():
        text = "learned:\n"
    elif not text.endswith("\n"):
        text += "\n"
    indents = re.findall(r"^( *)- +text:", text, flags=re.MULTILINE)
    indent = indents[-1] if indents else "  "
    addition = f"{indent}# {note}\n" if note else ""
    addition += "".join(_entry(t, answer, indent) for t in texts)
    return (text + addition).encode("utf-8")


def _round_trip(before: bytes, texts: Sequence[str], answer: str) -> bytes:
    """``before`` loaded and dumped by ruamel.yaml with the entries added to ``learned:``."""
    yaml = YAML()
    yaml.width = 4096  # type: ignore[assignment]  # unannotated in ruamel.yaml 0.17 (None)
    yaml.preserve_quotes = True  # type: ignore[assignment]
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(before.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("learned"), list):
        return before
    for text in texts:
        doc["learned"].append({"text": text, "answer": answer})
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    return buffer.getvalue().encode("utf-8")


def _appendable(before: bytes) -> bool:
    """Whether entries written at the end of the file land in ``learned:``: it is the last
    top-level key (what follows it is its list, comments and blank lines)."""
    lines = before.decode("utf-8", errors="replace").splitlines()
    top = [line for line in lines if line.strip() and line[0] not in " \t#-"]
    return not top or re.match(r"^learned:\s*(#.*)?$", top[-1]) is not None


def _prior_answers(before: bytes) -> dict[str, str]:
    """learned.yml's texts (lower case) → answer, read fast (libyaml); {} when unreadable (the
    linter then says why)."""
    try:
        doc = YAML(typ="safe").load(before.decode("utf-8"))
    except Exception:
        return {}
    entries = doc.get("learned") if isinstance(doc, dict) else None
    return {
        str(e.get("text")).strip().lower(): str(e.get("answer")).strip()
        for e in entries or []
        if isinstance(e, dict) and "text" in e and "answer" in e
    }


def _ends_with(content: Content, texts: Sequence[str], answer: str) -> bool:
    tail = [(item["text"], item["answer"]) for item in content.learned[-len(texts) :]]
    return tail == [(t.strip(), answer) for t in texts]


def _write(handle: BinaryIO, before: bytes, after: bytes) -> None:
    """Turn the file from ``before`` into ``after``: an append writes only the new bytes."""
    if before and after.startswith(before):
        handle.seek(len(before))
        handle.write(after[len(before) :])
    else:
        handle.seek(0)
        handle.write(after)
    handle.truncate()
    handle.flush()
    os.fsync(handle.fileno())


def teach(
    directory: Path,
    texts: Sequence[str],
    answer: str,
    *,
    staff: str,
    engine: Engine,
    encoder: Optional[SentenceEncoder] = None,
    lock_timeout: float = LOCK_TIMEOUT_S,
    today: Optional[date] = None,
) -> Taught:
    """Add ``texts`` with ``answer`` to learned.yml in ``directory`` and build the KB into
    ``engine``. Raises ``Refused`` (nothing written) or ``Busy``; a failed build restores the
    file and re-raises."""
    path = directory / LEARNED_FILE
    existed = path.exists()
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
    fresh = False
    try:
        _lock(handle, lock_timeout)
        before = handle.read()
        fresh = not existed and not before
        learned = _prior_answers(before)
        new: list[str] = []
        already: list[str] = []
        seen: set[str] = set()
        for text in (t.strip() for t in texts):
            if not text or text.lower() in seen:
                continue
            seen.add(text.lower())
            (already if learned.get(text.lower()) == answer else new).append(text)
        if not new:  # nothing to write: only check the answer
            candidate = _lint(directory, None if fresh else before)
            after = before
        else:
            clean_staff = re.sub(r"\s+", " ", staff).strip() or "staff"
            note = f"staff console, {clean_staff}, {(today or date.today()).isoformat()}"
            after = (
                _appended(before, new, answer, note)
                if _appendable(before)
                else _round_trip(before, new, answer)
            )
            candidate = _lint(directory, after)
        if candidate.problems:
            raise Refused(candidate.problems)
        intent = learned_intent(answer, candidate)
        if intent is None:
            raise Refused([Problem(LEARNED_FILE, 1, f"unknown answer `{answer}`")])
        taught = Taught(
            answer, answer_title(candidate, answer), intent, new, already, bool(_learned_owner(answer))
        )
        if not new:
            return taught
        if not _ends_with(candidate, new, answer):
            raise Refused(
                [
                    Problem(
                        LEARNED_FILE,
                        1,
                        "expected a top-level list `learned:` with " "entries `- text: …` / `answer: …`",
                    )
                ]
            )
        _write(handle, before, after)
        try:
            build(engine, candidate, encoder=StoredVectors(engine, encoder or get_encoder()))
        except BaseException:
            _write(handle, after, before)  # the file and the database stay in step
            raise
        return taught
    except BaseException:
        if fresh and path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise
    finally:
        handle.close()  # releases the lock
