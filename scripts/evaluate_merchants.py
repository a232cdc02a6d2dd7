"""Score the running bot on the blind merchant-style sets: did the merchant get the right answer?

Each question of tests/nlu/merchants/*.yml is sent, in a new conversation, through the REST
channel of a bot started exactly as `make run` starts it (ops/launcher.py); the conversation's
tracker (Rasa API, with the token) then says what the merchant got:

* ``<topic id>``      a KB answer (slot ``answered_topic``),
* ``walk:<symptom>``  a guided fault walk started (``walk:?`` when it asked which symptom),
* ``code:<code>``     a response code explained,
* ``flow:fee_calc`` / ``flow:handoff`` / ``flow:ticket``,
* ``decline``         the out-of-scope answer,
* ``smalltalk:<intent>``,
* ``clarify``         "您是想问" with buttons (counted wrong; whether the right topic was among
                      the buttons is reported as well).

Reports intent accuracy (the NLU's intent; nlu_fallback counts wrong), topic accuracy (the
label above equals the set's ``topic``), both per family, and the misses, into
reports/merchants.md and reports/merchants.json.

A question labelled ``topic: uncovered`` (a "field" set written before its writer saw the
answer catalogue: nothing in it answered this) is not in those figures; the report counts what
the bot did with them instead (asked back or offered a person: honest; answered with a topic:
to be read, since a topic written since may answer it; declined) and lists each one.

A set with second labels (tests/nlu/merchants/second/<set>.yml: another labeller's answer and
the other answers that would also do, written without the first labels) also gets the judges'
agreement and **useful** accuracy: the bot's answer is one either judge named, over the questions
either judge found an answer for.

Run by `make eval`, or alone:

    .venv/bin/python scripts/evaluate_merchants.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.launcher import RunningBot, start_bot  # noqa: E402

SETS = ROOT / "tests" / "nlu" / "merchants"
REPORTS = ROOT / "reports"
FEE_ACTIONS = {"action_answer_fees"}
SMALLTALK = {
    "utter_greet": "greet",
    "utter_goodbye": "goodbye",
    "utter_thanks": "thanks",
    "utter_iamabot": "bot_challenge",
    "utter_affirm": "affirm",
    "utter_deny": "deny",
}


def code_entries(path: Path = ROOT / "kb" / "content" / "error_codes.yml") -> dict[str, str]:
    """Each response code → the first code of its KB entry: codes that share one entry (04 and
    43, A0 and 99 …) get the same explanation, so either label is the right answer."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["error_codes"]
    return {str(code).upper(): str(entry["codes"][0]).upper() for entry in entries for code in entry["codes"]}


def canonical(label: str, entries: dict[str, str]) -> str:
    """``code:43`` → ``code:04`` when both are one KB entry; other labels unchanged."""
    if not label.startswith("code:"):
        return label
    code = label[len("code:") :].upper()
    return f"code:{entries.get(code, code)}"


def family_of(topic: str, families: dict[str, str]) -> str:
    if ":" in topic:
        return topic.split(":")[0]
    return families.get(topic, "decline" if topic == "decline" else "?")


def outcome(events: list[dict[str, Any]]) -> tuple[str, str, list[str]]:
    """(intent, what the merchant got, topic ids offered as buttons) for a one-message chat."""
    users = [e for e in events if e.get("event") == "user"]
    if not users:
        return "", "none", []
    user = users[-1]
    intent = str(((user.get("parse_data") or {}).get("intent") or {}).get("name") or "")
    after = events[events.index(user) + 1 :]
    actions = [e.get("name") for e in after if e.get("event") == "action"]
    slots = {e.get("name"): e.get("value") for e in after if e.get("event") == "slot"}
    offered = []
    for e in after:
        if e.get("event") == "bot":
            for button in (e.get("data") or {}).get("buttons") or []:
                payload = str(button.get("payload") or "")
                if '"kb_topic"' in payload:
                    offered.append(json.loads(payload[payload.index("{") :])["kb_topic"])
    uttered = {(e.get("metadata") or {}).get("utter_action") for e in after if e.get("event") == "bot"}
    clarified = "utter_clarify" in uttered
    if slots.get("answered_topic"):
        return intent, str(slots["answered_topic"]), offered
    if "action_explain_error_code" in actions:
        return intent, f"code:{slots.get('error_code') or '?'}", offered
    if "action_handoff" in actions:
        return intent, "flow:handoff", offered
    if "ticket_form" in actions:
        return intent, "flow:ticket", offered
    if slots.get("ts_start") is True:
        return intent, f"walk:{slots.get('symptom') or '?'}", offered
    if clarified:
        return intent, "clarify", offered
    if "utter_out_of_scope" in actions or "utter_out_of_scope" in uttered:
        return intent, "decline", offered
    if FEE_ACTIONS & set(actions):
        return intent, "flow:fee_calc", offered
    for action, name in SMALLTALK.items():
        if action in actions:
            return intent, f"smalltalk:{name}", offered
    return intent, "other:" + ",".join(str(a) for a in actions if a != "action_listen"), offered


def score(bot: RunningBot, examples: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    def one(item: tuple[int, dict[str, Any]]) -> dict[str, Any]:
        i, example = item
        sender = f"merchants-{tag}-{i}"
        bot.send(sender, example["text"], timeout=60)
        events = bot.api("GET", f"/conversations/{sender}/tracker").json()["events"]
        intent, got, offered = outcome(events)
        return {**example, "got_intent": intent, "got": got, "offered": offered}

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, enumerate(examples)))


def report(results: list[dict[str, Any]], families: dict[str, str]) -> str:
    n = len(results)
    intent_ok = sum(r["got_intent"] == r["intent"] for r in results)
    topic_ok = sum(r["got"] == r["topic"] for r in results)
    offered_ok = sum(r["got"] == "clarify" and r["topic"] in r["offered"] for r in results)
    clarified = sum(r["got"] == "clarify" for r in results)
    lines = [
        f"# Merchant-style sets ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"{n} questions. **Topic accuracy {topic_ok / n:.3f}** ({topic_ok}), "
        f"intent accuracy {intent_ok / n:.3f} ({intent_ok}); asked back (您是想问) "
        f"{clarified} times, with the right topic among the buttons {offered_ok} times.",
        "",
        "| set | n | topic | intent |",
        "|---|---|---|---|",
    ]
    for name in sorted({r["set"] for r in results}):
        items = [r for r in results if r["set"] == name]
        lines.append(
            f"| {name} | {len(items)} | "
            f"{sum(r['got'] == r['topic'] for r in items) / len(items):.3f} | "
            f"{sum(r['got_intent'] == r['intent'] for r in items) / len(items):.3f} |"
        )
    lines += ["", "| family | n | topic | intent |", "|---|---|---|---|"]
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_family[family_of(r["topic"], families)].append(r)
    for family, items in sorted(by_family.items(), key=lambda kv: -len(kv[1])):
        t = sum(r["got"] == r["topic"] for r in items) / len(items)
        i = sum(r["got_intent"] == r["intent"] for r in items) / len(items)
        lines.append(f"| {family} | {len(items)} | {t:.2f} | {i:.2f} |")
    confusions = Counter((r["topic"], r["got"]) for r in results if r["got"] != r["topic"])
    lines += ["", "## Most frequent confusions (expected → got)", ""]
    lines += [f"- {a} → {b}: {c}" for (a, b), c in confusions.most_common(40)]
    return "\n".join(lines) + "\n"


NON_TOPIC = {
    "error_code": "code:",
    "human_handoff": "flow:handoff",
    "out_of_scope": "decline",
    "greet": "smalltalk:greet",
    "goodbye": "smalltalk:goodbye",
    "thanks": "smalltalk:thanks",
    "affirm": "smalltalk:affirm",
    "deny": "smalltalk:deny",
    "bot_challenge": "smalltalk:bot_challenge",
}


UNCOVERED = "uncovered"


def uncovered_report(results: list[dict[str, Any]]) -> str:
    """What the bot did with questions nothing answered when their set was written."""
    items = [r for r in results if r["topic"] == UNCOVERED]
    if not items:
        return ""

    def kind(got: str) -> str:
        if got in ("clarify", "flow:handoff", "flow:ticket"):
            return "asked back or offered a person"
        if got == "decline":
            return "declined as not about POS"
        return "answered (read it: right only if a newer topic answers the question)"

    kinds = Counter(kind(r["got"]) for r in items)
    lines = [
        "",
        f"## Questions no answer covered when written ({len(items)}, not in the figures above)",
        "",
        *[f"- {k}: {c}" for k, c in kinds.most_common()],
        "",
        "| set | question | asks | got |",
        "|---|---|---|---|",
    ]
    for r in sorted(items, key=lambda r: (kind(r["got"]), r["got"])):
        lines.append(f"| {r['set']} | {r['text']} | {r.get('asks', '')} | {r['got']} |")
    return "\n".join(lines) + "\n"


def attach_second_labels(results: list[dict[str, Any]], entries: dict[str, str]) -> None:
    """Each result of a set with second labels gets ``useful``: every answer either judge named."""
    by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_set[r["set"]].append(r)
    for name, items in by_set.items():
        path = SETS / "second" / f"{name}.yml"
        if not path.exists():
            continue
        second = yaml.safe_load(path.read_text(encoding="utf-8"))["examples"]
        texts = {e["text"]: e for e in second}
        missing = [r["text"] for r in items if r["text"] not in texts]
        if missing:
            print(f"warning: {len(missing)} questions of {name} have no second label, e.g. {missing[0]!r}")
        for r in items:
            other = texts.get(r["text"])
            if other is None:
                continue
            r["second"] = canonical(other["topic"], entries)
            named = {r["topic"], r["second"], *(canonical(a, entries) for a in other.get("also") or [])}
            r["useful"] = sorted(named - {UNCOVERED})


def judges_report(results: list[dict[str, Any]]) -> str:
    """Per set with second labels: how often the judges' first choices agree, and how often
    the merchant got an answer either judge named ("useful"), next to the strict figure."""
    rows = []
    for name in sorted({r["set"] for r in results if "useful" in r}):
        items = [r for r in results if r["set"] == name and "useful" in r]
        both = [r for r in items if UNCOVERED not in (r["topic"], r["second"])]
        either = [r for r in items if r["useful"]]
        strict = [r for r in items if r["topic"] != UNCOVERED]
        if not both or not either or not strict:
            continue
        rows.append(
            f"| {name} | {sum(r['topic'] == r['second'] for r in both) / len(both):.3f} "
            f"({len(both)}) | {sum(r['got'] == r['topic'] for r in strict) / len(strict):.3f} "
            f"({len(strict)}) | {sum(r['got'] in r['useful'] for r in either) / len(either):.3f} "
            f"({len(either)}) |"
        )
    if not rows:
        return ""
    return "\n".join(
        [
            "",
            "## Two judges",
            "",
            "Agreement: of the questions both judges found an answer for, how often they named "
            "the same one first (questions only one judge found an answer for are left out of it). "
            "Strict: the "
            "first judge's answer (the figure above). Useful: the bot's answer is one either "
            "judge named (first choice or `also`), over the questions either found an answer for.",
            "",
            "| set | judges agree (n) | strict topic (n) | useful (n) |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def is_topic(label: str) -> bool:
    return ":" not in label and label != "decline"


def baseline_predictions(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(intent, topic) per question from a TF-IDF (character 1-3-grams) + e5 logistic
    regression trained on the same data: intent over data/nlu + var/nlu (the bot's training
    data), topic over the KB's questions."""
    from rasa.shared.nlu.training_data.loading import load_data
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from kb.encoder import clean, get_encoder
    from kb.loader import load_content
    from kb.settings import CONTENT_DIR

    encoder = get_encoder()

    def fit(texts: list[str], labels: list[str]) -> Any:
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        X = hstack(
            [vec.fit_transform([clean(t) for t in texts]), csr_matrix(encoder.encode(texts) * 5.0)]
        ).tocsr()
        clf = LogisticRegression(C=3, solver="liblinear", max_iter=2000).fit(X, labels)
        return lambda items: clf.predict(
            hstack(
                [vec.transform([clean(t) for t in items]), csr_matrix(encoder.encode(items) * 5.0)]
            ).tocsr()
        )

    data = load_data(str(ROOT / "data" / "nlu"))
    data = data.merge(load_data(str(ROOT / "var" / "nlu")))
    examples = [(m.get("text"), m.get("intent")) for m in data.intent_examples]
    intent_of = fit([t for t, _ in examples], [i for _, i in examples])
    content = load_content(CONTENT_DIR)
    pairs = [(q, t["id"]) for t in content.topics for q in [t["question"], *t["questions"]]]
    topic_of = fit([q for q, _ in pairs], [t for _, t in pairs])
    texts = [r["text"] for r in results]
    return [(str(i), str(t)) for i, t in zip(intent_of(texts), topic_of(texts), strict=True)]


def side_by_side(results: list[dict[str, Any]], predictions: list[tuple[str, str]]) -> str:
    """posbot and the baseline per set. The baseline is scored generously where a label is not
    a topic: a code, walk, fee calculation, handoff, decline or smalltalk counts right when its
    intent is right (it has no flows to get wrong); a topic counts when the intent is a topic
    intent and the topic is right."""
    from kb.settings import TOPIC_INTENTS

    rows = [
        "| set | n | posbot topic | baseline topic | posbot intent | baseline intent | "
        "KB-topic questions | posbot | baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sets = [*sorted({r["set"] for r in results}), "all"]
    for name in sets:
        items = [
            (r, p) for r, p in zip(results, predictions, strict=True) if name == "all" or r["set"] == name
        ]
        n = max(len(items), 1)
        kb = [(r, p) for r, p in items if is_topic(r["topic"])]
        kb_n = max(len(kb), 1)

        def base_right(r: dict[str, Any], p: tuple[str, str]) -> bool:
            if is_topic(r["topic"]):
                return p[0] in TOPIC_INTENTS and p[1] == r["topic"]
            return p[0] == r["intent"]

        rows.append(
            f"| {name} | {len(items)} | {sum(r['got'] == r['topic'] for r, _ in items) / n:.3f} | "
            f"{sum(base_right(r, p) for r, p in items) / n:.3f} | "
            f"{sum(r['got_intent'] == r['intent'] for r, _ in items) / n:.3f} | "
            f"{sum(p[0] == r['intent'] for r, p in items) / n:.3f} | {len(kb)} | "
            f"{sum(r['got'] == r['topic'] for r, _ in kb) / kb_n:.3f} | "
            f"{sum(base_right(r, p) for r, p in kb) / kb_n:.3f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions per set")
    parser.add_argument("--sets", default="*.yml", help="which files of tests/nlu/merchants/")
    args = parser.parse_args()
    families = {}
    for path in sorted((ROOT / "kb" / "content" / "topics").glob("*.yml")):
        for topic in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("topics") or []:
            families[topic["id"]] = topic.get("family", "?")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        bot = start_bot(Path(tmp))
        try:
            for path in sorted(SETS.glob(args.sets)):
                examples = yaml.safe_load(path.read_text(encoding="utf-8"))["examples"]
                if args.limit:
                    examples = examples[: args.limit]
                results += [{**r, "set": path.stem} for r in score(bot, examples, path.stem)]
        finally:
            bot.stop()
    entries = code_entries()
    for r in results:
        r["topic"], r["got"] = canonical(r["topic"], entries), canonical(r["got"], entries)
    attach_second_labels(results, entries)
    REPORTS.mkdir(exist_ok=True)
    everything, uncovered = results, uncovered_report(results)
    judges = judges_report(results)
    results = [r for r in results if r["topic"] != UNCOVERED]
    text = report(results, families)
    table = side_by_side(results, baseline_predictions(results))
    text = text.replace(
        "\n\n| set",
        "\n\nSide by side with the baseline (TF-IDF + e5 logistic "
        "regression on the same training data; scored as `side_by_side` in "
        "scripts/evaluate_merchants.py explains):\n\n" + table + "\n\n| set",
        1,
    )
    text += judges + uncovered
    (REPORTS / "merchants.md").write_text(text, encoding="utf-8")
    (REPORTS / "merchants.json").write_text(
        json.dumps(everything, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    print("\n".join(text.split("\n\n")[1:3]) + judges)
    return 0


if __name__ == "__main__":
    sys.exit(main())
