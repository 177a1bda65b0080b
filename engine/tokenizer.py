"""Text to token ids, the way the official processor does it, with ``tokenizers``."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from pathlib import Path

from engine.errors import RequestError, TokenizerError

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
        """Highest id it can produce, plus one (added tokens included)."""
        ids = self._tok.get_vocab(with_added_tokens=True).values()
        return max(ids, default=-1) + 1

    def check_fits(self, model_vocab_size: int) -> None:
        """Raise TokenizerError unless every id this tokenizer produces is a row of the
        model's embedding table (of ``model_vocab_size`` rows)."""
        n = self.vocab_size
        if n > model_vocab_size:
            raise TokenizerError(
                f"{self.path}: this tokenizer has {n} tokens, the model {model_vocab_size}; "
                "it belongs to another model (use the tokenizer.json made for this one)"
            )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return self._tok.encode(normalize_text(text), add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


def checked_token_ids(ids: Iterable[object], vocab_size: int) -> list[int]:
    """``ids`` as a list of ints, each a row of an embedding table of ``vocab_size`` rows;
    RequestError otherwise (a gather does not check its indices: MLX on the CPU reads
    past the table)."""
    out: list[int] = []
    for i in ids:
        try:
            out.append(operator.index(i))
        except TypeError:
            raise RequestError(f"token id {i!r} is not an integer") from None
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise RequestError(
            f"token id {bad[0]} is out of range: the model has {vocab_size} tokens (0 to "
            f"{vocab_size - 1}); the ids were made by another tokenizer"
        )
    return out
