// crispasr_kit_driver: runs one conformance-kit case through CrispASR's GLM-ASR library (src/glm_asr.h)
// and writes every stage it exposes to a safetensors file named by the kit's stage names.
//
//   crispasr_kit_driver MODEL.gguf INPUTS.safetensors OUT.safetensors --audio-token-id ID --eos A,B,C
//                       [--max-new-tokens 24] [--threads 2] [--own-front-end]
//
// INPUTS holds the kit case's input_features (W, M, 3000) F32, input_features_mask (W, 3000) I32,
// input_ids and attention_mask (B, T) I64, and audio_<i> (samples) F32 for every clip (written by
// crispasr_port.py). Only the library's public API is called, plus the stage taps added by
// glm_asr_taps.patch (named graph outputs read through the scheduler's eval callback).
//
// Batch rows are run one at a time with their left padding removed: CrispASR decodes one sequence,
// and a left-padded row with positions cumsum(mask) - 1 is the same sequence at positions 0.. .

#include "glm_asr.h"

#include "ggml-backend.h"
#include "ggml.h"

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

// ---------------------------------------------------------------- stage taps

// A tapped graph output: its values and its ggml shape (ne[0] fastest), i.e. numpy shape reversed.
struct Tap {
    std::vector<float> v;
    std::vector<int64_t> shape;  // numpy order
};

bool tap_callback(ggml_tensor* t, bool ask, void* user_data) {
    const bool wanted = std::strncmp(t->name, "tap.", 4) == 0;
    if (ask)
        return wanted;
    if (wanted) {
        if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {  // no exception through ggml's C frames
            std::fprintf(stderr, "crispasr_kit_driver: tap %s is not contiguous F32\n", t->name);
            std::exit(2);
        }
        Tap tap;
        tap.v.resize(ggml_nelements(t));
        ggml_backend_tensor_get(t, tap.v.data(), 0, ggml_nbytes(t));
        for (int d = ggml_n_dims(t) - 1; d >= 0; d--)
            tap.shape.push_back(t->ne[d]);
        (*static_cast<std::map<std::string, Tap>*>(user_data))[t->name] = std::move(tap);
    }
    return true;
}

// Stacks per-window (or per-row) taps into one float tensor (N, ...) in kit layout.
struct Stack {
    std::vector<int64_t> shape;
    std::vector<float> v;
    void add(const std::vector<int64_t>& item_shape, const float* data, size_t n) {
        if (shape.empty()) { shape.push_back(0); shape.insert(shape.end(), item_shape.begin(), item_shape.end()); }
        shape[0]++;
        v.insert(v.end(), data, data + n);
    }
};

int argmax(const float* x, int n) {  // first maximum, as torch.argmax
    return (int)(std::max_element(x, x + n) - x);
}

// Audio tokens CrispASR keeps of a window with L valid mel frames (glm_asr_transcribe_impl):
// conv_valid = (L - 1) / 2 + 1; tok_valid = (conv_valid - 4) / 4 + 1, clamped to [0, tokens].
int crispasr_kept_tokens(int L, int n_tokens) {
    const int conv_valid = (L - 1) / 2 + 1;
    const int tok_valid = (conv_valid - 4) / 4 + 1;
    return std::min(std::max(tok_valid, 0), n_tokens);
}

struct Args {
    std::string model, inputs, out;
    int audio_token_id = -1, max_new_tokens = 24, threads = 2;
    std::vector<int> eos;
    bool own_front_end = false;
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
        else if (s == "--max-new-tokens") a.max_new_tokens = std::stoi(next());
        else if (s == "--threads") a.threads = std::stoi(next());
        else if (s == "--own-front-end") a.own_front_end = true;
        else if (s == "--eos") {
            std::stringstream ss(next());
            for (std::string x; std::getline(ss, x, ',');) a.eos.push_back(std::stoi(x));
        }
        else pos.push_back(s);
    }
    if (pos.size() != 3 || a.audio_token_id < 0 || a.eos.empty())
        throw std::runtime_error("usage: crispasr_kit_driver MODEL.gguf INPUTS.safetensors OUT.safetensors "
                                 "--audio-token-id ID --eos A,B,C "
                                 "[--max-new-tokens N] [--threads N] [--own-front-end]");
    a.model = pos[0]; a.inputs = pos[1]; a.out = pos[2];
    return a;
}

// CrispASR's own prompt (glm_asr_transcribe_impl, default instruction): its special-token and
// instruction ids are constants of the released tokenizer, not read from the model file.
std::vector<int64_t> crispasr_prompt(const std::vector<int>& window_tokens) {
    static const int64_t kDefaultInstruction[] = {14215, 1700, 8091, 643, 14812, 1636, 2815};
    std::vector<int64_t> ids = {59253, 10};
    for (int wt : window_tokens) {
        ids.push_back(59261);
        ids.insert(ids.end(), wt, 59260);
        ids.push_back(59262);
    }
    ids.push_back(59253);
    ids.push_back(10);
    ids.insert(ids.end(), std::begin(kDefaultInstruction), std::end(kDefaultInstruction));
    ids.push_back(59254);
    ids.push_back(10);
    return ids;
}

int run(const Args& args) {
    const auto in = read_safetensors(args.inputs);
    std::map<std::string, Tensor> out;

    glm_asr_context_params p = glm_asr_context_default_params();
    p.n_threads = args.threads;
    p.verbosity = 0;
    p.use_gpu = false;
    glm_asr_context* ctx = glm_asr_init_from_file(args.model.c_str(), p);
    if (!ctx)
        throw std::runtime_error("glm_asr_init_from_file failed for " + args.model);

    // ---- the windows the encoder sees: the kit's features, or CrispASR's own front end
    const int F = 3000;
    std::vector<std::vector<float>> windows;  // (M, F) each
    std::vector<int> valid;                   // valid mel frames per window
    int M = 0;
    std::vector<int> clip_windows;            // windows per clip (own front end)
    if (!args.own_front_end) {
        const Tensor& feats = need(in, "input_features", "F32");
        const Tensor& fmask = need(in, "input_features_mask", "I32");
        M = (int)feats.shape.at(1);
        for (int64_t w = 0; w < feats.shape[0]; w++) {
            windows.emplace_back(feats.as<float>() + w * M * F, feats.as<float>() + (w + 1) * M * F);
            int L = 0;
            for (int f = 0; f < F; f++) L += fmask.as<int32_t>()[w * F + f];
            valid.push_back(L);
        }
    } else {
        // As glm_asr_transcribe_impl: 30 s sample windows, each mel'd on its own, zero-padded to 3000 frames.
        const int kWindowSamples = 30 * 16000;
        for (int c = 0; in.count("audio_" + std::to_string(c)); c++) {
            const Tensor& audio = need(in, "audio_" + std::to_string(c), "F32");
            const int n = (int)audio.numel();
            const int n_win = std::min((n + kWindowSamples - 1) / kWindowSamples, 21);
            for (int w = 0; w < n_win; w++) {
                int T = 0;
                float* mel = glm_asr_compute_mel(ctx, audio.as<float>() + (size_t)w * kWindowSamples,
                                                 std::min(kWindowSamples, n - w * kWindowSamples), &M, &T);
                if (!mel) throw std::runtime_error("glm_asr_compute_mel failed");
                const int Tv = std::min(T, F);
                std::vector<float> padded((size_t)M * F, 0.0f);
                for (int m = 0; m < M; m++)
                    std::memcpy(padded.data() + (size_t)m * F, mel + (size_t)m * T, Tv * sizeof(float));
                std::free(mel);
                windows.push_back(std::move(padded));
                valid.push_back(Tv);
            }
            clip_windows.push_back(n_win);
        }
        std::vector<float> mel_all;
        std::vector<int32_t> mask_all;
        for (size_t w = 0; w < windows.size(); w++) {
            mel_all.insert(mel_all.end(), windows[w].begin(), windows[w].end());
            for (int f = 0; f < F; f++) mask_all.push_back(f < valid[w] ? 1 : 0);
        }
        const int64_t W = (int64_t)windows.size();
        out["mel"] = make("F32", {W, M, F}, mel_all);
        out["input_features_mask"] = make("I32", {W, F}, mask_all);
    }

    // ---- encoder + projector, one window at a time, every tap kept
    std::map<std::string, Tap> taps;
    glm_asr_set_eval_callback(ctx, tap_callback, &taps);
    std::map<std::string, Stack> enc;
    std::vector<std::vector<float>> proj;  // (N, D) per window
    int D = 0, N = 0;
    for (size_t w = 0; w < windows.size(); w++) {
        taps.clear();
        float* e = glm_asr_run_encoder(ctx, windows[w].data(), M, F, &N, &D);
        if (!e) throw std::runtime_error("glm_asr_run_encoder failed");
        proj.emplace_back(e, e + (size_t)N * D);
        enc["projector"].add({N, D}, e, (size_t)N * D);
        std::free(e);
        for (auto& [name, tap] : taps)
            enc[name].add(tap.shape, tap.v.data(), tap.v.size());
    }
    const std::map<std::string, std::string> enc_names = {
        {"tap.conv1", "conv1"}, {"tap.conv2", "conv2"}, {"tap.enc_norm", "encoder.norm"},
        {"tap.merged", "merged"}, {"projector", "projector"}};
    for (auto& [name, st] : enc) {
        std::string kit_name = enc_names.count(name) ? enc_names.at(name)
                               : name.rfind("tap.enc.", 0) == 0 ? "encoder.layers." + name.substr(8) : "";
        if (kit_name.empty()) continue;
        out[kit_name] = make("F32", st.shape, st.v);
    }

    // Kept audio tokens, all windows in order.
    std::vector<const float*> audio_rows;
    std::vector<int> window_tokens;
    for (size_t w = 0; w < windows.size(); w++) {
        const int keep = crispasr_kept_tokens(valid[w], N);
        window_tokens.push_back(keep);
        for (int t = 0; t < keep; t++) audio_rows.push_back(proj[w].data() + (size_t)t * D);
    }

    if (args.own_front_end) {
        // CrispASR's prompt per clip, left-padded with the first eos id as the reference pads.
        std::vector<std::vector<int64_t>> rows;
        size_t w0 = 0;
        for (int nw : clip_windows) {
            std::vector<int> wt(window_tokens.begin() + w0, window_tokens.begin() + w0 + nw);
            rows.push_back(crispasr_prompt(wt));
            w0 += nw;
        }
        size_t T = 0;
        for (auto& r : rows) T = std::max(T, r.size());
        std::vector<int64_t> ids;
        for (auto& r : rows) {
            ids.insert(ids.end(), T - r.size(), args.eos[0]);
            ids.insert(ids.end(), r.begin(), r.end());
        }
        out["input_ids"] = make("I64", {(int64_t)rows.size(), (int64_t)T}, ids);
        // Its ids are the released tokenizer's; a model with another vocabulary cannot embed them,
        // so the decoder is not run here.
        glm_asr_free(ctx);
        write_safetensors(args.out, out);
        return 0;
    }

    // Written now too, so the encoder's stages survive a decoder that aborts (a GGML_ASSERT).
    write_safetensors(args.out, out);

    // ---- decoder: one batch row at a time, left padding removed
    const Tensor& ids_t = need(in, "input_ids", "I64");
    const Tensor& mask_t = need(in, "attention_mask", "I64");
    const int64_t B = ids_t.shape.at(0), T = ids_t.shape.at(1);
    std::map<std::string, std::vector<float>> dec;  // (B, T, X), zeros on padding
    std::map<std::string, int64_t> dec_width;
    std::vector<std::vector<int64_t>> generated(B);
    size_t next_audio = 0;
    int V = 0;
    auto put = [&](const std::string& name, int64_t b, int64_t p0, const float* rows, int64_t n, int64_t width) {
        auto& v = dec[name];
        if (v.empty()) { v.assign((size_t)(B * T * width), 0.0f); dec_width[name] = width; }
        std::memcpy(v.data() + (size_t)((b * T + p0) * width), rows, (size_t)(n * width) * sizeof(float));
    };
    for (int64_t b = 0; b < B; b++) {
        int64_t p0 = 0;
        while (p0 < T && mask_t.as<int64_t>()[b * T + p0] == 0) p0++;
        const int n = (int)(T - p0);
        std::vector<int32_t> ids(n);
        for (int i = 0; i < n; i++) ids[i] = (int32_t)ids_t.as<int64_t>()[b * T + p0 + i];

        float* emb = glm_asr_embed_tokens(ctx, ids.data(), n);
        if (!emb) throw std::runtime_error("glm_asr_embed_tokens failed");
        for (int i = 0; i < n; i++) {
            if (ids[i] != args.audio_token_id) continue;
            if (next_audio >= audio_rows.size()) throw std::runtime_error("more audio-token rows than audio tokens");
            std::memcpy(emb + (size_t)i * D, audio_rows[next_audio++], D * sizeof(float));
        }
        put("inputs_embeds", b, p0, emb, n, D);

        if (!glm_asr_kv_init(ctx, n + args.max_new_tokens + 16)) throw std::runtime_error("glm_asr_kv_init failed");
        glm_asr_kv_reset(ctx);
        taps.clear();
        glm_asr_set_eval_callback(ctx, tap_callback, &taps);
        int n_out = 0;
        float* logits = glm_asr_run_llm_kv_all(ctx, emb, n, 0, &n_out, &V);
        std::free(emb);
        if (!logits || n_out != n) throw std::runtime_error("glm_asr_run_llm_kv_all failed");
        glm_asr_set_eval_callback(ctx, nullptr, nullptr);  // decode steps need no taps
        put("logits", b, p0, logits, n, V);
        for (auto& [name, tap] : taps) {
            std::string kit_name = name == "tap.dec_norm" ? "decoder.norm"
                                   : name.rfind("tap.dec.", 0) == 0 ? "decoder.layers." + name.substr(8) : "";
            if (!kit_name.empty()) put(kit_name, b, p0, tap.v.data(), n, tap.shape.back());
        }

        // Greedy, as the library's transcribe loop: argmax, stop after an eos id.
        auto is_eos = [&](int id) { return std::find(args.eos.begin(), args.eos.end(), id) != args.eos.end(); };
        int next = argmax(logits + (size_t)(n - 1) * V, V);
        std::free(logits);
        generated[b].push_back(next);
        for (int n_past = n; !is_eos(next) && (int)generated[b].size() < args.max_new_tokens; n_past++) {
            float* e1 = glm_asr_embed_tokens(ctx, &next, 1);
            float* lg = glm_asr_run_llm_kv(ctx, e1, 1, n_past, nullptr, nullptr);
            std::free(e1);
            if (!lg) throw std::runtime_error("glm_asr_run_llm_kv failed");
            next = argmax(lg, V);
            std::free(lg);
            generated[b].push_back(next);
        }
    }
    if (next_audio != audio_rows.size())
        throw std::runtime_error("prompt has fewer audio-token rows than kept audio tokens");
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

    glm_asr_free(ctx);
    write_safetensors(args.out, out);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse_args(argc, argv));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "crispasr_kit_driver: %s\n", e.what());
        return 2;
    }
}
