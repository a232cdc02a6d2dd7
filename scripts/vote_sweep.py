"""How IntentVote's share and regularisation were chosen (bot/config.yml, step 6).

Fixed-seed stratified k-fold on data/nlu. Each fold trains the whole NLU pipeline once; the
script keeps DIET's ranking (as it reaches IntentVote) for the fold's test examples and the
sentence features of every example. The logistic regression is then refitted offline for each
variant, and each vote share is scored, without training DIET again.

    .venv/bin/python scripts/vote_sweep.py collect var/sweep/seed0 --seed 0 [--extra DIR] [--config FILE]
    .venv/bin/python scripts/vote_sweep.py score var/sweep/seed0 [var/sweep/seed1 ...]

``--extra`` adds the examples of another NLU file or directory to every fold's training part
only, so new training data can be compared on the same test examples as before; ``--config``
trains a variant of bot/config.yml on the same folds.
Rasa's own ``rasa test nlu --cross-validation`` (make eval) draws new folds on every run; the
fixed seed here keeps comparisons paired.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any, List

from rasa.shared.nlu.training_data.message import Message  # resolved by Rasa's graph checks

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {"C=1": 1.0, "C=3": 3.0, "C=10": 10.0}
SHARES = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 1.0)


async def parse_all(agent: Any, texts: list[str]) -> None:
    for text in texts:
        await agent.parse_message(text)


def collect(out: Path, folds: int, seed: int, extra: str | None, config: str) -> None:
    from rasa.core.agent import Agent
    from rasa.model_training import train_nlu
    from rasa.shared.nlu.constants import INTENT_RANKING_KEY, TEXT
    from rasa.shared.nlu.training_data.loading import load_data
    from rasa.shared.nlu.training_data.training_data import TrainingData
    from sklearn.model_selection import StratifiedKFold

    import bot.nlu.intent_vote as intent_vote

    seen: dict[str, tuple[list[dict[str, Any]], Any]] = {}
    original = intent_vote.IntentVote.process

    def process(self, messages: List[Message]) -> List[Message]:  # type: ignore[no-untyped-def]
        for message in messages:
            features = None
            if message.get_sparse_features(attribute=TEXT)[1] is not None:
                features = self._create_X([message])
            seen[message.get(TEXT)] = ([dict(r) for r in message.get(INTENT_RANKING_KEY) or []], features)
        return original(self, messages)

    intent_vote.IntentVote.process = process  # type: ignore[method-assign]
    from bot.nlu.normalize import normalize

    out.mkdir(parents=True, exist_ok=True)
    data = load_data(str(ROOT / "data" / "nlu"))
    examples = data.intent_examples
    labels = [e.get("intent") for e in examples]
    added = load_data(extra).intent_examples if extra else []
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(examples, labels)
    for k, (train_index, test_index) in enumerate(splits):
        target = out / f"fold{k}.pkl"
        if target.exists():
            continue
        train = TrainingData(
            [examples[i] for i in train_index] + added,
            entity_synonyms=data.entity_synonyms,
            regex_features=data.regex_features,
            lookup_tables=data.lookup_tables,
        )
        seen.clear()
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "nlu.yml").write_text(train.nlu_as_yaml(), encoding="utf-8")
            agent = Agent.load(train_nlu(config, str(Path(tmp) / "nlu.yml"), tmp, fixed_model_name="f"))

            asyncio.run(parse_all(agent, [examples[i].get("text") for i in (*train_index, *test_index)]))
        record = {
            part: [
                (examples[i].get("text"), labels[i], seen.get(normalize(examples[i].get("text"))))
                for i in index
            ]
            for part, index in (("train", train_index), ("test", test_index))
        }
        target.write_bytes(pickle.dumps(record))
        print(f"fold {k} done", flush=True)


def score(directories: list[Path]) -> None:
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    for directory in directories:
        right: dict[tuple[str, float], int] = {}
        total = 0
        for path in sorted(directory.glob("fold*.pkl")):
            fold = pickle.loads(path.read_bytes())
            train = [(y, got) for _, y, got in fold["train"] if got and got[1] is not None]
            test = fold["test"]
            total += len(test)
            x_test = sp.vstack([got[1] for _, _, got in test])
            diet = [{r["name"]: r["confidence"] for r in got[0]} for _, _, got in test]
            for name, c in VARIANTS.items():
                # as Rasa's LogisticRegressionClassifier, with C set by IntentVote
                clf = LogisticRegression(C=c, max_iter=1000, class_weight="balanced", random_state=42)
                clf.fit(sp.vstack([got[1] for _, got in train]), [y for y, _ in train])
                probabilities = clf.predict_proba(x_test)
                for share in SHARES:
                    for votes_diet, row, (_, truth, _) in zip(diet, probabilities, test, strict=True):
                        votes = {n: (1 - share) * p for n, p in votes_diet.items()}
                        for n, p in zip(clf.classes_, row, strict=True):
                            votes[n] = votes.get(n, 0.0) + share * p
                        hit = max(votes, key=votes.__getitem__) == truth
                        right[(name, share)] = right.get((name, share), 0) + hit
        print(f"\n{directory} ({total} examples); accuracy by regression share")
        print("| | " + " | ".join(f"{s:g}" for s in SHARES) + " |")
        print("|---" * (len(SHARES) + 1) + "|")
        for name in VARIANTS:
            print(f"| {name} | " + " | ".join(f"{right[(name, s)] / total:.4f}" for s in SHARES) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("collect")
    run.add_argument("out", type=Path)
    run.add_argument("--folds", type=int, default=5)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--extra")
    run.add_argument(
        "--config", default=str(ROOT / "bot" / "config.yml"), help="a variant of bot/config.yml to compare"
    )
    show = sub.add_parser("score")
    show.add_argument("directories", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.out, args.folds, args.seed, args.extra, args.config)
    else:
        score(args.directories)


if __name__ == "__main__":
    main()
