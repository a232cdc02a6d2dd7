"""FAQ retrieval: which KB topic answers a merchant's message.

Every topic has a standard question and alternate questions. When the index is built (once per
KB digest) a linear classifier over the topics is fitted on those questions, with two kinds of
features side by side:

* **meaning** — the sentence embedding of the text (kb/encoder.py, multilingual-e5-small),
  scaled by ``EMBEDDING_WEIGHT`` so it counts as much as the n-grams;
* **words** — TF-IDF of character 1-3-grams. Characters rather than jieba words: merchants'
  typos (ps机, 打应机) and run-on questions break segmentation, n-grams degrade gracefully.

The topic's score is the classifier's probability plus an **intent prior** (the NLU's
probability for the topic's intent, times ``INTENT_WEIGHT``): the intent helps, it does not
filter. A message that *is* one of a topic's questions (ignoring case, punctuation, spaces and
繁/简) gets that topic whatever the intent says: a question staff just added or taught is
answered after ``posbot kb build``, even before retraining teaches the NLU its intent. For
display (the staff console's "try it") each match also carries the cosine of the nearest
question and a BM25 score over character bigrams.

Chosen with 5-fold cross-validation over the KB's own alternate questions
(``scripts/tune_retrieval.py``), never on a held-out set, 2026-11-30, 106 topics / 794
alternates: nearest-question cosine alone 0.51 top-1; + BM25 0.55; TF-IDF regression alone
0.53; TF-IDF + e5 (weight 5, C = 3) 0.70 top-1, 0.89 top-3. liblinear (one-vs-rest) fits in
~5 s, lbfgs (multinomial) in ~40 s for the same accuracy.

The index is built from the database (``posbot kb build`` stores the embeddings), cached per KB
digest (and its fitted classifier on disk, kb/cache.py, so the next process loads it in ~0.3 s
instead of fitting ~15 s), and rebuilt when a publish changes the digest: a new topic is answerable after
``posbot kb build``, without retraining or restarting.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import sklearn
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from kb.cache import FittedFiles, fingerprint
from kb.encoder import SentenceEncoder, clean

logger = logging.getLogger(__name__)

#: Features and prior (see the module docstring for how they were chosen).
EMBEDDING_WEIGHT = 5.0
C = 3.0
INTENT_WEIGHT = 0.3
#: Texts whose scores an index keeps (per process; a new KB build starts a new index).
TEXTS_KEPT = 512
#: The best topic is answered when its score reaches ANSWER_AT and leads the second topic by
#: MARGIN; below SUGGEST_AT a topic is not even offered as a suggestion. First set from the KB
#: cross-validation (0.30 / 0.05: 56 % answered, 84 % of them right); lowered to 0.20 / 0.03 on
#: 2026-11-30 on merchant set1 (used as development set from then on: it asked back 26 times,
#: with the right topic among the buttons 19 times), then checked on set2 (docs/quality.md).
ANSWER_AT = 0.20
MARGIN = 0.03
SUGGEST_AT = 0.05
#: A match this strong is specific enough to answer a fault report with its topic instead of
#: the walk ("小票打出来是白纸" → the paper's side: 0.93; "打印机不出纸" → 0.56, walk).
SURE_AT = 0.75


#: Question vectors whose owner starts with this belong to a symptom's walk, not to a topic.
SYMPTOM_OWNER = "symptom:"
#: The symptom index's class for reports that name no symptom ("POS机坏了"): the bot asks.
VAGUE = "?"
#: In the answer index (topics and walks in one classifier) a walk's id is ``walk:<symptom>``.
WALK = "walk:"
#: A fault report no keyword names starts the walk of the symptom whose reports it is nearest
#: to when that symptom's score reaches SYMPTOM_AT (chosen on merchant sets 1+2, 2026-11-30);
#: below it the bot asks which symptom.
SYMPTOM_AT = 0.45


def sure(matches: Sequence["Match"]) -> bool:
    return confident(matches) and matches[0].score >= SURE_AT


_PUNCT = re.compile(r"[\s，。？！,.?!、：:；;（）()“”\"'~～…]+")


def bigrams(text: str) -> list[str]:
    kept = _PUNCT.sub("", clean(text))
    if len(kept) < 2:
        return [kept] if kept else []
    return [kept[i : i + 2] for i in range(len(kept) - 1)]


@dataclass(frozen=True)
class TopicDoc:
    """What retrieval needs of a topic."""

    id: str
    intent: str
    questions: tuple[str, ...]
    vectors: np.ndarray  # (len(questions), dim)


@dataclass(frozen=True)
class Match:
    topic_id: str
    score: float
    meaning: float
    words: float
    question: str  # the topic question nearest to the message


class BM25:
    """Okapi BM25 (k1 = 1.2, b = 0.75) over one token list per document."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tfs = [Counter(d) for d in docs]
        self.lengths = [len(d) for d in docs]
        self.avg = (sum(self.lengths) / len(docs)) if docs else 1.0
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(self.tfs), dtype=np.float32)
        terms = [t for t in set(query) if t in self.idf]
        for i, (tf, length) in enumerate(zip(self.tfs, self.lengths, strict=True)):
            norm = self.k1 * (1 - self.b + self.b * length / self.avg)
            out[i] = sum(self.idf[t] * tf[t] * (self.k1 + 1) / (tf[t] + norm) for t in terms if t in tf)
        return out


class TopicIndex:
    """All topics' questions, embedded, and the classifier fitted on them."""

    def __init__(
        self,
        topics: Sequence[TopicDoc],
        encoder: SentenceEncoder,
        digest: str = "",
        extra_text: Optional[Mapping[str, str]] = None,
        fits: Optional[FittedFiles] = None,
    ) -> None:
        """``fits``: where fitted classifiers are kept between processes (kb/cache.py); an index
        over the same questions, vectors and settings is then loaded instead of fitted."""
        self.topics = list(topics)
        self.encoder = encoder
        self.digest = digest
        self.matrix = (
            np.vstack([t.vectors for t in self.topics])
            if self.topics
            else np.zeros((0, encoder.dim), dtype=np.float32)
        )
        self.owner = np.array([i for i, t in enumerate(self.topics) for _ in t.questions], dtype=int)
        self.exact = {
            same_words(q): i for i, t in enumerate(self.topics) for q in t.questions if same_words(q)
        }
        self.texts = [q for t in self.topics for q in t.questions]
        extra = extra_text or {}
        self.bm25 = BM25(
            [[gram for q in (*t.questions, extra.get(t.id, "")) for gram in bigrams(q)] for t in self.topics]
        )
        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        self.classifier: Optional[LogisticRegression] = None
        # What a text scores, before the intent priors: one computation per text (a message is
        # ranked 2-4 times per turn, by the NLU and by the actions; merchants repeat themselves).
        self._scored = lru_cache(maxsize=TEXTS_KEPT)(self._score_text)
        if len(self.topics) > 1:
            key = self._fit_key()
            kept = fits.load(key) if fits is not None else None
            if kept is not None:
                self.vectorizer, self.classifier = kept
            else:
                grams = self.vectorizer.fit_transform([clean(q) for q in self.texts])
                self.classifier = LogisticRegression(C=C, solver="liblinear", max_iter=2000)
                self.classifier.fit(self._features(grams, self.matrix), self.owner)
                if fits is not None:
                    fits.save(key, (self.vectorizer, self.classifier))

    def _fit_key(self) -> str:
        """Everything the fit reads: questions, their topics and vectors, the settings, sklearn."""
        return fingerprint(
            "TopicIndex/1",
            sklearn.__version__,
            f"{EMBEDDING_WEIGHT}/{C}",
            "\x1f".join(self.texts),
            np.ascontiguousarray(self.owner, dtype=np.int64).tobytes(),
            np.ascontiguousarray(self.matrix, dtype=np.float32).tobytes(),
        )

    @staticmethod
    def _features(grams: Any, vectors: np.ndarray) -> Any:
        return hstack([grams, csr_matrix(vectors * EMBEDDING_WEIGHT)]).tocsr()

    def probabilities(self, text: str, vector: np.ndarray) -> np.ndarray:
        """The classifier's probability per topic (index order), summing to 1."""
        if self.classifier is None:
            return np.ones(len(self.topics), dtype=np.float32)
        grams = self.vectorizer.transform([clean(text)])
        raw = self.classifier.predict_proba(self._features(grams, vector[None, :]))[0]
        out = np.zeros(len(self.topics), dtype=np.float32)
        out[self.classifier.classes_] = raw
        return out / max(float(out.sum()), 1e-9)

    def _score_text(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[int]]:
        """Per topic: classifier probability, best cosine, index of that question, BM25 share
        (read-only arrays: they are shared by every later ranking of the same text); and the
        topic whose question the text is, if any."""
        query = self.encoder.encode([text])[0]
        sims = self.matrix @ query
        meaning = np.full(len(self.topics), -1.0, dtype=np.float32)
        nearest = np.zeros(len(self.topics), dtype=int)
        for row in np.argsort(sims):  # ascending: the best row of each topic is written last
            meaning[self.owner[row]] = sims[row]
            nearest[self.owner[row]] = row
        lexical = self.bm25.scores(bigrams(text))
        top = float(lexical.max()) if len(lexical) else 0.0
        words = lexical / top if top > 0 else lexical
        parts = (self.probabilities(text, query), meaning, nearest, words)
        for array in parts:
            array.setflags(write=False)
        return (*parts, self.exact.get(same_words(text)))

    def rank(
        self, text: str, intent_probabilities: Optional[Mapping[str, float]] = None, limit: int = 5
    ) -> list[Match]:
        """Topics best first, with the scores staff see in the console's "try it"."""
        if not self.topics or not clean(text):
            return []
        probabilities, meaning, nearest, words, asked = self._scored(text)
        prior = np.array(
            [float((intent_probabilities or {}).get(t.intent, 0.0)) for t in self.topics], dtype=np.float32
        )
        score = probabilities + INTENT_WEIGHT * prior
        if asked is not None:  # the message is one of this topic's questions
            score[asked] = 1.0 + INTENT_WEIGHT
        order = np.argsort(-score)[:limit]
        return [
            Match(
                self.topics[i].id, float(score[i]), float(meaning[i]), float(words[i]), self.texts[nearest[i]]
            )
            for i in order
        ]


_NOT_WORDS = re.compile(r"[\W_]+")


def same_words(text: str) -> str:
    """The text as compared for an exact question: cleaned, without punctuation or spaces."""
    return _NOT_WORDS.sub("", clean(text))


def confident(matches: Sequence[Match]) -> bool:
    """True when the best match is near enough, and far enough ahead, to answer directly."""
    if not matches or matches[0].score < ANSWER_AT:
        return False
    return len(matches) < 2 or matches[0].score - matches[1].score >= MARGIN


def suggestions(matches: Sequence[Match], limit: int = 3) -> list[Match]:
    """The matches worth offering as "您是想问" buttons."""
    return [m for m in matches if m.score >= SUGGEST_AT][:limit]


def decode(blob: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)


class CachedIndex:
    """The index for the KB's current digest, rebuilt after a publish (thread-safe).

    ``stale_ok`` (the servers' store): while the index of a new build is being fitted (20-40 s
    on 2 cores), the previous one keeps answering and the new one is built in a background
    thread; without it (tools, tests, the console's 试一试) the caller waits for the new index.
    Fitted in the caller's turn, the first merchant after a publish waited up to 40 s, and on
    the Rasa server every merchant behind them (2026-11-30)."""

    def __init__(self) -> None:
        self._index: Optional[TopicIndex] = None
        self._lock = threading.Lock()
        self._building: set[str] = set()
        self._flags = threading.Lock()

    def get(
        self,
        digest: str,
        build: Callable[[], TopicIndex],
        stale_ok: bool = False,
        encoder: Optional[str] = None,
    ) -> TopicIndex:
        """The index of ``digest`` (and of the encoder named ``encoder``, when given: an index
        fitted with another encoder's vectors never answers)."""
        index = self._index
        same_encoder = index is not None and (encoder is None or index.encoder.name == encoder)
        if index is not None and same_encoder and index.digest == digest:
            return index
        if stale_ok and index is not None and same_encoder:
            self._build_in_background(digest, build, encoder)
            return index
        with self._lock:
            current = self._index
            if (
                current is None
                or current.digest != digest
                or (encoder is not None and current.encoder.name != encoder)
            ):
                current = self._index = build()
                logger.info(
                    "retrieval index built for KB %s: %d topics, %d questions",
                    digest[:8],
                    len(current.topics),
                    len(current.texts),
                )
            return current

    def _build_in_background(
        self, digest: str, build: Callable[[], TopicIndex], encoder: Optional[str]
    ) -> None:
        with self._flags:
            if digest in self._building:
                return
            self._building.add(digest)

        def run() -> None:
            try:
                self.get(digest, build, encoder=encoder)
            except Exception:  # the next request tries again
                logger.warning("could not build the retrieval index for KB %s", digest[:8], exc_info=True)
            finally:
                with self._flags:
                    self._building.discard(digest)

        threading.Thread(target=run, name="posbot-index-build", daemon=True).start()
