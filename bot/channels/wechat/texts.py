"""What the WeChat channel says by itself (``bot/channels/wechat_texts.yml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

#: The texts file: Chinese wording stays in data, next to the package.
TEXTS_PATH = Path(__file__).resolve().parents[1] / "wechat_texts.yml"


@dataclass(frozen=True)
class WeChatTexts:
    """What the channel says by itself; loaded from YAML so wording changes need no code change."""

    unsupported: str
    bot_error: str
    menu_header: str
    continuation_marker: str
    continue_keywords: tuple[str, ...]
    nothing_more: str
    subscribe_payload: str
    menu_click_payloads: dict[str, str]
    agent_prefix: str

    @classmethod
    def load(cls, path: Path = TEXTS_PATH) -> WeChatTexts:
        """Reads and validates the texts file; a missing key is a packaging bug, so fail fast."""
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        missing = [f.name for f in dataclasses.fields(cls) if not data.get(f.name)]
        if missing:
            raise ValueError(f"{path} lacks required keys: {', '.join(missing)}")
        try:
            str(data["agent_prefix"]).format(name="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{path}: agent_prefix may only use the {{name}} placeholder") from exc
        return cls(
            unsupported=str(data["unsupported"]).strip(),
            bot_error=str(data["bot_error"]).strip(),
            menu_header=str(data["menu_header"]).strip(),
            continuation_marker=str(data["continuation_marker"]).strip(),
            continue_keywords=tuple(str(k).strip() for k in data["continue_keywords"]),
            nothing_more=str(data["nothing_more"]).strip(),
            subscribe_payload=str(data["subscribe_payload"]).strip(),
            menu_click_payloads={
                str(k).strip(): str(v).strip() for k, v in data["menu_click_payloads"].items()
            },
            agent_prefix=str(data["agent_prefix"]).strip(),
        )

    def agent_line(self, name: str) -> str:
        """The line above an agent's words, naming the agent."""
        return self.agent_prefix.format(name=name.strip())
