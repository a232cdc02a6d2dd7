"""A bare Rasa bot for `make bench`: the same Rasa, the same NLU data, no custom actions.

Machines differ by 2-3x in speed, so the bench reports posbot as a ratio of this bot measured in
the same run. The bare bot is what a Rasa user gets out of the box for the same merchants:
the NLU examples of data/nlu (posbot's intents), Rasa's stock Chinese pipeline (JiebaTokenizer,
word and character count vectors, DIETClassifier with posbot's 40 epochs instead of the default
100, so that the bench does not spend minutes training it; serving speed does not depend on the
epochs) and one rule per intent that answers with a fixed response. Everything is generated
into a temporary folder per run, trained there and served with `rasa run` on the REST channel.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent

PIPELINE = [
    {"name": "JiebaTokenizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "word", "min_ngram": 1, "max_ngram": 2},
    {"name": "CountVectorsFeaturizer", "analyzer": "char", "min_ngram": 1, "max_ngram": 3},
    {"name": "DIETClassifier", "epochs": 40, "entity_recognition": False, "random_seed": 42},
    {"name": "FallbackClassifier", "threshold": 0.45},
]


def intents_and_entities() -> tuple[list[str], list[str]]:
    intents, entities = set(), set()
    for path in sorted((ROOT / "data" / "nlu").glob("*.yml")):
        for item in yaml.safe_load(path.read_text("utf-8")).get("nlu") or []:
            if "intent" in item:
                intents.add(str(item["intent"]))
                for line in str(item.get("examples") or "").splitlines():
                    entities.update(part.split(")")[0] for part in line.split("](")[1:])
    return sorted(intents), sorted(e.split('"')[0].split("{")[0] for e in entities if e)


def write_project(folder: Path) -> None:
    intents, entities = intents_and_entities()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(
        yaml.safe_dump(
            {
                "recipe": "default.v1",
                "language": "zh",
                "assistant_id": "bare",
                "pipeline": PIPELINE,
                "policies": [{"name": "RulePolicy"}],
            },
            allow_unicode=True,
        ),
        "utf-8",
    )
    responses = {f"utter_{i}": [{"text": f"收到（{i}）"}] for i in [*intents, "nlu_fallback"]}
    (folder / "domain.yml").write_text(
        yaml.safe_dump(
            {
                "version": "3.1",
                "intents": intents,
                "entities": entities,
                "responses": responses,
                "session_config": {"session_expiration_time": 60, "carry_over_slots_to_new_session": True},
            },
            allow_unicode=True,
        ),
        "utf-8",
    )
    rules = [
        {"rule": i, "steps": [{"intent": i}, {"action": f"utter_{i}"}]} for i in [*intents, "nlu_fallback"]
    ]
    (folder / "rules.yml").write_text(
        yaml.safe_dump({"version": "3.1", "rules": rules}, allow_unicode=True), "utf-8"
    )
    (folder / "credentials.yml").write_text("rest:\n", "utf-8")


def train(folder: Path, rasa: Path) -> Path:
    subprocess.run(
        [
            str(rasa),
            "train",
            "--config",
            "config.yml",
            "--domain",
            "domain.yml",
            "--data",
            "rules.yml",
            str(ROOT / "data" / "nlu"),
            "--out",
            "models",
            "--fixed-model-name",
            "bare",
        ],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RASA_TELEMETRY_ENABLED": "false"},
    )
    return folder / "models" / "bare.tar.gz"


def serve(folder: Path, rasa: Path, port: int, env: dict[str, str], timeout: float = 180) -> subprocess.Popen:
    """Start the bare bot on ``port`` and wait until it answers a message."""
    log = (folder / "rasa.log").open("w")
    proc = subprocess.Popen(
        [
            str(rasa),
            "run",
            "-m",
            "models/bare.tar.gz",
            "--port",
            str(port),
            "--credentials",
            "credentials.yml",
            "--interface",
            "127.0.0.1",
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env, "RASA_TELEMETRY_ENABLED": "false"},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the bare Rasa bot exited: see {folder / 'rasa.log'}")
        try:
            requests.post(
                f"http://127.0.0.1:{port}/webhooks/rest/webhook",
                json={"sender": "warm", "message": "你好"},
                timeout=5,
            ).raise_for_status()
            return proc
        except requests.RequestException:
            time.sleep(1)
    proc.terminate()
    raise RuntimeError("the bare Rasa bot did not answer in time")
