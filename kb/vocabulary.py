"""The words the NLU side learns from the knowledge base: one source, two uses.

``jieba_lines`` feeds the JiebaTokenizer's dictionary directory, ``entity_patterns`` the spaCy
EntityRuler; both come from the same aliases, so a brand or component added to kb/content is
segmented as one word and recognised as an entity after the next training.

The merchant-language word lists the actions read at run time (stop words, acknowledgements …)
live in vocabulary.yml too: their names are below, kb/store.py ``KnowledgeStore.words`` reads
one back (once per KB build).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kb.loader import Content

#: jieba frequency for domain words: high enough that "拉卡拉" beats "拉/卡拉" and "POS机" beats
#: "POS/机", low enough not to swallow longer everyday words.
WORD_FREQ = 50000
# Two characters with at least one digit (00-99, A0): "QR码", "OK了" are not codes.
CODE_TOKEN = r"^(?=.*[0-9])[0-9A-Za-z]{2}$"
FILLERS = ["的", "是", "了", ":", ":", "为", "个", "出"]

# Word lists of vocabulary.yml the actions read at run time (kb/loader.py WORD_LISTS declares
# every list, `posbot kb lint` checks each is there and not empty, `posbot kb build` stores them):
#: "算了" / "不用了": the merchant leaves the walk or the repair ticket (typed words only).
FLOW_STOP_WORDS = "flow_stop_words"
#: "好的" / "收到" / "谢谢" as the whole reply after a stage's steps: read, not tried yet.
ACKNOWLEDGEMENTS = "acknowledgements"
#: "我去试试": about to try; unless a word of ``TRIED_MARKERS`` ("试了", "好了") reports a result.
WILL_TRY_MARKERS = "will_try_markers"
TRIED_MARKERS = "tried_markers"
#: What may be left of "我用的是拉卡拉的机器" once the brand is removed for it to only name a brand.
BRAND_STATEMENT_FILLERS = "brand_statement_fillers"


@dataclass
class Vocabulary:
    """Alias tables per entity kind plus the words and triggers the patterns need."""

    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # kind → alias → canonical
    terms: list[str] = field(default_factory=list)
    error_codes: list[str] = field(default_factory=list)
    code_names: dict[str, list[str]] = field(default_factory=dict)  # code → its KB names
    code_triggers: list[str] = field(default_factory=list)
    code_followers: list[str] = field(default_factory=list)

    @classmethod
    def from_content(cls, content: Content) -> Vocabulary:
        aliases: dict[str, dict[str, str]] = {"brand": {}, "component": {}, "card_type": {}}
        for brand in content.brands:
            for text in [brand["name"], *brand["aliases"]]:
                aliases["brand"][text] = brand["name"]
        for kind, entries in (("component", content.components), ("card_type", content.card_types)):
            for entry in entries:
                for text in [entry["name"], *entry["aliases"]]:
                    aliases[kind][text] = entry["name"]
        # Screen texts that stand for a code ("余额不足" → 51): the entity's value is the code.
        aliases["error_code"] = {
            text: entry["codes"][0] for entry in content.error_codes for text in entry.get("aliases", [])
        }
        return cls(
            aliases=aliases,
            terms=list(content.terms),
            error_codes=[code for entry in content.error_codes for code in entry["codes"]],
            code_names={
                code: [part.strip() for part in entry["name"].split("/") if part.strip()]
                for entry in content.error_codes
                for code in entry["codes"]
            },
            code_triggers=list(content.code_triggers),
            code_followers=list(content.code_followers),
        )

    def words(self) -> list[str]:
        """Every multi-character word jieba should keep whole, in a stable order."""
        seen: dict[str, None] = {}
        for word in [
            *self.terms,
            *self.code_triggers,
            *self.code_followers,
            *(a for table in self.aliases.values() for a in table),
        ]:
            for variant in (word, word.lower()):
                if len(variant) > 1 and " " not in variant:
                    seen.setdefault(variant, None)
        return list(seen)

    def jieba_lines(self) -> list[str]:
        return [f"{word} {WORD_FREQ}" for word in self.words()]

    def entity_patterns(self) -> list[dict[str, Any]]:
        """spaCy EntityRuler patterns; ``id`` carries the canonical value."""
        patterns: list[dict[str, Any]] = []
        for kind, table in self.aliases.items():
            for alias, canonical in table.items():
                patterns.append({"label": kind, "pattern": alias, "id": canonical})
        triggers = sorted({t.lower() for t in self.code_triggers})
        followers = sorted({f.lower() for f in self.code_followers})
        code = {"TEXT": {"REGEX": CODE_TOKEN}}
        patterns.append(
            {
                "label": "error_code",
                "pattern": [{"LOWER": {"IN": triggers}}, {"LOWER": {"IN": FILLERS}, "OP": "*"}, code],
            }
        )
        patterns.append({"label": "error_code", "pattern": [code, {"LOWER": {"IN": followers}}]})
        for code_id, names in self.code_names.items():  # "51余额不足", "43是被窃卡": id = the code
            for name in names:
                for joined in (f"{code_id}{name}", f"{code_id}是{name}"):
                    patterns.append({"label": "error_code", "pattern": joined, "id": code_id})
        for known in self.error_codes:
            if not known.isdigit():
                patterns.append({"label": "error_code", "pattern": [{"TEXT": {"REGEX": f"^(?i){known}$"}}]})
        return patterns


def write_jieba_dictionary(vocabulary: Vocabulary, directory: Path) -> Path:
    """Write the dictionary file the JiebaTokenizer loads from ``dictionary_path``."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*"):
        if stale.is_file():
            stale.unlink()
    path = directory / "posbot.dict.txt"
    path.write_text("\n".join(vocabulary.jieba_lines()) + "\n", encoding="utf-8")
    return path
