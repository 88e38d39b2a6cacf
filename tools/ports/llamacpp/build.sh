#!/usr/bin/env bash
# Builds llama.cpp's libllama and libmtmd (CPU only, static), the kit driver, and a Python environment for
# llama.cpp's checkpoint converter, into BUILD. The llama.cpp tree is not modified: it is copied to
# BUILD/llama.cpp and patched there.
#
#   tools/ports/llamacpp/build.sh LLAMA_CPP_SRC BUILD [EXTRA.patch ...]
#
# LLAMA_CPP_SRC: a llama.cpp source tree (tested: the one vendored in PyPI's llama-cpp-python 0.3.36 sdist,
#                vendor/llama.cpp = ggml-org/llama.cpp@0c1e57098)
# EXTRA.patch:   applied after glm_asr_taps.patch and glm_asr_converter.patch (the probes: f32_conv_probe.patch,
#                rope_probe.patch)
# Rerunning with another set of patches rebuilds only what the old and new patches touch.
# Writes BUILD/paths.json, which llamacpp_port.py --build BUILD reads.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 LLAMA_CPP_SRC BUILD [EXTRA.patch ...]" >&2; exit 2; }
[ -d "$1" ] || { echo "$1: not a folder; expected a llama.cpp source tree (see README.md: Sources used)" >&2; exit 2; }
src="$(cd "$1" && pwd)"
[ -f "$src/tools/mtmd/models/whisper-enc.cpp" ] && [ -f "$src/conversion/ultravox.py" ] || {
    echo "$src: no tools/mtmd/models/whisper-enc.cpp or conversion/ultravox.py; expected a llama.cpp tree with GLM-ASR support (PR 17901)" >&2
    exit 2
}
for p in "${@:3}"; do
    [ -f "$p" ] || { echo "$p: no such patch; the probes are in $here" >&2; exit 2; }
done
mkdir -p "$2"; build="$(cd "$2" && pwd)"; shift 2
patches=("$here/glm_asr_taps.patch" "$here/glm_asr_converter.patch")
for p in "$@"; do patches+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")"); done
jobs="${JOBS:-2}"

# 1. A fresh copy of the sources (mtimes kept), the patches applied. Files that this or the previous patch set
#    touched are marked new, so an incremental build recompiles exactly them.
touched() { for p in "$@"; do sed -n 's#^+++ b/##p' "$p"; done; }
previous="$(cat "$build/patched-files.txt" 2>/dev/null || true)"
rm -rf "$build/llama.cpp"
mkdir -p "$build/llama.cpp"
(cd "$src" && tar cf - --exclude=./.git .) | (cd "$build/llama.cpp" && tar xpf -)
for p in "${patches[@]}"; do
    echo "applying $(basename "$p")"
    patch -d "$build/llama.cpp" -p1 --forward --quiet < "$p"
done
now="$(touched "${patches[@]}")"
for f in $(printf '%s\n%s\n' "$previous" "$now" | sort -u); do touch "$build/llama.cpp/$f"; done
printf '%s\n' "$now" > "$build/patched-files.txt"

# 2. The libraries, static, CPU only (no GPU backend is on by default); only ggml, llama and mtmd.
cmake -S "$build/llama.cpp" -B "$build/cmake" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_MTMD=ON -DLLAMA_OPENSSL=OFF \
    -DLLAMA_SUBPROCESS=OFF -DMTMD_VIDEO=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    > "$build/cmake-configure.log"
nice -n 10 cmake --build "$build/cmake" --target mtmd llama ggml -j"$jobs"

# 3. The driver, linked against the static libraries (clip-impl.h: the clip_image_f32 it fills).
lib="$build/cmake"
libs=("$lib/tools/mtmd/libmtmd.a" "$lib/src/libllama.a")
libs+=($(find "$lib/ggml/src" -name 'libggml*.a' | sort -r))   # libggml.a before libggml-cpu.a before libggml-base.a
libs+=($(find "$lib/vendor" -name '*.a' 2>/dev/null))
nice -n 10 g++ -O2 -std=c++17 -Wall -Wno-unused-function -o "$build/llamacpp_kit_driver" "$here/llamacpp_kit_driver.cpp" \
    -I"$build/llama.cpp/tools/mtmd" -I"$build/llama.cpp/include" -I"$build/llama.cpp/ggml/include" \
    "${libs[@]}" "${libs[@]}" -fopenmp -lpthread -ldl

# 4. The converter's environment (it reads config and tokenizer through transformers; gguf-py comes from the
#    tree). CONVERTER_PYTHON=/path/to/python reuses one that has torch, transformers and sentencepiece.
py="${CONVERTER_PYTHON:-$build/convenv/bin/python}"
if [ ! -x "$py" ]; then
    python3 -m venv "$build/convenv"
    nice -n 10 "$build/convenv/bin/pip" install -q torch==2.13.0 transformers==5.24.0 tokenizers numpy safetensors \
        tqdm pyyaml requests sentencepiece
    py="$build/convenv/bin/python"
fi

cat > "$build/paths.json" <<EOF
{"llama_cpp_src": "$src", "driver": "$build/llamacpp_kit_driver",
 "converter": "$build/llama.cpp/convert_hf_to_gguf.py", "converter_python": "$py",
 "patches": "$(for p in "${patches[@]}"; do printf '%s ' "$(basename "$p")"; done)"}
EOF
echo "built $build/llamacpp_kit_driver; run: python $here/llamacpp_port.py KIT RESULTS --build $build"
