"""Rasa's JiebaTokenizer, retrained when its dictionary files change.

Rasa 3.6 caches trained components by their configuration and inputs; the files under
``dictionary_path`` are neither, so after staff add a word to kb/content (and `posbot kb dict`
rewrites var/jieba) `rasa train` would restore the old tokenizer and every component after it
from the cache. The digest of the dictionary files is part of the fingerprint here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Optional

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer


def files_digest(directory: Path, pattern: str = "*") -> str:
    """SHA-256 over the names and bytes of the files in ``directory`` matching ``pattern``."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob(pattern)):
        if path.is_file():
            digest.update(path.name.encode("utf-8"))
            digest.update(path.read_bytes())
    return digest.hexdigest()


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=True)
class DictionaryJiebaTokenizer(JiebaTokenizer):
    """JiebaTokenizer whose training cache key includes its dictionary files."""

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        path = config.get("dictionary_path")
        return files_digest(Path(path)) if path else None
