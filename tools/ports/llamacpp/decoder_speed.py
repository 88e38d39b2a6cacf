"""How fast llama.cpp's CPU kernels run GLM-ASR's decoder on this machine: its answer to "would ggml's Q8_0 / Q4_0
kernels beat ours?", in numbers, before anything is adopted (docs/performance.md compares them with tools/bench.py).

    python tools/ports/llamacpp/decoder_speed.py LLAMA_CPP_SRC BUILD [--types f32,bf16,q8_0,q4_0] [--threads 2]

LLAMA_CPP_SRC is the tree the port uses (vendor/llama.cpp of PyPI's llama-cpp-python 0.3.36 sdist, README.md).
It builds llama.cpp's own `llama-bench` (CPU, static) into BUILD/bench, writes the full-size decoder (SPEC.md's
text_config: 28 Llama layers, 2048 wide, GQA 16/4 heads of 128, SwiGLU 6144, vocabulary 59264, the LM head tied
to the embedding) as one GGUF per type with deterministic random weights (gguf-py from the same tree quantises
them: Q8_0 is int8 in blocks of 32 with an fp16 scale, Q4_0 4-bit in blocks of 32), and runs `llama-bench` on
each: the prefill of a 389-token prompt (the bench's 30 s clip) and decoding 32 tokens after it. The vocabulary is
a placeholder (llama-bench feeds random ids); nothing here is the model's text, only its shapes and bytes.

Random weights decode at the speed real ones do: every weight is read once per token whatever its value.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from glm_asr.model.config import TextConfig  # noqa: E402

PROMPT, TOKENS = 389, 32
TYPES = ("f32", "bf16", "q8_0", "q4_0")


def build_bench(src: Path, build: Path, jobs: int) -> Path:
    """llama.cpp's llama-bench, CPU only and static, built once into build/bench."""
    exe = build / "bench" / "bin" / "llama-bench"
    if exe.exists():
        return exe
    subprocess.run(["cmake", "-S", src, "-B", build / "bench", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build / "bench", "--target", "llama-bench", f"-j{jobs}"], check=True)
    return exe


def gguf_module(src: Path):  # noqa: ANN201
    path = str(src / "gguf-py")  # the tree's own gguf-py, the version its loader reads
    if path not in sys.path:
        sys.path.insert(0, path)
    import gguf

    return gguf


def write_decoder(src: Path, path: Path, kind: str, seed: int = 0) -> None:
    """The full-size decoder with random weights as a GGUF of `kind`."""
    gguf = gguf_module(src)

    qtype = getattr(gguf.GGMLQuantizationType, kind.upper())  # one of TYPES
    c = TextConfig()
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_tokenizer_model("llama")  # a placeholder vocabulary of the model's size: llama-bench feeds random ids
    writer.add_token_list([f"<{i}>" for i in range(c.vocab_size)])
    writer.add_token_scores([0.0] * c.vocab_size)
    writer.add_token_types([gguf.TokenType.NORMAL] * c.vocab_size)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    rng = np.random.default_rng(seed)

    def tensor(name: str, shape: tuple[int, ...], quantise: bool = True) -> None:
        data = (rng.standard_normal(shape, dtype=np.float32) * 0.02) if quantise else np.ones(shape, np.float32)
        if quantise and qtype != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(data, qtype)
            writer.add_tensor(name, data, raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)

    kv = c.num_key_value_heads * c.head_dim
    tensor("token_embd.weight", (c.vocab_size, c.hidden_size))  # and the LM head: tied, as in the release
    for i in range(c.num_hidden_layers):
        tensor(f"blk.{i}.attn_norm.weight", (c.hidden_size,), quantise=False)
        tensor(f"blk.{i}.attn_q.weight", (c.num_attention_heads * c.head_dim, c.hidden_size))
        tensor(f"blk.{i}.attn_k.weight", (kv, c.hidden_size))
        tensor(f"blk.{i}.attn_v.weight", (kv, c.hidden_size))
        tensor(f"blk.{i}.attn_output.weight", (c.hidden_size, c.num_attention_heads * c.head_dim))
        tensor(f"blk.{i}.ffn_norm.weight", (c.hidden_size,), quantise=False)
        tensor(f"blk.{i}.ffn_gate.weight", (c.intermediate_size, c.hidden_size))
        tensor(f"blk.{i}.ffn_up.weight", (c.intermediate_size, c.hidden_size))
        tensor(f"blk.{i}.ffn_down.weight", (c.hidden_size, c.intermediate_size))
    tensor("output_norm.weight", (c.hidden_size,), quantise=False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="a llama.cpp source tree (README.md: Sources used)")
    parser.add_argument("build", type=Path, help="a folder for the build and the GGUFs")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    unknown = [kind for kind in args.types.split(",") if kind not in TYPES]
    if unknown:
        raise SystemExit(f"--types {args.types}: {', '.join(unknown)} unknown; expected some of {','.join(TYPES)}")
    if not (args.src / "tools" / "llama-bench").is_dir() or not (args.src / "gguf-py").is_dir():
        raise SystemExit(f"{args.src}: no tools/llama-bench or gguf-py; expected a llama.cpp source tree (README.md: Sources used)")
    args.build.mkdir(parents=True, exist_ok=True)
    exe = build_bench(args.src.resolve(), args.build.resolve(), args.jobs)
    print(f"| type | weights GB | prefill {PROMPT} tokens s | decode ms / token (after {PROMPT}) | weights read GB/s |")
    print("|---|---|---|---|---|")
    for kind in args.types.split(","):
        path = args.build / f"decoder-{kind}.gguf"
        if not path.exists():
            write_decoder(args.src, path, kind)
        size = sum(int(t.n_bytes) for t in gguf_module(args.src).GGUFReader(path).tensors)
        run = subprocess.run([exe, "-m", path, "-t", str(args.threads), "-r", str(args.reps), "-o", "json",
                              "-p", str(PROMPT), "-n", "0"], capture_output=True, text=True, check=True)
        prefill = json.loads(run.stdout)[0]["avg_ns"] / 1e9
        run = subprocess.run([exe, "-m", path, "-t", str(args.threads), "-r", str(args.reps), "-o", "json",
                              "-p", "0", "-n", str(TOKENS), "-d", str(PROMPT)], capture_output=True, text=True, check=True)
        decode_s = json.loads(run.stdout)[0]["avg_ns"] / 1e9 / TOKENS
        print(f"| {kind} | {size / 1e9:.2f} | {prefill:.2f} | {decode_s * 1e3:.1f} | {size / 1e9 / decode_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
