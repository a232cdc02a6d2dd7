"""The staff console's knowledge editor (issue 16): one topic, error code or brand at a time,
written into its YAML file in kb/content, checked by the linter, built into the KB, with a history.

The YAML files stay the source of truth (reviewed and committed in git). ``save`` is the one
writer; under the content lock it

1. reads the entity's file and finds the entity (a topic by ``id``, an error-code entry by its
   first code, a brand by ``name``); the editor sends the version (a hash of the entity) it
   loaded, and a save against an entity that changed since is refused (``Stale``: 409);
2. changes only the fields that differ, in the ruamel.yaml round-trip tree (comments, key order,
   quoting and flow/block style of untouched values stay), dumps the file and checks that no line
   outside the entity changed (``git diff`` shows exactly what staff changed);
3. checks the WHOLE content as it would then be, in a scratch folder (symlinks to the other
   files), with the same linter as ``posbot kb lint``: any problem → ``Refused`` with the
   linter's ``file:line: message`` lines, and the real file is never written;
4. records the entity before and after in ``kb_history`` (who, when, file, entity, before,
   after), writes the file in place and builds the KB into the database (kb/learned.py's
   ``StoredVectors``: only new questions are encoded), so the change is live at the next message
   without a restart. A failed build puts the file back and drops the history row.

A restore is a save of a history row's ``before`` (linted, recorded and audited like any save).
``create`` adds a new entity as text after the file's last line (every existing byte stays); the
restore of a creation removes the entity's lines again.

The content lock is ``fcntl.flock`` on the content folder itself and then on learned.yml (the
lock the learning queue's ``teach`` takes), so two editors, or an editor and a teacher, take
turns: every save lints and builds the content including the other's change.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import re
import tempfile
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from sqlalchemy import Column, DateTime, Integer, String, Text, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from kb.build import build
from kb.encoder import SentenceEncoder, get_encoder
from kb.learned import LOCK_TIMEOUT_S, Busy, Refused, StoredVectors, _lock, _write
from kb.loader import CODE_GROUPS, FLOWS, LEARNED_FILE, TOPICS_DIR, Content, Problem, load_content
from kb.schema import Base, utcnow
from kb.settings import TOPIC_INTENTS

__all__ = [
    "Busy",
    "Refused",
    "Stale",
    "NotFound",
    "Invalid",
    "Saved",
    "HistoryStore",
    "KINDS",
    "save",
    "create",
    "restore",
    "read_entity",
    "entities",
    "lint_with",
    "version_of",
]

TOPIC, ERROR_CODE, BRAND = "topic", "error_code", "brand"
#: Longest text of one field, and of one list (items).
MAX_FIELD = 2000
MAX_ITEMS = 100


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # text | long | list | map | flag
    label: str
    required: bool = True
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    list_key: str  # the file's top-level list
    id_field: str
    fields: tuple[Field, ...]

    def files(self, directory: Path) -> list[str]:
        if self.name == TOPIC:
            return [f"{TOPICS_DIR}/{p.name}" for p in sorted((directory / TOPICS_DIR).glob("*.yml"))]
        return [f"{self.list_key}.yml"]

    def entity_id(self, entry: Any) -> str:
        value = entry.get(self.id_field) if isinstance(entry, dict) else None
        if self.name == ERROR_CODE:
            value = value[0] if isinstance(value, list) and value else None
        return "" if value is None else str(value).strip()


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            TOPIC,
            "话题",
            "topics",
            "id",
            (
                Field("id", "text", "id（不能改）"),
                Field("intent", "text", "意图", choices=TOPIC_INTENTS),
                Field("family", "text", "分组（family）"),
                Field("question", "text", "标准问题"),
                Field("questions", "list", "其他问法（每行一个，至少 5 个）"),
                Field("answer", "long", "回答"),
                Field("steps", "list", "步骤（每行一步）", required=False),
                Field("brand_notes", "map", "品牌说明（每行：品牌：说明）", required=False),
                Field("flow", "text", "按钮（walk:<故障> 或 " + "、".join(FLOWS) + "）", required=False),
                Field("source", "text", "出处"),
            ),
        ),
        Kind(
            ERROR_CODE,
            "错误码",
            "error_codes",
            "codes",
            (
                Field("codes", "list", "代码（第一个不能改）"),
                Field("name", "text", "名称"),
                Field("aliases", "list", "屏幕文字（每行一个）", required=False),
                Field("meaning", "long", "含义"),
                Field("cause", "long", "原因"),
                Field("action", "long", "商户怎么做"),
                Field("group", "text", "类别", choices=CODE_GROUPS),
                Field("retry", "flag", "可以重试"),
                Field("high_risk", "flag", "高风险（提醒不要完成交易）"),
                Field("source", "text", "出处"),
            ),
        ),
        Kind(
            BRAND,
            "品牌",
            "brands",
            "name",
            (
                Field("name", "text", "名称（不能改）"),
                Field("aliases", "list", "别名（每行一个）", required=False),
                Field("hotline", "text", "客服电话（只写有出处的号码）", required=False),
                Field("channels", "list", "联系渠道（每行一个）"),
                Field("fault_handling", "long", "故障处理"),
                Field("software_updates", "long", "系统更新"),
                Field("after_sales", "long", "售后"),
                Field("source", "text", "出处"),
            ),
        ),
    )
}


# ------------------------------------------------------------------ errors and results
class NotFound(LookupError):
    """No such entity (or kind, or history row)."""


class Invalid(ValueError):
    """The request itself is wrong (a field of the wrong type, an id changed): 400."""


class Stale(Exception):
    """The entity changed since the editor loaded it: 409 with its current version."""

    def __init__(self, current: Optional[str]) -> None:
        super().__init__("stale version")
        self.current = current


@dataclass(frozen=True)
class Saved:
    kind: str
    id: str
    file: str
    version: str
    history_id: int
    changed: bool


# ------------------------------------------------------------------ YAML
def _yaml() -> YAML:
    yaml = YAML()
    # ruamel.yaml 0.17 leaves these attributes unannotated (``= None``): mypy reads them as None.
    yaml.width = 4096  # type: ignore[assignment]
    yaml.preserve_quotes = True  # type: ignore[assignment]
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def version_of(entity: Optional[dict[str, Any]]) -> str:
    """The entity's version: a hash of its values (not of comments or layout)."""
    if entity is None:
        return "absent"
    text = json.dumps(entity, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def entity_text(entity: Optional[dict[str, Any]]) -> str:
    """The entity as YAML (what the history stores and shows); '' for none."""
    if entity is None:
        return ""
    buffer = io.StringIO()
    yaml = _yaml()
    yaml.dump(_scalarised(entity), buffer)
    return buffer.getvalue()


def _parse_text(text: str) -> Optional[dict[str, Any]]:
    if not text.strip():
        return None
    doc = YAML(typ="safe").load(text)
    if not isinstance(doc, dict):
        raise Invalid("历史记录里的内容不是一个条目")
    return {str(k): v for k, v in doc.items()}


_RESOLVER = YAML(typ="safe")


def _needs_quotes(text: str) -> bool:
    """Whether YAML would read the plain scalar as something else than this text ("05", "true")."""
    try:
        return not isinstance(_RESOLVER.load(text), str)
    except Exception:
        return True


def _scalar(value: Any) -> Any:
    if isinstance(value, str) and value and _needs_quotes(value):
        return DoubleQuotedScalarString(value)
    return value


def _scalarised(value: Any) -> Any:
    if isinstance(value, dict):
        out = CommentedMap()
        for k, v in value.items():
            out[k] = _scalarised(v)
        return out
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return _scalar(value)


@dataclass
class _Located:
    kind: Kind
    file: str
    text: str
    doc: Any
    entries: CommentedSeq
    index: Optional[int]  # None: not in this file

    @property
    def entry(self) -> Optional[CommentedMap]:
        return None if self.index is None else self.entries[self.index]

    def plain(self) -> Optional[dict[str, Any]]:
        return None if self.entry is None else _plain(self.entry)

    def line_range(self) -> tuple[int, int]:
        """0-based [first, end) lines of the entity, up to the next entry (or the file's end)."""
        assert self.index is not None
        start = self.entries[self.index].lc.line
        end = (
            self.entries[self.index + 1].lc.line
            if self.index + 1 < len(self.entries)
            else len(self.text.splitlines())
        )
        return start, end


def _read(directory: Path, kind: Kind, file: str, entity_id: Optional[str]) -> _Located:
    path = directory / file
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise Refused(
            [Problem(file, 1, f"not UTF-8 text ({error.reason}): save the file as UTF-8")]
        ) from None
    try:
        doc = _yaml().load(text)
    except Exception as error:
        raise Refused([Problem(file, 1, f"YAML syntax error: {error}")]) from None
    entries = doc.get(kind.list_key) if isinstance(doc, dict) else None
    if not isinstance(entries, CommentedSeq):
        raise Refused([Problem(file, 1, f"expected a top-level list `{kind.list_key}:`")])
    index = None
    if entity_id is not None:
        index = next((i for i, e in enumerate(entries) if kind.entity_id(e) == entity_id), None)
    return _Located(kind, file, text, doc, entries, index)


def _locate(directory: Path, kind: Kind, entity_id: str) -> _Located:
    """The entity in its file; a broken file (other than the one holding it) does not hide it."""
    broken: Optional[Refused] = None
    for file in kind.files(directory):
        if not (directory / file).is_file():
            continue
        try:
            located = _read(directory, kind, file, entity_id)
        except Refused as refusal:
            broken = broken or refusal
            continue
        if located.index is not None:
            return located
    if broken is not None:  # it may be in the file that cannot be read: say why
        raise broken
    raise NotFound(f"没有这个{kind.label}：{entity_id}")


def _kind(name: str) -> Kind:
    if name not in KINDS:
        raise NotFound(f"没有这种条目：{name}")
    return KINDS[name]


# ------------------------------------------------------------------ reading
def entities(content: Content) -> list[dict[str, Any]]:
    """Every editable entity for the console's list: kind, id, title, file."""
    items = [
        {
            "kind": TOPIC,
            "id": t["id"],
            "title": t["question"],
            "file": t.get("_file", ""),
            "detail": t["answer"][:60],
        }
        for t in content.topics
    ]
    items += [
        {
            "kind": ERROR_CODE,
            "id": e["codes"][0],
            "title": " ".join(e["codes"]) + " " + e["name"],
            "file": "error_codes.yml",
            "detail": e["meaning"][:60],
        }
        for e in content.error_codes
        if e["codes"]
    ]
    items += [
        {
            "kind": BRAND,
            "id": b["name"],
            "title": b["name"],
            "file": "brands.yml",
            "detail": "、".join(b["aliases"])[:60],
        }
        for b in content.brands
    ]
    return items


def read_entity(directory: Path, kind_name: str, entity_id: str) -> dict[str, Any]:
    kind = _kind(kind_name)
    located = _locate(directory, kind, entity_id)
    entity = located.plain()
    start, _ = located.line_range()
    return {
        "kind": kind.name,
        "id": entity_id,
        "file": located.file,
        "line": start + 1,
        "fields": _form_values(kind, entity),
        "version": version_of(entity),
        "text": entity_text(entity),
    }


def _form_values(kind: Kind, entity: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The editable fields as the form shows them (missing optional fields empty)."""
    out: dict[str, Any] = {}
    for field in kind.fields:
        value = (entity or {}).get(field.name)
        if field.kind == "list":
            out[field.name] = [str(v) for v in value] if isinstance(value, list) else []
        elif field.kind == "map":
            out[field.name] = {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
        elif field.kind == "flag":
            out[field.name] = value if isinstance(value, bool) else False
        else:
            out[field.name] = "" if value is None else str(value)
    return out


# ------------------------------------------------------------------ checking a request
def _clean_text(field: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"“{field.label}”必须是文字")
    value = unicodedata.normalize("NFC", value).strip()
    if len(value) > MAX_FIELD:
        raise Invalid(f"“{field.label}”最多 {MAX_FIELD} 个字")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise Invalid(f"“{field.label}”里不能有换行或控制字符（分条的内容请写在列表里，每行一条）")
    return value


def clean_fields(kind: Kind, fields: Any) -> dict[str, Any]:
    """The request's fields, checked for type and size (the linter judges the rest)."""
    if not isinstance(fields, dict):
        raise Invalid('fields 必须是一个对象，例如 {"answer": "……"}')
    known = {f.name: f for f in kind.fields}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise Invalid(f"不认识的字段：{', '.join(map(str, unknown))[:200]}")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        field = known[name]
        if field.kind == "list":
            if not isinstance(value, list) or len(value) > MAX_ITEMS:
                raise Invalid(f"“{field.label}”必须是最多 {MAX_ITEMS} 条文字的列表")
            out[name] = [v for v in (_clean_text(field, item) for item in value) if v]
        elif field.kind == "map":
            if not isinstance(value, dict) or len(value) > MAX_ITEMS:
                raise Invalid(f"“{field.label}”必须是“品牌 → 说明”的对象")
            cleaned = {_clean_text(field, k): _clean_text(field, v) for k, v in value.items()}
            out[name] = {k: v for k, v in cleaned.items() if k and v}
        elif field.kind == "flag":
            if not isinstance(value, bool):
                raise Invalid(f"“{field.label}”必须是 true 或 false")
            out[name] = value
        else:
            out[name] = _clean_text(field, value)
    return out


# ------------------------------------------------------------------ changing the tree in place
def _assign_list(seq: CommentedSeq, new: list[Any]) -> None:
    """Make ``seq`` hold ``new``, item by item: unchanged items keep their quoting and comments,
    the list its flow/block style; the comment after the last item moves with the end."""
    last_comment = seq.ca.items.get(len(seq) - 1) if len(seq) else None
    for i, value in enumerate(new[: len(seq)]):
        if _plain(seq[i]) != value:
            seq[i] = _scalar(value)
    while len(seq) > len(new):
        seq.ca.items.pop(len(seq) - 1, None)
        del seq[len(seq) - 1]
    for value in new[len(seq) :]:
        seq.append(_scalar(value))
    if last_comment is not None and len(seq) and (len(seq) - 1) not in seq.ca.items:
        seq.ca.items[len(seq) - 1] = last_comment


def _assign_map(node: CommentedMap, new: dict[str, Any]) -> None:
    for key in [k for k in node if str(k) not in new]:
        del node[key]
    for key, value in new.items():
        if key in node:
            if _plain(node[key]) != value:
                node[key] = _scalar(value)
        else:
            node[key] = _scalar(value)


def _new_value(field: Field, value: Any) -> Any:
    if field.kind == "list":
        seq = CommentedSeq(_scalar(v) for v in value)
        if field.name in ("aliases", "codes", "channels"):  # as the files write them: [a, b]
            seq.fa.set_flow_style()
        return seq
    if field.kind == "map":
        node = CommentedMap()
        for key, text in value.items():
            node[key] = _scalar(text)
        return node
    return _scalar(value)


def _empty(field: Field, value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _apply(kind: Kind, entry: CommentedMap, fields: dict[str, Any]) -> None:
    """Change only what differs; an emptied optional text or map is removed (an emptied list
    stays as ``[]``), a new field is inserted after the one that precedes it in the form."""
    order = [f.name for f in kind.fields]
    for field in kind.fields:
        if field.name not in fields:
            continue
        value = fields[field.name]
        if field.name in entry and _plain(entry[field.name]) == value:
            continue  # unchanged (also an empty list kept as `[]`)
        if _empty(field, value) and not field.required:
            if field.name in entry and field.kind == "list":
                entry[field.name] = _new_value(field, [])  # an emptied list stays as `[]`
            elif field.name in entry:
                del entry[field.name]
            continue
        if field.name in entry:
            current = entry[field.name]
            if _plain(current) == value:
                continue
            if field.kind == "list" and isinstance(current, CommentedSeq) and len(current):
                _assign_list(current, value)
            elif field.kind == "map" and isinstance(current, CommentedMap):
                _assign_map(current, value)
            else:
                entry[field.name] = _new_value(field, value)
            continue
        before = [name for name in order[: order.index(field.name)] if name in entry]
        position = (list(entry).index(before[-1]) + 1) if before else 0
        entry.insert(position, field.name, _new_value(field, value))


def _dump(doc: Any) -> str:
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    return buffer.getvalue()


def _only_within(before: str, after: str, start: int, end: int) -> bool:
    """Whether every changed line of ``before`` lies in [start, end) (insertions up to ``end``)."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag != "equal" and not (start <= i1 and i2 <= end):
            return False
    return True


# ------------------------------------------------------------------ linting a candidate
def lint_with(directory: Path, replacements: dict[str, bytes]) -> Content:
    """The content of ``directory`` as it would be with ``replacements`` ({relative path:
    bytes}), checked by the linter in a scratch folder; the real files are not touched."""
    with tempfile.TemporaryDirectory(prefix="posbot-edit-") as scratch_name:
        scratch = Path(scratch_name)
        for child in directory.iterdir():
            if child.name.startswith("."):
                continue
            if child.is_dir() and any(r.startswith(child.name + "/") for r in replacements):
                (scratch / child.name).mkdir()
                for grandchild in child.iterdir():
                    os.symlink(grandchild.resolve(), scratch / child.name / grandchild.name)
            else:
                os.symlink(child.resolve(), scratch / child.name)
        for relative, data in replacements.items():
            target = scratch / relative
            if target.is_symlink():
                target.unlink()
            target.write_bytes(data)
        return load_content(scratch)


# ------------------------------------------------------------------ the history table
class KbHistory(Base):
    """One save from the knowledge editor: the entity before and after, as YAML."""

    __tablename__ = "kb_history"
    id = Column(Integer, primary_key=True, autoincrement=True)
    at = Column(DateTime, nullable=False, default=utcnow, index=True)
    staff = Column(String(60), nullable=False)
    action = Column(String(20), nullable=False)  # save | create | restore
    kind = Column(String(20), nullable=False)
    entity = Column(String(120), nullable=False, index=True)
    file = Column(String(200), nullable=False)
    before = Column(Text, nullable=False, default="")
    after = Column(Text, nullable=False, default="")
    restored_from = Column(Integer, nullable=True)


@dataclass(frozen=True)
class HistoryView:
    id: int
    at: Any
    staff: str
    action: str
    kind: str
    entity: str
    file: str
    before: str
    after: str
    restored_from: Optional[int]

    def as_json(self) -> dict[str, Any]:
        diff = "\n".join(
            difflib.unified_diff(
                self.before.splitlines(), self.after.splitlines(), "之前", "之后", lineterm="", n=1
            )
        )
        return {
            "id": self.id,
            "at": self.at.isoformat(timespec="seconds") + "Z",
            "staff": self.staff,
            "action": self.action,
            "kind": self.kind,
            "entity": self.entity,
            "file": self.file,
            "before": self.before,
            "after": self.after,
            "diff": diff,
            "restored_from": self.restored_from,
        }


class HistoryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        KbHistory.__table__.create(engine, checkfirst=True)

    def add(self, **values: Any) -> int:
        with Session(self.engine) as session, session.begin():
            row = KbHistory(**values)
            session.add(row)
            session.flush()
            return int(row.id)

    def drop(self, history_id: int) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(KbHistory).where(KbHistory.id == history_id))

    def get(self, history_id: int) -> Optional[HistoryView]:
        with Session(self.engine) as session:
            row = session.get(KbHistory, history_id)
            return _history(row) if row else None

    def entries(
        self, kind: Optional[str] = None, entity: Optional[str] = None, limit: int = 50
    ) -> list[HistoryView]:
        query = select(KbHistory).order_by(KbHistory.id.desc()).limit(limit)
        if kind:
            query = query.where(KbHistory.kind == kind)
        if entity:
            query = query.where(KbHistory.entity == entity)
        with Session(self.engine) as session:
            return [_history(row) for row in session.scalars(query)]


def _history(row: KbHistory) -> HistoryView:
    return HistoryView(
        row.id,
        row.at,
        row.staff,
        row.action,
        row.kind,
        row.entity,
        row.file,
        row.before or "",
        row.after or "",
        row.restored_from,
    )


# ------------------------------------------------------------------ the writer
class _Descriptor:
    """What ``_lock`` needs of a file: its descriptor (here the content folder's)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


@contextmanager
def content_lock(directory: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive, across processes: the content folder, then learned.yml (the learning queue's
    lock) when it exists. Raises ``Busy`` after ``timeout`` seconds."""
    folder = os.open(directory, os.O_RDONLY)
    learned = None
    try:
        _lock(_Descriptor(folder), timeout)  # type: ignore[arg-type]
        if (directory / LEARNED_FILE).exists():
            learned = open(directory / LEARNED_FILE, "rb")
            _lock(learned, timeout)
        yield
    finally:
        if learned is not None:
            learned.close()
        os.close(folder)  # releases the lock


def _commit(
    directory: Path,
    kind: Kind,
    entity_id: str,
    file: str,
    before_text: str,
    after_text: str,
    before: Optional[dict[str, Any]],
    after: Optional[dict[str, Any]],
    *,
    staff: str,
    engine: Engine,
    encoder: Optional[SentenceEncoder],
    action: str,
    restored_from: Optional[int],
) -> Saved:
    """Lint the content with ``after_text`` as ``file``, record, write, build (under the lock)."""
    candidate = lint_with(directory, {file: after_text.encode("utf-8")})
    if candidate.problems:
        raise Refused(candidate.problems)
    history = HistoryStore(engine)
    history_id = history.add(
        staff=staff[:60],
        action=action,
        kind=kind.name,
        entity=entity_id,
        file=file,
        before=entity_text(before),
        after=entity_text(after),
        restored_from=restored_from,
    )
    before_bytes, after_bytes = before_text.encode("utf-8"), after_text.encode("utf-8")
    try:
        with open(directory / file, "r+b") as handle:
            _write(handle, before_bytes, after_bytes)
            try:
                build(engine, candidate, encoder=StoredVectors(engine, encoder or get_encoder()))
            except BaseException:
                _write(handle, after_bytes, before_bytes)  # the file and the database in step
                raise
    except BaseException:
        history.drop(history_id)
        raise
    return Saved(kind.name, entity_id, file, version_of(after), history_id, True)


def save(
    directory: Path,
    kind_name: str,
    entity_id: str,
    fields: Any,
    version: str,
    *,
    staff: str,
    engine: Engine,
    encoder: Optional[SentenceEncoder] = None,
    lock_timeout: float = LOCK_TIMEOUT_S,
    action: str = "save",
    restored_from: Optional[int] = None,
    replace: bool = False,
) -> Saved:
    """Set the entity's fields, lint, record, write, build. ``replace``: fields not given are
    emptied (a restore sets the whole entity). Raises NotFound, Invalid, Stale, Refused, Busy;
    a failed write or build puts the file back and re-raises."""
    kind = _kind(kind_name)
    cleaned = clean_fields(kind, fields)
    if replace:
        cleaned = {**_form_values(kind, None), **cleaned}
    with content_lock(directory, lock_timeout):
        located = _locate(directory, kind, entity_id)
        entity = located.plain()
        if version != version_of(entity):
            raise Stale(version_of(entity))
        new_id = kind.entity_id(cleaned) if kind.id_field in cleaned else entity_id
        if new_id != entity_id:
            raise Invalid(f"“{kind.fields[0].label.split('（')[0]}”是这个{kind.label}的标识，" "不能在这里改")
        entry = located.entry
        assert entry is not None
        start, end = located.line_range()
        _apply(kind, entry, cleaned)
        after_text = _dump(located.doc)
        if after_text == located.text:
            return Saved(kind.name, entity_id, located.file, version, 0, False)
        if not _only_within(located.text, after_text, start, end):
            raise Refused(
                [
                    Problem(
                        located.file,
                        start + 1,
                        "保存会改动这个条目以外的行（文件的格式"
                        "不是编辑器能原样保留的），请在 git 里直接改这个文件",
                    )
                ]
            )
        return _commit(
            directory,
            kind,
            entity_id,
            located.file,
            located.text,
            after_text,
            entity,
            _plain(entry),
            staff=staff,
            engine=engine,
            encoder=encoder,
            action=action,
            restored_from=restored_from,
        )


def _new_entry(kind: Kind, fields: dict[str, Any]) -> CommentedMap:
    entry = CommentedMap()
    for field in kind.fields:
        value = fields.get(field.name)
        if not _empty(field, value) or (field.kind == "flag" and field.name in fields):
            entry[field.name] = _new_value(field, value)
    return entry


def create(
    directory: Path,
    kind_name: str,
    file: str,
    fields: Any,
    *,
    staff: str,
    engine: Engine,
    encoder: Optional[SentenceEncoder] = None,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> Saved:
    """Add a new entity at the end of ``file`` (a topic file; the one file of codes or brands),
    as text after the file's last line: every existing byte stays. Linted, recorded, built like a
    save; restoring its history row removes it again."""
    kind = _kind(kind_name)
    cleaned = clean_fields(kind, fields)
    if file not in kind.files(directory):
        raise Invalid(f"{kind.label}只能加在这些文件里：{', '.join(kind.files(directory))}")
    entity_id = kind.entity_id(cleaned)
    if not entity_id or not valid_id(entity_id):
        raise Invalid(f"请填写新{kind.label}的“{kind.fields[0].label.split('（')[0]}”")
    with content_lock(directory, lock_timeout):
        try:
            existing = _locate(directory, kind, entity_id)
            raise Invalid(
                f"已经有{kind.label}「{entity_id}」了（{existing.file}），请换一个，" "或打开它来修改"
            )
        except NotFound:
            pass
        located = _read(directory, kind, file, None)
        if list(located.doc)[-1] != kind.list_key:
            raise Refused(
                [Problem(file, 1, f"`{kind.list_key}:` 不是这个文件的最后一项，" "新条目请在 git 里直接加")]
            )
        block = _dump({kind.list_key: [_new_entry(kind, cleaned)]}).split("\n", 1)[1]
        text = located.text if located.text.endswith("\n") else located.text + "\n"
        after_text = text + ("" if text.endswith("\n\n") else "\n") + block
        after = _read_text(kind, file, after_text, entity_id)
        if after.index != len(after.entries) - 1 or after.index != len(located.entries):
            raise Refused([Problem(file, 1, "新条目没能加在列表的最后，请在 git 里直接加")])
        return _commit(
            directory,
            kind,
            entity_id,
            file,
            located.text,
            after_text,
            None,
            after.plain(),
            staff=staff,
            engine=engine,
            encoder=encoder,
            action="create",
            restored_from=None,
        )


def _read_text(kind: Kind, file: str, text: str, entity_id: str) -> _Located:
    doc = _yaml().load(text)
    entries = doc.get(kind.list_key) if isinstance(doc, dict) else None
    if not isinstance(entries, CommentedSeq):
        raise Refused([Problem(file, 1, f"expected a top-level list `{kind.list_key}:`")])
    index = next((i for i, e in enumerate(entries) if kind.entity_id(e) == entity_id), None)
    return _Located(kind, file, text, doc, entries, index)


def _remove(
    directory: Path,
    kind: Kind,
    entity_id: str,
    version: str,
    *,
    staff: str,
    engine: Engine,
    encoder: Optional[SentenceEncoder],
    lock_timeout: float,
    restored_from: int,
) -> Saved:
    """Take the entity's lines out of its file (the comments after it stay: they introduce
    the next entry)."""
    with content_lock(directory, lock_timeout):
        located = _locate(directory, kind, entity_id)
        entity = located.plain()
        if version != version_of(entity):
            raise Stale(version_of(entity))
        start, end = located.line_range()
        lines = located.text.splitlines(keepends=True)
        stop = end
        while stop > start and (not lines[stop - 1].strip() or lines[stop - 1].lstrip().startswith("#")):
            stop -= 1
        if start > 0 and not lines[start - 1].strip() and stop < len(lines) and not lines[stop].strip():
            stop += 1  # one blank line between the neighbours, not two
        while stop == len(lines) and start > 0 and not lines[start - 1].strip():
            start -= 1  # the last entry: no blank line left at the end of the file
        after_text = "".join(lines[:start] + lines[stop:])
        if _read_text(kind, located.file, after_text, entity_id).index is not None:
            raise Refused([Problem(located.file, start + 1, "没能删掉这个条目，请在 git 里直接改")])
        return _commit(
            directory,
            kind,
            entity_id,
            located.file,
            located.text,
            after_text,
            entity,
            None,
            staff=staff,
            engine=engine,
            encoder=encoder,
            action="restore",
            restored_from=restored_from,
        )


def restore(
    directory: Path,
    history_id: int,
    version: str,
    *,
    staff: str,
    engine: Engine,
    encoder: Optional[SentenceEncoder] = None,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> Saved:
    """Put the entity of history row ``history_id`` back as it was before that change (an entity
    that change created is removed again)."""
    row = HistoryStore(engine).get(history_id)
    if row is None:
        raise NotFound("没有这条修改记录")
    kind = _kind(row.kind)
    before = _parse_text(row.before)
    if before is None:
        return _remove(
            directory,
            kind,
            row.entity,
            version,
            staff=staff,
            engine=engine,
            encoder=encoder,
            lock_timeout=lock_timeout,
            restored_from=history_id,
        )
    fields = {f.name: before[f.name] for f in kind.fields if f.name in before}
    return save(
        directory,
        row.kind,
        row.entity,
        _stringified(kind, fields),
        version,
        staff=staff,
        engine=engine,
        encoder=encoder,
        lock_timeout=lock_timeout,
        action="restore",
        restored_from=history_id,
        replace=True,
    )


def _stringified(kind: Kind, fields: dict[str, Any]) -> dict[str, Any]:
    """Values as the form sends them (YAML's numbers and dates back to text)."""
    out: dict[str, Any] = {}
    for field in kind.fields:
        if field.name not in fields:
            continue
        value = fields[field.name]
        if field.kind == "list":
            out[field.name] = [str(v) for v in value or []]
        elif field.kind == "map":
            out[field.name] = {str(k): str(v) for k, v in (value or {}).items()}
        elif field.kind == "flag":
            out[field.name] = value
        else:
            out[field.name] = "" if value is None else str(value)
    return out


def describe(kind_name: str) -> list[dict[str, Any]]:
    """The form of a kind, for the console."""
    return [
        {"name": f.name, "kind": f.kind, "label": f.label, "required": f.required, "choices": list(f.choices)}
        for f in _kind(kind_name).fields
    ]


def files_of(directory: Path) -> Sequence[str]:
    return [file for kind in KINDS.values() for file in kind.files(directory)]


_ID = re.compile(r"^[^\x00-\x1f/]{1,120}$")


def valid_id(entity_id: str) -> bool:
    return bool(_ID.match(entity_id))
