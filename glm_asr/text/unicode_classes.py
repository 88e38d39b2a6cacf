"""Run the Oniguruma regexes of tokenizer.json pre-tokenizers with stdlib `re`.

The `tokenizers` library runs Split patterns with Oniguruma, which knows `\\p{L}`-style Unicode
properties; stdlib `re` does not. We expand each property into an explicit character class built
from `unicodedata` (patched to the Unicode version Oniguruma uses). Oniguruma's `\\s` is the Unicode
White_Space property, which is NOT Python's `\\s` (Python adds U+001C..U+001F), so `\\s`/`\\S` are
expanded explicitly as well.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Unicode White_Space: what Oniguruma's \s matches (stable across Unicode versions).
_WHITE_SPACE = ((0x9, 0xD), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))

# General categories that Unicode 16.0 (the Oniguruma in `tokenizers` 0.23) gives and Python 3.11's
# unicodedata (Unicode 14.0) does not: code points assigned in 15.0-16.0, plus U+1171E (Mn -> Mc).
# Measured against `tokenizers` itself; applying it on a newer Python is a no-op.
_UNICODE_16_PATCH = (
    "Cf 13439-1343F\n"
    "Ll 1C8A A7CD A7DB 10D70-10D85 1DF25-1DF2A\n"
    "Lm 10D4E 10D6F 16D40-16D42 16D6B-16D6C 1E030-1E06D 1E4EB\n"
    "Lo 105C0-105F3 10D4A-10D4D 10D4F 10EC2-10EC4 1123F-11240 11380-11389 1138B 1138E 11390-113B5 113B7 113D1 113D3 "
    "11BC0-11BE0 11F02 11F04-11F10 11F12-11F33 1342F 13441-13446 13460-143FA 16100-1611D 16D43-16D6A 18CFF 1B132 "
    "1B155 1E4D0-1E4EA 1E5D0-1E5ED 1E5F0 2B739 2EBF0-2EE5D 31350-323AF\n"
    "Lu 1C89 A7CB-A7CC A7DA A7DC 10D50-10D65\n"
    "Mc CF3 113B8-113BA 113C2 113C5 113C7-113CA 113CC-113CD 113CF 1171E 11F03 11F34-11F35 11F3E-11F3F 11F41 "
    "1612A-1612C\n"
    "Mn 897 ECE 10D69-10D6D 10EFC-10EFF 11241 113BB-113C0 113CE 113D0 113D2 113E1-113E2 11F00-11F01 11F36-11F3A "
    "11F40 11F42 11F5A 13440 13447-13455 1611E-16129 1612D-1612F 1E08F 1E4EC-1E4EF 1E5EE-1E5EF\n"
    "Nd 10D40-10D49 116D0-116E3 11BF0-11BF9 11F50-11F59 16130-16139 16D70-16D79 1CCF0-1CCF9 1E4F0-1E4F9 1E5F1-1E5FA\n"
    "No 1D2C0-1D2D3\n"
    "Pd 10D6E\n"
    "Po 1B4E-1B4F 1B7F 113D4-113D5 113D7-113D8 11B00-11B09 11BE1 11F43-11F4F 16D6D-16D6F 1E5FF\n"
    "Sm 10D8E-10D8F\n"
    "So 2427-2429 2FFC-2FFF 31E4-31E5 31EF 1CC00-1CCEF 1CD00-1CEB3 1F6DC 1F774-1F776 1F77B-1F77F 1F7D9 1F8B2-1F8BB "
    "1F8C0-1F8C1 1FA75-1FA77 1FA87-1FA89 1FA8F 1FAAD-1FAAF 1FABB-1FABF 1FAC6 1FACE-1FACF 1FADA-1FADC 1FADF "
    "1FAE8-1FAE9 1FAF7-1FAF8 1FBCB-1FBEF\n"
)

_CATEGORIES = "Lu Ll Lt Lm Lo Mn Mc Me Nd Nl No Pc Pd Ps Pe Pi Pf Po Sm Sc Sk So Zs Zl Zp Cc Cf Cs Co Cn".split()
_LONG_NAMES = {
    "letter": "L", "casedletter": "LC", "uppercaseletter": "Lu", "lowercaseletter": "Ll", "titlecaseletter": "Lt",
    "modifierletter": "Lm", "otherletter": "Lo", "mark": "M", "nonspacingmark": "Mn", "spacingmark": "Mc",
    "enclosingmark": "Me", "number": "N", "decimalnumber": "Nd", "letternumber": "Nl", "othernumber": "No",
    "punctuation": "P", "symbol": "S", "separator": "Z", "spaceseparator": "Zs", "other": "C", "control": "Cc",
    "format": "Cf", "unassigned": "Cn", "privateuse": "Co", "surrogate": "Cs",
}


@functools.cache
def _category_runs() -> dict[str, list[tuple[int, int]]]:
    """Code point ranges per two-letter general category, computed once (~0.5 s)."""
    code = {c: chr(65 + i) for i, c in enumerate(_CATEGORIES)}  # one letter per category, so runs are one regex
    cats = [code[c] for c in map(unicodedata.category, map(chr, range(0x110000)))]
    for cp, cat in _patched_categories().items():
        cats[cp] = code[cat]
    runs: dict[str, list[tuple[int, int]]] = {c: [] for c in _CATEGORIES}
    for m in re.finditer(r"(.)\1*", "".join(cats), re.DOTALL):
        runs[_CATEGORIES[ord(m.group(1)) - 65]].append((m.start(), m.end() - 1))
    return runs


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= 0x10FFFF:
        out.append((nxt, 0x10FFFF))
    return out


@functools.cache
def property_ranges(name: str) -> tuple[tuple[int, int], ...]:
    """Sorted code point ranges of general category `name` (e.g. 'L', 'Lu', 'N', 'Letter'); KeyError if unknown."""
    key = re.sub(r"[\s_-]", "", name).lower()
    cat = _LONG_NAMES.get(key) or next((c for c in _CATEGORIES + ["L", "M", "N", "P", "S", "Z", "C", "LC"]
                                        if c.lower() == key), None)
    if cat is None and key == "l&":
        cat = "LC"
    if cat is None:
        raise KeyError(name)
    members = ["Lu", "Ll", "Lt"] if cat == "LC" else [c for c in _CATEGORIES if c.startswith(cat)]
    runs = _category_runs()
    return tuple(_merge([r for c in members for r in runs[c]]))


def _class_body(ranges, bmp_only: bool) -> str:
    """Ranges as the inside of a `re` character class (astral ranges dropped if bmp_only)."""
    if bmp_only:
        ranges = [(lo, min(hi, 0xFFFF)) for lo, hi in ranges if lo <= 0xFFFF]
    esc = lambda cp: "\\U%08x" % cp  # noqa: E731 - escapes keep `]`, `-`, `^`, `\` inert
    return "".join(esc(lo) if lo == hi else f"{esc(lo)}-{esc(hi)}" for lo, hi in ranges)


_SAFE_ESCAPES = set("tnrfva")
_PROPERTY = re.compile(r"\\([pP])\{(\^?)([^}]*)\}")


def _escape_ranges(pattern: str, i: int) -> tuple[list[tuple[int, int]] | None, int]:
    """The ranges that the class escape at pattern[i] ('\\p{..}', '\\s', '\\d', ...) stands for, and its end."""
    c = pattern[i + 1: i + 2]
    if not c:
        raise ValueError("pattern ends in a lone backslash")
    if c in "pP":
        m = _PROPERTY.match(pattern, i)
        if not m:
            raise ValueError(f"malformed property escape at offset {i}")
        try:
            ranges = list(property_ranges(m.group(3)))
        except KeyError:
            raise ValueError(f"unsupported Unicode property \\p{{{m.group(3)}}} (only general categories)") from None
        negate = (c == "P") != bool(m.group(2))
        return (_complement(ranges) if negate else ranges), m.end()
    if c in "sS":
        ranges = list(_WHITE_SPACE)
    elif c in "dD":
        ranges = list(property_ranges("Nd"))
    else:
        return None, i
    return (_complement(ranges) if c.isupper() else ranges), i + 2


def _translate(pattern: str, bmp_only: bool) -> tuple[str, bool]:
    """One pass of `translate`: the `re` pattern, and whether the BMP-only form is exact after `bmp_stand_ins`."""
    out: list[str] = []
    i, n, in_class, class_start = 0, len(pattern), False, False
    # The BMP form is exact only if matching depends on general categories alone: no non-ASCII
    # literal and no class under (?i) (case folding of a stand-in could differ from the original).
    ascii_only, icase, stack, class_under_icase = True, False, [], False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            class_start = False
            ranges, end = _escape_ranges(pattern, i)
            if ranges is not None:
                class_under_icase |= icase
                out.append(_class_body(ranges, bmp_only) if in_class else f"[{_class_body(ranges, bmp_only)}]")
                i = end
                continue
            nxt = pattern[i + 1: i + 2]
            if not nxt or (nxt.isalnum() and nxt not in _SAFE_ESCAPES):
                raise ValueError(f"unsupported escape \\{nxt} at offset {i}")
            ascii_only &= nxt.isascii()
            out.append(pattern[i: i + 2])
            i += 2
            continue
        ascii_only &= ch.isascii()
        if in_class:
            if ch == "[" or pattern.startswith("&&", i):
                raise ValueError(f"nested character classes / class intersection at offset {i} are not supported")
            if ch == "]" and not class_start:
                in_class = False
            class_start = False
        elif ch == "[":
            in_class, class_start, class_under_icase = True, True, class_under_icase or icase
            negated = pattern.startswith("[^", i)
            out.append("[^" if negated else "[")
            i += 2 if negated else 1
            continue
        elif ch == "(":
            stack.append(icase)
            if pattern.startswith("(?", i):
                m = re.match(r"\(\?(?:[:=!>]|<[=!]|(-?)i([:)])|<(?=[A-Za-z_]))", pattern[i:])
                if not m:
                    raise ValueError(f"unsupported group syntax {pattern[i:i + 4]!r} at offset {i}")
                if m.group(2):  # (?i: (?-i: scoped, (?i) (?-i) for the rest of the enclosing group
                    icase = not m.group(1)
                    if m.group(2) == ")":
                        stack.pop()
                out.append("(?P<" if m.group() == "(?<" else m.group())
                i += m.end()
                continue
        elif ch == ")" and stack:
            icase = stack.pop()
        elif ch == "." and icase:
            class_under_icase = True
        out.append(ch)
        i += 1
    if in_class:
        raise ValueError("unterminated character class")
    return "".join(out), ascii_only and not class_under_icase


@functools.cache
def translate(pattern: str) -> tuple[str, str | None]:
    """Rewrite an Oniguruma pattern for stdlib `re`: (exact pattern, fast BMP-only pattern or None).

    ValueError for syntax we do not translate. The BMP-only pattern (classes without their astral
    ranges, ~9x faster in `re`) is exact on text passed through `bmp_stand_ins`. Compile both with
    re.MULTILINE: under Oniguruma's default (Ruby) syntax `^`/`$` are line anchors.
    """
    full, safe = _translate(pattern, bmp_only=False)
    return full, (_translate(pattern, bmp_only=True)[0] if safe else None)


ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


@functools.cache
def _patched_categories() -> dict[int, str]:
    out = {}
    for line in _UNICODE_16_PATCH.splitlines():
        cat, *spans = line.split()
        for span in spans:
            lo, _, hi = span.partition("-")
            out.update(dict.fromkeys(range(int(lo, 16), int(hi or lo, 16) + 1), cat))
    return out


def category(ch: str) -> str:
    """General category of `ch` as Unicode 16.0 (the `tokenizers` Oniguruma) has it."""
    return _patched_categories().get(ord(ch)) or unicodedata.category(ch)


@functools.cache
def _stand_in(cat: str) -> str:
    """A BMP character of category `cat` that no ASCII literal, (?i) or not, can match, and not White_Space."""
    for cp in range(0x80, 0x10000):
        ch = chr(cp)
        if (category(ch) == cat and not any(lo <= cp <= hi for lo, hi in _WHITE_SPACE)
                and not re.match(r"(?i)[\x00-\x7f]", ch)
                and not any(x.isascii() for x in (ch.lower(), ch.upper(), ch.casefold()))):
            return ch
    raise LookupError(cat)  # pragma: no cover - every category that occurs in the astral planes has BMP members


@functools.cache
def _stand_in_for(ch: str) -> str:
    return _stand_in(category(ch))


def bmp_stand_ins(text: str) -> str:
    """`text` with each astral character replaced by a BMP character of the same general category."""
    return ASTRAL.sub(lambda m: _stand_in_for(m.group()), text)


def split_isolated(full: re.Pattern, bmp: re.Pattern | None, s: str) -> list[str]:
    """Split `s` into the matches and the gaps between them (`tokenizers` behavior Isolated), empties dropped.

    `full`/`bmp` are the compiled pair from `translate`; the fast BMP-only one is used whenever it is exact."""
    text = s
    if bmp is None:
        rx_used = full
    elif ASTRAL.search(s) is None:
        rx_used = bmp
        if bmp.groups == 0:  # fast path: findall gives the pieces directly when matches cover the text
            found = bmp.findall(s)
            if sum(map(len, found)) == len(s):
                return [w for w in found if w] if "" in found else found
    else:
        rx_used, text = bmp, bmp_stand_ins(s)  # same length, same categories: same match spans
    out, prev = [], 0
    for m in rx_used.finditer(text):
        a, b = m.span()
        if a > prev:
            out.append(s[prev:a])
        if b > a:
            out.append(s[a:b])
        prev = b
    if prev < len(s):
        out.append(s[prev:])
    return out
