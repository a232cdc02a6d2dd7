"""Releasing a handoff: Rasa is resumed first, then the row is marked; failures change nothing."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sqlalchemy import create_engine

from records.store import RecordStore
from staff.cli import main
from staff.handoff import ReleaseError, release


class FakeRasa:
    """Records the calls a release makes; answers like Rasa's HTTP API (or refuses)."""

    def __init__(self, status: int = 200, down: bool = False) -> None:
        self.calls: list[tuple[str, Any, dict]] = []
        self.status, self.down = status, down

    def post(self, url: str, json: Any = None, params: Any = None, timeout: float = 0) -> Any:
        if self.down:
            raise requests.ConnectionError("connection refused")
        self.calls.append((url, json, dict(params or {})))
        response = requests.Response()
        response.status_code = self.status
        response._content = b"{}"
        return response


@pytest.fixture()
def records() -> RecordStore:
    return RecordStore(create_engine("sqlite://"))


def test_release_resumes_the_conversation_then_marks_the_row(records: RecordStore) -> None:
    waiting = records.add_handoff("merchant/7", brand=None, symptom=None, question="转人工")
    rasa = FakeRasa()
    result = release(records, waiting.id, "http://rasa:5005/", token="s3cret", session=rasa)
    assert rasa.calls[0] == (
        "http://rasa:5005/conversations/merchant%2F7/tracker/events",
        {"event": "resume"},
        {"token": "s3cret"},
    )
    assert rasa.calls[1] == (
        "http://rasa:5005/conversations/merchant%2F7/execute",
        {"name": "utter_handoff_released"},
        {"token": "s3cret", "output_channel": "latest"},
    )
    assert rasa.calls[2] == (
        "http://rasa:5005/conversations/merchant%2F7/tracker/events",
        {"event": "action", "name": "action_listen"},
        {"token": "s3cret"},
    )
    assert result.merchant_notified and not result.already_released
    stored = records.handoff(waiting.id)
    assert stored.status == "released" and stored.released_at is not None


@pytest.mark.parametrize("rasa", [FakeRasa(down=True), FakeRasa(status=404)])
def test_unreachable_or_refusing_rasa_leaves_the_handoff_waiting(
    records: RecordStore, rasa: FakeRasa
) -> None:
    waiting = records.add_handoff("merchant-8", brand=None, symptom=None, question="")
    with pytest.raises(ReleaseError):
        release(records, waiting.id, "http://rasa:5005", session=rasa)
    assert records.handoff(waiting.id).status == "waiting"


def test_unknown_id_is_an_error(records: RecordStore) -> None:
    with pytest.raises(ReleaseError, match="no handoff with id 99"):
        release(records, 99, "http://rasa:5005", session=FakeRasa())


def test_cli_lists_waiting_handoffs(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    store = RecordStore(create_engine(url))
    store.add_handoff("merchant-9", brand="拉卡拉", symptom="printer", question="打印机不出纸 / 转人工")
    released = store.add_handoff("merchant-10", brand=None, symptom=None, question="")
    store.mark_released(released.id)
    assert main(["handoff", "list", "--database", url]) == 0
    out = capsys.readouterr().out
    assert "merchant-9" in out and "打印机不出纸 / 转人工" in out and "merchant-10" not in out
    assert main(["handoff", "list", "--all", "--database", url]) == 0
    assert "merchant-10" in capsys.readouterr().out


def test_cli_release_fails_cleanly_when_rasa_is_down(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    handoff = RecordStore(create_engine(url)).add_handoff("m", brand=None, symptom=None, question="")
    code = main(
        ["handoff", "release", str(handoff.id), "--rasa-url", "http://127.0.0.1:9", "--database", url]
    )
    assert code == 1
    assert "not released" in capsys.readouterr().err
