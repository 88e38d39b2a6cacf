// llamacpp_kit_driver: runs one conformance-kit case through llama.cpp's GLM-ASR support (libmtmd's clip
// audio encoder with the GLMA projector, libllama's Llama decoder) and writes every stage it exposes to a
// safetensors file named by the kit's stage names.
//
//   llamacpp_kit_driver TEXT.gguf MMPROJ.gguf INPUTS.safetensors OUT.safetensors --audio-token-id ID
//                       --boa ID --eoa ID --eos A,B,C [--max-new-tokens 24] [--threads 2] [--kv f16|f32]
//                       [--clip-flash-attn auto|off] [--llama-flash-attn auto|off] [--own-front-end]
//
// INPUTS holds the kit case's input_features (W, M, 3000) F32, input_features_mask (W, 3000) I32 and
// input_ids, attention_mask (B, T) I64, and audio_<i> (samples) F32 for every clip (written by llamacpp_port.py).
// --own-front-end: mtmd's own log-mel of audio_<i> instead of the kit's features; dumps mel,
// input_features_mask and the encoder's stages, and stops there.
//
// Encoder: each window of the kit's features is one clip_image_f32 (nx = frames, ny = mel bins, mel-major:
// the layout mtmd's own preprocessor produces) through clip_image_batch_encode, as mtmd_encode does for an audio
// chunk. Stages are read through the eval callback clip_context_params and llama_context_params expose
// (the names are the graphs' own, plus three that glm_asr_taps.patch gives to unnamed tensors).
//
// Decoder: llama.cpp's GLMA projector returns boi + audio rows + eoi for a window, in place of the
// <|begin_of_audio|> ... <|end_of_audio|> tokens of the reference's prompt. The driver builds the prompt's
// embedding rows from the kit's input_ids: token rows from the text GGUF's token_embd (what libllama's
// get_rows reads), the projector's boi/eoi rows at the begin/end-of-audio ids, its audio rows at the
// audio-token ids (the kit's count per window, floor((L + 1) / 8)), and decodes them as one embedding batch
// with every position's logits. Greedy decoding then continues with token batches, stopping after an eos id.
// Batch rows run one at a time with their left padding removed (positions 0.., what cumsum(mask) - 1 gives).

#include "clip-impl.h"
#include "clip.h"
#include "mtmd-audio.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../safetensors_io.hpp"

namespace {

// ---------------------------------------------------------------- safetensors: ../safetensors_io.hpp
using kit::Tensor, kit::read_safetensors, kit::write_safetensors, kit::make, kit::need;

// ---------------------------------------------------------------- stage taps (the eval callback)

struct Tap {
    std::vector<float> v;
    std::vector<int64_t> shape;  // numpy order: ggml's ne reversed
};

struct Taps {
    bool on = true;
    std::vector<std::string> names;  // exact tensor names wanted
    std::map<std::string, Tap> got;
    bool wants(const char* name) const {
        return on && std::find(names.begin(), names.end(), std::string(name)) != names.end();
    }
};

bool tap_callback(ggml_tensor* t, bool ask, void* user_data) {
    auto* taps = static_cast<Taps*>(user_data);
    const bool wanted = taps->wants(t->name);
    if (ask)
        return wanted;
    if (wanted) {
        if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {  // no exception through ggml's C frames
            std::fprintf(stderr, "llamacpp_kit_driver: tap %s is not contiguous F32\n", t->name);
            std::exit(2);
        }
        Tap tap;
        tap.v.resize(ggml_nelements(t));
        ggml_backend_tensor_get(t, tap.v.data(), 0, ggml_nbytes(t));
        for (int d = ggml_n_dims(t) - 1; d >= 0; d--)
            tap.shape.push_back(t->ne[d]);
        taps->got[t->name] = std::move(tap);
    }
    return true;
}

// Per-window taps stacked into (W, ...) in kit layout.
struct Stack {
    std::vector<int64_t> shape;
    std::vector<float> v;
    void add(const std::vector<int64_t>& item_shape, const float* data, size_t n) {
        if (shape.empty()) { shape.push_back(0); shape.insert(shape.end(), item_shape.begin(), item_shape.end()); }
        shape[0]++;
        v.insert(v.end(), data, data + n);
    }
};

// ---------------------------------------------------------------- token_embd rows from the text GGUF

// The rows libllama's get_rows would read, as F32: the tensor's bytes are read from the file at the
// offset the GGUF header gives (no weights are loaded), converted by ggml's own to_float.
struct TokenEmbd {
    int64_t width = 0, rows = 0;
    std::vector<float> v;
    explicit TokenEmbd(const std::string& path) {
        ggml_context* meta = nullptr;
        gguf_init_params p{/*no_alloc*/ true, &meta};
        gguf_context* g = gguf_init_from_file(path.c_str(), p);
        if (!g) throw std::runtime_error(path + ": not a GGUF file");
        const int64_t id = gguf_find_tensor(g, "token_embd.weight");
        if (id < 0) throw std::runtime_error(path + ": no token_embd.weight");
        const ggml_tensor* t = ggml_get_tensor(meta, "token_embd.weight");
        width = t->ne[0];
        rows = t->ne[1];
        std::vector<uint8_t> raw(ggml_nbytes(t));
        std::ifstream f(path, std::ios::binary);
        f.seekg((std::streamoff)(gguf_get_data_offset(g) + gguf_get_tensor_offset(g, id)));
        f.read(reinterpret_cast<char*>(raw.data()), (std::streamsize)raw.size());
        if (!f) throw std::runtime_error(path + ": short read of token_embd.weight");
        v.resize((size_t)(width * rows));
        if (t->type == GGML_TYPE_F32) {
            std::memcpy(v.data(), raw.data(), raw.size());
        } else {
            const auto* traits = ggml_get_type_traits(t->type);
            if (!traits->to_float) throw std::runtime_error(path + ": token_embd type has no to_float");
            traits->to_float(raw.data(), v.data(), width * rows);
        }
        gguf_free(g);
        ggml_free(meta);
    }
    const float* row(int64_t id) const {
        if (id < 0 || id >= rows) throw std::runtime_error("token id " + std::to_string(id) + " outside token_embd");
        return v.data() + (size_t)(id * width);
    }
};

int argmax(const float* x, int n) {  // first maximum, as torch.argmax
    return (int)(std::max_element(x, x + n) - x);
}

struct Args {
    std::string text, mmproj, inputs, out, kv = "f16", clip_fa = "auto", llama_fa = "auto";
    int audio_token_id = -1, boa = -1, eoa = -1, max_new_tokens = 24, threads = 2;
    bool own_front_end = false;
    std::vector<int> eos;
};

Args parse_args(int argc, char** argv) {
    Args a;
    std::vector<std::string> pos;
    for (int i = 1; i < argc; i++) {
        std::string s = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw std::runtime_error(s + " needs a value");
            return argv[++i];
        };
        if (s == "--audio-token-id") a.audio_token_id = std::stoi(next());
        else if (s == "--boa") a.boa = std::stoi(next());
        else if (s == "--eoa") a.eoa = std::stoi(next());
        else if (s == "--max-new-tokens") a.max_new_tokens = std::stoi(next());
        else if (s == "--threads") a.threads = std::stoi(next());
        else if (s == "--kv") a.kv = next();
        else if (s == "--clip-flash-attn") a.clip_fa = next();
        else if (s == "--llama-flash-attn") a.llama_fa = next();
        else if (s == "--own-front-end") a.own_front_end = true;
        else if (s == "--eos") {
            std::stringstream ss(next());
            for (std::string x; std::getline(ss, x, ',');) a.eos.push_back(std::stoi(x));
        }
        else pos.push_back(s);
    }
    if (pos.size() != 4 || a.audio_token_id < 0 || a.boa < 0 || a.eoa < 0 || a.eos.empty() ||
        (a.kv != "f16" && a.kv != "f32") || (a.clip_fa != "auto" && a.clip_fa != "off") ||
        (a.llama_fa != "auto" && a.llama_fa != "off"))
        throw std::runtime_error("usage: llamacpp_kit_driver TEXT.gguf MMPROJ.gguf INPUTS.safetensors OUT.safetensors "
                                 "--audio-token-id ID --boa ID --eoa ID --eos A,B,C "
                                 "[--max-new-tokens N] [--threads N] [--kv f16|f32] [--clip-flash-attn auto|off] [--llama-flash-attn auto|off] [--own-front-end]");
    a.text = pos[0]; a.mmproj = pos[1]; a.inputs = pos[2]; a.out = pos[3];
    return a;
}

void quiet_log(ggml_log_level level, const char* text, void*) {
    if (level >= GGML_LOG_LEVEL_WARN) std::fputs(text, stderr);
}

int run(const Args& args) {
    const auto in = read_safetensors(args.inputs);
    std::map<std::string, Tensor> out;
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();

    // ---- encoder + projector (libmtmd's clip), one window at a time
    Taps enc_taps;
    clip_context_params cp{};
    cp.use_gpu = false;
    cp.device = nullptr;
    // mtmd's defaults (mtmd_context_params_default): flash attention AUTO with a warmup, which resolves AUTO to
    // ENABLED where the backend supports it (the CPU does), and then build_attn casts K and V to fp16.
    // "off": DISABLED, the encoder's attention in fp32.
    cp.flash_attn_type = args.clip_fa == "auto" ? CLIP_FLASH_ATTN_TYPE_AUTO : CLIP_FLASH_ATTN_TYPE_DISABLED;
    cp.image_min_tokens = -1;
    cp.image_max_tokens = -1;
    cp.warmup = true;
    cp.cb_eval = tap_callback;
    cp.cb_eval_user_data = &enc_taps;
    cp.no_alloc = false;
    clip_init_result cr = clip_init(args.mmproj.c_str(), cp);
    if (!cr.ctx_a) throw std::runtime_error(args.mmproj + ": clip_init gave no audio encoder");
    clip_ctx* ca = cr.ctx_a;

    // The windows the encoder sees: the kit's features, or mtmd's own log-mel of the clips' samples
    // (mtmd_audio_preprocessor_whisper, what mtmd_tokenize runs on an audio bitmap: 3000-frame chunks).
    std::vector<std::vector<float>> windows;  // (M, F) each
    int64_t M = 0, F = 3000;
    if (!args.own_front_end) {
        const Tensor& feats = need(in, "input_features", "F32");
        M = feats.shape.at(1);
        F = feats.shape.at(2);
        for (int64_t w = 0; w < feats.shape.at(0); w++)
            windows.emplace_back(feats.as<float>() + w * M * F, feats.as<float>() + (w + 1) * M * F);
    } else {
        mtmd_audio_preprocessor_whisper pre(ca);
        pre.initialize();
        for (int c = 0; in.count("audio_" + std::to_string(c)); c++) {
            const Tensor& audio = need(in, "audio_" + std::to_string(c), "F32");
            std::vector<mtmd_audio_mel> mels;
            if (!pre.preprocess(audio.as<float>(), audio.data.size() / sizeof(float), mels))
                throw std::runtime_error("mtmd's whisper preprocessor failed on audio_" + std::to_string(c));
            for (auto& mel : mels) {
                M = mel.n_mel;
                if (mel.n_len != F) throw std::runtime_error("mtmd gave a chunk of " + std::to_string(mel.n_len) + " frames");
                windows.push_back(mel.data);
            }
        }
        std::vector<float> all;
        for (auto& w : windows) all.insert(all.end(), w.begin(), w.end());
        out["mel"] = make("F32", {(int64_t)windows.size(), M, F}, all);
        // mtmd has no valid-frame mask: every chunk's 3000 frames become audio tokens (n_len / 2 / 4 of them).
        out["input_features_mask"] = make("I32", {(int64_t)windows.size(), F}, std::vector<int32_t>(windows.size() * F, 1));
    }
    const int64_t W = (int64_t)windows.size();

    // Names: the graph's own (whisper-enc.cpp, build_vit) and glm_asr_taps.patch's tap.*.
    std::map<std::string, std::string> enc_names = {
        {"tap.conv1", "conv1"}, {"after_conv1d", "conv2"}, {"tap.encoder_norm", "encoder.norm"},
        {"tap.merged", "merged"}, {"projected", "projector"}};
    for (int il = 0; il < 256; il++)
        enc_names["layer_out-" + std::to_string(il)] = "encoder.layers." + std::to_string(il);
    for (auto& [name, kit] : enc_names) enc_taps.names.push_back(name);

    std::map<std::string, Stack> enc;
    std::vector<std::vector<float>> audio_rows;  // per window: the projector's rows without boi / eoi
    std::vector<float> boi, eoi;
    int64_t D = 0;
    for (int64_t w = 0; w < W; w++) {
        clip_image_f32 img;
        img.set_size({(int)F, (int)M}, /*is_placeholder*/ false, /*is_audio*/ true);
        img.cpy_buf(windows[w]);
        const int n_rows = clip_n_output_tokens(ca, &img);
        D = clip_n_mmproj_embd(ca);
        enc_taps.got.clear();
        std::vector<float> e((size_t)(n_rows * D));  // sized by the caller, as mtmd_encode_chunk does
        clip_image_f32_batch batch;  // as mtmd_encode: an audio batch of one mel (clip_image_encode would take it for an image)
        batch.is_audio = true;
        batch.entries.push_back(std::move(img));
        if (!clip_image_batch_encode(ca, args.threads, &batch, e))
            throw std::runtime_error("clip_image_batch_encode failed on window " + std::to_string(w));
        if ((int64_t)e.size() != n_rows * D)
            throw std::runtime_error("clip_image_batch_encode returned " + std::to_string(e.size()) + " floats");
        // GLMA: row 0 is the learned boi, the last row the eoi (whisper-enc.cpp's ggml_concat).
        boi.assign(e.begin(), e.begin() + D);
        eoi.assign(e.end() - D, e.end());
        audio_rows.emplace_back(e.begin() + D, e.end() - D);
        for (auto& [name, tap] : enc_taps.got) {
            if (name == "projected") {  // without the boi / eoi rows: the kit's (W, F/8, D)
                enc["projected"].add({tap.shape[0] - 2, D}, tap.v.data() + D, (size_t)((tap.shape[0] - 2) * D));
            } else {
                enc[name].add(tap.shape, tap.v.data(), tap.v.size());
            }
        }
    }
    for (auto& [name, st] : enc)
        out[enc_names.at(name)] = make("F32", st.shape, st.v);
    // Written now too, so the encoder's stages survive a decoder that aborts (a GGML_ASSERT).
    write_safetensors(args.out, out);
    if (args.own_front_end) {  // mtmd's prompt comes from its tokenizer and chat template: the decoder is not run
        clip_free(ca);
        return 0;
    }
    const Tensor& fmask = need(in, "input_features_mask", "I32");

    // The kit's kept audio rows of every window, in order: floor((L + 1) / 8) for L valid frames.
    std::vector<const float*> kept;
    for (int64_t w = 0; w < W; w++) {
        int64_t L = 0;
        for (int64_t f = 0; f < F; f++) L += fmask.as<int32_t>()[w * F + f];
        const int64_t keep = std::min<int64_t>((L + 1) / 8, (int64_t)audio_rows[w].size() / D);
        for (int64_t t = 0; t < keep; t++) kept.push_back(audio_rows[w].data() + t * D);
    }

    // ---- decoder (libllama)
    const TokenEmbd embd(args.text);
    if (embd.width != D)
        throw std::runtime_error("token_embd width " + std::to_string(embd.width) + " != projector width " + std::to_string(D));
    const Tensor& ids_t = need(in, "input_ids", "I64");
    const Tensor& mask_t = need(in, "attention_mask", "I64");
    const int64_t B = ids_t.shape.at(0), T = ids_t.shape.at(1);

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model* model = llama_model_load_from_file(args.text.c_str(), mp);
    if (!model) throw std::runtime_error(args.text + ": llama_model_load_from_file failed");
    const int V = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int n_layer = llama_model_n_layer(model);

    Taps dec_taps;
    std::map<std::string, std::string> dec_names = {{"result_norm", "decoder.norm"}};
    for (int il = 0; il < n_layer; il++)
        dec_names["l_out-" + std::to_string(il)] = "decoder.layers." + std::to_string(il);
    for (auto& [name, kit] : dec_names) dec_taps.names.push_back(name);

    llama_context_params lp = llama_context_default_params();
    lp.n_ctx = (uint32_t)(T + args.max_new_tokens + 16);
    lp.n_batch = lp.n_ubatch = lp.n_ctx;  // the prompt in one ubatch: one callback per stage
    lp.n_seq_max = 1;
    lp.n_threads = lp.n_threads_batch = args.threads;
    lp.type_k = lp.type_v = args.kv == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
    // auto: libllama's default, which turns flash attention on where the backend supports it (the CPU does)
    lp.flash_attn_type = args.llama_fa == "auto" ? LLAMA_FLASH_ATTN_TYPE_AUTO : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    lp.cb_eval = tap_callback;
    lp.cb_eval_user_data = &dec_taps;
    llama_context* lctx = llama_init_from_model(model, lp);
    if (!lctx) throw std::runtime_error("llama_init_from_model failed");

    std::map<std::string, std::vector<float>> dec;  // (B, T, X), zeros on padding
    std::map<std::string, int64_t> dec_width;
    auto put = [&](const std::string& name, int64_t b, int64_t p0, const float* rows, int64_t n, int64_t width) {
        auto& v = dec[name];
        if (v.empty()) { v.assign((size_t)(B * T * width), 0.0f); dec_width[name] = width; }
        std::memcpy(v.data() + (size_t)((b * T + p0) * width), rows, (size_t)(n * width) * sizeof(float));
    };
    auto is_eos = [&](int id) { return std::find(args.eos.begin(), args.eos.end(), id) != args.eos.end(); };
    std::vector<std::vector<int64_t>> generated(B);
    size_t next_audio = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t p0 = 0;
        while (p0 < T && mask_t.as<int64_t>()[b * T + p0] == 0) p0++;
        const int n = (int)(T - p0);
        std::vector<float> rows((size_t)n * D);
        for (int i = 0; i < n; i++) {
            const int64_t id = ids_t.as<int64_t>()[b * T + p0 + i];
            const float* src = nullptr;
            if (id == args.audio_token_id) {
                if (next_audio >= kept.size()) throw std::runtime_error("more audio-token ids than kept audio rows");
                src = kept[next_audio++];
            } else if (id == args.boa) {
                src = boi.data();
            } else if (id == args.eoa) {
                src = eoi.data();
            } else {
                src = embd.row(id);
            }
            std::memcpy(rows.data() + (size_t)i * D, src, D * sizeof(float));
        }
        put("inputs_embeds", b, p0, rows.data(), n, D);

        llama_memory_clear(llama_get_memory(lctx), true);
        llama_batch batch = llama_batch_init(n, (int32_t)D, 1);
        batch.n_tokens = n;
        std::memcpy(batch.embd, rows.data(), rows.size() * sizeof(float));
        for (int i = 0; i < n; i++) {
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;
        }
        dec_taps.on = true;
        dec_taps.got.clear();
        if (llama_decode(lctx, batch) != 0) throw std::runtime_error("llama_decode failed on the prompt");
        llama_batch_free(batch);
        dec_taps.on = false;  // decode steps need no taps
        for (int i = 0; i < n; i++) {
            const float* lg = llama_get_logits_ith(lctx, i);
            if (!lg) throw std::runtime_error("no logits at prompt position " + std::to_string(i));
            if (dec["logits"].empty()) { dec["logits"].assign((size_t)B * T * V, 0.0f); dec_width["logits"] = V; }
            std::memcpy(dec["logits"].data() + (size_t)((b * T + p0 + i) * V), lg, (size_t)V * sizeof(float));
        }
        for (auto& [name, tap] : dec_taps.got)
            if (tap.shape.size() == 2 && tap.shape[0] == n) put(dec_names.at(name), b, p0, tap.v.data(), n, tap.shape[1]);

        // Greedy: argmax, stop after an eos id.
        int next = argmax(llama_get_logits_ith(lctx, n - 1), V);
        generated[b].push_back(next);
        for (int pos = n; !is_eos(next) && (int)generated[b].size() < args.max_new_tokens; pos++) {
            llama_batch one = llama_batch_init(1, 0, 1);
            one.n_tokens = 1;
            one.token[0] = next;
            one.pos[0] = pos;
            one.n_seq_id[0] = 1;
            one.seq_id[0][0] = 0;
            one.logits[0] = 1;
            if (llama_decode(lctx, one) != 0) throw std::runtime_error("llama_decode failed at step " + std::to_string(pos));
            llama_batch_free(one);
            next = argmax(llama_get_logits_ith(lctx, 0), V);
            generated[b].push_back(next);
        }
    }
    if (next_audio != kept.size())
        throw std::runtime_error("prompt has fewer audio-token ids than kept audio rows");
    for (auto& [name, v] : dec)
        out[name] = make("F32", {B, T, dec_width[name]}, v);

    // (B, N): rows that finished early continue with the first eos id, as transformers' generate.
    size_t n_gen = 0;
    for (auto& g : generated) n_gen = std::max(n_gen, g.size());
    std::vector<int64_t> gen;
    for (auto& g : generated) {
        gen.insert(gen.end(), g.begin(), g.end());
        gen.insert(gen.end(), n_gen - g.size(), args.eos[0]);
    }
    out["generated_ids"] = make("I64", {B, (int64_t)n_gen}, gen);

    llama_free(lctx);
    llama_model_free(model);
    clip_free(ca);
    write_safetensors(args.out, out);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse_args(argc, argv));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "llamacpp_kit_driver: %s\n", e.what());
        return 2;
    }
}
