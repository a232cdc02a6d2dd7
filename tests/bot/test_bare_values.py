"""A message that is only a response code, an amount or a rate asks about it (bot/nlu/bare_values.py)."""

from __future__ import annotations

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import RasaException
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.bare_values import BareValueIntent
from bot.nlu.kb_entities import KBEntityExtractor

EXTRACTOR = KBEntityExtractor({}, None, None)  # numbers and bare codes only (no KB patterns)
GOODBYE = [
    {"name": "goodbye", "confidence": 0.87},
    {"name": "error_code", "confidence": 0.05},
    {"name": "thanks", "confidence": 0.08},
]


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> LocalModelStorage:
    return LocalModelStorage(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def trained(storage) -> BareValueIntent:
    component = BareValueIntent.create(
        {"content_dir": "kb/content"}, storage, Resource("codes"), ExecutionContext(GraphSchema({}), "test")
    )
    component.train(TrainingData())
    return component


def classified(component: BareValueIntent, text: str) -> dict:
    message = Message(data={TEXT: text, ENTITIES: EXTRACTOR.extract(text)})
    message.set(INTENT, GOODBYE[0])
    message.set(INTENT_RANKING_KEY, [dict(entry) for entry in GOODBYE])
    return component.process([message])[0].as_dict_nlu()


@pytest.mark.parametrize("text", ["51", "05", "a0", " 96？", "A0!"])
def test_a_code_the_kb_lists_becomes_an_error_code_question(trained, text) -> None:
    parsed = classified(trained, text)
    assert parsed[INTENT] == {"name": "error_code", "confidence": 1.0}
    ranking = parsed[INTENT_RANKING_KEY]
    assert [entry["name"] for entry in ranking] == ["error_code", "goodbye", "thanks"]
    assert sum(entry["confidence"] for entry in ranking) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text",
    [
        "10000元",
        "1万",
        "一万块钱",
        "两千块。",
        "0.6%",
        "千分之六",
        "0.38",
        "10000",
        "0.6%，10000元",
    ],
)
def test_amounts_and_rates_alone_answer_the_fee_calculator(trained, text) -> None:
    assert classified(trained, text)[INTENT] == {"name": "fees", "confidence": 1.0}


def card(text: str, value: str) -> dict:
    start = text.index(value)
    return {"entity": "card_type", "start": start, "end": start + len(value), "value": value}


@pytest.mark.parametrize(
    "text, card_type, expected",
    [
        ("信用卡", "信用卡", "fees"),
        ("那借记卡呢", "借记卡", "fees"),  # the calculator asked 借记卡还是信用卡
        ("信用卡 2万", "信用卡", "fees"),
        ("信用卡刷不了", "信用卡", "goodbye"),  # more than a value: the classifiers decide
        ("借记卡能刷吗", "借记卡", "goodbye"),
    ],
)
def test_a_card_type_alone_answers_the_fee_calculator(trained, text, card_type, expected) -> None:
    message = Message(data={TEXT: text, ENTITIES: [card(text, card_type), *EXTRACTOR.extract(text)]})
    message.set(INTENT, GOODBYE[0])
    message.set(INTENT_RANKING_KEY, [dict(entry) for entry in GOODBYE])
    assert trained.process([message])[0].get(INTENT)["name"] == expected


@pytest.mark.parametrize(
    "text",
    [
        "88",
        "886",
        "刷卡显示51",
        "",
        "13812345678",
        "12345678",
        "刷了1万",
        "1万 谢谢",
        "N6G1234567",
        "666",
    ],
)
def test_other_messages_keep_the_classifiers_answer(trained, text) -> None:
    assert classified(trained, text)[INTENT] == GOODBYE[0]


@pytest.mark.parametrize("text", ["5", "2", "1.", " 3。", "18"])
def test_a_number_alone_that_is_no_code_is_a_choice_with_nothing_to_choose(trained, text) -> None:
    """WeChat maps "2" to the pending options; with none pending it was taken for a goodbye."""
    assert classified(trained, text)[INTENT] == {"name": "nlu_fallback", "confidence": 1.0}


def test_the_codes_travel_with_the_model(trained, storage) -> None:
    loaded = BareValueIntent.load(
        {"content_dir": "does/not/exist"},
        storage,
        Resource("codes"),
        ExecutionContext(GraphSchema({}), "test"),
    )
    assert loaded.codes == trained.codes
    assert {"00", "51", "A0", "96"} <= loaded.codes and "88" not in loaded.codes


def test_a_broken_kb_stops_training_with_its_problems(tmp_path, storage) -> None:
    broken = tmp_path / "content"
    broken.mkdir()
    (broken / "error_codes.yml").write_text("error_codes:\n  - codes: [\n", encoding="utf-8")
    component = BareValueIntent.create(
        {"content_dir": str(broken)}, storage, Resource("broken"), ExecutionContext(GraphSchema({}), "test")
    )
    with pytest.raises(RasaException, match="posbot kb lint"):
        component.train(TrainingData())
