"""Runs CrispASR's GLM-ASR (ggml, C++) on every case of a conformance kit and writes the results the kit's
README asks for: one safetensors file per case, one tensor per stage the library exposes.

    tools/ports/crispasr/build.sh CRISPASR_SRC GGML_SRC BUILD          # once: patches, builds, converter venv
    python tools/ports/crispasr/crispasr_port.py KIT RESULTS --build BUILD [--case TEXT]
    glm-asr kit check KIT RESULTS

Per case: the checkpoint is converted to GGUF by CrispASR's own converter (models/convert-glm-asr-to-gguf.py,
with glm_asr_converter.patch), then BUILD/crispasr_kit_driver feeds the kit's inputs.safetensors to the
library and dumps its stages. `--outtype f16` (the converter's default: every weight matrix in fp16) and
`--kv f16` (the library's default KV cache) are CrispASR as shipped; f32 for both isolates its arithmetic
from its storage precision. `--own-front-end` runs CrispASR's log-mel and prompt builder on the WAVs instead.

Needs numpy, safetensors and scipy (the glm-asr environment has them); nothing of glm_asr is imported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy.io import wavfile


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return u.view(np.float32)


def checkpoint_dir(kit: Path, case: dict) -> Path:
    """The case's checkpoint folder: shared for the full-size cases, cases/<case>/checkpoint for the tiny ones."""
    return kit / case.get("checkpoint", f"{case['dir']}/checkpoint")


def stage_checkpoint(ckpt: Path, dtype: str, into: Path) -> None:
    """The case's checkpoint as the converter reads it (it bakes the mel filterbank from
    preprocessor_config.json), weights bf16-rounded for bf16 cases."""
    into.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        (into / name).symlink_to(ckpt / name)
    if dtype == "bf16":
        weights = load_file(ckpt / "model.safetensors")
        save_file({k: bf16_round(v) for k, v in weights.items()}, into / "model.safetensors")
    else:
        (into / "model.safetensors").symlink_to(ckpt / "model.safetensors")
    if (ckpt / "preprocessor_config.json").exists():  # the kit's, as the reference's processor saves it
        (into / "preprocessor_config.json").symlink_to(ckpt / "preprocessor_config.json")
        return
    # Kits exported before they carried one: the released repository's settings, written here.
    config = json.loads((ckpt / "config.json").read_text())
    (into / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "WhisperFeatureExtractor", "processor_class": "GlmAsrProcessor",
        "feature_size": config["audio_config"]["num_mel_bins"], "sampling_rate": 16000, "hop_length": 160,
        "n_fft": 400, "chunk_length": 30, "padding_value": 0.0, "return_attention_mask": True}))


def convert(build: dict, kit: Path, case: dict, files: dict, outtype: str, cache: Path) -> Path:
    """GGUF of the case's checkpoint, converted once per (weights, dtype, outtype)."""
    ckpt = checkpoint_dir(kit, case)
    rel = ckpt.relative_to(kit).as_posix()
    digest = hashlib.sha256((files[f"{rel}/model.safetensors"] + files[f"{rel}/config.json"]).encode()).hexdigest()[:16]
    gguf = cache / f"{case['model']}.{case['dtype']}.{outtype}.{digest}.gguf"
    if gguf.exists():
        return gguf
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "checkpoint"
        stage_checkpoint(ckpt, case["dtype"], staged)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        run = subprocess.run([build["converter_python"], build["converter"], "--input", str(staged),
                              "--output", str(gguf) + ".tmp", "--outtype", outtype],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"converter failed on {ckpt}:\n{run.stdout[-2000:]}{run.stderr[-4000:]}")
    os.replace(str(gguf) + ".tmp", gguf)
    return gguf


def driver_inputs(kit: Path, case: dict, path: Path) -> None:
    """The kit's inputs (features bf16-rounded in bf16 cases) and the clips' samples, in the dtypes the driver reads."""
    folder = kit / case["dir"]
    inputs = load_file(folder / "inputs.safetensors")
    feats = inputs["input_features"].astype(np.float32)
    tensors = {
        "input_features": bf16_round(feats) if case["dtype"] == "bf16" else feats,
        "input_features_mask": inputs["input_features_mask"].astype(np.int32),
        "input_ids": inputs["input_ids"].astype(np.int64),
        "attention_mask": inputs["attention_mask"].astype(np.int64),
    }
    for i, clip in enumerate(case["clips"]):
        rate, samples = wavfile.read(folder / clip["file"])
        if rate != 16000 or samples.dtype != np.float32 or samples.ndim != 1:
            sys.exit(f"{folder / clip['file']}: expected 16 kHz mono float32, "
                     f"got {rate} Hz {samples.dtype} {samples.shape}")
        tensors[f"audio_{i}"] = samples
    save_file(tensors, path)


def run_case(build: dict, kit: Path, case: dict, files: dict, results: Path, args: argparse.Namespace,
             max_new_tokens: int) -> int:
    gguf = convert(build, kit, case, files, args.outtype, args.build / "gguf")
    config = json.loads((checkpoint_dir(kit, case) / "config.json").read_text())
    eos = config["text_config"]["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.safetensors"
        driver_inputs(kit, case, inputs)
        cmd = [build["driver"], str(gguf), str(inputs), str(results / case["results"]),
               "--audio-token-id", str(config["audio_token_id"]), "--eos", ",".join(map(str, eos)),
               "--max-new-tokens", str(max_new_tokens), "--threads", str(args.threads)]
        if args.own_front_end:
            cmd.append("--own-front-end")
        # GGML_NO_BACKTRACE: an abort prints its assert, not a gdb trace
        env = dict(os.environ, CRISPASR_KV_QUANT=args.kv, GGML_NO_BACKTRACE="1")
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines() or ["(no output)"]
        tail = next((line for line in lines if "GGML_ASSERT" in line), lines[-1])
        out = results / case["results"]
        kept = " (its encoder stages were written)" if out.exists() else ""
        # The kit's README: a port that stops partway says why in the results' metadata, so the checker
        # fails the case with that reason instead of reading the missing stages as "not provided".
        save_file(load_file(out) if out.exists() else {}, out, metadata={"error": f"driver exited {run.returncode}: {tail}"})
        print(f"{case['id']}: driver exited {run.returncode}: {tail}{kept}", flush=True)
        return 1
    print(f"{case['id']}: {results / case['results']}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--case", default="", help="only cases whose id contains this text")
    parser.add_argument("--build", type=Path, default=Path(os.environ.get("CRISPASR_BUILD", "build-crispasr")),
                        help="the folder build.sh filled (default: $CRISPASR_BUILD or ./build-crispasr)")
    parser.add_argument("--outtype", choices=["f16", "f32"], default="f16",
                        help="weight matrices in the GGUF (f16: as shipped)")
    parser.add_argument("--kv", choices=["f16", "f32"], default="f16",
                        help="KV cache type (f16: the library's default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--own-front-end", action="store_true",
                        help="CrispASR's log-mel and prompt from the WAVs "
                             "(dumps mel, input_features_mask, input_ids, encoder stages)")
    args = parser.parse_args()
    paths = args.build / "paths.json"
    if not paths.exists():
        sys.exit(f"{paths}: not found; run tools/ports/crispasr/build.sh first (or pass --build)")
    build = json.loads(paths.read_text())
    kit = json.loads((args.kit / "kit.json").read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    failed = 0
    for case_id, case in kit["cases"].items():
        if args.case in case_id:
            failed += run_case(build, args.kit, dict(case, id=case_id), kit["files"], args.results, args,
                               kit["generate"]["max_new_tokens"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
