"""Tokens of the run-search language (see keel.tracking.search for the grammar)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.errors import FilterSyntaxError

# Prefix before the dot -> entity; "attributes.status" is the same as "status".
PREFIXES = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
}
_OPS = ("<=", ">=", "!=", "<>", "==", "=", "<", ">")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Unquoted keys may hold dots, slashes and dashes ("train/loss", "val-auc"); quote anything else.
_KEY = re.compile(r"[A-Za-z0-9_./-]+")
_PUNCT = {"(": "lparen", ")": "rparen", ",": "comma"}


@dataclass(frozen=True)
class Token:
    """kind: word, key, string, number, op, lparen, rparen, comma or end."""

    kind: str
    text: str  # as written
    value: str  # decoded: string content, key name, normalised operator, number lexeme
    column: int  # 1-based
    entity: str = ""  # for kind 'key': metrics | params | tags | attributes

    @property
    def shown(self) -> str:
        return "the end" if self.kind == "end" else f"'{self.text}'"


def tokenize(text: str, what: str = "filter") -> list[Token]:
    """Split ``text`` into tokens, always ending with an 'end' token."""
    return _Lexer(text, what).run()


class _Lexer:
    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.i = 0

    def fail(self, message: str, index: int) -> FilterSyntaxError:
        return FilterSyntaxError(f"{self.what}: {message} at column {index + 1}: {self.text}")

    def run(self) -> list[Token]:
        tokens: list[Token] = []
        while True:
            while self.i < len(self.text) and self.text[self.i].isspace():
                self.i += 1
            if self.i >= len(self.text):
                tokens.append(Token("end", "", "", self.i + 1))
                return tokens
            tokens.append(self.next_token())

    def next_token(self) -> Token:
        start, char = self.i, self.text[self.i]
        if char in _PUNCT:
            self.i += 1
            return Token(_PUNCT[char], char, char, start + 1)
        for op in _OPS:
            if self.text.startswith(op, start):
                self.i += len(op)
                value = {"<>": "!=", "==": "="}.get(op, op)
                return Token("op", op, value, start + 1)
        if char in "'\"":
            return Token("string", *self.quoted(char, "string"), start + 1)
        number = _NUMBER.match(self.text, start)
        if number:
            return self.number(number, start)
        word = _WORD.match(self.text, start)
        if word:
            self.i = word.end()
            if self.i < len(self.text) and self.text[self.i] == ".":
                return self.key(word.group(), start)
            return Token("word", word.group(), word.group(), start + 1)
        if char == "`":
            raise self.fail("backticks quote a key after metrics., params. or tags.", start)
        raise self.fail(f"unexpected character {char!r}", start)

    def number(self, match: re.Match[str], start: int) -> Token:
        self.i = match.end()
        tail = _WORD.match(self.text, self.i)
        if tail:
            lexeme = match.group() + tail.group()
            raise self.fail(f"invalid number '{lexeme}' (quote text: '{lexeme}')", start)
        return Token("number", match.group(), match.group(), start + 1)

    def key(self, prefix: str, start: int) -> Token:
        entity = PREFIXES.get(prefix.lower())
        if entity is None:
            raise self.fail(
                f"unknown prefix '{prefix}.' (use metrics., params., tags. or attributes.)", start
            )
        self.i += 1  # the dot
        if self.i < len(self.text) and self.text[self.i] in '`"':
            _, name = self.quoted(self.text[self.i], "key")
        else:
            match = _KEY.match(self.text, self.i)
            if not match:
                raise self.fail(f"expected a key after '{prefix}.'", self.i)
            self.i, name = match.end(), match.group()
        if not name:
            raise self.fail(f"empty key after '{prefix}.'", start)
        return Token("key", self.text[start : self.i], name, start + 1, entity)

    def quoted(self, quote: str, what: str) -> tuple[str, str]:
        """Read a quoted run from self.i; a doubled quote stands for itself ('it''s')."""
        start, parts = self.i, []
        self.i += 1
        while True:
            end = self.text.find(quote, self.i)
            if end < 0:
                raise self.fail(f"unterminated {what} (missing closing {quote})", start)
            parts.append(self.text[self.i : end])
            self.i = end + 1
            if not self.text.startswith(quote, self.i):
                return self.text[start : self.i], quote.join(parts)
            self.i += 1
