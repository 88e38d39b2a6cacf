"""Pure-Python reader for Hugging Face `tokenizer.json` files that hold a byte-level BPE model.

Reproduces what the `tokenizers` library does for GLM-4 / Qwen / GPT-2 style files (added-token
extraction, optional NFC, Split + ByteLevel pre-tokenization, BPE, ByteLevel decoding) and raises
ValueError for any setting it does not implement rather than silently encoding differently.
"""

from __future__ import annotations

import errno
import heapq
import json
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence

from glm_asr.text import unicode_classes as uc

__all__ = ["Tokenizer"]

# The pattern `tokenizers` uses for ByteLevel(use_regex=true).
_GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_INF = 1 << 62  # rank of a pair with no merge; merge values are rank << 32 | new_id
_HEAP_MIN_SYMBOLS = 12  # longer words merge with a heap (O(n log n)); the list scan is faster below
_CACHE_SIZE, _CACHE_WORD_LEN = 1 << 17, 64


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table used by ByteLevel."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _show(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


class Tokenizer:
    """A byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`; encodes like `tokenizers`."""

    def __init__(self, spec: dict, path: str = "<tokenizer.json>"):
        self._path = path
        for key in ("truncation", "padding"):
            if spec.get(key) is not None:
                self._fail(key, spec[key], "null")
        self._read_model(spec.get("model"))
        self._read_added_tokens(spec.get("added_tokens") or [])
        norm = spec.get("normalizer")
        if norm is not None and norm.get("type") != "NFC":
            self._fail("normalizer.type", norm.get("type"), "null normalizer or NFC")
        self._nfc = norm is not None
        self._read_pre_tokenizer(spec.get("pre_tokenizer"))
        self._read_post_processor(spec.get("post_processor"))
        dec = spec.get("decoder")
        if not isinstance(dec, dict):
            self._fail("decoder", dec, "ByteLevel")
        if dec.get("type") != "ByteLevel":
            self._fail("decoder.type", dec.get("type"), "ByteLevel")
        self._cache: dict[str, list[int]] = {}
        self._byte_table = dict(enumerate(_byte_chars()))  # for str.translate of latin-1 decoded UTF-8
        self._char_byte = {c: b for b, c in self._byte_table.items()}
        self._tables: tuple[list[bytes], list[bytes]] | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a `tokenizer.json`; FileNotFoundError if missing, ValueError if not JSON or unsupported."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError as e:
            raise FileNotFoundError(errno.ENOENT, "tokenizer file not found", path) from e
        try:
            spec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a JSON tokenizer file ({e})") from e
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: not a tokenizer.json: top level is {type(spec).__name__}, expected an object")
        return cls(spec, path)

    def _fail(self, field: str, value, supported: str):
        raise ValueError(f"{self._path}: unsupported {field} = {_show(value)}; supported: {supported}")

    # --- reading tokenizer.json ------------------------------------------------------------------

    def _read_model(self, model) -> None:
        if not isinstance(model, dict) or model.get("type", "BPE" if "merges" in (model or {}) else None) != "BPE":
            self._fail("model.type", model.get("type") if isinstance(model, dict) else model, "BPE")
        for key, ok, what in (("dropout", lambda v: v is None, "null"), ("byte_fallback", lambda v: not v, "false"),
                              ("continuing_subword_prefix", lambda v: not v, "null"),
                              ("end_of_word_suffix", lambda v: not v, "null")):
            if not ok(model.get(key)):
                self._fail(f"model.{key}", model[key], what)
        self._vocab: dict[str, int] = model.get("vocab") or {}
        if not all(type(i) is int and i >= 0 for i in self._vocab.values()):
            self._fail("model.vocab", "<non-integer or negative id>", "an object of token -> id >= 0")
        self._id_to_tok = {i: t for t, i in self._vocab.items()}
        self._ignore_merges = bool(model.get("ignore_merges", False))
        self._fuse_unk = bool(model.get("fuse_unk", False))
        unk = model.get("unk_token")
        self._unk_id = None if unk is None else self._vocab.get(unk)
        if unk is not None and self._unk_id is None:
            self._fail("model.unk_token", unk, "null or a token of model.vocab")
        self._m = max(self._vocab.values(), default=0) + 1  # pair key = a * _m + b
        self._merges: dict[int, int] = {}
        vocab = self._vocab
        for rank, merge in enumerate(model.get("merges") or []):
            pair = merge.split(" ") if isinstance(merge, str) else merge
            if (not isinstance(pair, list) or len(pair) != 2 or pair[0] not in vocab or pair[1] not in vocab
                    or pair[0] + pair[1] not in vocab):
                self._fail(f"model.merges[{rank}]", merge, "a pair of vocab tokens whose concatenation is in vocab")
            # A repeated pair keeps its last rank, as the `tokenizers` HashMap does.
            self._merges[vocab[pair[0]] * self._m + vocab[pair[1]]] = rank << 32 | vocab[pair[0] + pair[1]]

    def _read_added_tokens(self, added: list) -> None:
        self._added: dict[str, int] = {}
        self._added_by_id: dict[int, str] = {}
        special: set[str] = set()
        raw, normalized = [], []
        for k, tok in enumerate(added):
            content = tok.get("content") if isinstance(tok, dict) else None
            if not isinstance(content, str):
                self._fail(f"added_tokens[{k}]", tok, "objects with a string content")
            for flag in ("single_word", "lstrip", "rstrip"):
                if tok.get(flag):
                    self._fail(f"added_tokens[{k}].{flag}", tok[flag], "false")
            if tok.get("special"):
                special.add(content)
            if not content or content in self._added:
                continue
            # `tokenizers` ignores the "id" in the file and re-assigns ids as its add_tokens() does: a
            # token already in the vocab keeps its vocab id, others follow the vocab (or the highest added id).
            i = self._vocab.get(content)
            if i is None:
                top, n = max(self._added.values(), default=None), len(self._vocab)
                i = n if top is None or (top < n and n) else top + 1
            self._added[content] = i
            self._added_by_id[i] = content
            (normalized if tok.get("normalized", not tok.get("special")) else raw).append(content)
        self._special = {t: self._added[t] for t in special if t}
        # Leftmost-longest, like the library's Aho-Corasick: at the first position any token matches, the
        # alternation tries longer tokens first.
        alt = lambda toks: re.compile("(" + "|".join(map(re.escape, sorted(toks, key=len, reverse=True))) + ")")  # noqa: E731
        self._raw_re = alt(raw) if raw else None
        self._norm_re = alt(normalized) if normalized else None
        # decode skips by token text, as `tokenizers` does: a vocab entry spelled like a special token goes too
        self._special_ids = set(self._special.values()) | {self._vocab[t] for t in self._special if t in self._vocab}

    def _read_pre_tokenizer(self, pre) -> None:
        if isinstance(pre, dict) and pre.get("type") == "Sequence":
            steps, fields = pre.get("pretokenizers") or [], "pre_tokenizer.pretokenizers[{}]"
        else:
            steps, fields = [pre], "pre_tokenizer"
        supported = "Sequence of Split(Isolated) steps ending in ByteLevel(add_prefix_space=false), or ByteLevel alone"
        self._splits: list[tuple[re.Pattern, re.Pattern | None]] = []
        for k, step in enumerate(steps or [None]):
            field = fields.format(k)
            kind = step.get("type") if isinstance(step, dict) else step
            if kind == "Split" and k < len(steps) - 1:
                self._read_split(step, field)
            elif kind == "ByteLevel" and k == len(steps) - 1:
                if step.get("add_prefix_space"):
                    self._fail(f"{field}.add_prefix_space", step["add_prefix_space"], "false")
                if step.get("use_regex", True):
                    self._splits.append(self._compile(_GPT2_PATTERN, field))
            else:
                self._fail(f"{field}.type" if isinstance(step, dict) else field, kind, supported)

    def _read_split(self, step: dict, field: str) -> None:
        if step.get("behavior") != "Isolated":
            self._fail(f"{field}.behavior", step.get("behavior"), "Isolated")
        if step.get("invert"):
            self._fail(f"{field}.invert", step["invert"], "false")
        pattern = step.get("pattern") or {}
        if "Regex" in pattern:
            self._splits.append(self._compile(pattern["Regex"], f"{field}.pattern.Regex"))
        elif "String" in pattern:
            rx = re.compile(re.escape(pattern["String"]))
            self._splits.append((rx, rx if pattern["String"].isascii() else None))
        else:
            self._fail(f"{field}.pattern", pattern, "{\"Regex\": ...} or {\"String\": ...}")

    def _compile(self, pattern: str, field: str) -> tuple[re.Pattern, re.Pattern | None]:
        try:
            full, bmp = uc.translate(pattern)
            return re.compile(full, re.MULTILINE), bmp and re.compile(bmp, re.MULTILINE)
        except (ValueError, re.error) as e:
            raise ValueError(f"{self._path}: unsupported {field} = {_show(pattern)} ({e}); supported: Oniguruma "
                             "patterns using general-category \\p{..}, \\s, \\d, (?i:..) and `re` syntax") from e

    def _read_post_processor(self, post) -> None:
        steps = post.get("processors") if isinstance(post, dict) and post.get("type") == "Sequence" else [post]
        for step in steps:
            kind = step.get("type") if isinstance(step, dict) else step
            if step is not None and kind != "ByteLevel":  # ByteLevel only adjusts offsets, adds no tokens
                self._fail("post_processor.type", kind, "null or ByteLevel")

    # --- encoding ----------------------------------------------------------------------------------

    def _segments(self, text: str) -> Iterator[tuple[str, bool]]:
        """(piece, is_added_token) in order: raw-matched added tokens, then NFC, then normalized ones."""
        parts = self._raw_re.split(text) if self._raw_re else [text]
        for k, part in enumerate(parts):
            if k % 2:
                yield part, True
                continue
            if self._nfc:
                part = unicodedata.normalize("NFC", part)
            sub = self._norm_re.split(part) if self._norm_re else [part]
            for j, piece in enumerate(sub):
                if piece:
                    yield piece, bool(j % 2)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (added tokens matched whole; nothing prepended or appended)."""
        ids: list[int] = []
        get = self._cache.get
        for seg, is_added in self._segments(text):
            if is_added:
                ids.append(self._added[seg])
                continue
            words = [seg]
            for full, bmp in self._splits:
                words = [w for word in words for w in uc.split_isolated(full, bmp, word)]
            for word in words:
                word_ids = get(word)
                ids += self._encode_word(word) if word_ids is None else word_ids
        return ids

    def _encode_word(self, word: str) -> list[int]:
        chars = word.encode("utf-8").decode("latin-1").translate(self._byte_table)
        vocab = self._vocab
        if self._ignore_merges and chars in vocab:
            out = [vocab[chars]]
        else:
            symbols = list(map(vocab.get, chars))
            if None in symbols:
                symbols = self._with_unk(symbols)
            out = self._merge_heap(symbols) if len(symbols) >= _HEAP_MIN_SYMBOLS else self._merge_list(symbols)
        if len(word) <= _CACHE_WORD_LEN:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[word] = out
        return out

    def _with_unk(self, symbols: list[int | None]) -> list[int]:
        """Unknown symbols become unk_token (consecutive ones fused if fuse_unk), or vanish without one."""
        out: list[int] = []
        for k, s in enumerate(symbols):
            if s is not None:
                out.append(s)
            elif self._unk_id is not None and not (self._fuse_unk and k and symbols[k - 1] is None):
                out.append(self._unk_id)
        return out

    def _merge_list(self, word: list[int]) -> list[int]:
        """Apply merges lowest rank first, leftmost first among equals; min()/index() run in C."""
        merges, m = self._merges, self._m
        ranks = [merges.get(a * m + b, _INF) for a, b in zip(word, word[1:])]
        while ranks:
            r = min(ranks)
            if r == _INF:
                break
            i = ranks.index(r)
            new = r & 0xFFFFFFFF
            word[i] = new
            del word[i + 1], ranks[i]
            if i:
                ranks[i - 1] = merges.get(word[i - 1] * m + new, _INF)
            if i < len(ranks):
                ranks[i] = merges.get(new * m + word[i + 1], _INF)
        return word

    def _merge_heap(self, word: list[int]) -> list[int]:
        """Same result as _merge_list via a heap over a linked list, like `tokenizers`; O(n log n).

        Heap entries are single ints, merge_value << sh | position, so ties in rank pop leftmost first."""
        get, m, n = self._merges.get, self._m, len(word)
        sh, mask = n.bit_length(), (1 << n.bit_length()) - 1
        nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))
        heap = [r << sh | i for i, r in enumerate(map(get, [a * m + b for a, b in zip(word, word[1:])]))
                if r is not None]
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            e = pop(heap)
            i, r = e & mask, e >> sh
            a, j = word[i], nxt[i]
            # Stale entry: a neighbour was merged since it was pushed, so the pair at i changed.
            if a is None or j == n or get(a * m + word[j]) != r:
                continue
            new = word[i] = r & 0xFFFFFFFF
            word[j] = None
            k = nxt[i] = nxt[j]
            if k != n:
                prv[k] = i
                if (r2 := get(new * m + word[k])) is not None:
                    push(heap, r2 << sh | i)
            if (p := prv[i]) >= 0 and (r2 := get(word[p] * m + new)) is not None:
                push(heap, r2 << sh | p)
        return [s for s in word if s is not None]

    # --- decoding and lookup -------------------------------------------------------------------------

    def _byte_tables(self) -> tuple[list[bytes], list[bytes]]:
        """Bytes of every id (b"" for ids without a token), plain and with special tokens blanked; built once."""
        if self._tables is None:
            to_byte = {ord(c): b for c, b in self._char_byte.items()}
            chars = self._char_byte.keys()
            table = [b""] * (max(self._id_to_tok.keys() | self._added_by_id.keys(), default=-1) + 1)
            for i in range(len(table)):
                tok = self.id_to_token(i)
                if tok is not None:  # ByteLevel maps a token through the byte table only if every char is in it
                    table[i] = bytes(tok.translate(to_byte), "latin-1") if chars >= set(tok) else tok.encode("utf-8")
            no_special = list(table)
            for i in self._special_ids:
                no_special[i] = b""
            self._tables = table, no_special
        return self._tables

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; unknown ids are ignored and invalid UTF-8 becomes U+FFFD, as in `tokenizers`."""
        table = self._byte_tables()[1 if skip_special_tokens else 0]
        ids = list(ids)
        if ids and not (0 <= min(ids) and max(ids) < len(table)):
            ids = [i for i in ids if 0 <= i < len(table)]
        # Python's "replace" substitutes one U+FFFD per maximal invalid subsequence, like Rust's from_utf8_lossy.
        return b"".join(map(table.__getitem__, ids)).decode("utf-8", "replace")

    def token_to_id(self, token: str) -> int | None:
        """Id of an added/special token or vocab entry, else None."""
        i = self._added.get(token)
        return self._vocab.get(token) if i is None else i

    def id_to_token(self, id: int) -> str | None:
        """Token text of `id` (added tokens first, then vocab), else None."""
        t = self._added_by_id.get(id)
        return self._id_to_tok.get(id) if t is None else t

    @property
    def special_tokens(self) -> dict[str, int]:
        """Added tokens marked special, name -> id."""
        return dict(self._special)

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens, added tokens included (`tokenizers`' get_vocab_size(True))."""
        return len(self._vocab.keys() | self._added.keys())
