"""The exact bytes each token of a vocabulary stands for (logprobs report them per token).

Decoding one token alone cannot give them: a token holding part of a multi-byte character decodes
to U+FFFD. Byte-level BPE vocabularies (GPT-2's scheme, used by SmolLM2, Llama 3, Qwen) spell each
byte as one printable character, so the token's name maps back to its bytes; SentencePiece-style
ones write byte-fallback tokens as `<0xNN>` and spaces as `▁`. Added tokens (specials such as
`<|im_end|>`) stand for their own text.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's map from the printable character standing for a byte to that byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = list(printable)
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + shifted)
            shifted += 1
    return {chr(c): b for b, c in zip(printable, characters, strict=True)}


def _is_byte_level(tokenizer: Tokenizer) -> bool:
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
    return "ByteLevel" in kinds


def token_bytes(tokenizer: Tokenizer, size: int) -> list[bytes]:
    """The bytes of tokens 0..size-1 (b"" for ids the vocabulary lacks, e.g. padding of the model's head)."""
    added = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    alphabet = byte_level_alphabet() if _is_byte_level(tokenizer) else None
    names: list[str | None] = [None] * size
    for name, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
        if token_id < size:
            names[token_id] = name
    table = []
    for name in names:
        if name is None:
            table.append(b"")
        elif name in added:
            table.append(name.encode())
        elif alphabet is not None:
            try:
                table.append(bytes([alphabet[c] for c in name]))
            except KeyError:  # not spelled in the byte alphabet
                table.append(name.encode())
        elif len(name) == 6 and name.startswith("<0x") and name.endswith(">"):
            table.append(bytes([int(name[3:5], 16)]))
        else:
            table.append(name.replace("▁", " ").encode())
    return table


def token_text(data: bytes) -> str:
    """How a token is named in logprobs: its text, or `bytes:\\xNN...` when it is not whole UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)
