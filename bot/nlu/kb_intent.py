"""The knowledge base's topic decides the intent when retrieval is sure of the topic.

Intents are coarse (``usage_tips`` covers batteries, passwords, paper …); the KB's 100-odd
topics are fine-grained, and each belongs to one intent. FAQ retrieval (kb/retrieval.py: TF-IDF +
e5 classifier over the topics' questions, with the NLU's ranking as a prior) names the right
topic more often than the intent classifiers name the right intent, so when its best topic
scores at least ``answer_at`` the message's intent becomes that topic's intent — also when the
FallbackClassifier before this component had given up (``nlu_fallback``).

A message the NLU gave up on that names a response code or its screen text is an
``error_code`` question; so is any other question (a fault report, "小票上写着有缺陷的成功 这钱
收到没", "显示密码错误次数超限 怎么办") naming a code the KB explains, except the intents below. Never
overridden: what retrieval cannot know — a response code the entity extractor found for
``error_code``, a request for a person, small talk, out of scope, values typed alone
(BareValueIntent) — and a fault report (fault intents, not phrased as a question such as "打印头
多久清洁一次"): the walk, not a how-to topic, answers "按键没反应". After a fallback that no topic
rescues, a message whose meaning is clearly one fault symptom's (the KB's symptom reports,
``symptom_index``) gets that symptom's fault intent, so its walk starts.

A person asked for anywhere in the message ("你好 有没有人工 我的机子刷卡一直提示交易失败 急",
vocabulary ``person_requests``) makes it a ``human_handoff``, whatever the rest says.

Measured 2026-11-30 on merchant sets 1 and 2 (1,209 questions, the development sets): intent
accuracy 0.892 → 0.951 at ``answer_at`` 0.3 (0.946 at 0.4), 71 questions gained, none lost.
The topics are read from the KB database (``POSBOT_DATABASE_URL``) and follow every
``posbot kb build``; without a built KB the NLU's intent stays as it was (logged once).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from kb.retrieval import SYMPTOM_AT, VAGUE, TopicDoc, confident
from kb.store import CATEGORY_INTENTS, KnowledgeStore, shared_store

logger = logging.getLogger(__name__)

FALLBACK = "nlu_fallback"
#: Intents retrieval over topics cannot judge.
KEPT = {"human_handoff", "greet", "goodbye", "thanks", "affirm", "deny", "out_of_scope", "bot_challenge"}
HANDOFF = "human_handoff"
FAULTS = set(CATEGORY_INTENTS.values())
OUT_OF_SCOPE = "out_of_scope"
#: Small talk a bare brand statement ("我用的是拉卡拉") can be mistaken for on some trainings.
SMALL_TALK = {"affirm", "deny", "thanks", "greet", "goodbye"}
#: A screen text this long names its code whatever else the message says ("有缺陷的成功",
#: "密码错误次数超限"); shorter ones ("密码错误", "无效卡") are common words too.
SPECIFIC_SCREEN_TEXT = 5


def _set_intent(message: Message, ranking: List[Dict[str, Any]], intent: str, score: float) -> None:
    """``intent`` first (confidence ``score``, at most 1), then the rest of ``ranking``."""
    rest = [r for r in ranking if r.get("name") != intent]
    new_ranking = [{"name": intent, "confidence": min(1.0, score)}, *rest]
    message.set(INTENT, new_ranking[0], add_to_output=True)
    message.set(INTENT_RANKING_KEY, new_ranking, add_to_output=True)


def _unmistakable(span: str) -> bool:
    """The words that named a code: a letter code ("A7") or a long screen text."""
    span = span.strip()
    return (len(span) == 2 and span[0].isascii() and span[0].isalpha()) or (
        len(span) >= SPECIFIC_SCREEN_TEXT and not span.isascii()
    )


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class KBTopicIntent(GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"answer_at": 0.3}

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        if not 0 < float(config.get("answer_at", 0.3)) <= 1.3:
            raise ValueError("KBTopicIntent: `answer_at` must be in (0, 1.3]")

    def __init__(self, config: Dict[Text, Any]) -> None:
        self.answer_at = float(config["answer_at"])
        self._warned = False

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> KBTopicIntent:
        return cls({**cls.get_default_config(), **config})

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> KBTopicIntent:
        """The component of a loaded model (serving, ``rasa test``, a rolling publish's worker
        thread): the retrieval indexes are built here, before the model answers anyone. Built
        on a merchant's first KB question instead, they held the Rasa server's event loop for
        13 s on an idle machine (every merchant waited), and up to a minute after a publish."""
        component = cls.create(config, model_storage, resource, execution_context)
        component.warm()
        return component

    def warm(self) -> None:
        store = self._store()
        if store is None:
            return
        try:
            store.topic_index()
            store.symptom_index()
        except Exception:  # the first question builds them then
            logger.warning("KBTopicIntent: could not build the retrieval indexes", exc_info=True)

    def _store(self) -> Optional[KnowledgeStore]:
        try:
            store = shared_store()
            if store.digest() is None:
                raise LookupError("the knowledge base was never built")
            return store
        except Exception as error:  # no KB here (e.g. `rasa data validate`): keep the NLU's
            if not self._warned:
                logger.warning("KBTopicIntent inactive: %s (run `posbot kb build`)", error)
                self._warned = True
            return None

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT)
            ranking = [r for r in message.get(INTENT_RANKING_KEY) or [] if r.get("name") != FALLBACK]
            if not isinstance(text, str) or not text.strip() or not ranking:
                continue
            if self._asks_for_person(message, text):
                _set_intent(message, ranking, HANDOFF, 1.0)
                continue
            if str(ranking[0].get("name")) in SMALL_TALK and self._brand_statement(message, text):
                # The fallback path notes the brand and asks what the question is (actions/
                # fallback.py), as when the NLU gives up on it, which it usually does.
                message.set(INTENT, {"name": FALLBACK, "confidence": 1.0}, add_to_output=True)
                continue
            # A screen text in a situation a topic is about first, then a code, then topics.
            topic_intent = self._screen_text_in_context(message, text, ranking)
            if topic_intent is None and (self._names_a_code(message) or self._names_a_known_code(message)):
                topic_intent = ("error_code", float(ranking[0].get("confidence") or 0.0))
            elif topic_intent is None:
                store = self._store()
                if store is None:
                    return messages
                topic_intent = self._topic_intent(store, message, text, ranking)
            if topic_intent is None and str(ranking[0].get("name")) in FAULTS:
                topic_intent = self._fault_intent(self._store(), message, text)
            if topic_intent is None and str(ranking[0].get("name")) == OUT_OF_SCOPE:
                topic_intent = self._fault_not_declined(self._store(), message, text, ranking)
            if topic_intent is None:
                continue
            _set_intent(message, ranking, *topic_intent)
        return messages

    def _asks_for_person(self, message: Message, text: str) -> bool:
        """A person asked for inside a longer message ("你好 有没有人工 我的机子刷卡一直提示交
        易失败 急"): the NLU hears the fault; the merchant wants a person (the handoff keeps
        the question for the agent)."""
        if str((message.get(INTENT) or {}).get("name") or "") in (HANDOFF, "bot_challenge"):
            return False  # "你是真人客服吗" asks what the bot is
        store = self._store()
        return store is not None and store.asks_for_person(text)

    def _brand_statement(self, message: Message, text: str) -> bool:
        """ "我用的是拉卡拉": brands and vocabulary.yml ``brand_statement_fillers`` only."""
        entities = message.get(ENTITIES) or []
        brands = [e for e in entities if e.get("entity") == "brand" and "start" in e and "end" in e]
        if not brands or len(brands) != len(entities):
            return False
        store = self._store()
        spans = [(int(e["start"]), int(e["end"])) for e in brands]
        return store is not None and store.is_brand_statement(text, spans)

    def _screen_text_in_context(
        self, message: Message, text: str, ranking: List[Dict[str, Any]]
    ) -> Optional[tuple[str, float]]:
        """A screen text that names a code, in a situation a KB topic is about: "退货提示余额不足"
        is the merchant's own balance on a refund (refund_fail_fee), not the customer's card
        (51); "app一直提示密码错误" is the app's login. When the topic retrieval is sure of has
        the same screen text in one of its questions, the topic answers, not the code: the KB
        author wrote that text there for that situation. Never for a code typed as such ("51")
        or a screen text too specific to mean anything else ("密码错误次数超限")."""
        spans = [
            text[int(e["start"]) : int(e["end"])]
            for e in message.get(ENTITIES) or []
            if e.get("entity") == "error_code" and "start" in e and "end" in e
        ]
        spans = [s for s in spans if s.strip() and not s.isascii() and not _unmistakable(s)]
        if not spans or str(ranking[0].get("name")) in KEPT:
            return None
        store = self._store()
        found = self._sure_topic(store, text, ranking, clear_lead=True) if store is not None else None
        if found is None or not any(span in q for span in spans for q in found[0].questions):
            return None
        return found[0].intent, found[1]

    def _names_a_code(self, message: Message) -> bool:
        """The NLU gave up, or declined, but the message names a response code or its screen
        text ("返回41是什么情况", "刷卡提示余额不足 客户手机上看额度明明还有"): the code's
        explanation is the answer. A declined one only with a word of the POS (``pos_markers``,
        ``pos_terms``) and no other device or finance outside acquiring: "ATM吞卡了怎么办",
        "洗碗机显示E4", "微信提示余额不足" stay declined."""
        current = str((message.get(INTENT) or {}).get("name") or "")
        entities = {e.get("entity") for e in message.get(ENTITIES) or []}
        if "error_code" not in entities or current not in (FALLBACK, OUT_OF_SCOPE):
            return False
        if current == FALLBACK:
            return True
        store = self._store()
        text = str(message.get(TEXT) or "")
        return (
            store is not None
            and (store.mentions(text, "pos_markers") or store.mentions(text, "pos_terms"))
            and not store.is_other_device(text)
            and not store.is_other_finance(text)
        )

    def _names_a_known_code(self, message: Message) -> bool:
        """A message that names a response code the KB explains ("pos机报错A0怎么解决", "刷卡一直
        提示余额不足", "小票上写着有缺陷的成功 这钱收到没"): the code's explanation, not the
        generic screen-error walk (which would ask for the code again) or a topic near its
        other words. Only codes the KB knows, so a stray number is no code. Outside fault
        reports only what cannot be something else: a code with a letter ("A7是什么问题") or a
        screen text of SPECIFIC_SCREEN_TEXT characters or more ("有缺陷的成功"); not "扣了99 是
        什么钱" (an amount), not "密码输错" (the merchant's own password, or the customer's), and
        never in a fee question, whose numbers are amounts."""
        current = str((message.get(INTENT) or {}).get("name") or "")
        if current in KEPT or current in (FALLBACK, "error_code", "fees"):
            return False
        text = str(message.get(TEXT) or "")
        codes = [
            str(e.get("value"))
            for e in message.get(ENTITIES) or []
            if e.get("entity") == "error_code"
            and e.get("value")
            and (current in FAULTS or _unmistakable(text[e.get("start", 0) : e.get("end", 0)]))
        ]
        store = self._store() if codes else None
        return store is not None and any(store.error_code(code) is not None for code in codes)

    @staticmethod
    def _fault_intent(
        store: Optional[KnowledgeStore], message: Message, text: str
    ) -> Optional[tuple[str, float]]:
        """After a fallback whose best guess was a fault: a report whose meaning is clearly one
        symptom's ("收银台那台机器一张票都吐不出来") is a fault of that symptom's category. Only
        then: the symptom classifier knows nothing but faults ("我用的是拉卡拉" is nearest to
        死机), so it must not judge other messages."""
        if store is None or str((message.get(INTENT) or {}).get("name") or "") != FALLBACK:
            return None
        matches = store.symptom_index().rank(text, limit=1)
        if not matches or matches[0].score < SYMPTOM_AT or matches[0].topic_id == VAGUE:
            return None
        symptom = store.symptom(matches[0].topic_id)
        intent = CATEGORY_INTENTS.get(symptom.category) if symptom is not None else None
        return (intent, matches[0].score) if intent else None

    def _fault_not_declined(
        self, store: Optional[KnowledgeStore], message: Message, text: str, ranking: List[Dict[str, Any]]
    ) -> Optional[tuple[str, float]]:
        """What the NLU declined although it is about the POS: a message with a word only POS
        acquiring uses ("收款音箱不报语音了", "刷卡鸡电池不行了": ``pos_terms``) gets the topic
        retrieval is sure of; a fault named by a symptom's keyword ("屏幕碎了", "一直死机") is
        the POS's in a POS support chat, so its walk. Not when another device ("手机屏幕碎
        了") or finance outside acquiring is named: retrieval alone is sure of far too much
        ("顺丰客服电话多少" is near the support-hotline topic). POS words with no sure topic
        and no symptom: the fallback (nlu_fallback), which looks across all topics."""
        if store is None or str((message.get(INTENT) or {}).get("name") or "") != OUT_OF_SCOPE:
            return None
        if store.is_other_device(text) or store.is_other_finance(text):
            return None
        pos_words = store.mentions(text, "pos_terms")
        if pos_words:
            found = self._sure_topic_intent(
                store, text, [r for r in ranking if r.get("name") != OUT_OF_SCOPE]
            )
            if found is not None:
                return found
        symptom = store.symptom_for(text)
        intent = CATEGORY_INTENTS.get(symptom.category) if symptom is not None else None
        if intent:
            return intent, SYMPTOM_AT
        # POS words, but no topic sure enough ("5万的信用卡大额刷不出去"): the fallback looks
        # across all topics and answers or offers the nearest; a decline would be wrong.
        if not pos_words or store.mentions(text, "other_finance"):  # "信用卡还款能用pos吗"
            return None
        return FALLBACK, float(ranking[0].get("confidence") or 0.0)

    def _topic_intent(
        self, store: KnowledgeStore, message: Message, text: str, ranking: List[Dict[str, Any]]
    ) -> Optional[tuple[str, float]]:
        top = str(ranking[0].get("name"))
        current = str((message.get(INTENT) or {}).get("name") or "")
        entities = {e.get("entity") for e in message.get(ENTITIES) or []}
        if top in KEPT or (top == "error_code" and "error_code" in entities):
            return None
        if float(ranking[0].get("confidence") or 0.0) >= 1.0:  # BareValueIntent: "51", "0.6%"
            return None
        if top in FAULTS and current != FALLBACK and not store.is_info_question(text):
            return None
        return self._sure_topic_intent(store, text, ranking)

    def _sure_topic_intent(
        self, store: KnowledgeStore, text: str, ranking: List[Dict[str, Any]]
    ) -> Optional[tuple[str, float]]:
        """The intent of the topic retrieval ranks first with the NLU's ranking as prior, and its
        score, when the score reaches ``answer_at``."""
        found = self._sure_topic(store, text, ranking)
        return (found[0].intent, found[1]) if found is not None else None

    def _sure_topic(
        self, store: KnowledgeStore, text: str, ranking: List[Dict[str, Any]], clear_lead: bool = False
    ) -> Optional[tuple[TopicDoc, float]]:
        """The topic retrieval ranks first with the NLU's ranking as prior, and its score, when
        the score reaches ``answer_at`` (and, with ``clear_lead``, leads the second by MARGIN)."""
        if store.says_nothing(text):
            return None
        priors = {str(r.get("name")): float(r.get("confidence") or 0.0) for r in ranking}
        index = store.topic_index()
        matches = index.rank(text, priors, limit=2)
        if not matches or matches[0].score < self.answer_at or (clear_lead and not confident(matches)):
            return None
        topic = next((t for t in index.topics if t.id == matches[0].topic_id), None)
        return (topic, matches[0].score) if topic is not None else None
