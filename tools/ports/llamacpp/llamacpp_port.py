"""Runs llama.cpp's GLM-ASR support (libmtmd's GLMA audio projector, libllama's Llama decoder) on every case
of a conformance kit and writes the results the kit's README asks for: one safetensors file per case, one
tensor per stage llama.cpp exposes.

    tools/ports/llamacpp/build.sh LLAMA_CPP_SRC BUILD          # once: patches, builds, converter venv
    python tools/ports/llamacpp/llamacpp_port.py KIT RESULTS --build BUILD [--case TEXT]
    glm-asr kit check KIT RESULTS

Per case: the kit's checkpoint (transformers layout) is rewritten in zai-org's original layout
(original_layout.py: what llama.cpp's converter registers "GlmasrModel" for), converted by llama.cpp's own
convert_hf_to_gguf.py twice (the text model; `--mmproj`: the audio encoder and projector), then
BUILD/llamacpp_kit_driver feeds the kit's inputs.safetensors to the libraries and dumps their stages.
`--outtype f16 --kv f16` is llama.cpp as a user runs it (the converter's usual type, the default KV cache);
f32 for both isolates its arithmetic from its storage precision (the converter keeps the conv kernels in
f16 whatever --outtype says; see f32_conv_probe.patch).

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from original_layout import BEGIN_OF_AUDIO, END_OF_AUDIO, special_ids, write_original


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return u.view(np.float32)


def checkpoint_dir(kit: Path, case: dict) -> Path:
    return kit / case.get("checkpoint", f"{case['dir']}/checkpoint")


def convert(build: dict, kit: Path, case: dict, files: dict, outtype: str, cache: Path) -> tuple[Path, Path]:
    """(text GGUF, mmproj GGUF) of the case's checkpoint, converted once per (weights, dtype, outtype, patches:
    a probe may change the converter)."""
    ckpt = checkpoint_dir(kit, case)
    rel = ckpt.relative_to(kit).as_posix()
    key = files[f"{rel}/model.safetensors"] + files[f"{rel}/config.json"] + build.get("patches", "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = cache / f"{case['model']}.{case['dtype']}.{outtype}.{digest}"
    text, mmproj = Path(f"{stem}.text.gguf"), Path(f"{stem}.mmproj.gguf")
    if text.exists() and mmproj.exists():
        return text, mmproj
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "original"
        write_original(ckpt, staged)
        if case["dtype"] == "bf16":  # the case's weights as the reference held them
            weights = load_file(staged / "model.safetensors")
            save_file({k: bf16_round(v) for k, v in weights.items()}, staged / "model.safetensors")
        # glm_asr_converter.patch: the kit's tiny tokenizers hash to no model the converter knows; they use
        # GLM-4's pre-tokenizer regex. (The driver feeds token ids, so llama.cpp's tokenizer never runs.)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LLAMACPP_KIT_TOKENIZER_PRE="glm4")
        for out, extra in ((text, []), (mmproj, ["--mmproj"])):
            cmd = [build["converter_python"], build["converter"], str(staged), "--outtype", outtype,
                   "--outfile", f"{out}.tmp", *extra]
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                sys.exit(f"converter failed on {ckpt} ({' '.join(extra) or 'text model'}):\n"
                         f"{run.stdout[-2000:]}{run.stderr[-4000:]}")
            os.replace(f"{out}.tmp", out)
    return text, mmproj


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
            sys.exit(f"{folder / clip['file']}: expected 16 kHz mono float32, got {rate} Hz {samples.dtype} {samples.shape}")
        tensors[f"audio_{i}"] = samples
    save_file(tensors, path)


def run_case(build: dict, kit: Path, case: dict, files: dict, results: Path, args: argparse.Namespace,
             max_new_tokens: int) -> int:
    text, mmproj = convert(build, kit, case, files, args.outtype, args.build / "gguf")
    ckpt = checkpoint_dir(kit, case)
    config = json.loads((ckpt / "config.json").read_text())
    ids = special_ids(ckpt / "tokenizer.json")
    eos = config["text_config"]["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    out = results / case["results"]
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.safetensors"
        driver_inputs(kit, case, inputs)
        cmd = [build["driver"], str(text), str(mmproj), str(inputs), str(out),
               "--audio-token-id", str(config["audio_token_id"]), "--boa", str(ids[BEGIN_OF_AUDIO]),
               "--eoa", str(ids[END_OF_AUDIO]), "--eos", ",".join(map(str, eos)),
               "--max-new-tokens", str(max_new_tokens), "--threads", str(args.threads), "--kv", args.kv,
               "--clip-flash-attn", args.clip_flash_attn, "--llama-flash-attn", args.llama_flash_attn]
        if args.own_front_end:
            cmd.append("--own-front-end")
        # GGML_NO_BACKTRACE: an abort prints its assert, not a gdb trace
        # rope_probe.patch reads the encoder's RoPE theta from here (its GGUF has no key for it); as shipped,
        # llama.cpp reads nothing.
        theta = args.probe_rope_theta or (config["audio_config"].get("rope_parameters") or {}).get("rope_theta", 10000.0)
        env = dict(os.environ, GGML_NO_BACKTRACE="1", LLAMACPP_PROBE_ROPE_THETA=str(theta))
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines() or ["(no output)"]
        tail = next((line for line in lines if "GGML_ASSERT" in line), lines[-1])
        kept = " (its encoder stages were written)" if out.exists() else ""
        # The kit's README: a port that stops partway says why in the results' metadata.
        save_file(load_file(out) if out.exists() else {}, out, metadata={"error": f"driver exited {run.returncode}: {tail}"})
        print(f"{case['id']}: driver exited {run.returncode}: {tail}{kept}", flush=True)
        return 1
    print(f"{case['id']}: {out}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--case", default="", help="only cases whose id contains this text")
    parser.add_argument("--build", type=Path, default=Path(os.environ.get("LLAMACPP_BUILD", "build-llamacpp")),
                        help="the folder build.sh filled (default: $LLAMACPP_BUILD or ./build-llamacpp)")
    parser.add_argument("--outtype", choices=["f16", "f32"], default="f16",
                        help="weight matrices in the GGUFs (f16: the converter's usual output)")
    parser.add_argument("--kv", choices=["f16", "f32"], default="f16",
                        help="KV cache type (f16: libllama's default)")
    parser.add_argument("--clip-flash-attn", choices=["auto", "off"], default="auto",
                        help="the audio encoder's flash attention (auto: mtmd's default, on for the CPU, K and V in fp16)")
    parser.add_argument("--llama-flash-attn", choices=["auto", "off"], default="auto",
                        help="the decoder's flash attention (auto: libllama's default, on for the CPU)")
    parser.add_argument("--probe-rope-theta", type=float, default=None,
                        help="rope_probe.patch only: the encoder's RoPE theta (default: the case's config)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--own-front-end", action="store_true",
                        help="mtmd's own log-mel of the WAVs (dumps mel, input_features_mask, encoder stages)")
    args = parser.parse_args()
    paths = args.build / "paths.json"
    if not paths.exists():
        sys.exit(f"{paths}: not found; run tools/ports/llamacpp/build.sh first (or pass --build)")
    kit_json = args.kit / "kit.json"
    if not kit_json.exists():
        sys.exit(f"{kit_json}: not found; expected a folder written by `glm-asr kit export`")
    build = json.loads(paths.read_text())
    kit = json.loads(kit_json.read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    failed = ran = 0
    for case_id, case in kit["cases"].items():
        if args.case in case_id:
            if "tokenizer.json" not in os.listdir(checkpoint_dir(args.kit, case)):
                print(f"{case_id}: skipped: its checkpoint has no tokenizer.json, which llama.cpp's converter needs")
                continue
            ran += 1
            failed += run_case(build, args.kit, dict(case, id=case_id), kit["files"], args.results, args,
                               kit["generate"]["max_new_tokens"])
    if not ran:
        sys.exit(f"--case {args.case!r}: no case of {args.kit} to run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
