"""glm_asr.tokenizer against the `tokenizers` library (the oracle) on generated tokenizer.json files."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from conformance.harness.tokenizer_fixture import GLM_SPECIAL_TOKENS, GLM_SPLIT_PATTERN, build_bpe_tokenizer_json
from glm_asr.text import unicode_classes as uc
from glm_asr.text.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")

GLM_BASE = 59246
N_STRINGS = 10_000

# --- deterministic test strings ---------------------------------------------------------------------

_WORDS = ("the quick brown fox jumps over lazy dog speech audio model transcribe hello world it's we'll they've "
          "I'm don't CAN'T You'LL she'D 's 'S 're 'Ve 'm 'LL 'd 'ſ 'x ' café naïve Ωmega straße").split()
_EMOJI = ["😀", "👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇨🇳", "🇺🇸", "❤️", "1️⃣", "#️⃣", "🫠", "🫨", "🩷",
          "🧑🏻‍🤝‍🧑🏾", "✨", "🚀", "\u200d", "\ufe0f", "🏽"]
_SPECIAL_SHARDS = ["<|us", "<|user|", "<|user|>>", "<<|user|>", "<|user", "|>", "<|", "[gMASK", "gMASK]", "<sop",
                   "<|endoftext|", "<|begin_of_audio|><|pad|><|end_of_audio|>", "<|pad|><|pad|>", "<|USER|>",
                   "< |user|>", "<|user |>", "<|reserved_0|>x", "x<|reserved_0|>", "[MASK]]", "[[MASK]"]
_WS = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\r\r\n", " \n ", "\u00a0", "\u3000", "\u2028",
       "\u2029", "\x0b", "\x0c", "\x85", "\u1680", "\u2003", "\u202f", "\u205f", " \t\n"]
_CTRL = [chr(c) for c in (*range(0, 32), 0x7F, 0x80, 0x9F, 0x200B, 0x200C, 0x200E, 0xFEFF, 0x2060, 0xAD)]
_COMBINING = ["e\u0301", "a\u0300\u0316", "\u0301", "n\u0303\u0303", "\u0915\u094d\u0937", "\u0e01\u0e34",
              "\u05d0\u05b8", "\u20dd", "o\u0308\u0304", "\u3099"]
_PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("，。！？、；：「」『』（）【】《》…—·“”‘’") + ["...", "?!", "--", "'''"]
_CODE = ["def f(x):\n    return x**2\n", "for (i=0;i<n;++i){a[i]=b[i];}", "x = {'a': [1, 2.5e-3]}",
         "<div class=\"a\">b</div>", "SELECT * FROM t WHERE id=42;", "fn main() { println!(\"{}\", 1); }"]
_NEW_IN_16 = ["\U0001E5D0\U0001E5D1", "\U00011380\U000113B8", "\U0001CCF5", "\U0001FAE8", "\u1C89\u1C8A",
              "\U00016D70\U00016D41", "\U000323AF", "\U0001D2C0", "\u0897", "\U0001171E"]


def _rand_chars(rng: random.Random, ranges: list[tuple[int, int]], lo: int, hi: int) -> str:
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(lo, hi)))


def _fragment(rng: random.Random) -> str:
    kind = rng.randrange(22)
    if kind < 3:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 6)))
    if kind < 5:
        return _rand_chars(rng, [(0x4E00, 0x9FA5), (0x4E00, 0x4FFF), (0x3400, 0x4DBF)], 1, 30)
    table = {
        5: lambda: _rand_chars(rng, [(0x3041, 0x3096), (0x30A1, 0x30FA), (0x4E00, 0x9FA5), (0x30FC, 0x30FC)], 1, 12),
        6: lambda: _rand_chars(rng, [(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3131, 0x318E)], 1, 10),
        7: lambda: _rand_chars(rng, [(0x0621, 0x064A), (0x064B, 0x0652), (0x0660, 0x0669)], 1, 12),
        8: lambda: _rand_chars(rng, [(0x0410, 0x044F), (0x0400, 0x04FF), (0x0370, 0x03FF)], 1, 12),
        9: lambda: "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 5))),
        10: lambda: "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 2, 3, 4, 7, 12, 40]))),
        11: lambda: _rand_chars(rng, [(0xFF10, 0xFF19), (0x0660, 0x0669), (0x00B2, 0x00B3), (0x2160, 0x216F),
                                      (0x2460, 0x2473), (0x1D7CE, 0x1D7FF)], 1, 6),
        12: lambda: "".join(rng.choice(_WS) for _ in range(rng.randint(1, 4))),
        13: lambda: "".join(rng.choice(_CTRL) for _ in range(rng.randint(1, 3))),
        14: lambda: "".join(rng.choice(_COMBINING) for _ in range(rng.randint(1, 3))),
        15: lambda: "".join(rng.choice(_PUNCT) for _ in range(rng.randint(1, 4))),
        16: lambda: rng.choice(GLM_SPECIAL_TOKENS),
        17: lambda: rng.choice(_SPECIAL_SHARDS),
        18: lambda: rng.choice(_CODE),
        19: lambda: _rand_chars(rng, [(0x10000, 0x3FFFF), (0xE0000, 0x10FFFF), (0x80, 0xD7FF), (0xE000, 0xFFFF)], 1, 4),
        20: lambda: rng.choice(_NEW_IN_16),
        21: lambda: _rand_chars(rng, [(0x20, 0x7E)], 1, 20),
    }
    return table[kind]()


def make_strings(n: int, seed: int = 0) -> list[str]:
    """n deterministic strings mixing scripts, emoji, digits, whitespace, control chars and (broken) specials."""
    rng = random.Random(seed)
    out = ["", " ", "\n", "<|user|>", "<|user|>\nPlease transcribe this audio into text<|assistant|>\n",
           "中" * 400 + "a" * 300, "1" * 100, " " * 50 + "x", "\r\n" * 20, "😀" * 60]
    while len(out) < n:
        parts = [_fragment(rng) for _ in range(rng.randint(1, 6))]
        sep = rng.choice(["", "", " ", "\n", rng.choice(_WS)])
        out.append(sep.join(parts))
    return out


STRINGS = make_strings(N_STRINGS)

# --- tokenizer files, built once per session ------------------------------------------------------------


def _variant(src, dst, edit) -> str:
    spec = json.loads(src.read_text(encoding="utf-8"))
    edit(spec)
    dst.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tokenizers")
    paths = {"small300": d / "small300.json", "pairs340": d / "pairs340.json", "glm": d / "glm.json"}
    build_bpe_tokenizer_json(paths["small300"], 300)
    build_bpe_tokenizer_json(paths["pairs340"], 340, merges_as_pairs=True)
    build_bpe_tokenizer_json(paths["glm"], GLM_BASE)
    out = {k: str(v) for k, v in paths.items()}

    def gpt2(spec):  # plain ByteLevel with GPT-2's regex, no post-processor
        spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        spec["post_processor"] = None

    def nfc_added(spec):  # NFC normalizer, ignore_merges, non-special added tokens matched after normalization
        spec["normalizer"] = {"type": "NFC"}
        spec["model"]["ignore_merges"] = True
        base = len(spec["model"]["vocab"]) + len(spec["added_tokens"])
        for k, t in enumerate(["hel", "hello world", "é", "我们", "the"]):  # "hel" first: longest match must win
            spec["added_tokens"].append({"id": base + k, "content": t, "single_word": False, "lstrip": False,
                                         "rstrip": False, "normalized": True, "special": False})

    def unk(fuse):  # some byte symbols renamed away, so those bytes are unknown
        def edit(spec):
            vocab = spec["model"]["vocab"]
            used = {s for m in spec["model"]["merges"] for s in (m.split(" ") if isinstance(m, str) else m)}
            free = [t for t, i in vocab.items() if i < 256 and t not in used and t not in "Ġa1中"]
            for k, t in enumerate(free[::3]):
                vocab["<unk>" if k == 0 else f"<gone{k}>"] = vocab.pop(t)
            spec["model"].update(unk_token="<unk>", fuse_unk=fuse)
        return edit

    out["gpt2"] = _variant(paths["pairs340"], d / "gpt2.json", gpt2)
    out["nfc_added"] = _variant(paths["small300"], d / "nfc_added.json", nfc_added)
    out["unk"] = _variant(paths["small300"], d / "unk.json", unk(False))
    out["unk_fused"] = _variant(paths["small300"], d / "unk_fused.json", unk(True))
    return out


@pytest.fixture(scope="session")
def glm(files) -> Tokenizer:
    return Tokenizer.from_file(files["glm"])


def _mismatches(ours: Tokenizer, ref, strings: list[str]) -> list[str]:
    bad = []
    ref_ids = [e.ids for e in ref.encode_batch(strings)]
    for s, want in zip(strings, ref_ids):
        got = ours.encode(s)
        if got != want:
            bad.append(f"encode {s!r}: {got} != {want}")
        for skip in (True, False):
            if ours.decode(want, skip_special_tokens=skip) != ref.decode(want, skip_special_tokens=skip):
                bad.append(f"decode(skip={skip}) {want}")
        if len(bad) > 5:
            break
    return bad


# --- parity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small300", "pairs340", "glm"])
def test_parity_with_tokenizers(files, name):
    ours, ref = Tokenizer.from_file(files[name]), tokenizers.Tokenizer.from_file(files[name])
    assert not _mismatches(ours, ref, STRINGS)


@pytest.mark.parametrize("name", ["gpt2", "nfc_added", "unk", "unk_fused"])
def test_parity_variants(files, name):
    ours, ref = Tokenizer.from_file(files[name]), tokenizers.Tokenizer.from_file(files[name])
    extra = ["hello world", "Hello world", "e\u0301 é 我们 the them", "\x00\x01\x7f\xff"]
    assert not _mismatches(ours, ref, extra + STRINGS[:2000])
    # `tokenizers` re-assigns added-token ids (ignoring the file's "id"); we must agree with it.
    assert ours.vocab_size == ref.get_vocab_size(True)
    for t in json.loads(Path(files[name]).read_text(encoding="utf-8"))["added_tokens"]:
        assert ours.token_to_id(t["content"]) == ref.token_to_id(t["content"]), t


@pytest.mark.parametrize("name", ["small300", "glm"])
def test_decode_random_ids(files, name):
    """Random id sequences: mostly single-byte tokens (invalid UTF-8 galore), some merges, specials, unknown ids."""
    ours, ref = Tokenizer.from_file(files[name]), tokenizers.Tokenizer.from_file(files[name])
    rng = random.Random(7)
    n = ref.get_vocab_size(True)
    byte_ids = sorted(ref.token_to_id(c) for c in tokenizers.pre_tokenizers.ByteLevel.alphabet())
    for _ in range(3000):
        ids = [rng.choice(byte_ids) if rng.random() < 0.8 else rng.randrange(n + 5) for _ in range(rng.randint(0, 16))]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), ids


def test_long_words_heap_and_list_paths_agree(glm):
    """The O(n^2) list merge (short words) and the heap merge (long words) must give identical ids."""
    rng = random.Random(3)
    for _ in range(300):
        word = _rand_chars(rng, [(0x4E00, 0x9FA5), (0x61, 0x7A), (0x3041, 0x3096)], 1, 40)
        chars = word.encode("utf-8").decode("latin-1").translate(glm._byte_table)
        symbols = [glm._vocab[c] for c in chars]
        assert glm._merge_list(list(symbols)) == glm._merge_heap(list(symbols))


_ALL_CPS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


@pytest.mark.parametrize("cls, ranges", [(r"\p{L}", lambda: uc.property_ranges("L")),
                                         (r"\p{N}", lambda: uc.property_ranges("N")),
                                         (r"\s", lambda: uc._WHITE_SPACE)])
def test_unicode_classes_match_oniguruma_on_every_code_point(cls, ranges):
    """Oniguruma (inside `tokenizers`) and our tables agree on the class of every code point."""
    text = "".join(map(chr, _ALL_CPS))
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(cls), behavior="removed")
    want = [p for p, _ in split.pre_tokenize_str(text)]  # the runs of non-members
    member = bytearray(0x110000)
    for lo, hi in ranges():
        member[lo:hi + 1] = b"\x01" * (hi - lo + 1)
    flags = bytes(member[c] for c in _ALL_CPS)
    assert [text[m.start():m.end()] for m in re.finditer(rb"\x00+", flags)] == want


def test_regex_translation_matches_oniguruma():
    """The GLM and GPT-2 split regexes, translated, split like Oniguruma: all of the BMP, a stride of the astral
    planes and every code point that Unicode 15-16 added, each next to an apostrophe or a space."""
    astral = set(range(0x10000, 0x110000, 13)) | {c for c in uc._patched_categories() if c > 0xFFFF}
    cps = [c for c in _ALL_CPS if c <= 0xFFFF or c in astral]
    text = "".join(chr(c) + ("'" if c % 3 else " ") for c in cps)
    split = tokenizers.pre_tokenizers.Split
    for pattern in (GLM_SPLIT_PATTERN, r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"):
        want = [p for p, _ in split(tokenizers.Regex(pattern), behavior="isolated").pre_tokenize_str(text)]
        full, bmp = uc.translate(pattern)
        for rx, t in ((re.compile(full, re.M), text), (re.compile(bmp, re.M), uc.bmp_stand_ins(text))):
            assert rx.findall(t) and [text[m.start():m.end()] for m in rx.finditer(t)] == want


def test_prompt_tokens_and_vocab_size(files, glm):
    ref = tokenizers.Tokenizer.from_file(files["glm"])
    assert glm.vocab_size == ref.get_vocab_size(True) == GLM_BASE + 18
    expected = {"<|endoftext|>": 59246, "<|user|>": 59253, "<|assistant|>": 59254, "<|observation|>": 59255,
                "<|pad|>": 59260, "<|begin_of_audio|>": 59261, "<|end_of_audio|>": 59262}
    for name, i in expected.items():
        assert glm.token_to_id(name) == i and glm.id_to_token(i) == name
        assert glm.encode(name) == [i]
    assert glm.special_tokens == {t: GLM_BASE + k for k, t in enumerate(GLM_SPECIAL_TOKENS)}
    assert glm.token_to_id("no such token") is None and glm.id_to_token(10**9) is None
    assert glm.id_to_token(ref.token_to_id("Ġ")) == "Ġ"
    small = Tokenizer.from_file(files["small300"])
    assert small.vocab_size == 318 and small.token_to_id("<|pad|>") == 314


def test_builder_is_deterministic(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert build_bpe_tokenizer_json(a, 300) == build_bpe_tokenizer_json(b, 300)
    assert a.read_bytes() == b.read_bytes()
    model = json.loads(a.read_text(encoding="utf-8"))["model"]
    assert len(model["vocab"]) == 300 and sorted(model["vocab"].values()) == list(range(300))


# --- errors -------------------------------------------------------------------------------------------


def test_missing_and_non_json_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.from_file(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("this is { not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json.*not a JSON") as e:
        Tokenizer.from_file(bad)
    assert isinstance(e.value.__cause__, json.JSONDecodeError)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="binary.json"):
        Tokenizer.from_file(binary)


def _set(*keys):
    """An edit setting spec[k0][k1]...[k_{-2}] = keys[-1]."""
    def edit(spec):
        node = spec
        for k in keys[:-2]:
            node = node[k]
        node[keys[-2]] = keys[-1]
    return edit


@pytest.mark.parametrize("edit, field, value", [
    (_set("model", "type", "WordPiece"), "model.type", "WordPiece"),
    (_set("pre_tokenizer", {"type": "Whitespace"}), "pre_tokenizer.type", "Whitespace"),
    (_set("pre_tokenizer", None), "pre_tokenizer", "null"),
    (_set("pre_tokenizer", "pretokenizers", 0, "behavior", "Removed"), "pre_tokenizer.pretokenizers[0].behavior",
     "Removed"),
    (_set("pre_tokenizer", "pretokenizers", 0, "pattern", {"Regex": r"\p{Han}+"}),
     "pre_tokenizer.pretokenizers[0].pattern.Regex", "Han"),
    (_set("pre_tokenizer", "pretokenizers", 0, "pattern", {"Regex": r"\w+|\W"}),
     "pre_tokenizer.pretokenizers[0].pattern.Regex", r"\\w"),
    (_set("pre_tokenizer", "pretokenizers", 1, "add_prefix_space", True),
     "pre_tokenizer.pretokenizers[1].add_prefix_space", "true"),
    (_set("normalizer", {"type": "Lowercase"}), "normalizer.type", "Lowercase"),
    (_set("normalizer", {"type": "NFKC"}), "normalizer.type", "NFKC"),
    (_set("decoder", {"type": "WordPiece"}), "decoder.type", "WordPiece"),
    (_set("post_processor", {"type": "TemplateProcessing", "single": []}), "post_processor.type",
     "TemplateProcessing"),
    (_set("model", "dropout", 0.1), "model.dropout", "0.1"),
    (_set("model", "byte_fallback", True), "model.byte_fallback", "true"),
    (_set("model", "continuing_subword_prefix", "##"), "model.continuing_subword_prefix", "##"),
    (_set("model", "merges", 0, "Ġ nosuchtoken"), "model.merges[0]", "nosuchtoken"),
    (_set("added_tokens", 0, "lstrip", True), "added_tokens[0].lstrip", "true"),
    (_set("truncation", {"max_length": 8}), "truncation", "max_length"),
])
def test_unsupported_settings_are_rejected(files, tmp_path, edit, field, value):
    path = _variant(Path(files["small300"]), tmp_path / "edited.json", edit)
    with pytest.raises(ValueError) as e:
        Tokenizer.from_file(path)
    msg = str(e.value)
    assert "edited.json" in msg and field in msg and value in msg and "supported" in msg, msg
    assert "\n" not in msg
