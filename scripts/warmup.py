"""Wait until a Rasa server answers, then run one parse and one prediction through it.

TensorFlow builds its graphs on the first call; doing that here keeps the first merchant's reply
as fast as every later one. The prediction uses /predict, which stores no conversation.
"""

from __future__ import annotations

import sys
import time

import requests

from bot.api_token import rasa_token

WARMUP_TEXTS = ["你好", "拉卡拉POS机打印机不出纸,刷卡显示A0"]


def wait_ready(url: str, timeout_s: float = 180.0) -> float:
    start = time.monotonic()
    token = {"token": rasa_token()}
    while time.monotonic() - start < timeout_s:
        try:
            status = requests.get(f"{url}/status", params=token, timeout=2)
            if status.ok and status.json().get("model_file"):
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


def warm(url: str) -> None:
    token = {"token": rasa_token()}
    for text in WARMUP_TEXTS:
        requests.post(f"{url}/model/parse", json={"text": text}, params=token, timeout=30)
    requests.post(f"{url}/conversations/posbot-warmup/predict", params=token, timeout=30)


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5005"
    waited = wait_ready(url)
    warm(url)
    print(f"warm-up done ({waited:.1f} s until the model was loaded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
