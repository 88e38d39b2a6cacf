"""A running batch: rows that join and leave between decode steps (continuous batching, as vLLM's engine).

A batch that runs from its prompts to its last token makes a unit that arrives meanwhile wait for the whole
decode. Here every row owns a slice of one preallocated KV cache and its own length: `join` encodes the
newcomers' audio, prefills their prompts together and copies each prompt's keys and values into a free row;
`step` decodes one token for every row at once, each at its own position; a row that ends (an end token, or
its token budget) leaves, and the last row moves into its place so that rows 0..n-1 stay the ones in use.

Each row sees exactly its own tokens (the rest of its cache row is masked), at the positions it would have
alone, with the token budget `transcribe_batch` gives it: its text equals the one-at-a-time path's
(tests/test_serve.py checks it in fp32 with rows joining at different steps).
"""

from __future__ import annotations

import time

import torch

from glm_asr.engine.batch import run_batch
from glm_asr.engine.units import Unit
from glm_asr.model.decoder import KVCache
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel
from glm_asr.transcription.generate import prompt_positions
from glm_asr.transcription.processor import Processor
from glm_asr.transcription.transcribe import Decoded, token_budgets


class RowCache:
    """Keys and values (L, R, Hkv, S, Dh) of R rows, row r holding its first `lengths[r]` positions; given to
    the decoder as its cache for a step of one new token per row. The decoder writes each layer through
    `update`, which puts row r's new key at its own length instead of at one shared offset."""

    def __init__(self, cache: KVCache) -> None:
        self.k, self.v = cache.k, cache.v
        self.lengths = torch.zeros(cache.k.shape[1], dtype=torch.long)
        self.rows = 0  # rows in use: 0..rows-1
        self.stepping = 0  # rows the step in progress decodes: 0..stepping-1 (the others sit it out)

    @property
    def width(self) -> int:
        """Cache positions a step reads: the longest stepping row's and its new one."""
        return int(self.lengths[: self.stepping].max()) + 1

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (n, Hkv, 1, Dh) of rows 0..n-1, written at each row's length; returns (n, Hkv, width, Dh) views.
        `offset` is the decoder's shared one, unused: positions are per row here."""
        assert k.shape[2] == 1, "a RowCache takes decode steps: one new position per row"
        n, rows = k.shape[0], torch.arange(k.shape[0])
        self.k[layer, rows, :, self.lengths[:n]] = k[:, :, 0]
        self.v[layer, rows, :, self.lengths[:n]] = v[:, :, 0]
        width = self.width
        return self.k[layer, :n, :, :width], self.v[layer, :n, :, :width]


class _Row:
    def __init__(self, unit: Unit, budget: int) -> None:
        self.unit, self.budget, self.tokens = unit, budget, []


class RunningBatch:
    """Rows decoding together. `join` adds units (their first token chosen from the prefill), `step` decodes one
    token for every row; both return the units that ended, with `decoded` set. Used from one thread."""

    def __init__(self, model: GlmAsrModel, processor: Processor, max_new_tokens: int | None = None,
                 eos_token_id: tuple[int, ...] | None = None) -> None:
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.eos = tuple(eos_token_id or model.config.text_config.eos_token_id)
        self.rows: list[_Row] = []
        self.cache: RowCache | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def units(self) -> list[Unit]:
        return [row.unit for row in self.rows]

    @torch.inference_mode()
    def join(self, units: list[Unit]) -> list[Unit]:
        """Encodes the units' audio and prefills their prompts together (one left-padded batch), then gives each a
        cache row of its own and chooses its first token."""
        if not units:
            return []
        started = time.perf_counter()
        model, device = self.model, next(self.model.parameters()).device
        clips = [u.samples for u in units]
        batch = self.processor(clips).to(device)
        lengths = batch.attention_mask.sum(1).tolist()
        budgets = token_budgets(model, lengths, clips, self.max_new_tokens)
        features = batch.input_features.to(model.audio_tower.conv1.weight.dtype)  # the audio path's own dtype
        audio = model.embed_audio(features, batch.input_features_mask)
        embeds = model.embed_prompt(batch.input_ids, audio)  # (b, T, D)
        b, T, _ = embeds.shape
        prefill = KVCache.empty(model.config.text_config, b, T, embeds.dtype, device)
        positions, valid = prompt_positions(batch.attention_mask), batch.attention_mask.bool()
        logits = model.decode(embeds, positions, valid, prefill, 0, last_only=True)  # (b, 1, V)
        self._reserve(len(self.rows) + b, max(n + budget for n, budget in zip(lengths, budgets)), embeds.dtype, device)
        cache = self.cache
        for i, (n, unit, budget) in enumerate(zip(lengths, units, budgets)):  # each prompt's keys from its padding on
            r = cache.rows + i
            cache.k[:, r, :, :n] = prefill.k[:, i, :, T - n:]
            cache.v[:, r, :, :n] = prefill.v[:, i, :, T - n:]
            cache.lengths[r] = n
            self.rows.append(_Row(unit, budget))
        cache.rows += b
        new = self.rows[-b:]
        self._share(new, time.perf_counter() - started)
        return self._choose(new, logits[:, -1])

    def stepping(self, hold: frozenset[int] | set[int] = frozenset()) -> list[Unit]:
        """The units that `step(hold)` decodes a token for."""
        return [row.unit for row in self.rows if id(row.unit) not in hold]

    @torch.inference_mode()
    def step(self, hold: frozenset[int] | set[int] = frozenset()) -> list[Unit]:
        """One new token for every row, each at its own position; the rows of the units in `hold` (by id) sit
        this step out (their cache rows are untouched: they go on later as if never held)."""
        if not self.rows:
            return []
        started = time.perf_counter()
        n = self._hold_last(hold)
        if not n:
            return []
        cache = self.cache
        cache.stepping = n
        device = cache.k.device
        last = torch.tensor([row.tokens[-1] for row in self.rows[:n]], device=device)
        embeds = self.model.language_model.model.embed_tokens(last[:, None])  # (n, 1, D)
        positions = cache.lengths[:n, None].to(device)  # alone, the row's next token would be at its length
        width = cache.width
        key_valid = torch.arange(width, device=device)[None, :] <= positions  # (n, width): its own keys only
        # The decoder's causal rule compares key positions with `offset`; at `width`, past every key, it lets
        # key_valid alone decide (no row sees another row's longer past).
        logits = self.model.decode(embeds, positions, key_valid, cache, width, last_only=True)
        cache.lengths[:n] += 1
        self._share(self.rows[:n], time.perf_counter() - started)
        return self._choose(self.rows[:n], logits[:, -1])

    @torch.inference_mode()  # the cache rows move (_leave): inference tensors change only in inference mode
    def drop(self, units: set[int]) -> None:
        """Removes the rows of these units (by id): their requests are gone."""
        for row in [r for r in self.rows if id(r.unit) in units]:
            self._leave(row)

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> list[Unit]:
        """Greedy tokens (as greedy_generate) for `rows`, whose logits are (len(rows), V) in order."""
        chosen = logits.float().argmax(-1).tolist()
        ended = []
        for row, token in zip(rows, chosen):
            row.tokens.append(token)
            if row.unit.on_token is not None:
                row.unit.on_token(token)
            if token in self.eos or len(row.tokens) >= row.budget:
                ids = torch.tensor(row.tokens)
                # As transcribe_batch: a text with leading whitespace reads the same without it.
                row.unit.decoded = Decoded(self.processor.decode(ids).strip(), truncated=token not in self.eos)
                self._leave(row)
                ended.append(row.unit)
        return ended

    def _hold_last(self, hold: frozenset[int] | set[int]) -> int:
        """Moves the held rows after the others (swapping cache rows), so that a step decodes rows 0..n-1;
        returns n. Held rows stay at the end from step to step, so rows move only when the held set changes."""
        rows, cache = self.rows, self.cache
        i, j = 0, len(rows) - 1
        while True:
            while i <= j and id(rows[i].unit) not in hold:
                i += 1
            while j > i and id(rows[j].unit) in hold:
                j -= 1
            if i >= j:
                return i
            width = int(max(cache.lengths[i], cache.lengths[j]))
            for kv in (cache.k, cache.v):
                kv[:, [i, j], :, :width] = kv[:, [j, i], :, :width]  # advanced indexing copies the right side first
            cache.lengths[[i, j]] = cache.lengths[[j, i]]
            rows[i], rows[j] = rows[j], rows[i]

    def _leave(self, row: _Row) -> None:
        """The last row moves into the leaving row's place (one row's copy), so rows 0..n-1 stay in use."""
        cache, r, last = self.cache, self.rows.index(row), len(self.rows) - 1
        if r != last:
            width = int(cache.lengths[last])
            cache.k[:, r, :, :width] = cache.k[:, last, :, :width]
            cache.v[:, r, :, :width] = cache.v[:, last, :, :width]
            cache.lengths[r] = cache.lengths[last]
            self.rows[r] = self.rows[last]
        self.rows.pop()
        cache.rows -= 1
        if not self.rows:  # an idle server holds no cache
            self.cache = None

    def _reserve(self, rows: int, length: int, dtype: torch.dtype, device: torch.device) -> None:
        """A cache of at least `rows` rows of `length` positions, the rows in use copied over when it grows."""
        cache = self.cache
        if cache is not None and cache.k.shape[1] >= rows and cache.k.shape[3] >= length:
            return
        have_rows, have_length = (0, 0) if cache is None else (cache.k.shape[1], cache.k.shape[3])
        rows = max(rows, 2 * have_rows) if rows > have_rows else have_rows  # rows join one by one: grow by doubling
        grown = RowCache(KVCache.empty(self.model.config.text_config, rows, max(length, have_length), dtype, device))
        if cache is not None and cache.rows:
            used = int(cache.lengths[: cache.rows].max())
            grown.k[:, : cache.rows, :, :used] = cache.k[:, : cache.rows, :, :used]
            grown.v[:, : cache.rows, :, :used] = cache.v[:, : cache.rows, :, :used]
            grown.lengths[: cache.rows] = cache.lengths[: cache.rows]
            grown.rows = cache.rows
        self.cache = grown

    @staticmethod
    def _share(rows: list[_Row], seconds: float) -> None:
        """Each row's unit's input is charged its share of the work, by audio length (as run_batch)."""
        total = sum(row.unit.samples.shape[0] for row in rows) or 1
        for row in rows:
            row.unit.result.model_seconds += seconds * row.unit.samples.shape[0] / total


class WholeBatch:
    """RunningBatch's interface for a backend without an explicit KV cache (onnxruntime): units join only an
    empty batch, and the next `step` decodes them from prompt to end with run_batch."""

    def __init__(self, model: OnnxModel, processor: Processor, max_new_tokens: int | None = None) -> None:
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.waiting: list[Unit] = []

    def __len__(self) -> int:
        return len(self.waiting)

    def units(self) -> list[Unit]:
        return list(self.waiting)

    def join(self, units: list[Unit]) -> list[Unit]:
        assert not self.waiting or not units, "a whole batch takes units only when it is empty"
        self.waiting += units
        return []

    def stepping(self, hold: frozenset[int] | set[int] = frozenset()) -> list[Unit]:
        return list(self.waiting)

    def step(self, hold: frozenset[int] | set[int] = frozenset()) -> list[Unit]:
        """Decodes the waiting units to their end; `hold` is RunningBatch's, and a whole batch holds no row."""
        units, self.waiting = self.waiting, []
        if units:
            run_batch(self.model, self.processor, units, self.max_new_tokens)
        return units

    @torch.inference_mode()  # the cache rows move (_leave): inference tensors change only in inference mode
    def drop(self, units: set[int]) -> None:
        self.waiting = [u for u in self.waiting if id(u) not in units]
