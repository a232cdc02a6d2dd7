"""Load and check the staff-edited YAML content.

Every problem names the file, the line and what to write instead, because the people who edit
these files are support staff, not programmers. Loading never raises on bad content: it returns
the problems next to whatever could be read, and ``posbot kb build`` refuses to load a KB that
has any.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from kb.settings import TOPIC_INTENTS

logger = logging.getLogger(__name__)

FILES = ("brands", "error_codes", "fees", "symptoms", "vocabulary")
#: Optional: questions from the field with the answer that helps them (see ``_load_learned``).
LEARNED_FILE = "learned.yml"
#: What a learned phrasing's answer may be besides a topic id, ``walk:<symptom>`` and
#: ``code:<code>``, with the intent it teaches the NLU.
LEARNED_ANSWERS = {
    "walk:?": "fault_hardware",
    "flow:fee_calc": "fees",
    "flow:handoff": "human_handoff",
    "flow:ticket": "contact_support",
    "decline": "out_of_scope",
    "smalltalk:greet": "greet",
    "smalltalk:goodbye": "goodbye",
    "smalltalk:thanks": "thanks",
    "smalltalk:affirm": "affirm",
    "smalltalk:deny": "deny",
    "smalltalk:bot_challenge": "bot_challenge",
}
#: Symptom category → the intent whose rules start its walk (as kb/store.py CATEGORY_INTENTS).
_WALK_INTENTS = {"hardware": "fault_hardware", "software": "fault_software", "network": "fault_network"}
TOPICS_DIR = "topics"
ERROR_CODE_RE = re.compile(r"^(?:[0-9]{2}|[A-Z][0-9])$")
ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
CODE_GROUPS = ("success", "retry", "no_retry", "operator", "system")
SYMPTOM_CATEGORIES = ("hardware", "software", "network")


#: vocabulary.yml lists the actions read at run time (kb/store.py ``KnowledgeStore.mentions``).
WORD_LISTS = (
    "fee_calc_requests",
    "fee_what_questions",
    "info_question_markers",
    "other_finance",
    "pos_markers",
    "other_devices",
    "other_device_uses",
    "pos_terms",
    "vague_fault_reports",
    "ticket_requests",
    "handoff_cancel",
    "person_requests",
    "person_request_not_before",
    "person_request_not_after",
    "person_route_words",
    "flow_stop_words",
    "acknowledgements",
    "will_try_markers",
    "tried_markers",
    "brand_statement_fillers",
    "empty_words",
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a content file, phrased for the person who has to fix it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class Content:
    """Everything read from kb/content, as plain Python values, plus the problems found."""

    topics: list[dict[str, Any]] = field(default_factory=list)
    brands: list[dict[str, Any]] = field(default_factory=list)
    error_codes: list[dict[str, Any]] = field(default_factory=list)
    fees: dict[str, Any] = field(default_factory=dict)
    symptoms: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    card_types: list[dict[str, Any]] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)
    code_triggers: list[str] = field(default_factory=list)
    code_followers: list[str] = field(default_factory=list)
    #: Word lists the actions read at run time (vocabulary.yml, stored in kb_meta by name).
    word_lists: dict[str, list[str]] = field(default_factory=dict)
    #: learned.yml: {"text", "answer", "intent"} — phrasings retrieval and the NLU learn from.
    learned: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    digest: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def _line(node: Any, key: Any = None) -> int:
    """1-based line of a mapping key (or of the node itself) in the YAML source."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return 1
    try:
        if key is not None:
            return int(lc.key(key)[0]) + 1
        return int(lc.line) + 1
    except (KeyError, TypeError, IndexError):
        return int(getattr(lc, "line", 0)) + 1


def _plain(node: Any) -> Any:
    """ruamel's commented containers → dict/list/str so the rest of the code sees plain data."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


class _Reader:
    """Collects problems while walking one file's entries."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems

    def problem(self, node: Any, key: Any, message: str) -> None:
        self.problems.append(Problem(self.file, _line(node, key), message))

    def text(self, entry: Any, key: str, *, required: bool = True, what: str = "") -> str:
        value = entry.get(key) if isinstance(entry, dict) else None
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.problem(entry, None, f"missing field `{key}`: write `{key}: {what or '……'}`")
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.problem(entry, key, f"`{key}` must be text, write `{key}: {what or '……'}`")
            return ""
        return str(value).strip()

    def text_list(self, entry: Any, key: str, *, required: bool = False) -> list[str]:
        value = entry.get(key) if isinstance(entry, dict) else None
        if value is None:
            if required:
                self.problem(entry, None, f"missing field `{key}`: write `{key}: [……, ……]`")
            return []
        if not isinstance(value, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
        ):
            self.problem(entry, key, f"`{key}` must be a list of texts, write `{key}: [……, ……]`")
            return []
        items = [str(v).strip() for v in value if str(v).strip()]
        if required and not items:
            self.problem(entry, key, f"`{key}` is empty: give at least one item")
        return items

    def number(self, entry: Any, key: str, *, nullable: bool = False) -> float | None:
        value = entry.get(key) if isinstance(entry, dict) else None
        if value is None and nullable and isinstance(entry, dict) and key in entry:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            hint = "a number such as 0.35" + (", or null for no cap" if nullable else "")
            self.problem(
                entry, key if isinstance(entry, dict) and key in entry else None, f"`{key}` must be {hint}"
            )
            return None
        return float(value)

    def flag(self, entry: Any, key: str) -> bool:
        value = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(value, bool):
            self.problem(
                entry,
                key if isinstance(entry, dict) and key in entry else None,
                f"`{key}` must be true or false",
            )
            return False
        return value

    def entries(self, doc: Any, key: str) -> list[Any]:
        value = doc.get(key) if isinstance(doc, dict) else None
        if not isinstance(value, list):
            self.problems.append(
                Problem(self.file, _line(doc), f"expected a top-level list `{key}:` with entries `- …`")
            )
            return []
        good = []
        for item in value:
            if isinstance(item, dict):
                good.append(item)
            else:
                self.problems.append(
                    Problem(
                        self.file,
                        _line(value) + value.index(item),
                        f"each entry of `{key}` must be a mapping with fields (`- id: …`)",
                    )
                )
        return good


def _read_yaml(path: Path, problems: list[Problem], name: str = "") -> Any:
    name = name or path.name
    if not path.exists():
        problems.append(Problem(name, 1, f"file is missing: create kb/content/{name}"))
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(name, 1, f"not UTF-8 text ({exc.reason}): save the file as UTF-8"))
        return None
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = (exc.problem or "broken YAML").strip()
        problems.append(
            Problem(
                name, line, f"YAML syntax error: {what}; check indentation, " "colons and quotes on this line"
            )
        )
        return None
    except YAMLError as exc:
        problems.append(Problem(name, 1, f"YAML syntax error: {exc}"))
        return None
    if not isinstance(doc, dict):
        problems.append(Problem(name, 1, "the file must be a YAML mapping (e.g. `topics:` then entries)"))
        return None
    return doc


def _unique(reader: _Reader, entry: Any, key: str, value: str, seen: dict[str, str]) -> None:
    if value and value in seen:
        reader.problem(
            entry, key, f"duplicate {key} `{value}` (first at {seen[value]}): " "give this entry another one"
        )
    elif value:
        seen[value] = f"{reader.file}:{_line(entry, key)}"


def _source(reader: _Reader, entry: Any) -> str:
    return reader.text(entry, "source", what="https://… or seed:<section>")


def _load_vocabulary(doc: Any, content: Content, aliases: dict[str, str]) -> None:
    reader = _Reader("vocabulary.yml", content.problems)
    for kind, target in (("components", content.components), ("card_types", content.card_types)):
        names: dict[str, str] = {}
        for entry in reader.entries(doc, kind):
            name = reader.text(entry, "name")
            _unique(reader, entry, "name", name, names)
            items = reader.text_list(entry, "aliases")
            for alias in [name, *items]:
                _claim_alias(reader, entry, alias, f"{kind}:{name}", aliases)
            target.append({"name": name, "aliases": items, "source": _source(reader, entry)})
    if isinstance(doc, dict):
        content.terms = reader.text_list(doc, "terms", required=True)
        content.code_triggers = reader.text_list(doc, "error_code_triggers", required=True)
        content.code_followers = reader.text_list(doc, "error_code_followers", required=True)
        for name in WORD_LISTS:
            content.word_lists[name] = reader.text_list(doc, name, required=True)


def _claim_alias(reader: _Reader, entry: Any, alias: str, owner: str, aliases: dict[str, str]) -> None:
    key = alias.lower()
    if not key:
        return
    if key in aliases and aliases[key] != owner:
        reader.problem(
            entry,
            "aliases",
            f"alias `{alias}` already belongs to {aliases[key]}: "
            "an alias may name only one thing, remove one of them",
        )
    aliases.setdefault(key, owner)


def _load_brands(doc: Any, content: Content, aliases: dict[str, str]) -> None:
    reader = _Reader("brands.yml", content.problems)
    names: dict[str, str] = {}
    for entry in reader.entries(doc, "brands"):
        name = reader.text(entry, "name")
        _unique(reader, entry, "name", name, names)
        brand_aliases = reader.text_list(entry, "aliases")
        for alias in [name, *brand_aliases]:
            _claim_alias(reader, entry, alias, f"brand:{name}", aliases)
        hotline = entry.get("hotline")
        if hotline is not None:
            hotline = str(hotline).strip()
            if not re.fullmatch(r"[0-9][0-9\-]{4,15}", hotline):
                reader.problem(
                    entry,
                    "hotline",
                    f"hotline `{hotline}` is not a phone number: write "
                    'digits only, quoted, e.g. `hotline: "95016"`',
                )
        content.brands.append(
            {
                "name": name,
                "aliases": brand_aliases,
                "hotline": hotline or None,
                "channels": reader.text_list(entry, "channels", required=True),
                "fault_handling": reader.text(entry, "fault_handling"),
                "software_updates": reader.text(entry, "software_updates"),
                "after_sales": reader.text(entry, "after_sales"),
                "source": _source(reader, entry),
            }
        )


#: Buttons a topic may offer after its answer: a fault walk, the fee calculator, a repair
#: ticket or a person.
FLOWS = ("fee_calc", "ticket", "handoff")
MIN_ALTERNATE_QUESTIONS = 5
#: Two standard questions this alike (character-bigram Jaccard) read as the same question.
NEAR_DUPLICATE = 0.8


def _bigrams(text: str) -> set[str]:
    kept = re.sub(r"[\s，。？！,.?!、：:；;（）()“”\"']+", "", text.lower())
    return {kept[i : i + 2] for i in range(max(len(kept) - 1, 1))}


def _similarity(a: str, b: str) -> float:
    x, y = _bigrams(a), _bigrams(b)
    return len(x & y) / len(x | y) if x and y else 0.0


def _load_topic_file(
    name: str,
    doc: Any,
    content: Content,
    brand_names: set[str],
    ids: dict[str, str],
    questions: dict[str, str],
) -> None:
    reader = _Reader(name, content.problems)
    for entry in reader.entries(doc, "topics"):
        topic_id = reader.text(entry, "id", what="lower_snake_case_id")
        if topic_id and not ID_RE.match(topic_id):
            reader.problem(entry, "id", f"id `{topic_id}` must be lower_snake_case, e.g. `fees_hidden`")
        _unique(reader, entry, "id", topic_id, ids)
        intent = reader.text(entry, "intent", what="fees")
        if intent and intent not in TOPIC_INTENTS:
            reader.problem(
                entry, "intent", f"unknown intent `{intent}`: use one of " f"{', '.join(TOPIC_INTENTS)}"
            )
        notes = entry.get("brand_notes") or {}
        if not isinstance(notes, dict):
            reader.problem(entry, "brand_notes", "`brand_notes` must map a brand name to a text")
            notes = {}
        for brand in notes:
            if str(brand) not in brand_names:
                reader.problem(
                    notes,
                    brand,
                    f"unknown brand `{brand}` in brand_notes: use a `name` "
                    "from brands.yml, or add the brand there first",
                )
        for retired in ("keywords", "default", "title"):
            if retired in entry:
                reader.problem(
                    entry,
                    retired,
                    f"`{retired}` is no longer used: the bot finds a topic "
                    "by its questions; write the standard question as `question:` and "
                    "other ways of asking under `questions:`",
                )
        question = reader.text(entry, "question", what="POS机怎么签到？")
        alternates = reader.text_list(entry, "questions", required=True)
        if 0 < len(alternates) < MIN_ALTERNATE_QUESTIONS:
            reader.problem(
                entry,
                "questions",
                f"`questions` has {len(alternates)} question(s): "
                f"give at least {MIN_ALTERNATE_QUESTIONS} ways merchants ask this",
            )
        for text in [question, *alternates]:
            key = re.sub(r"\s+", "", text.lower())
            if key and key in questions and questions[key] != topic_id:
                reader.problem(
                    entry,
                    "questions",
                    f"question `{text}` is also a question of topic "
                    f"`{questions[key]}`: a question may lead to one topic only",
                )
            elif key:
                questions[key] = topic_id
        flow = reader.text(entry, "flow", required=False)
        if flow and flow not in FLOWS and not flow.startswith("walk:"):
            reader.problem(
                entry,
                "flow",
                f"unknown flow `{flow}`: use walk:<symptom id>, " f"{', '.join(FLOWS)}, or leave it out",
            )
        content.topics.append(
            {
                "id": topic_id,
                "intent": intent,
                "family": reader.text(entry, "family", what="core"),
                "question": question,
                "questions": alternates,
                "answer": reader.text(entry, "answer"),
                "steps": reader.text_list(entry, "steps"),
                "brand_notes": {str(k): str(v).strip() for k, v in notes.items()},
                "flow": flow or None,
                "source": _source(reader, entry),
                "_file": name,
                "_line": _line(entry),
            }
        )


def _check_topics(content: Content, symptom_ids: set[str]) -> None:
    """What needs every topic file at once: intents covered, walks known, no twin questions."""
    intents = {t["intent"] for t in content.topics}
    for intent in TOPIC_INTENTS:
        if intent not in intents:
            content.problems.append(
                Problem(
                    "topics/", 1, f"intent `{intent}` has no topic: add " f"`- id: …` with `intent: {intent}`"
                )
            )
    for topic in content.topics:
        flow = topic["flow"] or ""
        if flow.startswith("walk:") and flow[5:] not in symptom_ids:
            content.problems.append(
                Problem(
                    topic["_file"],
                    topic["_line"],
                    f"flow `{flow}` names no "
                    f"symptom: use one of walk:{', walk:'.join(sorted(symptom_ids))}",
                )
            )
    for i, first in enumerate(content.topics):
        for second in content.topics[i + 1 :]:
            if (
                first["question"]
                and second["question"]
                and _similarity(first["question"], second["question"]) >= NEAR_DUPLICATE
            ):
                content.problems.append(
                    Problem(
                        second["_file"],
                        second["_line"],
                        f"the standard question `{second['question']}` is nearly the same as that of "
                        f"topic `{first['id']}` ({first['_file']}:{first['_line']}): merge the two "
                        "topics or make each question say what only it answers",
                    )
                )


def _load_error_codes(doc: Any, content: Content, aliases: dict[str, str]) -> None:
    reader = _Reader("error_codes.yml", content.problems)
    seen: dict[str, str] = {}
    for entry in reader.entries(doc, "error_codes"):
        codes = reader.text_list(entry, "codes", required=True)
        for code in codes:
            if not ERROR_CODE_RE.match(code):
                reader.problem(
                    entry,
                    "codes",
                    f"error code `{code}` must be two characters, digits "
                    'or an upper-case letter and a digit, quoted: "05", "A0"',
                )
            _unique(reader, entry, "codes", code, seen)
        group = reader.text(entry, "group", what="retry")
        if group and group not in CODE_GROUPS:
            reader.problem(entry, "group", f"unknown group `{group}`: use one of {', '.join(CODE_GROUPS)}")
        screen_texts = reader.text_list(entry, "aliases")
        for text in screen_texts:
            if len(text) < 2:
                reader.problem(entry, "aliases", f"alias `{text}` is too short to mean one code")
            elif codes:
                _claim_alias(reader, entry, text, f"error_code:{codes[0]}", aliases)
        record = {
            "codes": codes,
            "aliases": screen_texts,
            "name": reader.text(entry, "name"),
            "meaning": reader.text(entry, "meaning"),
            "cause": reader.text(entry, "cause"),
            "action": reader.text(entry, "action"),
            "group": group,
            "retry": reader.flag(entry, "retry"),
            "high_risk": reader.flag(entry, "high_risk"),
            "source": _source(reader, entry),
        }
        content.error_codes.append(record)


def _load_fees(doc: Any, content: Content, card_types: set[str]) -> None:
    reader = _Reader("fees.yml", content.problems)
    if not isinstance(doc, dict):
        return
    fees: dict[str, Any] = {"card_rules": [], "items": []}
    regulation = doc.get("regulation")
    if isinstance(regulation, dict):
        fees["items"].append(
            {
                "kind": "regulation",
                "label": reader.text(regulation, "document"),
                "rate": None,
                "text": reader.text(regulation, "summary"),
                "effective": reader.text(regulation, "effective"),
                "source": _source(reader, regulation),
            }
        )
    else:
        reader.problem(doc, None, "missing `regulation:` with effective, document, summary, source")
    for entry in reader.entries(doc, "card_rules"):
        card_type = reader.text(entry, "card_type", what="借记卡")
        if card_type and card_type not in card_types:
            reader.problem(
                entry,
                "card_type",
                f"unknown card type `{card_type}`: use a `name` from " "vocabulary.yml card_types",
            )
        fees["card_rules"].append(
            {
                "card_type": card_type,
                "issuer_rate_cap": reader.number(entry, "issuer_rate_cap"),
                "issuer_fee_cap": reader.number(entry, "issuer_fee_cap", nullable=True),
                "network_rate_cap": reader.number(entry, "network_rate_cap"),
                "network_fee_cap": reader.number(entry, "network_fee_cap", nullable=True),
                "source": _source(reader, entry),
            }
        )
    for kind, key in (("market_rate", "market_rates"), ("history", "history")):
        for entry in reader.entries(doc, key):
            fees["items"].append(
                {
                    "kind": kind,
                    "label": reader.text(entry, "label"),
                    "rate": reader.number(entry, "rate"),
                    "text": str(entry.get("text", "") or "").strip(),
                    "source": _source(reader, entry),
                }
            )
    for entry in reader.entries(doc, "hidden_fees"):
        fees["items"].append(
            {
                "kind": "hidden_fee",
                "label": reader.text(entry, "name"),
                "rate": None,
                "text": reader.text(entry, "check"),
                "source": _source(reader, entry),
            }
        )
    exemptions = doc.get("exemptions")
    if isinstance(exemptions, dict):
        fees["items"].append(
            {
                "kind": "exemption",
                "label": "减免",
                "rate": None,
                "text": reader.text(exemptions, "text"),
                "source": _source(reader, exemptions),
            }
        )
    else:
        reader.problem(doc, None, "missing `exemptions:` with text and source")
    content.fees = fees


def _load_symptoms(doc: Any, content: Content, components: set[str]) -> None:
    reader = _Reader("symptoms.yml", content.problems)
    ids: dict[str, str] = {}
    for entry in reader.entries(doc, "symptoms"):
        symptom_id = reader.text(entry, "id")
        _unique(reader, entry, "id", symptom_id, ids)
        category = reader.text(entry, "category", what="hardware")
        if category and category not in SYMPTOM_CATEGORIES:
            reader.problem(
                entry,
                "category",
                f"unknown category `{category}`: use one of " f"{', '.join(SYMPTOM_CATEGORIES)}",
            )
        component = reader.text(entry, "component", required=False)
        if component and component not in components:
            reader.problem(
                entry,
                "component",
                f"unknown component `{component}`: use a `name` from " "vocabulary.yml components",
            )
        stages = []
        raw_stages = entry.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            reader.problem(entry, None, "missing `stages:`: give at least one stage with title and steps")
            raw_stages = []
        for stage in raw_stages:
            if not isinstance(stage, dict):
                reader.problem(raw_stages, None, "each stage must be a mapping with `title` and `steps`")
                continue
            data_loss = stage.get("data_loss", False)
            if not isinstance(data_loss, bool):
                reader.problem(stage, "data_loss", "`data_loss` must be true or false")
                data_loss = False
            stages.append(
                {
                    "title": reader.text(stage, "title"),
                    "steps": reader.text_list(stage, "steps", required=True),
                    "data_loss": data_loss,
                }
            )
        reports = reader.text_list(entry, "reports", required=True)
        if 0 < len(reports) < MIN_ALTERNATE_QUESTIONS:
            reader.problem(
                entry,
                "reports",
                f"`reports` has {len(reports)} report(s): give at "
                f"least {MIN_ALTERNATE_QUESTIONS} ways merchants report this fault",
            )
        content.symptoms.append(
            {
                "id": symptom_id,
                "category": category,
                "component": component or None,
                "label": reader.text(entry, "label"),
                "keywords": reader.text_list(entry, "keywords", required=True),
                "reports": reports,
                "stages": stages,
                "prevention": reader.text(entry, "prevention"),
                "source": _source(reader, entry),
            }
        )


def load_content(directory: Path) -> Content:
    """Read and check every content file in ``directory``; never raises on bad content."""
    content = Content()
    docs: dict[str, Any] = {}
    digest = hashlib.sha256()
    for name in FILES:
        path = directory / f"{name}.yml"
        docs[name] = _read_yaml(path, content.problems)
        if path.exists():
            digest.update(path.read_bytes())
    topic_paths = sorted((directory / TOPICS_DIR).glob("*.yml"))
    if not topic_paths:
        content.problems.append(
            Problem(
                f"{TOPICS_DIR}/",
                1,
                f"no topic files: create " f"kb/content/{TOPICS_DIR}/<family>.yml with `topics:`",
            )
        )
    topic_docs = []
    for path in topic_paths:
        name = f"{TOPICS_DIR}/{path.name}"
        topic_docs.append((name, _read_yaml(path, content.problems, name)))
        digest.update(name.encode() + b"\0" + path.read_bytes())
    if (directory / "topics.yml").exists():
        content.problems.append(
            Problem(
                "topics.yml",
                1,
                f"topics now live in kb/content/{TOPICS_DIR}/"
                "*.yml (question + questions): move them there",
            )
        )
    content.digest = digest.hexdigest()
    aliases: dict[str, str] = {}
    if docs["vocabulary"] is not None:
        _load_vocabulary(docs["vocabulary"], content, aliases)
    if docs["brands"] is not None:
        _load_brands(docs["brands"], content, aliases)
    ids: dict[str, str] = {}
    questions: dict[str, str] = {}
    for name, doc in topic_docs:
        if doc is not None:
            _load_topic_file(name, doc, content, {b["name"] for b in content.brands}, ids, questions)
    if docs["error_codes"] is not None:
        _load_error_codes(docs["error_codes"], content, aliases)
    if docs["fees"] is not None:
        _load_fees(docs["fees"], content, {c["name"] for c in content.card_types})
    if docs["symptoms"] is not None:
        _load_symptoms(docs["symptoms"], content, {c["name"] for c in content.components})
    _check_topics(content, {s["id"] for s in content.symptoms})
    learned_path = directory / LEARNED_FILE
    if learned_path.exists():
        digest.update(b"learned\0" + learned_path.read_bytes())
        content.digest = digest.hexdigest()
        doc = _read_yaml(learned_path, content.problems)
        if doc is not None:
            _load_learned(doc, content)
    return content


def learned_intent(answer: str, content: Content) -> str | None:
    """The intent a learned phrasing with this answer teaches; None for an unknown answer."""
    if answer in LEARNED_ANSWERS:
        return LEARNED_ANSWERS[answer]
    if answer.startswith("walk:"):
        categories = {s["id"]: s["category"] for s in content.symptoms}
        return _WALK_INTENTS.get(categories.get(answer[5:], ""))
    if answer.startswith("code:"):
        known = {code for entry in content.error_codes for code in entry["codes"]}
        return "error_code" if answer[5:] in known else None
    return next((t["intent"] for t in content.topics if t["id"] == answer), None)


def _load_learned(doc: Any, content: Content) -> None:
    """learned.yml: questions merchants asked (or our merchant-style sets), each with the answer
    that helps it. Retrieval learns a topic's or a walk's phrasings from them at `posbot kb
    build`, the NLU its intents at the next `make train`; nothing of them is shown to merchants.
    The learning queue of the staff console adds to it."""
    reader = _Reader(LEARNED_FILE, content.problems)
    seen: dict[str, str] = {}
    for entry in reader.entries(doc, "learned"):
        text = reader.text(entry, "text", what="商户的原话")
        answer = reader.text(entry, "answer", what="一个话题 id，或 walk:printer、code:51 …")
        if not text or not answer:
            continue
        intent = learned_intent(answer, content)
        if intent is None:
            reader.problem(
                entry,
                "answer",
                f"unknown answer `{answer}`: use a topic id, "
                "walk:<symptom id>, code:<code in error_codes.yml> or one of "
                f"{', '.join(LEARNED_ANSWERS)}",
            )
            continue
        override = reader.text(entry, "intent", required=False)
        key = text.lower()
        if key in seen and seen[key] != answer:
            reader.problem(
                entry,
                "text",
                f"`{text}` is already learned with answer " f"`{seen[key]}`: keep one of the two",
            )
            continue
        if key in seen:
            continue
        seen[key] = answer
        content.learned.append({"text": text, "answer": answer, "intent": override or intent})


def format_problems(problems: Iterable[Problem]) -> str:
    return "\n".join(str(p) for p in problems)
