"""The conformance kit: every golden case as a self-contained folder that another implementation can run
without this repository, transformers or PyTorch.

    OUT/kit.json                       format, cases, stages in pipeline order, tolerances, sha256 of every file
    OUT/README.md                      for a porter: how to feed a case, what to dump, how to check
    OUT/check_kit.py                   the standalone checker (numpy only): the same verdicts as `glm-asr kit check`
    OUT/cases/<case>/checkpoint/       config.json, model.safetensors, tokenizer.json (the released layout)
    OUT/checkpoints/full/              with --full: the released shape's checkpoint, shared by the full cases
    OUT/cases/<case>/audio_<i>.wav     the clips, 16 kHz mono float32
    OUT/cases/<case>/inputs.safetensors    the reference processor's tensors
    OUT/cases/<case>/expected.safetensors  the reference's tensor for every stage, plus its greedy ids

Expected tensors are copied from golden/ (golden/full/ for --full), which only tools/regenerate_golden.py
writes from transformers; nothing here runs our model to make an expected value. Full-size cases keep only
some entries of each stage (`rows` in kit.json; conformance/harness/stages.py sample_rows).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import torch
from safetensors.torch import load_file, save_file

import glm_asr
from glm_asr.io.atomic import replace_directory

from conformance.harness import golden
from conformance.harness.cases import FULL, MODELS, SR, GoldenModel, clips
from conformance.kit.bugs import BUGS, shown_on
from conformance.kit.ops import sub_stage_names
from conformance.kit.readme import readme
from conformance.harness.ours import features
from conformance.harness.stages import Stage, kept_length, row_axis, stages
from conformance.harness.tokenizer_fixture import build_bpe_tokenizer_json
from conformance.harness.tolerances import TABLE, group
from conformance.harness.weights import golden_weights, save_checkpoint, weights_digest

FORMAT_VERSION = 1
KIT_JSON = "kit.json"
STANDALONE = "check_kit.py"
# Features are in [-1.5, 1.5]. A wrong log_mel is off by 1e-2 or more (HTK mel: 0.3); the FFT libraries of
# different CPUs by 1e-5 (seen: 2.3e-5 on an AVX-512 Xeon). Only a guard against exporting a broken front end's
# frames beyond the stored ones: the stored frames a port is fed are the reference's own.
MEL_SANITY = 1e-3
MODE = "chained"  # a port runs end to end, from its inputs: the chained tolerances apply
# Compared for exact equality, not with a tolerance: ids and masks are integers.
EXACT = {
    "input_ids": "the port's own prompt ids (B, T), left-padded as inputs.input_ids; optional: for ports that build the prompt",
    "input_features_mask": "the port's own valid-frame mask (W, 3000); optional: for ports that compute features",
    "generated_ids": "the greedy continuation (B, N)",
}
EXACT_REASON = ("integers; the greedy ids of fp32 cases too: three implementations within the fp32 logits tolerance "
                "(glm-asr, transformers, glm-asr's ONNX export in onnxruntime) choose the reference's ids on every case")
LAYOUTS = {
    "mel": "(W, M, F) log-mel windows: W windows, M mel bins, F = 3000 frames",
    "conv1": "(W, Da, F) after conv1 and GELU, channels first",
    "conv2": "(W, F/2, Da) after conv2 and GELU, transposed to frames first",
    "encoder.layers": "(W, F/2, Da) residual stream after encoder layer i",
    "encoder.norm": "(W, F/2, Da) after the encoder's final LayerNorm",
    "merged": "(W, F/8, 4*Da) four encoder frames concatenated: token t = frames 4t..4t+3",
    "projector": "(W, F/8, D) projector output, before the valid tokens are picked",
    "inputs_embeds": "(B, T, D) prompt embeddings with the audio rows written in",
    "decoder.layers": "(B, T, D) residual stream after decoder layer i",
    "decoder.norm": "(B, T, D) after the decoder's final RMSNorm",
    "logits": "(B, T, V) LM head over every prompt position",
    "input_ids": "(B, T) int64",
    "input_features_mask": "(W, 3000) int32, 1 for valid frames",
    "generated_ids": "(B, N) int64",
}


class KitError(ValueError):
    """A kit folder or a port's results that cannot be used; the message names the file."""


@dataclass(frozen=True)
class KitStage:
    name: str
    exact: bool
    stage: Stage | None  # the conformance stage (None for ids and masks)


def kit_stages(config: glm_asr.GlmAsrConfig) -> list[KitStage]:
    """Every comparable tensor of a case, in pipeline order: processor outputs, stages, greedy ids."""
    return [
        KitStage("input_ids", True, None),
        KitStage("input_features_mask", True, None),
        *[KitStage(s.name, False, s) for s in stages(config)],
        KitStage("generated_ids", True, None),
    ]


def checkpoint_dir(kit_dir: Path, case: dict) -> Path:
    """A case's checkpoint folder; kits exported before full-size cases name none: cases/<case>/checkpoint."""
    return kit_dir / case.get("checkpoint", f"{case['dir']}/checkpoint")


def layout(name: str) -> str:
    return LAYOUTS.get(name.rsplit(".", 1)[0] if name.split(".")[-1].isdigit() else name, "")


def case_dir(case_id: str) -> str:
    return case_id.replace("/", ".")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _full_shape(stage: Stage, kept: list[int]) -> list[int]:
    """The uncropped shape a port computes: the frame axis at the window's full length."""
    full = list(kept)
    if stage.frame_axis is not None:
        full[stage.frame_axis] = 3000 // stage.rate
    return full


def _stage_entry(stage: Stage, stored: dict, dtype: str, inputs: dict[str, torch.Tensor]) -> dict:
    shape = stored["shape"]
    entry = {"name": stage.name, "layout": layout(stage.name), "shape": shape, "full_shape": _full_shape(stage, shape),
             "feature_axis": stage.feature_axis, "frame_axis": stage.frame_axis, "padded_tokens": stage.padded_tokens,
             "tolerance": f"{MODE}/{dtype}/{group(stage.name)}"}
    if "rows" in stored:
        entry["rows"] = {"axis": row_axis(stage), "index": stored["rows"]}
        entry["expected_shape"] = stored["stored_shape"]
    if stage.frame_axis is not None:
        n = kept_length(stage, inputs["input_features_mask"])
        entry["cropping"] = (f"axis {stage.frame_axis} cut to its first {n} entries (the longest valid window at "
                             f"{stage.rate} mel frames per entry); all windows are computed in full")
    if stage.padded_tokens:
        entry["cropping"] = "rows where attention_mask is 0 (left padding) are zeroed before comparing"
    return entry


def _case_inputs(entry: dict, stored: dict[str, torch.Tensor], n_mels: int, clip_list: list[np.ndarray]) -> tuple[dict[str, torch.Tensor], float]:
    """The reference processor's tensors from the golden, and the full feature windows; also how far
    glm_asr.log_mel is from the reference's features on the stored frames.

    golden/ keeps the reference's features only up to the longest valid window (the `mel` stage). The windows
    a port is fed hold the reference's values there and glm_asr.log_mel's beyond, where only padding and the
    last valid frames' spill-over into it (two frames of the STFT's 400-sample reach) are.
    """
    inputs = {k.removeprefix("inputs."): v for k, v in stored.items() if k.startswith("inputs.")}
    feats, mask = features(clip_list, n_mels)
    if not torch.equal(mask, inputs["input_features_mask"].to(mask.dtype)):
        raise KitError(f"{entry['path']}: the valid-frame mask of log_mel differs from the reference processor's")
    ref = stored["mel"]
    ours_error = float((feats[:, :, : ref.shape[2]] - ref).abs().max())
    if ours_error > MEL_SANITY:
        raise KitError(f"{entry['path']}: log_mel is {ours_error:.2g} from the reference's features; expected < {MEL_SANITY}")
    feats[:, :, : ref.shape[2]] = ref
    inputs["input_features"] = feats
    return {k: v.contiguous() for k, v in sorted(inputs.items())}, ours_error


def export(out: Path, root: Path = golden.ROOT, full: bool = False) -> dict:
    """Writes the kit into `out` (absent or empty) and returns kit.json's content; `full` adds the full-size
    cases of golden/full/ and their 4.3 GB checkpoint."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KitError(f"{out}: exists and is not an empty directory; give a new path (nothing was written)")
    manifest = golden.load_manifest(root)
    for e in golden.all_entries(manifest):
        golden.read_verified(root, e)
    full_manifest = golden.load_manifest(root / golden.FULL) if full else None
    for e in golden.all_entries(full_manifest) if full else ():
        golden.read_verified(root / golden.FULL, e)
    # Built next to `out` and renamed into place: a failed export leaves no half-written kit behind.
    return replace_directory(out, lambda staging: _write(staging, root, manifest, full_manifest))


def _checkpoint(directory: Path, model: GoldenModel, golden_model: dict, manifest_path: Path) -> Path:
    """Writes a golden model's checkpoint as our deterministic code makes it, checked against the golden's
    hashes, with the processor configs the released repository has: processor_config.json as the reference
    saved it, and preprocessor_config.json, the same feature extractor settings in the layout converters
    written for transformers 4.x read."""
    weights_sha256 = golden_model["weights_sha256"]
    tokenizer_sha256 = golden_model["tokenizer"]["sha256"] if "tokenizer" in golden_model else golden_model["tokenizer_sha256"]
    dtype = getattr(torch, model.checkpoint_dtype)
    weights = golden_weights(model, dtype)
    if weights_digest(weights) != weights_sha256:
        raise KitError(f"{manifest_path}: weights for {model.name} made here differ from the golden's; regenerate golden/")
    save_checkpoint(directory, model.config, weights, dtype)
    build_bpe_tokenizer_json(directory / "tokenizer.json", model.n_base_tokens)
    if golden.sha256((directory / "tokenizer.json").read_bytes()) != tokenizer_sha256:
        raise KitError(f"{manifest_path}: the tokenizer made here for {model.name} differs from the golden's; regenerate golden/")
    processor = golden_model["processor_config"]
    (directory / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    legacy = {**processor["feature_extractor"], "processor_class": processor["processor_class"]}
    (directory / "preprocessor_config.json").write_text(json.dumps(legacy, indent=2) + "\n")
    return directory


def _write(out: Path, root: Path, manifest: dict, full_manifest: dict | None) -> dict:
    kit: dict = {
        "format": "glm-asr-conformance-kit", "version": FORMAT_VERSION,
        "generated_by": f"glm-asr kit export (glm-asr {getattr(glm_asr, '__version__', 'unknown')})",
        "reference": manifest["provenance"], "generate": manifest["generate"], "sampling_rate": SR,
        "tolerances": {"/".join(k): v.as_dict() for k, v in sorted(TABLE.items()) if k[0] == MODE},
        "exact": {"reason": EXACT_REASON, "stages": EXACT}, "cases": {}, "files": {},
        "catalogue": {name: {"stage": b.stage + "<i>" if b.stage.endswith(".") else b.stage, "says": b.says, "shown_by": shown_on(b),
                             "visible": b.visible or "every case", "front_end": b.front_end} for name, b in BUGS.items()},
    }
    made: dict[str, Path] = {}  # each tiny model is made and checked once, then copied into its other cases
    for case_id, entry in manifest["cases"].items():
        model, directory = MODELS[entry["model"]], out / "cases" / case_dir(case_id)
        if model.name in made:
            shutil.copytree(made[model.name], directory / "checkpoint")
        else:
            made[model.name] = _checkpoint(directory / "checkpoint", model, manifest["models"][model.name], root / golden.MANIFEST)
        kit["cases"][case_id] = _case(out, directory / "checkpoint", case_id, entry, model, golden.load_case(root, entry),
                                      manifest["clips"][entry["audio"]], root / golden.MANIFEST)
    for case_id, entry in manifest["cases"].items():
        stored = golden.load_case(root, entry)
        if "early_stop.generated_ids" in stored:
            eos_id = case_id.replace(f"/{entry['audio']}/", f"/{entry['audio']}_eos/")
            kit["cases"][eos_id] = _eos_case(out, kit["cases"][case_id], eos_id, stored, manifest["generate"]["max_new_tokens"])
    if full_manifest is not None:
        where = root / golden.FULL / golden.MANIFEST
        kit["full_reference"] = full_manifest["provenance"]
        checkpoint = _checkpoint(out / "checkpoints" / FULL.name, FULL, full_manifest["model"], where)
        for case_id, entry in full_manifest["cases"].items():
            kit["cases"][case_id] = _case(out, checkpoint, case_id, entry, FULL, golden.load_case(root / golden.FULL, entry),
                                          full_manifest["clips"][entry["audio"]], where)
    # The standalone checker (numpy only), for porters without this repository.
    shutil.copyfile(Path(__file__).with_name("standalone.py"), out / STANDALONE)
    kit["files"] = {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "README.md").write_text(readme(kit))
    kit["files"]["README.md"] = _sha256(out / "README.md")
    (out / KIT_JSON).write_text(json.dumps(kit, indent=1) + "\n")
    return kit


def _case(out: Path, checkpoint: Path, case_id: str, entry: dict, model: GoldenModel, stored: dict[str, torch.Tensor],
          clip_digests: list[str], manifest_path: Path) -> dict:
    """Writes one case's folder (audio, inputs, expected) and returns its kit.json entry."""
    clip_list = clips(entry["audio"])
    if [golden.sha256(c.tobytes()) for c in clip_list] != clip_digests:
        raise KitError(f"{manifest_path}: clips of {entry['audio']} made here differ from the golden's; regenerate golden/")
    inputs, mel_error = _case_inputs(entry, stored, model.config.audio_config.num_mel_bins, clip_list)
    directory = out / "cases" / case_dir(case_id)
    directory.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clip_list):
        scipy.io.wavfile.write(directory / f"audio_{i}.wav", SR, clip)
    save_file(inputs, directory / "inputs.safetensors")
    expected = {k: v.contiguous() for k, v in stored.items() if not k.startswith(("inputs.", "early_stop."))}
    save_file(expected, directory / "expected.safetensors")
    return {
        "dir": f"cases/{case_dir(case_id)}", "checkpoint": str(checkpoint.relative_to(out)), "results": f"{case_dir(case_id)}.safetensors",
        "model": entry["model"], "audio": entry["audio"], "dtype": entry["dtype"],
        "sampled": any("rows" in s for s in entry["stages"].values()),
        "clips": [{"file": f"audio_{i}.wav", "samples": int(c.shape[0])} for i, c in enumerate(clip_list)],
        "input_features_provenance": (
            f"frames 0..{stored['mel'].shape[2] - 1} of every window: the reference processor's; later frames: glm_asr.log_mel "
            f"(max abs {mel_error:.1e} from the reference on the earlier frames on the exporting machine)"),
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in inputs.items()},
        "stages": [
            {"name": s.name, "layout": layout(s.name), "exact": True,
             "shape": list((inputs if s.name != "generated_ids" else expected)[s.name].shape)}
            if s.exact else _stage_entry(s.stage, entry["stages"][s.name], entry["dtype"], inputs)
            for s in kit_stages(model.config) if s.name != "generated_ids" or "generated_ids" in expected
        ],
        # Every tensor name a results file may hold: the stages (generated_ids too, compared where kept) and the
        # optional sub-stages; any other name fails the case (a misspelt stage must not pass as "not provided").
        "known_names": [s.name for s in kit_stages(model.config)] + sub_stage_names(model.config),
    }


def _eos_case(out: Path, base: dict, case_id: str, stored: dict[str, torch.Tensor], max_new: int) -> dict:
    """A batch case whose config makes one more id an end token (one the reference says early), so greedy
    generation stops before the token limit: the stop rule and the padding of a finished row are checked.
    The reference generated it (golden/'s early_stop.*, made by transformers with that eos list); every stage
    before the greedy ids is the batch case's, since the eos list changes none."""
    directory = out / "cases" / case_dir(case_id)
    shutil.copytree(out / base["dir"], directory, ignore=shutil.ignore_patterns("checkpoint"))
    shutil.copytree(out / base["checkpoint"], directory / "checkpoint")
    config = json.loads((directory / "checkpoint" / "config.json").read_text())
    config["text_config"]["eos_token_id"] = stored["early_stop.eos_token_id"].tolist()
    (directory / "checkpoint" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    expected = load_file(directory / "expected.safetensors")
    expected["generated_ids"] = stored["early_stop.generated_ids"].contiguous()
    save_file(expected, directory / "expected.safetensors")
    entry = json.loads(json.dumps(base))
    entry.update({"dir": f"cases/{case_dir(case_id)}", "checkpoint": f"cases/{case_dir(case_id)}/checkpoint",
                  "results": f"{case_dir(case_id)}.safetensors",
                  "ends_early": f"config.json's text_config.eos_token_id is {config['text_config']['eos_token_id']}: greedy generation "
                                f"stops after {expected['generated_ids'].shape[1]} of {max_new} tokens"})
    next(s for s in entry["stages"] if s["name"] == "generated_ids")["shape"] = list(expected["generated_ids"].shape)
    return entry


def load_kit(directory: Path, verify: bool = True) -> dict:
    """kit.json of a kit folder, every file's sha256 checked against it."""
    path = directory / KIT_JSON
    try:
        kit = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise KitError(f"{path}: missing; is {directory} a folder written by `glm-asr kit export`?") from e
    except json.JSONDecodeError as e:
        raise KitError(f"{path}: not valid JSON ({e}); export the kit again") from e
    if kit.get("format") != "glm-asr-conformance-kit" or kit.get("version") != FORMAT_VERSION:
        raise KitError(f"{path}: format {kit.get('format')!r} version {kit.get('version')!r}; expected glm-asr-conformance-kit {FORMAT_VERSION}")
    for rel, digest in kit["files"].items() if verify else ():
        if not (directory / rel).is_file():
            raise KitError(f"{directory / rel}: listed in {path} but missing; export the kit again")
        if _sha256(directory / rel) != digest:
            raise KitError(f"{directory / rel}: sha256 differs from {path}'s; the kit was altered, export it again")
    return kit
