"""Print the answer catalogue a blind-set writer labels with, and nothing more.

A blind merchant-style set (tests/nlu/merchants/setN.yml) is written by someone who sees neither
the training data, the KB's answers and alternate questions, nor any model. They still need
the labels the evaluator compares with (scripts/evaluate_merchants.py): every KB topic's id,
intent and standard question; the response codes; the fault walks; the flows. This prints that
list as Markdown:

    .venv/bin/python scripts/answer_catalogue.py > /tmp/catalogue.md

With ``--answers`` every topic also shows its answer and steps: for a second labeller who judges
which answers would help a question (all of them, not only one), without the first labels.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.loader import load_content  # noqa: E402
from kb.settings import CONTENT_DIR  # noqa: E402
from kb.store import CATEGORY_INTENTS  # noqa: E402


def answers(topics: list) -> list:
    lines = ["", "## What each topic answers", ""]
    for topic in sorted(topics, key=lambda t: (t.get("family", ""), t["id"])):
        lines += [f"### {topic['id']} — {topic['question']}", "", topic["answer"], ""]
        lines += [f"{n}. {step}" for n, step in enumerate(topic.get("steps") or [], 1)]
        lines.append("")
    return lines


def catalogue(with_answers: bool = False) -> str:
    content = load_content(CONTENT_DIR)
    lines = [
        "# Answer catalogue",
        "",
        "Label each question with `intent` and `topic` (the answer that helps).",
        "",
        "## KB topics (topic = id)",
        "",
        "| id | intent | family | standard question |",
        "|---|---|---|---|",
    ]
    for topic in sorted(content.topics, key=lambda t: (t.get("family", ""), t["id"])):
        lines.append(
            f"| {topic['id']} | {topic['intent']} | {topic.get('family', '')} | " f"{topic['question']} |"
        )
    lines += ["", "## Response codes (intent error_code, topic `code:<code>`)", ""]
    for entry in content.error_codes:
        lines.append(f"- {', '.join(entry['codes'])}: {entry['name']}")
    lines += [
        "",
        "## Fault walks (a fault reported; topic `walk:<id>`, `walk:?` when the "
        "merchant only says the machine is broken)",
        "",
        "| id | intent | label |",
        "|---|---|---|",
    ]
    for symptom in content.symptoms:
        intent = CATEGORY_INTENTS[symptom["category"]]
        lines.append(f"| {symptom['id']} | {intent} | {symptom['label']} |")
    lines += [
        "",
        "## Flows and the rest",
        "",
        "- `flow:fee_calc` (intent fees): the merchant gives an amount or asks to calculate "
        "the fee of a transaction",
        "- `flow:handoff` (intent human_handoff): the merchant wants a person",
        "- `flow:ticket` (intent contact_support): the merchant wants a repair registered",
        "- `decline` (intent out_of_scope): not about POS acquiring (stocks, loans, "
        "credit-card repayment, phones, weather …)",
        "- `smalltalk:greet|goodbye|thanks|affirm|deny|bot_challenge` (intent of the same name)",
    ]
    if with_answers:
        lines += answers(content.topics)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(catalogue(with_answers="--answers" in sys.argv[1:]))
