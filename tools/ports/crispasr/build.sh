#!/usr/bin/env bash
# Builds CrispASR's GLM-ASR library (CPU only, against upstream ggml), the kit driver, and a Python
# environment for CrispASR's checkpoint converter, into BUILD. The CrispASR checkout is not modified:
# its sources are copied to BUILD/crispasr and patched there.
#
#   tools/ports/crispasr/build.sh CRISPASR_SRC GGML_SRC BUILD [EXTRA.patch ...]
#
# CRISPASR_SRC: a checkout of github.com/CrispStrobe/CrispASR (tested: 72d3c389e6e9a8d2e64b76cd0837eebf420c83ac)
# GGML_SRC:     a checkout of github.com/ggml-org/ggml (tested: d99724f2b141fed9e1a9f402213506c081433465),
#               used in place of CrispASR's pinned fork (CrispStrobe/ggml 5049ebb8), which is not public here
# EXTRA.patch:  applied after glm_asr_taps.patch and glm_asr_converter.patch (e.g. f32_conv_probe.patch)
# Writes BUILD/paths.json, which crispasr_port.py --build BUILD reads.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 3 ] || { echo "usage: $0 CRISPASR_SRC GGML_SRC BUILD [EXTRA.patch ...]" >&2; exit 2; }
src="$(cd "$1" && pwd)"; ggml="$(cd "$2" && pwd)"; mkdir -p "$3"; build="$(cd "$3" && pwd)"; shift 3
extra=(); for p in "$@"; do extra+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")"); done
jobs="${JOBS:-2}"

[ -f "$src/src/glm_asr.cpp" ] || { echo "$src: no src/glm_asr.cpp; expected a CrispASR checkout" >&2; exit 2; }
[ -f "$ggml/CMakeLists.txt" ] || { echo "$ggml: no CMakeLists.txt; expected a ggml checkout" >&2; exit 2; }

# 1. Patched copy of the sources (only what the library and converter need), ggml in place of the submodule.
rm -rf "$build/crispasr"
mkdir -p "$build/crispasr"
(cd "$src" && tar cf - --exclude=./.git --exclude=./ggml .) | (cd "$build/crispasr" && tar xf -)
ln -s "$ggml" "$build/crispasr/ggml"
for p in "$here/glm_asr_taps.patch" "$here/glm_asr_converter.patch" "${extra[@]}"; do
    echo "applying $(basename "$p")"
    patch -d "$build/crispasr" -p1 --forward --quiet < "$p"
done

# 2. The library, static: CPU only (no GPU backend is enabled by default), C2PA signing off (its sources are a
#    submodule this build does not need).
cmake -S "$build/crispasr" -B "$build/cmake" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DCRISPASR_NO_C2PA_NATIVE=ON -DCRISPASR_BUILD_TESTS=OFF -DCRISPASR_BUILD_EXAMPLES=OFF -DCRISPASR_BUILD_SERVER=OFF \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF > "$build/cmake-configure.log"
nice -n 10 cmake --build "$build/cmake" --target glm-asr crispasr-core ggml ggml-base ggml-cpu -j"$jobs"

# 3. The driver, linked against the static libraries.
lib="$build/cmake"
nice -n 10 g++ -O2 -std=c++17 -Wall -o "$build/crispasr_kit_driver" "$here/crispasr_kit_driver.cpp" \
    -I"$build/crispasr/src" -I"$ggml/include" \
    "$lib/src/libglm-asr.a" "$lib/src/libcrispasr-core.a" \
    "$lib/ggml/src/libggml.a" "$lib/ggml/src/libggml-cpu.a" "$lib/ggml/src/libggml-base.a" \
    -fopenmp -lpthread -ldl

# 4. The converter's environment: it reads the checkpoint through transformers (config, tokenizer, processor).
#    CONVERTER_PYTHON=/path/to/python reuses one that has them (torch, transformers 5.x, gguf).
py="${CONVERTER_PYTHON:-$build/convenv/bin/python}"
if [ ! -x "$py" ]; then
    python3 -m venv "$build/convenv"
    nice -n 10 "$build/convenv/bin/pip" install -q torch==2.13.0 transformers==5.24.0 tokenizers gguf safetensors numpy
    py="$build/convenv/bin/python"
fi

cat > "$build/paths.json" <<EOF
{"crispasr_src": "$src", "driver": "$build/crispasr_kit_driver",
 "converter": "$build/crispasr/models/convert-glm-asr-to-gguf.py", "converter_python": "$py"}
EOF
echo "built $build/crispasr_kit_driver; run: python $here/crispasr_port.py KIT RESULTS --build $build"
