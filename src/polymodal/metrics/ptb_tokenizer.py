"""The COCO caption tokenizer: what pycocoevalcap's PTBTokenizer outputs, without Java.

pycocoevalcap writes all captions, one per line, to a file, runs Stanford PTBTokenizer 3.4.1
on it (``-preserveLines -lowerCase``) and drops punctuation tokens. ``tokenize`` returns the
same strings. Most captions are plain words and a final period, whose tokens are found
directly; the others go through the lexer of ptb_lexer.py piece by piece (pieces are the text
between spaces), and a piece's tokens are reused for later equal pieces in the same context.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from polymodal.metrics.ptb_lexer import (
    ABBREVIATIONS,
    SPLIT_WORDS,
    far_context,
    lex,
    lowered,
    needs_far_context,
)

# Tokens that pycocoevalcap removes. It lists "-LRB-" etc. in upper case but compares them with
# lower-cased tokens, so bracket tokens such as "-lrb-" are kept, as here.
PUNCTUATION = frozenset(["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"])


def tokenize(captions: Sequence[str]) -> list[str]:
    """Each caption's lower-cased PTB tokens without punctuation, joined by single spaces.

    The captions are read as consecutive lines of one text, as pycocoevalcap writes them, so a
    caption's last token can depend on how the next caption starts (e.g. "Inc." before a
    capital letter). Newlines inside a caption are read as spaces.
    """
    text = "\n".join(captions)
    lines = captions
    if text.count("\n") != max(len(captions) - 1, 0):  # newlines inside captions
        lines = [caption.replace("\n", " ") for caption in captions]
        text = "\n".join(lines)
    lower_text = text.lower()
    split_words = any(word in lower_text for word in SPLIT_WORDS)
    residues = text.translate(_LETTERS_AND_SPACES).split("\n")
    cache: dict[tuple, str] = {}
    out: list[str] = []
    start = 0
    abbreviations = ABBREVIATIONS
    for line, low, residue in zip(lines, lower_text.split("\n"), residues, strict=True):
        tokens = None
        if residue == "." and not split_words and low[-1:] == "." and low[-2:-1].isalpha():
            # The most common caption: single-spaced words, the last with a period.
            last = low[low.rfind(" ") + 1 : -1]
            if len(last) > 1 and last not in abbreviations and "  " not in low and low[0] != " ":
                out.append(low[:-1])
                start += len(line) + 1
                continue
        if residue in _FINAL_MARKS and not split_words:
            tokens = _marked_words(low, residue)
        elif not residue.strip(_PLAIN_MARKS):
            tokens = _plain_line(line, residue, split_words)
        out.append(_line(text, start, start + len(line), cache) if tokens is None else tokens)
        start += len(line) + 1
    return out


_PLAIN_MARKS = ",-'.!?"  # what else a line that _plain_line accepts may hold
_FINAL_MARKS = frozenset(["", ".", "!", "?"])


def _marked_words(low: str, mark: str) -> str | None:
    """The tokens of a lower-cased line of words and at most one final mark ("", ".", "!",
    "?"), None if the mark is not final or is a period that belongs to an abbreviation."""
    low = low.rstrip(" ")
    if mark:
        if low[-1] != mark:
            return None
        low = low[:-1]
        if mark == "." and low[-1:].isalpha():
            last = low[low.rfind(" ") + 1 :]
            if len(last) == 1 or last in ABBREVIATIONS:
                return None
    if "  " in low or low[:1] == " ":
        return " ".join(low.split())
    return low.rstrip(" ")


_LETTERS_AND_SPACES = str.maketrans("", "", string.ascii_letters + " ")
_SPACE_CHARS = " \t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u3000"
# After a contraction's apostrophe: its letters, then a space, comma or the line's end.
_SUFFIX_END = re.compile(r"(?:s|re|ve|ll|m|d)(?=[ ,]|[.!?]? *$)")
_NOT_END = re.compile(r"t(?=[ ,]|[.!?]? *$)")


def _plain_line(line: str, residue: str, split_words: bool) -> str | None:
    """The tokens of a simple line, None for other lines; ``residue`` is its non-letters.

    A simple line has ASCII words, commas, hyphens inside words, contractions such as "'s" or
    "n't", and at most one final ".", "!" or "?". Its tokens are its lower-cased words with
    the commas, contractions and final mark split off; a period stays on an abbreviation.
    ``split_words`` says whether words that the lexer splits ("cannot") may occur.
    """
    if residue not in _FINAL_MARKS:
        if ".," in line or ("-" in residue and "'" in residue):
            return None  # "word.," keeps its period; "x-ain't" is one token "x-ain"
        residue = residue.replace(",", "")
        line = line.replace(",", " ")
        if "-" in residue:
            if not _inside_words(line, "-"):
                return None
            residue = residue.replace("-", "")
        if "'" in residue:
            if not _contractions(line):
                return None
            residue = residue.replace("'", "")
            line = line.replace("n't", "\0").replace("'", " '").replace("\0", " n't")
        if residue not in _FINAL_MARKS:
            return None
    tokens = _marked_words(line.lower(), residue)
    if tokens is None or (split_words and not SPLIT_WORDS.isdisjoint(tokens.split())):
        return None
    return tokens


def _inside_words(line: str, mark: str) -> bool:
    """Whether every ``mark`` in the line has a letter on each side."""
    at = line.find(mark)
    while at >= 0:
        if not (line[at - 1 : at].isalpha() and line[at + 1 : at + 2].isalpha()):
            return False
        at = line.find(mark, at + 1)
    return True


def _contractions(line: str) -> bool:
    """Whether every apostrophe in a line of letters, spaces and marks starts a contraction
    that the lexer splits off its word: "'s", "'re", "'ve", "'ll", "'m", "'d" after two
    letters (not "cont'd"), or "n't" after a letter other than n."""
    at = line.find("'")
    while at >= 0:
        if line[at - 1 : at] == "n" and line[at + 1 : at + 2] == "t":
            before = line[at - 2 : at - 1]
            if not (before.isalpha() and before not in "nN") or not _NOT_END.match(line, at + 1):
                return False
        elif (
            not line[at - 2 : at].isalpha()
            or line[max(at - 4, 0) : at].lower() == "cont"
            or not _SUFFIX_END.match(line, at + 1)
        ):
            return False
        at = line.find("'", at + 1)
    return True


def _line(text: str, start: int, end: int, cache: dict[tuple, str]) -> str:
    """The tokens of the line ``text[start:end]``, piece by piece (pieces between spaces)."""
    line = text[start:end]
    if "<" in line:  # a tag may hold spaces: read the line whole
        return _unpunctuated(lowered(lex(line + far_context(text, end), 0, len(line))), True)
    if _JOINABLE.search(line):
        return " ".join(_piece_loop(text, start, end, cache))
    out = []
    chunks = line.split(" ")
    position = start
    for index, chunk in enumerate(chunks):
        if chunk:
            # A piece's tokens depend on it, on the character after it (or, for a period that
            # may end an abbreviation, more: then they are not kept) and on whether it starts
            # the line.
            chunk_end = position + len(chunk)
            key = (chunk, text[chunk_end : chunk_end + 1], index == 0)
            tokens = cache.get(key)
            if tokens is None:
                tokens = _special(text, position, chunk_end, cache)
                core = chunk.rstrip(_SPACE_CHARS)
                if core[-1:] != "." or not needs_far_context(core):
                    cache[key] = tokens
            if tokens:
                out.append(tokens)
        position += len(chunk) + 1
    return " ".join(out)


def _special(text: str, start: int, end: int, cache: dict[tuple, str]) -> str:
    """The tokens of one piece (between spaces)."""
    piece = text[start:end]
    if piece.isalpha() and piece.isascii() and piece.lower() not in SPLIT_WORDS:
        return piece.lower()
    word = piece[:-1]
    mark = piece[-1]
    if mark in ".,;:!?" and word.isalpha() and word.isascii() and _splits_off(word.lower(), mark):
        return word.lower()
    return _piece_tokens(text, start, end, cache)


def _piece_loop(text: str, start: int, end: int, cache: dict[tuple, str]) -> list[str]:
    """The tokens of each piece of ``text[start:end]``."""
    out: list[str] = []
    spans = _joined_pieces(text, start, end) if _JOINABLE.search(text, start, end) else None
    position = start
    for chunk in text[start:end].split(" ") if spans is None else spans:
        if isinstance(chunk, tuple):
            position, chunk_end = chunk
            chunk = text[position:chunk_end]
        if chunk:
            tokens = _special(text, position, position + len(chunk), cache)
            if tokens:
                out.append(tokens)
        position += len(chunk) + 1
    return out


def _splits_off(word: str, mark: str) -> bool:
    """Whether a word of letters and the mark after it (at a piece end) are two tokens."""
    if word in SPLIT_WORDS:
        return False
    return mark != "." or (len(word) > 1 and word not in ABBREVIATIONS)


# Pieces that a token may join across a space: digits or ")" or "." then digits or ".".
_JOINABLE = re.compile(r"[\d).] [\d.]")


def _joined_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the non-empty pieces between spaces, joined where a token can hold a space:
    numbers such as "5 1/2" or "(555) 123-4567", and spaced dots ". . ."."""
    spans: list[tuple[int, int]] = []
    position = start
    for chunk in text[start:end].split(" "):
        chunk_end = position + len(chunk)
        if chunk:
            if spans and spans[-1][1] == position - 1:
                last, first = text[position - 2], chunk[0]
                if (last.isdecimal() or last in ").") and (first.isdecimal() or first == "."):
                    spans[-1] = (spans[-1][0], chunk_end)
                    position = chunk_end + 1
                    continue
            spans.append((position, chunk_end))
        position = chunk_end + 1
    return spans


def _piece_tokens(text: str, start: int, end: int, cache: dict[tuple, str]) -> str:
    """The tokens of ``text[start:end]`` (one or a few pieces), reusing earlier results.

    The lexer may look past a piece; the cache key holds what it can see: one character, or
    for a final period after a possible abbreviation, the spaces, lines and words after it.
    """
    piece = text[start:end]
    if start and text[start - 1] == " ":  # spaces after a space are skipped along with it
        piece = piece.lstrip(_SPACE_CHARS)
        if not piece:
            return ""
    core = piece.rstrip(_SPACE_CHARS)
    if core[-1:] == "." and needs_far_context(core):
        context = far_context(text, end)
    else:
        context = text[end : end + 1]
    key = (piece, context)
    tokens = cache.get(key)
    if tokens is None:
        raw = lowered(lex(piece + context, 0, len(piece)))
        if raw and raw[-1][-1].isspace():  # depends on where the line ends: no caching
            newline = text.find("\n", end)
            return _unpunctuated(
                raw, not text[end : len(text) if newline < 0 else newline].strip(" ")
            )
        tokens = cache[key] = _unpunctuated(raw, False)
    return tokens


def _unpunctuated(tokens: list[str], line_end: bool) -> str:
    """Tokens without punctuation, joined by spaces. Like pycocoevalcap, white space at the end
    of a line, which a token can hold (e.g. a URL), is cut before punctuation is removed."""
    if line_end and tokens and tokens[-1][-1].isspace():
        tokens = " ".join(tokens).rstrip().split(" ")
    return " ".join(token for token in tokens if token not in PUNCTUATION)
