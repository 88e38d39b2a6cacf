"""The kit's README.md: everything a porter needs, written from kit.json so it cannot drift from the files."""

from __future__ import annotations

from conformance.harness.tokenizer_fixture import GLM_SPLIT_PATTERN

_SPLIT = GLM_SPLIT_PATTERN


def _limits(t: dict) -> str:
    parts = []
    if t["max_abs"] is not None:
        parts.append(f"max_abs <= {t['max_abs']:g}")
    if t["max_rel"] is not None:
        parts.append(f"max_rel <= {t['max_rel']:g}")
    if t["nmse"] is not None:
        parts.append(f"nmse <= {t['nmse']:g}")
    if t["min_cos"] is not None:
        parts.append(f"min_cos >= 1 - {1 - t['min_cos']:.0e}")
    return ", ".join(parts)


def readme(kit: dict) -> str:
    cases = kit["cases"]
    first = next(iter(cases.values()))
    case_rows = "\n".join(
        f"| `{cid}` | `{c['dir']}` | {c['dtype']} | {', '.join(str(a['samples']) for a in c['clips'])} | "
        f"{'x'.join(map(str, c['inputs']['input_features']['shape']))} | {'x'.join(map(str, c['inputs']['input_ids']['shape']))} | `{c['results']}` |"
        for cid, c in cases.items()
    )
    stage_rows = "\n".join(
        f"| `{s['name']}` | {s['layout']} | {'x'.join(map(str, s.get('full_shape', s['shape'])))} | "
        f"{'exact' if s.get('exact') else s['tolerance']} |"
        for s in first["stages"]
    )
    bug_rows = "\n".join(f"| `{n}` | `{b['stage']}` | {b['says']} | {', '.join(f'`{c}`' for c in b['shown_by'])} | {b['visible']} |"
                         for n, b in kit.get("catalogue", {}).items())
    tol_rows = "\n".join(f"| `{k}` | {_limits(t)} | {t['reason']} |" for k, t in kit["tolerances"].items())
    max_new = kit["generate"]["max_new_tokens"]
    sampled = [cid for cid, c in cases.items() if c.get("sampled")]
    full_note = (f"""
### Full-size cases

{', '.join(f'`{c}`' for c in sampled)} run the released shape (2.1B parameters, 128 mel bins, 32 encoder and 28
decoder layers), for ports that hard-code it. Their checkpoint, shared, is `{cases[sampled[0]]['checkpoint']}`:
random weights stored in bf16 as the release is, widened exactly to fp32 for the fp32 cases. Dump the same
tensors as for any case, in full. The reference's tensors are too large to keep whole (a window is
1500 x 1280 floats per encoder layer), so `expected.safetensors` holds only some entries
of each stage after cropping: the stage's `rows` in kit.json gives the axis and the indices (first, middle
and last valid frames; each row's first real token, first, middle and last audio token, and the last two
prompt positions; of `logits` only the last position, whose scores choose the first greedy id), and the
checker picks the same entries from your tensor. `mel` is kept whole. A diverging full-size case gets where
its error lies but no bug name: run the tiny cases for that.
""" if sampled else "")
    return f"""# GLM-ASR-Nano conformance kit (format {kit['format']} {kit['version']})

Test cases for an implementation ("port") of GLM-ASR-Nano-2512: tiny random-weight checkpoints in the
released layout{' (and a full-size one)' if sampled else ''}, audio, the reference processor's inputs, and the reference implementation's tensor at every
stage of the pipeline, with the tolerance each must meet. The expected values were computed by
{kit['reference'].get('reference', 'the reference')} (transformers {kit['reference'].get('transformers')},
torch {kit['reference'].get('torch')}). Every file's sha256 is in `kit.json`.

Your port runs each case and writes one safetensors file per case; the checker compares it stage by stage,
reports the first stage that diverges and, where it can, which known porting bug explains the difference.

## 1. What is in a case

Each case is a folder `cases/<case>/` and a checkpoint folder, kit.json -> `cases` -> `<case>` -> `checkpoint`
(`cases/<case>/checkpoint` for the tiny cases):

- `config.json`, `model.safetensors`, `tokenizer.json` in the checkpoint folder: the released layout
  (`audio_tower.*`, `multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.weight`
  absent when `tie_word_embeddings` is true), fp32 weights (bf16 in the full-size checkpoint); and the
  processor's settings as the released repository has them: `processor_config.json` as the reference
  (transformers 5.x) saves its processor, `preprocessor_config.json` the same feature-extractor settings in the
  layout converters written for transformers 4.x read. The configs are small but shaped like the release
  in every way that matters: read every size from `config.json`, hard-code nothing (head_dim is not
  hidden_size / heads in the decoder, kv heads may equal query heads, mel bins are 128 or 80).
- `audio_<i>.wav`: the clips, 16 kHz mono IEEE float32. One clip, or two for a batch case.
- `inputs.safetensors`: what the reference processor gave the model:
  - `input_ids` (B, T) int64: the prompt per clip, left-padded with `<|endoftext|>`
  - `attention_mask` (B, T) int64: 0 on left padding
  - `position_ids` (B, T) int64: `cumsum(attention_mask) - 1`, and 1 on padding (as generation computes them)
  - `input_features` (W, M, 3000) float32: log-mel windows of every clip, clip 0's windows first
  - `input_features_mask` (W, 3000) int32: 1 on each window's valid frames, `ceil(samples / 160)` of them
- `expected.safetensors`: the reference's tensors, named by stage (table below), cropped as described in
  section 3, float32; `generated_ids` (B, N) int64 in the fp32 cases.

| case | folder | dtype | samples per clip | input_features | input_ids | results file |
|---|---|---|---|---|---|---|
{case_rows}

`dtype` bf16 means: cast the fp32 weights and `input_features` to bfloat16 and compute as the model does in
bf16 (norms and softmax in fp32, cast back). Everything else is fp32 throughout. A port that cannot
compute in a case's dtype runs it as it computes and is judged by the same tolerances: one without bf16 can
feed bf16-rounded weights and features (round-to-nearest-even of the fp32 values); fp16 storage misses the
fp32 tolerances from `conv1` on (the checker names it `fp16_products`), which is a fact about the port,
not a reason to skip the case.

## 2. How to run a case

Feed the case's `inputs.safetensors` to your model exactly as given, which isolates your model from your
front end and prompt builder:

1. `input_features` (W, M, 3000) through the encoder, every window in full (all 3000 frames; the encoder has
   no attention mask: padded frames are attended to), giving (W, 1500, Da) and after the 4-frame merge and
   projector (W, 375, D) (tiny cases: the same, 3000 frames per window).
2. Window w keeps its first `floor((L_w + 1) / 8)` audio tokens, `L_w` = `input_features_mask[w].sum()`.
   The kept tokens of all windows, in window order, overwrite, in order, the rows of the prompt's token
   embeddings where `input_ids` equals `audio_token_id` (top level of config.json), row-major over the batch.
3. The decoder runs the (B, T) prompt with `position_ids` for RoPE and a causal mask that also hides keys
   where `attention_mask` is 0.
4. Greedy generation, as transformers' `generate(do_sample=False, max_new_tokens={max_new})`: at most {max_new}
   new tokens, the argmax of the last position's logits each step. A row that has produced any id of
   `text_config.eos_token_id` (a list) is finished: its later tokens are the first eos id. Stop early when
   every row is finished. Each step feeds every row's chosen token (the first eos id for finished rows) at
   position (that row's last position + 1), as a valid key (attention mask 1) from then on. The `*_eos` cases
   check this: their config.json adds an id the reference says early to `eos_token_id` (kit.json `ends_early`),
   so generation stops before the limit with a finished row padded; read the eos list from each case's config.

If your port has its own front end and prompt builder, run them on the WAV files instead, and dump their
`input_ids` and `input_features_mask` (compared exactly) and the features as `mel` (compared with a tolerance).
Your model then consumes YOUR features and prompt ids, and every later stage is still compared with the
reference's, which consumed the reference's features: a front-end difference inside the mel tolerance
carries into later stages inside the chained tolerances (section 4). Run each case both ways to tell a
front-end bug from a model bug: fed `inputs.safetensors`, the model alone is judged.

- Features, per 30 s window (480,000 samples, zero-padded): STFT with n_fft 400, periodic Hann window, hop 160,
  centred with reflect padding, last frame dropped (3000 frames); power `|X|^2`; `num_mel_bins` Slaney-scale,
  Slaney-normalised mel filters over 0-8000 Hz; `log10(max(x, 1e-10))`; clamp below at the window's maximum
  (padding included) minus 8; `(x + 4) / 4`. A window of n samples has `ceil(n / 160)` valid frames.
- The mel filters exactly (librosa `filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")`):
  FFT bin k sits at `k * 8000 / 200` Hz, k = 0..200 (`linspace(0, 8000, 201)`); `num_mel_bins + 2` points evenly
  spaced on the Slaney mel scale from mel(0) to mel(8000), where `mel(f) = 3 f / 200` below 1000 Hz and
  `15 + ln(f / 1000) * 27 / ln(6.4)` above; filter m is the triangle rising from point m to m+1 and falling to
  m+2 (over bin frequencies in Hz), times `2 / (f[m+2] - f[m])`. Build them in float64, apply them in float32.
- The reference computes the STFT, power and filter product in float32. A float64 front end differs from it
  by the reference's own float32 rounding, which `log10` magnifies in quiet bins: a faithful float64 port has
  used up to 60% of the `mel` limit on one case. Compute in float32 as the reference does for margin.
- Prompt, per clip, N = the sum over its windows of `floor((L_w + 1) / 8)`:
  `<|user|>\\n<|begin_of_audio|>` + N x `<|pad|>` + `<|end_of_audio|><|user|>\\nPlease transcribe this audio into text<|assistant|>\\n`
  (`\\n` a newline), tokenized with the checkpoint's `tokenizer.json`. A batch is left-padded with `<|endoftext|>`.
- The tokenizer exactly (as `tokenizer.json` says): the `<|...|>` strings are added special tokens, matched
  first and never split; the text between them is split by the regex
  `{_SPLIT}` (Split, behaviour "isolated": matches and the text between them are pieces), each piece mapped to
  byte-level characters (ByteLevel with `add_prefix_space: false`, `use_regex: false`: no space is prepended, no
  second split), then BPE with the file's merges in rank order. No BOS token is added.

## 3. What to dump, and in which layout

Write `RESULTS/<results file>` (table above) for EVERY case of the kit: a safetensors file whose tensor names
are the stage names below (and, optionally, the sub-stage names further down), in the layouts below. The
checker is strict: a case without its results file fails, a `.safetensors` file in RESULTS that names no case
fails, a tensor whose name is neither a stage nor a sub-stage fails its case (with the closest known name), and
an unreadable file fails its own case while every other case is still checked. To check a subset on purpose,
say so: `--case tiny_a/` or `--case tiny_a/tone/fp32,tiny_b/batch/fp32`. Within a file, any subset of stages is
fine: a stage you do not dump is reported as "not provided", never as a failure; a black-box port may give
only `logits` or `generated_ids` (bf16 cases keep no greedy ids: a file with only `generated_ids` passes them,
with a note that nothing was compared). Floats may be
fp32, fp16 or bf16 (compared as fp32); ids any integer type. W windows, B batch rows, T prompt tokens, F =
3000 frames, Da encoder width, D decoder width, V vocabulary.

| stage | layout | shape in the first case (uncropped) | tolerance |
|---|---|---|---|
{stage_rows}

If your port stops partway (an assertion, a shape it cannot run), write the stages it has and say why in the
file's metadata, `{{"error": "..."}}` (safetensors `save_file(..., metadata=...)`): the checker shows it and fails
the case, where the missing stages would otherwise read "not provided" as for a port that does not dump them.

`encoder.layers.<i>` and `decoder.layers.<i>` exist for every layer i of the config (`num_hidden_layers`);
the per-case list with exact shapes is `kit.json` -> `cases` -> `<case>` -> `stages`.

Notes on the stages:
- `conv1` is GELU(conv1(mel)), channels first; `conv2` is GELU(conv2(.)) transposed to (W, F/2, Da): what
  encoder layer 0 reads. `encoder.layers.<i>` is the residual stream after layer i, *before* the final norm;
  `encoder.norm` is after it (transformers' last `hidden_states` entry is post-norm: not `encoder.layers.<last>`).
- `merged` is the projector's input, (W, 375, 4 Da) with token t = frames 4t..4t+3 concatenated.
- `projector` is every window's full projector output, before valid tokens are picked.
- `inputs_embeds` is the decoder's input, audio rows already written in.
- `decoder.norm` is after the final RMSNorm; `logits` over every prompt position.

### Sub-stages (optional): the operation inside a stage

When a stage fails, the checker names the first wrong operation inside it. Give these tensors too where your
port can, at full (uncropped) shape, and it does so exactly, for any bug: each operation is recomputed with the
reference's weights from YOUR input to it, and the first one whose input is right and output wrong is named
("decoder layer 0: the MLP's gated activation (SiLU(gate) * up): its input is right, its output is wrong").
Without them, the checker recomputes the failing stage from your own input to the stage (the previous stage
you dumped) under each operation's classic one-line variants (every norm's eps and formula, every activation,
every linear's bias, the attention's scale, mask and RoPE, the residual's source, the merge order, a tied or
untied LM head) and names the operation and the variant your port matches; a bug that is none of those is
bracketed to the stage, with the sub-stages that would name it. Layer i of the encoder (`encoder.layers.<i>.`)
and of the decoder (`decoder.layers.<i>.`), (W, F/2, .) and (B, T, .) like their layer:

| sub-stage | what |
|---|---|
| `input_layernorm` | the attention's normalised input: LN1(x) (RMSNorm in the decoder) |
| `self_attn.q_proj`, `self_attn.k_proj`, `self_attn.v_proj` | the projections, heads flattened (H * head_dim), before RoPE |
| `self_attn.context` | softmax(q k^T / sqrt(head_dim) + mask) v with RoPE on q and k, heads flattened: o_proj's input |
| `self_attn` | the attention's output, o_proj applied |
| `attn_residual` | x + self_attn: the MLP half's input |
| `post_attention_layernorm` | the MLP's normalised input |
| `mlp.fc1` (encoder) / `mlp.gate_proj`, `mlp.up_proj` (decoder) | the activation's input(s) |
| `mlp.act` | the activation's output: gelu(fc1) / silu(gate) * up, the last linear's input |
| `mlp` | the MLP's output, before the residual add |

Outside the layers: `mel.power` (W, 201, F), the STFT power of each window, and `mel.filtered` (W, M, F), the
filterbank's output before the log (ports with their own front end); `conv1.conv` and `conv2.conv` (each convolution before its GELU, channels first, (W, Da, F)
and (W, Da, F/2)); `projector.linear_1` and `projector.act` (linear_1's output and its GELU, (W, F/8, 2D)).
kit.json -> `cases` -> `<case>` -> `known_names` lists every name a results file may hold.

Per-window stages (`mel` through `projector`) may be dumped in full or already cropped: the checker keeps the
first entries of the frame axis, as many as the case's longest valid window has at that stage's rate (mel
frames, conv2 frames = ceil(L/2), audio tokens = floor((L+1)/8)); kit.json gives the exact count per stage
(`cropping`). Decoder-side stages (B, T, ...) are compared with left-padding rows zeroed, so those rows may
hold anything.
{full_note}
## The model, in short (where ports went wrong)

Encoder: conv1 (k3, s1, p1) + exact GELU, conv2 (k3, s2, p1) + exact GELU, then pre-norm layers
`h = x + o_proj(attn(LN1(x)))`, `y = h + fc2(gelu(fc1(LN2(h))))`, LayerNorm eps 1e-5; q, v and o have a
bias, k has none; no attention mask; scale 1/sqrt(head_dim). RoPE (theta from `rope_parameters`) on the first
R = `head_dim * partial_rotary_factor` dims of each head only, rotate-half pairing (dim j with j + R/2),
positions 0..F/2-1, frequencies `theta ** (-2i / R)` for i = 0..R/2-1: the exponent divides by the rotary dims R,
not by head_dim.
Projector: 4 frames concatenated, linear_1, GELU, linear_2. Decoder: Llama, RMSNorm computed in fp32, cast
back, then times its weight; grouped-query attention (query head h uses kv head h // (heads / kv_heads)); full
rotate-half RoPE; SwiGLU `down(silu(gate(x)) * up(x))`; LM head tied to the embedding when
`tie_word_embeddings` is true.

## 4. How to check

Without anything but numpy (no torch, no glm-asr, no checkout of its repository), the kit's own checker:

    python KIT/check_kit.py KIT RESULTS [--case ID[,ID...]] [--json report.json]

gives every stage's status, each case's verdict and first diverging stage, and the exit code, the same as
`glm-asr kit check` (tested on the same results, passing and failing). With glm-asr installed
(`pip install .` in its checkout; no transformers needed):

    glm-asr kit check KIT RESULTS [--case ID[,ID...]] [--json report.json] [--plot plots/]

prints a table per case and stage (max abs error, max abs error / max |reference|, NMSE, 1 - min cosine,
the tolerance, the verdict), the first diverging stage of each case in the order above, a diagnosis of it (a
known bug of the catalogue below, or where the error lies) and the operation inside it that first departs
(section 3, Sub-stages); and a diagnosis of every other failing front-end stage (`input_ids`,
`input_features_mask`, `mel`). Exit 0: every case passes; 1: a case fails (a stage out of tolerance, the port
said it stopped, a missing or unreadable results file, an unknown file or tensor name); 2: the kit or the
arguments cannot be used (an altered kit, no RESULTS folder, a `--case` that matches nothing), one line naming
the file.

"Chained" and "isolated": a port runs end to end, so every stage it gives was computed from its own previous
stage, and rounding differences accumulate through the layers: the kit's verdicts use the **chained**
tolerances below. **Isolated** tolerances (one stage or operation fed the reference's, or here the port's own,
input, so only its own rounding counts; fp32: max_rel <= 5e-6, nmse <= 1e-11, 1 - cos <= 1e-9) are what
the operation-level localisation compares with; they decide no verdict.

The metrics (a = yours, b = expected, in float64):
non-finite values must match the reference's exactly; then `max_abs = max |a - b|`,
`max_rel = max_abs / max |b|`, `nmse = sum (a - b)^2 / sum b^2`, `min_cos` the minimum over rows (vectors
along the stage's `feature_axis` in kit.json) of the cosine similarity (rows that are zero in both count as 1).
A stage passes when every limit of its tolerance holds:

| tolerance | limits | why |
|---|---|---|
{tol_rows}

Ids and masks compare exactly: {kit['exact']['reason']}.

## The catalogue of known porting bugs

When the first diverging stage equals the reference's under one of these (recomputed with the bug, fed the
reference's input to the bug's first stage), the diagnosis names it. "Shown by" are the cases the kit's own
tests run it on, one of each tiny model (every bug a case can see fails both models); "visible" says which
cases can see it at all.

| bug | first stage | the stage equals the reference with ... | shown by | visible |
|---|---|---|---|---|
{bug_rows}

## 5. A port's loop, in outline

```python
from safetensors.numpy import load_file, save_file
import json
kit = json.load(open("KIT/kit.json"))
for case_id, case in kit["cases"].items():
    inputs = load_file(f"KIT/{{case['dir']}}/inputs.safetensors")
    model = your_port.load(f"KIT/{{case['checkpoint']}}", dtype=case["dtype"])
    taps = your_port.forward(inputs, dump=True)          # dict: stage name -> numpy array
    taps["generated_ids"] = your_port.greedy(inputs, max_new_tokens={max_new})
    save_file(taps, f"RESULTS/{{case['results']}}")
```
"""
