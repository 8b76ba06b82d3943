"""Stanford PTBTokenizer 3.4.1 (the lexer that pycocoevalcap runs) as Python regex rules.

pycocoevalcap tokenizes captions with ``edu.stanford.nlp.process.PTBTokenizer -preserveLines
-lowerCase`` from stanford-corenlp-3.4.1.jar, a JFlex lexer. Its rules are written here by hand
because no maintained Python package reproduces that lexer's output (NLTK's Treebank
tokenizers and later CoreNLP releases split differently) and starting a JVM per call is slow.
They follow the jar's observable behaviour, checked against the jar on many generated texts:
at each position the longest match of any rule wins, ties go to the earlier rule, and some
rules only match when followed by given text (trailing context), which may look past the end
of a caption into the next one, as the jar reads all captions as one file.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple


def _char_class(test: Callable[[str], bool]) -> str:
    """A regex character class (without brackets) of the BMP characters passing ``test``."""
    ranges: list[str] = []
    start = None
    for code in range(0x10000 + 1):
        inside = code < 0x10000 and not 0xD800 <= code < 0xE000 and test(chr(code))
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            end = code - 1
            ranges.append(f"\\u{start:04x}" + (f"-\\u{end:04x}" if end > start else ""))
            start = None
    return "".join(ranges)


# The jar's letter and digit classes come from Unicode 6; these BMP characters became letters or
# digits later, and the jar drops them as unknown characters.
_NEWER_THAN_JAR = re.compile(
    "[\u037f\u0528-\u052f\u0560\u0588\u05ef\u0860-\u086a\u0870-\u0887\u0889-\u088e\u08a1"
    "\u08ad-\u08c9\u0978\u0980\u09fc\u0af9\u0c34\u0c5a\u0c5d\u0c80\u0cdd\u0d04\u0d54-\u0d56"
    "\u0d5f\u0de6-\u0def\u0e86\u0e89\u0e8c\u0e8e-\u0e93\u0e98\u0ea0\u0ea8-\u0ea9\u0eac\u13f5"
    "\u13f8-\u13fd\u16f1-\u16f8\u170d\u171f\u1878\u191d-\u191e\u19b0-\u19c0\u19c8-\u19c9\u1b4c"
    "\u1c80-\u1c88\u1c90-\u1cba\u1cbd-\u1cbf\u1cf2-\u1cf3\u1cfa\u2c2f\u2c5f\u312e-\u312f"
    "\u31bb-\u31bf\u4db6-\u4dbf\u9fcd-\u9fff\ua698-\ua69d\ua78f\ua794-\ua79f\ua7ab-\ua7ca"
    "\ua7d0-\ua7d1\ua7d3\ua7d5-\ua7d9\ua7f2-\ua7f7\ua8fd-\ua8fe\ua9e0-\ua9e4\ua9e6-\ua9fe"
    "\uaa7e-\uaa7f\uab30-\uab5a\uab5c-\uab69\uab70-\uabbf]"
)
_L = "[" + _char_class(lambda c: c.isalpha() and not _NEWER_THAN_JAR.match(c)) + "\u1885\u1886]"
_DIGIT = "[" + _char_class(lambda c: c.isdecimal() and not _NEWER_THAN_JAR.match(c)) + "]"
_LD = "[" + _L[1:-1] + _DIGIT[1:-1] + "]"  # letter or digit

_SPACE = r"[ \t\u00a0\u2000-\u200a\u3000]"
_NEWLINE = r"(?:\r\n|[\r\n\u2028\u2029\x0b\x0c\x85])"
_SPACENL = rf"(?:{_SPACE}|{_NEWLINE})"
_SGML_NAME = "[A-Za-z][A-Za-z0-9_:.-]*"
_SGML = (
    rf"<(?:[!?][A-Za-z-][^>\r\n]*|/{_SGML_NAME}|{_SGML_NAME}(?: +(?:{_SGML_NAME}"
    rf"|{_SGML_NAME} *= *(?:'[^'\r\n]*'|\"[^\"\r\n]*\")))* */?) *>"
)
# Cherokee letters became upper case in Unicode 8.
_UPPER = (
    "["
    + _char_class(
        lambda c: c.isupper() and not _NEWER_THAN_JAR.match(c) and not "\u13a0" <= c <= "\u13f4"
    )
    + "]"
)
_SENTEND = rf"{_SPACENL}(?:{_SPACENL}|{_UPPER}|{_SGML})"
_SPLET = r"&[aeiouAEIOU](?i:acute|grave|uml);"
_EXTRA_LETTERS = (
    r"\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d"
    r"\u0384\u0385\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525"
    r"\u055a-\u055f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f"
    r"\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f"
    r"\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955"
    r"\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3"
    r"\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2"
    r"\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48"
    r"\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)
_LETTER = rf"(?:[{_L[1:-1]}{_EXTRA_LETTERS}]|{_SPLET})"
_WORD_PART = rf"{_LETTER}(?:{_LETTER}|{_DIGIT})*"
_WORD = rf"{_WORD_PART}(?:[.!?]{_WORD_PART})*"
_APOS = r"(?:['\x92\u2019]|&(?i:apos);)"
_APOSETC = rf"(?:{_APOS}|[`\x91\u2018\u201b])"
_HYPHEN = r"[-_\u058a\u2010\u2011]"
_NUM = rf"{_DIGIT}*(?:[.:,\u00ad\u066b\u066c]{_DIGIT}+)+|{_DIGIT}+"
_ACROS = (
    r"[A-Za-z](?:\.[A-Za-z])+",
    r"(?i:canada|sino|korean|eu|japan|non)-(?i:u)\.(?i:s)",
    r"(?i:u)\.(?i:s)\.-(?i:u\.k|u\.s\.s\.r)",
)
_ACRO = "|".join(_ACROS)
_ABMONTH = "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
_ABDAYS = "mon|tue|tues|wed|thu|thurs|fri"
# States written with a character class in the lexer are case-sensitive in their first letter.
_ABSTATE = (
    "(?i:ala|ariz|calif|colo|conn|ct|dak|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev|okla"
    "|penn|tenn|va|vt|wisc?|wyo)|A(?i:rk)|D(?i:el)|I(?i:ll)|L(?i:a)|M(?i:ass)|M(?i:iss)"
    "|O(?i:re)|P(?i:a)|T(?i:ex)|W(?i:ash)|A(?i:z)"
)
_ABCOMP = "(?i:inc|cos?|corp|ltd|plc|bancorp|bhd|assn|univ|intl|sys)|(?i:pp?)t(?i:[ey]s?)"
_ABNUM = "tel|est|ext|sq"
_ABPTIT = r"(?:ed|ph)\.d|jr|sr|bros|blvd|rd|rt|esq"
_ABBREV1 = (
    rf"(?:(?i:{_ABPTIT}|{_ABMONTH}|{_ABDAYS}|{_ABNUM}|etc|al|seq|bldg)|{_ABCOMP}|{_ABSTATE})\."
)
_ABBREV3 = r"(?i:ca|figs?|prop|nos?|art|pp|op)\."
_ABTITLE = (
    "(?i:mr|mrs|ms|drs?|adj|adv|asst|ens|sfc|profs?|sens?|reps?|attys?|lt|col|gen|messrs"
    "|govs?|adm|rev|maj|sgt|cpl"
    "|pvt|mt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det)|M(?i:iss)"
)
_ABBREV4 = (
    "[A-Za-z]",
    _ABTITLE,
    r"(?i:vs|alex|wm|jos|cie|a\.k\.a|cf|treas|invt|elec|natl|dept|ph|ft|mme|mlle|msgr|insp|assoc)",
    "(?i:m)[ft](?i:g)",
    *_ACROS,
)
_ACRONYM_FOLLOWERS = (
    "[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er"
    "|[H]ere|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne"
    "|[O]ther|[O]ur|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|[T]he|[T]hen|[T]here|[T]hese|[T]hey"
    "|[T]his|[W]e|[W]hen|[W]hile|[W]hat|[Y]et|[Y]ou"
)
# In the lexer the first letter is a character class (case-sensitive), the rest is caseless.
_ACRONYM_FOLLOW = "|".join(
    f"{word[1]}(?i:{word[3:]})" if word[3:] else word[1] for word in _ACRONYM_FOLLOWERS.split("|")
)
_ACRONYM_AHEAD = rf"{_SPACENL}+(?:{_ACRONYM_FOLLOW}|{_SGML}){_SPACENL}"
_PHONE = (
    r"(?:\([0-9]{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])"
    r"[0-9]{3,4}[- \u00a0]?[0-9]{3,5}"
    r"|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}"
)
_HTHING = rf"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:(?:{_ACRO})\.|[A-Za-z0-9\u00ad]+))+"
_THING_PART = rf"(?:[dDoOlL]{_APOSETC}{_LD})?{_LD}+"
_THING = rf"{_THING_PART}(?:{_HYPHEN}{_THING_PART})*"
_THINGA = r"[A-Z]+(?:(?:[+&]|&(?i:amp);)[A-Z]+)+"
_THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
_REDAUX = rf"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
_SREDAUX = rf"(?i:n){_APOSETC}(?i:t)"
_SWORD = r"[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
_INSENTP = r"[,;:\u3001]"
_URL_END = r"[^ \t\n\f\r\"<>|.!?(){},-]"
_URL_PATH = rf"/[^ \t\n\f\r\"<>|()]+{_URL_END}"
_WWW_URL = r"(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}"
_DOMAIN_URL = r"(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?i:com|net|org|edu)"
_FILENAME_PART = rf"(?:{_LETTER}|{_DIGIT})+"
_FILENAME = (
    rf"{_FILENAME_PART}(?:\.{_FILENAME_PART})*\.(?i:bat|bmp|c|class|cpp|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg"
    "|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)"
)
_MISCSYMBOL = (
    r"[+%&~^|\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387"
    r"\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e"
    r"\u066a\u066d\u0703-\u070d\u07f6-\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023"
    r"\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f"
    r"\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)
_QUOTE_CHARS = (
    r"[`\u2018\u2019\u201a\u201b\u201c\u201d\x91\x92\x93\x94\u201e\u201f\u2039\u203a\xab\xbb]"
)
_SMILEY = r"[<>]?[:;=][-o*']?[()DPdpO\\{@|\[\]]"
_ASIAN_SMILEY = r"[-^x=~<>']_[-^x=~<>']|\([-^x=~<>'][_.]?[-^x=~<>']\)"

# Quote normalisation (LaTeX style), applied to every quote-like token.
_LATEX_QUOTES = (
    (re.compile(r"[\x91\u2018\u201b\u2039]"), "`"),
    (re.compile(r"[\x92\u2019\u203a]"), "'"),
    (re.compile(r"[\x93\u201c\xab]"), "``"),
    (re.compile(r"[\x94\u201d\xbb]"), "''"),
)
_SINGLE_QUOTE = re.compile(r"&apos;|'")
_DOUBLE_QUOTE = re.compile(r'"|&quot;')
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = (("\u00a2", "cents"), ("\u00a3", "#"), ("\x80", "$"), ("\u00a4", "$"))
_CURRENCY += (("\u20a0", "$"), ("\u20ac", "$"))


def _quotes(text: str, left: bool) -> str:
    text = _SINGLE_QUOTE.sub("`" if left else "'", text)
    text = _DOUBLE_QUOTE.sub("``" if left else "''", text)
    for pattern, replacement in _LATEX_QUOTES:
        text = pattern.sub(replacement, text)
    return text


def _no_soft_hyphens(text: str) -> str:
    return (text.replace("\u00ad", "") or "-") if "\u00ad" in text else text


def _parens(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


def _currency(text: str) -> str:
    for symbol, replacement in _CURRENCY:
        text = text.replace(symbol, replacement)
    return text


def _fraction(text: str) -> str:
    return _FRACTIONS.get(text, text)


def _amp(text: str) -> str:
    return re.sub("(?i:&amp;)", "&", text)


def _same(text: str) -> str:
    return text


def _nbsp(text: str) -> str:
    return text.replace(" ", "\u00a0")


def _dashes(text: str) -> str:
    return "--" if 3 <= len(text) <= 4 else text


Action = Callable[[str], "str | None"]


class _Rule(NamedTuple):
    """One lexer rule: alternatives (the longest match counts), action, and how much to keep.

    ``keep`` < 0 drops that many characters from the end of the token and reads them again;
    ``reread`` < 0 emits the whole token but still reads its last characters again.
    """

    patterns: tuple[str, ...]  # each "(head)trailing-context"
    action: Action | None  # None: the text is skipped (spaces, unknown characters)
    keep: int = 0
    reread: int = 0


def _rule(
    patterns: str | tuple[str, ...],
    action: Action | None = _same,
    ahead: str | None = None,
    keep: int = 0,
    reread: int = 0,
) -> _Rule:
    """A rule; with ``ahead`` the match must be followed by that text (trailing context)."""
    alternatives = (patterns,) if isinstance(patterns, str) else patterns
    tail = f"(?:{ahead})" if ahead is not None else ""
    return _Rule(tuple(f"({p}){tail}" for p in alternatives), action, keep, reread)


def _alternatives(macro: tuple[str, ...], suffix: str = "") -> tuple[str, ...]:
    """Each alternative of a macro followed by ``suffix``, so the longest one can be found."""
    return tuple(f"(?:{m}){suffix}" for m in macro)


_RULES: tuple[_Rule, ...] = (
    _rule("(?i:gonna|gotta|lemme|gimme|wanna)", keep=-2),
    _rule("(?i:cannot)", keep=-3),
    _rule("'(?i:tis)", keep=-2),
    _rule("'(?i:twas)", keep=-3),
    _rule(_SGML, _nbsp),
    _rule(r"&(?i:md|mdash|ndash);|[\x96\x97\u2013\u2014\u2015]", lambda t: "--"),
    _rule("&(?i:amp);", _amp),
    _rule("&(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);"),
    _rule("&(?i:lt);|<", lambda t: "<"),
    _rule("&(?i:gt);|>", lambda t: ">"),
    _rule(_WORD, _no_soft_hyphens, ahead=_REDAUX),
    _rule(_SWORD, _no_soft_hyphens, ahead=_SREDAUX),
    _rule(_WORD, _no_soft_hyphens),
    _rule(
        (
            rf"{_APOS}(?i:n){_APOS}?",
            rf"[lLdDjJ]{_APOS}",
            rf"(?i:dunkin|somethin|ol){_APOS}",
            rf"{_APOS}(?i:em|cause|till?)",
            rf"[A-HJ-XZn]{_APOSETC}{_L}{{2,}}",
            rf"{_APOS}[2-9]0(?i:s)",
            rf"{_L}+?[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_L}*",
            rf"(?i:o){_APOSETC}(?i:o)",
            r"(?i:cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
        )
    ),
    _rule(rf"(?i:y){_APOS}", ahead=_L),
    _rule(rf"(?i:https?)://[^ \t\n\f\r\"<>|(){{}}]+{_URL_END}"),
    _rule(
        (
            f"{_WWW_URL}{_URL_PATH}",
            _WWW_URL,
            f"{_DOMAIN_URL}{_URL_PATH}",
            _DOMAIN_URL,
        )
    ),
    _rule(
        r"(?:&(?i:lt);|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@"
        r"(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:&(?i:gt);|>)?"
    ),
    _rule(r"(?i:c\+\+|[cf]#)"),
    _rule((r"@[a-zA-Z_][a-zA-Z_0-9]*", rf"#{_LETTER}+")),
    _rule(_REDAUX, lambda t: _quotes(t, False), ahead="[^A-Za-z]"),
    _rule(_SREDAUX, lambda t: _quotes(t, False)),
    _rule(rf"{_DIGIT}{{1,2}}[-/]{_DIGIT}{{1,2}}[-/]{_DIGIT}{{2,4}}"),
    _rule(rf"[-+]?(?:{_NUM})", _no_soft_hyphens),
    _rule(
        r"[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"
    ),
    _rule(rf"(?:{_DIGIT}{{1,4}}[- \u00a0])?{_DIGIT}{{1,4}}(?:\\?/|\u2044){_DIGIT}{{1,4}}", _nbsp),
    _rule(r"[\u00bc\u00bd\u00be\u2153-\u215e]", _fraction),
    _rule(
        r"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls)"
        rf"|(?i:cap){_APOS}(?i:n)|(?i:c){_APOS}(?i:est)",
        _amp,
    ),
    _rule(_THING3),
    _rule(r"[A-Z]*\$|#"),
    _rule(
        r"[\u00a2\u00a3\u00a4\u00a5\x80\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
        _currency,
    ),
    _rule(r"[A-Za-z]\.", ahead=_ACRONYM_AHEAD, keep=-1),
    _rule(_alternatives(_ACROS, r"\."), ahead=_ACRONYM_AHEAD, reread=-1),
    _rule(r"(?i:pte|pty|co)\.", ahead="(?i: l(?:td|im))"),  # "Pte. Ltd": no sentence end
    _rule(_ABBREV1, ahead=_SENTEND, reread=-1),
    _rule(_ABBREV1, ahead="(?s:..)"),
    _rule(_ABBREV1, reread=-1),
    _rule(_ABBREV3, ahead=rf"{_SPACENL}?{_DIGIT}"),
    _rule(_alternatives(_ABBREV4, r"\.")),
    _rule(_alternatives(_ABBREV4), ahead=_SPACE),
    _rule(_ACROS, ahead=_SPACENL),
    _rule(rf"{_APOS}[0-9][0-9]", ahead=_SPACENL),
    _rule(rf"{_WORD}\.", _no_soft_hyphens, ahead=_INSENTP),
    _rule(_PHONE, lambda t: _parens(_nbsp(t))),
    _rule(_FILENAME, ahead=rf"{_SPACENL}|[.?!,]"),
    _rule(r'"|&(?i:quot);', lambda t: _quotes(t, True), ahead="[A-Za-z0-9$]"),
    _rule(r'"|&(?i:quot);', lambda t: _quotes(t, False)),
    _rule("\x7f", None),
    _rule(r"\[", lambda t: "-LSB-"),
    _rule(r"\]", lambda t: "-RSB-"),
    _rule(r"\{", lambda t: "-LCB-"),
    _rule(r"\}", lambda t: "-RCB-"),
    _rule(_SMILEY, _parens, ahead="[^A-Za-z0-9]"),
    _rule(_ASIAN_SMILEY, _parens),
    _rule(r"\(", lambda t: "-LRB-"),
    _rule(r"\)", lambda t: "-RRB-"),
    _rule(r"-+", _dashes),
    _rule(r"\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\x85\u2026]", lambda t: "..."),
    _rule(r"@+|#+|_+"),
    _rule(r"\*+|(?:\\\*){1,3}"),
    _rule(_INSENTP),
    _rule(r"[?!]+"),
    _rule(r"[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]"),
    _rule("="),
    _rule("/"),
    _rule(rf"{_HTHING}\.", _no_soft_hyphens, ahead=_INSENTP),
    _rule(_HTHING, _no_soft_hyphens),
    _rule(rf"{_THING}\.", ahead=_INSENTP),
    _rule(_THING),
    _rule(rf"{_THINGA}\.", _amp, ahead=_INSENTP),
    _rule(_THINGA, _amp),
    _rule("'", lambda t: _quotes(t, True), ahead=r"[A-Za-z][^ \t\n\r\u00a0]"),
    _rule(_REDAUX, lambda t: _quotes(t, False)),
    _rule((f"''|{_QUOTE_CHARS}{{1,2}}", _APOS), lambda t: _quotes(t, False)),
    _rule("<<|>>"),
    _rule(_MISCSYMBOL),
    _rule(rf"\x00|{_SPACE}+|[\u200b\u200e\u200f\ufeff]", None),
    _rule(_NEWLINE, None),
    _rule("&(?i:nbsp);", None),
    _rule("(?s:.)", None),
)


_Candidate = tuple[re.Pattern[str], _Rule]


@lru_cache(maxsize=1)
def _dispatch() -> tuple[tuple[tuple[_Candidate, ...], ...], tuple[_Candidate, ...]]:
    """Compiled rules in order: those that can start with each ASCII character, and all."""
    candidates = [(re.compile(p), rule) for rule in _RULES for p in rule.patterns]
    starts = [_ascii_starts(pattern.pattern) for pattern, _ in candidates]
    by_char = tuple(
        tuple(c for c, s in zip(candidates, starts, strict=True) if chr(code) in s)
        for code in range(128)
    )
    return by_char, tuple(candidates)


def lex(text: str, start: int = 0, end: int | None = None) -> list[str]:
    """PTB tokens (original case) of ``text[start:end]``; text after ``end`` is context only."""
    end = len(text) if end is None else end
    if _ASTRAL.search(text, start) is None:
        return _lex(text, start, end)
    # Java reads characters beyond U+FFFF as two UTF-16 surrogates, which no rule takes for a
    # letter: lex the same units, then join the surrogates of each token again.
    units = _utf16(text[start:])
    tokens = _lex(units, 0, len(_utf16(text[start:end])))
    return [_LONE_SURROGATE.sub("?", _from_utf16(token)) for token in tokens]


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # written as "?" by Java's UTF-8 encoder


def _utf16(text: str) -> str:
    """``text`` with each character beyond U+FFFF written as its two surrogates."""
    data = text.encode("utf-16-le", "surrogatepass")
    return "".join(map(chr, struct.unpack(f"<{len(data) // 2}H", data)))


def _from_utf16(text: str) -> str:
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _lex(text: str, start: int, end: int) -> list[str]:
    by_char, everything = _dispatch()
    tokens = []
    pos = start
    while pos < end:
        code = ord(text[pos])
        best_length = 0
        best_rule = _RULES[-1]
        head_end = pos + 1
        for pattern, rule in by_char[code] if code < 128 else everything:
            match = pattern.match(text, pos)
            if match is not None and match.end() - pos > best_length:
                best_length = match.end() - pos
                best_rule = rule
                head_end = match.end(1)
        token_end = head_end + best_rule.keep
        if best_rule.action is not None:
            token = best_rule.action(text[pos:token_end])
            if token:
                tokens.append(token)
        pos = token_end + best_rule.reread
    return tokens


_ASCII = frozenset(map(chr, range(128)))


def _ascii_starts(pattern: str) -> frozenset[str]:
    """The ASCII characters that a match of ``pattern`` may start with.

    It reads the regex syntax tree through the standard library's parser; where that is not
    available or a construct is not understood, every character is allowed, which is safe.
    """
    try:
        from re import _constants as constants  # type: ignore[attr-defined]
        from re import _parser as parser  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover  # Python 3.10
        import sre_constants as constants
        import sre_parse as parser
    try:
        tree = parser.parse(pattern)
        ignorecase = bool(tree.state.flags & constants.SRE_FLAG_IGNORECASE)
        return _first(tree.data, ignorecase, constants)[0]
    except Exception:  # pragma: no cover  # unknown syntax: stay safe
        return _ASCII


def _first(items: list, ignorecase: bool, c: object) -> tuple[frozenset[str], bool]:
    """(ASCII characters a match may start with, whether it may be empty) of a regex sequence."""
    starts: frozenset[str] = frozenset()
    for op, av in items:
        if op is c.LITERAL:  # type: ignore[attr-defined]
            found, empty = _literal(av, ignorecase), False
        elif op is c.IN:  # type: ignore[attr-defined]
            found, empty = _in_class(av, ignorecase, c), False
        elif op is c.BRANCH:  # type: ignore[attr-defined]
            results = [_first(alt, ignorecase, c) for alt in av[1]]
            found = frozenset().union(*(r[0] for r in results))
            empty = any(r[1] for r in results)
        elif op is c.SUBPATTERN:  # type: ignore[attr-defined]
            flag = c.SRE_FLAG_IGNORECASE  # type: ignore[attr-defined]
            group_case = (ignorecase or bool(av[1] & flag)) and not av[2] & flag
            found, empty = _first(av[3], group_case, c)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):  # type: ignore[attr-defined]
            found, empty = _first(av[2], ignorecase, c)
            empty = empty or av[0] == 0
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):  # type: ignore[attr-defined]
            found, empty = frozenset(), True
        else:  # any character, group references, ...
            return _ASCII, True
        starts |= found
        if not empty:
            return starts, False
    return starts, True


def _literal(code: int, ignorecase: bool) -> frozenset[str]:
    if not ignorecase:
        return frozenset([chr(code)]) & _ASCII
    if code >= 128:  # case folding can reach ASCII (e.g. the Kelvin sign): stay safe
        return _ASCII
    return frozenset([chr(code).lower(), chr(code).upper()])


def _in_class(items: list, ignorecase: bool, c: object) -> frozenset[str]:
    found: frozenset[str] = frozenset()
    negate = False
    for op, av in items:
        if op is c.NEGATE:  # type: ignore[attr-defined]
            negate = True
        elif op is c.LITERAL:  # type: ignore[attr-defined]
            found |= _literal(av, ignorecase)
        elif op is c.RANGE and (av[0] < 128 or ignorecase):  # type: ignore[attr-defined]
            if ignorecase and av[1] >= 128:
                return _ASCII
            found |= frozenset().union(*(_literal(v, ignorecase) for v in range(av[0], av[1] + 1)))
        elif op is not c.RANGE:  # type: ignore[attr-defined]  # categories such as \d
            return _ASCII
    return _ASCII - found if negate else found


# Words that an abbreviation rule matches when a period follows, and all-letter words that
# the lexer splits ("gonna" -> "gon" "na").
ABBREVIATIONS = frozenset(
    re.findall(
        r"\w+",
        """
        jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
        ala ariz az ark calif colo conn ct dak del fla ga ill ind kan kans ky la mass md mich
        minn miss mo mont neb nev okla ore pa penn tenn tex va vt wash wis wisc wyo inc co cos
        corp pty ptys ppty pptys pte ptes ppte pptes rt ltd plc bancorp bhd assn univ intl sys
        tel est ext sq jr sr
        bros blvd rd esq etc al seq bldg ca fig figs prop no nos art pp op mr mrs ms miss dr drs
        prof profs sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt cpl
        pvt mt capt st ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det vs alex wm
        jos cie cf treas invt elec natl dept ph ft mme mlle msgr insp assoc mfg mtg adj adv asst
        ens sfc
        """,
    )
)
SPLIT_WORDS = frozenset(["cannot", "gimme", "gonna", "gotta", "lemme", "wanna"])
_WORD_BEFORE_PERIOD = re.compile(r"[A-Za-z.]*(?=\.$)")
_AFTER_SPACES = re.compile(
    rf"({_SPACENL}*)(?!{_SPACENL})"
    rf"(?:({_SGML}|(?:{_ACRONYM_FOLLOW}){_SPACENL}|(?i:l(?:td|im)))|({_UPPER})|({_DIGIT})|(.))",
    re.S,
)


def far_context(text: str, end: int) -> str:
    """What abbreviation rules can see after ``end``, reduced so that equal views compare equal:
    the spaces and line breaks, then a tag or a following word such as "The" or "Ltd", or the
    kind of the next character (capital letter, digit, other)."""
    match = _AFTER_SPACES.match(text, end)
    if match is None:  # only spaces up to the end of the text
        return text[end:]
    spaces, word, upper, digit, _ = match.groups()
    if word is not None:
        return spaces + word + text[match.end() : match.end() + 1]
    return spaces + ("Q" if upper else "0" if digit else "x")


def needs_far_context(core: str) -> bool:
    """Whether a piece ending with a period may end with an abbreviation or acronym, whose
    tokens depend on the text after it (capital letters, following words, line ends)."""
    word = _WORD_BEFORE_PERIOD.search(core).group()  # type: ignore[union-attr]
    if len(word) < len(core) - 1:  # the letters may be a token split off something before
        return word != ""
    return "." in word or len(word) == 1 or word.lower() in ABBREVIATIONS


def lowered(tokens: list[str]) -> list[str]:
    return [java_lower(token) for token in tokens]


@lru_cache(maxsize=1 << 16)
def java_lower(token: str) -> str:
    """Lower case as Java's ``toLowerCase``, whose final sigma rule looks at word boundaries."""
    if "\u03a3" not in token:
        return token.lower()
    out = []
    for i, char in enumerate(token):
        if char != "\u03a3":
            out.append(char.lower())
            continue
        start, end = i, i + 1
        while start > 0 and _no_boundary(token, start):
            start -= 1
        while end < len(token) and _no_boundary(token, end):
            end += 1
        final = any(map(_cased, token[start:i])) and not any(map(_cased, token[i + 1 : end]))
        out.append("\u03c2" if final else "\u03c3")
    return "".join(out)


def _word_char(char: str) -> bool:
    if unicodedata.name(char, "").startswith("CJK"):
        return False  # each ideograph is a word of its own
    return char.isalnum() or char == "_" or unicodedata.category(char)[0] == "M"


def _mid_word(char: str) -> bool:
    return char in "\u00ad\u2027\"'." or unicodedata.category(char) == "Pd"


def _no_boundary(text: str, i: int) -> bool:
    """Whether Java's word iterator sees no boundary between ``text[i - 1]`` and ``text[i]``."""
    before, after = text[i - 1], text[i]
    if _word_char(before) and _word_char(after):
        return True
    if _mid_word(after) and i + 1 < len(text):
        return _same_kind(before, text[i + 1])
    if _mid_word(before) and i >= 2:
        return _same_kind(text[i - 2], after)
    return False


def _same_kind(a: str, b: str) -> bool:
    """Both letters or both digits: a mid-word character joins only those."""
    return (a.isalpha() and b.isalpha()) or (a.isdigit() and b.isdigit())


def _cased(char: str) -> bool:
    return char.islower() or char.isupper() or char.istitle()
