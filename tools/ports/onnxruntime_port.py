"""Our ONNX export run by onnxruntime, as a port of its own: written from the kit's README alone, as the check
that the README is enough to write an adapter (what it lacked is in docs/conformance-kit.md).

For each fp32 case, the case's checkpoint is exported once with tools/export_onnx.py (the exporter uses
PyTorch; this adapter does not: numpy, onnxruntime and safetensors only). The two graphs give the stages
`projector` (audio_encoder.onnx: every window's 375 audio tokens), `inputs_embeds` (the valid tokens written
over the <|pad|> rows, here in numpy), `logits` (decoder.onnx over the prompt) and `generated_ids`.
bf16 cases are not run: the export has fp32 and fp16 graphs only.

    python tools/ports/onnxruntime_port.py KIT RESULTS [--onnx-cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file, save_file

EXPORTER = Path(__file__).resolve().parent.parent / "export_onnx.py"


def exported(checkpoint: Path, cache: Path) -> Path:
    """The ONNX folder of a checkpoint, exported on first use (keyed by the weights' and config's bytes)."""
    digest = hashlib.sha256((checkpoint / "model.safetensors").read_bytes() + (checkpoint / "config.json").read_bytes()).hexdigest()[:16]
    out = cache / digest
    if not (out / "metadata.json").exists():
        subprocess.run([sys.executable, str(EXPORTER), "--model", str(checkpoint), "--out", str(out), "--threads", "1", "--no-verify"],
                       check=True, stdout=subprocess.DEVNULL)
    return out


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_case(onnx_dir: Path, kit: Path, case: dict, max_new_tokens: int) -> dict[str, np.ndarray]:
    folder = kit / case["dir"]
    config = json.loads((kit / case["checkpoint"] / "config.json").read_text())  # README: read every size from config.json
    text = config["text_config"]
    inputs = load_file(folder / "inputs.safetensors")
    encoder, decoder = session(onnx_dir / "audio_encoder.onnx"), session(onnx_dir / "decoder.onnx")
    embed = np.load(onnx_dir / "embed_tokens.npy", mmap_mode="r")

    # README section 2, steps 1-2: every window in full; window w keeps floor((L_w + 1) / 8) tokens, written in
    # window order over the rows whose id is audio_token_id, row-major over the batch.
    projector = encoder.run(None, {"input_features": inputs["input_features"].astype(np.float32)})[0]  # (W, 375, D)
    kept = (inputs["input_features_mask"].sum(-1) + 1) // 8
    audio = np.concatenate([projector[w, :k] for w, k in enumerate(kept)])
    ids, mask = inputs["input_ids"].astype(np.int64), inputs["attention_mask"].astype(np.int64)
    embeds = embed[ids].astype(np.float32)
    slots = ids == config["audio_token_id"]
    embeds[slots] = audio  # boolean indexing is row-major: batch row by batch row, left to right

    # Step 3: the prompt with the given position ids, no past.
    B = ids.shape[0]
    n_layers, kv_heads = text["num_hidden_layers"], text["num_key_value_heads"]
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    past = {f"past_{kind}.{i}": np.zeros((B, kv_heads, 0, head_dim), np.float32) for kind in ("key", "value") for i in range(n_layers)}
    names = [o.name for o in decoder.get_outputs()]

    def step(x: np.ndarray, positions: np.ndarray, key_mask: np.ndarray) -> np.ndarray:
        out = dict(zip(names, decoder.run(None, {"inputs_embeds": x, "position_ids": positions, "attention_mask": key_mask, **past})))
        past.update({k.replace("present_", "past_"): v for k, v in out.items() if k.startswith("present_")})
        return out["logits"]

    positions = inputs["position_ids"].astype(np.int64)
    logits = step(embeds, positions, mask)
    prompt_logits = logits

    # Step 4: greedy; a finished row goes on with eos[0]; positions continue from each row's last + 1.
    eos = text["eos_token_id"] if isinstance(text["eos_token_id"], list) else [text["eos_token_id"]]
    finished, tokens = np.zeros(B, bool), []
    for n in range(max_new_tokens):
        token = np.where(finished, eos[0], logits[:, -1].argmax(-1))
        tokens.append(token)
        finished |= np.isin(token, eos)
        if finished.all() or n == max_new_tokens - 1:
            break
        mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
        logits = step(embed[token[:, None]].astype(np.float32), positions[:, -1:] + 1 + n, mask)
    return {"projector": projector, "inputs_embeds": embeds, "logits": prompt_logits, "generated_ids": np.stack(tokens, axis=1).astype(np.int64)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--case", default="", help="only cases whose id contains this text")
    parser.add_argument("--onnx-cache", type=Path, default=None, help="where exports are kept (default: RESULTS/.onnx)")
    args = parser.parse_args()
    kit = json.loads((args.kit / "kit.json").read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    cache = args.onnx_cache or args.results / ".onnx"
    for case_id, case in kit["cases"].items():
        if args.case in case_id and case["dtype"] == "fp32":
            onnx_dir = exported(args.kit / case["checkpoint"], cache)
            save_file(run_case(onnx_dir, args.kit, case, kit["generate"]["max_new_tokens"]), str(args.results / case["results"]))
            print(f"{case_id}: {args.results / case['results']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
