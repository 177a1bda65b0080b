"""Text to token ids, the way the official processor does it, with ``tokenizers``."""

from __future__ import annotations

from pathlib import Path

from engine.errors import TokenizerError

# The official demos replace typographic quotes before tokenising
# (demo/realtime_model_inference_from_file.py); we do it for every caller.
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def normalize_text(text: str) -> str:
    """Curly quotes to straight ones, then ``text.strip() + "\\n"``
    (``VibeVoiceStreamingProcessor.process_input_with_cached_prompt``)."""
    return text.translate(_QUOTES).strip() + "\n"


class TextTokenizer:
    """A Qwen2.5 byte-level BPE ``tokenizer.json`` (no transformers dependency)."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:
            if not path.exists():
                raise TokenizerError(f"{path}: tokenizer.json not found") from None
            raise TokenizerError(f"{path}: unreadable tokenizer.json ({e})") from None
        self.path = path

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return self._tok.encode(normalize_text(text), add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)
