// Safetensors read and write for the kit drivers (crispasr/, llamacpp/): a case's inputs in, its stages out.
// Only what the kit's files use: a flat JSON header of name -> {dtype, shape, data_offsets}, plus __metadata__.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace kit {

struct Tensor {
    std::string dtype;  // "F32", "I32", "I64"
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;

    int64_t numel() const {
        int64_t n = 1;
        for (int64_t d : shape)
            n *= d;
        return n;
    }
    template <class T> const T* as() const { return reinterpret_cast<const T*>(data.data()); }
};

// The header is a flat JSON object of {"dtype": s, "shape": [ints], "data_offsets": [a, b]} entries
// (plus an optional "__metadata__" object of strings): a small recursive-descent reader is enough.
struct JsonReader {
    const std::string& s;
    size_t i = 0;
    void ws() { while (i < s.size() && isspace((unsigned char)s[i])) i++; }
    void expect(char c) {
        ws();
        if (i >= s.size() || s[i] != c)
            throw std::runtime_error(std::string("safetensors header: expected '") + c + "'");
        i++;
    }
    bool peek(char c) { ws(); return i < s.size() && s[i] == c; }
    std::string str() {
        expect('"');
        std::string out;
        while (i < s.size() && s[i] != '"') {
            if (s[i] == '\\') i++;
            out += s[i++];
        }
        i++;
        return out;
    }
    int64_t num() { ws(); size_t n = 0; int64_t v = std::stoll(s.substr(i), &n); i += n; return v; }
    std::vector<int64_t> ints() {
        std::vector<int64_t> v;
        expect('[');
        while (!peek(']')) { v.push_back(num()); if (peek(',')) i++; }
        i++;
        return v;
    }
    void skip_object_of_strings() {
        expect('{');
        while (!peek('}')) { str(); expect(':'); str(); if (peek(',')) i++; }
        i++;
    }
};

inline std::map<std::string, Tensor> read_safetensors(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f)
        throw std::runtime_error("cannot open " + path);
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    f.read(&header[0], (std::streamsize)n);
    std::vector<uint8_t> body((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::map<std::string, Tensor> out;
    JsonReader r{header};
    r.expect('{');
    while (!r.peek('}')) {
        std::string name = r.str();
        r.expect(':');
        if (name == "__metadata__") {
            r.skip_object_of_strings();
        } else {
            Tensor t;
            int64_t a = 0, b = 0;
            r.expect('{');
            while (!r.peek('}')) {
                std::string key = r.str();
                r.expect(':');
                if (key == "dtype") t.dtype = r.str();
                else if (key == "shape") t.shape = r.ints();
                else if (key == "data_offsets") { auto o = r.ints(); a = o.at(0); b = o.at(1); }
                else throw std::runtime_error(path + ": unknown header key " + key);
                if (r.peek(',')) r.i++;
            }
            r.i++;
            t.data.assign(body.begin() + a, body.begin() + b);
            out[name] = std::move(t);
        }
        if (r.peek(',')) r.i++;
    }
    return out;
}

inline void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors) {
    std::ostringstream h;
    h << '{';
    size_t offset = 0;
    bool first = true;
    for (const auto& [name, t] : tensors) {
        h << (first ? "" : ",") << '"' << name << "\":{\"dtype\":\"" << t.dtype << "\",\"shape\":[";
        for (size_t k = 0; k < t.shape.size(); k++)
            h << (k ? "," : "") << t.shape[k];
        h << "],\"data_offsets\":[" << offset << ',' << offset + t.data.size() << "]}";
        offset += t.data.size();
        first = false;
    }
    h << '}';
    std::string header = h.str();
    header.append((8 - header.size() % 8) % 8, ' ');  // the data start stays 8-byte aligned
    std::ofstream f(path, std::ios::binary);
    uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f.write(header.data(), (std::streamsize)header.size());
    for (const auto& [name, t] : tensors)
        f.write(reinterpret_cast<const char*>(t.data.data()), (std::streamsize)t.data.size());
    if (!f)
        throw std::runtime_error("cannot write " + path);
}

template <class T> Tensor make(const std::string& dtype, std::vector<int64_t> shape, const std::vector<T>& v) {
    Tensor t{dtype, std::move(shape), {}};
    t.data.resize(v.size() * sizeof(T));
    std::memcpy(t.data.data(), v.data(), t.data.size());
    return t;
}

inline const Tensor& need(const std::map<std::string, Tensor>& m, const std::string& name, const char* dtype) {
    auto it = m.find(name);
    if (it == m.end())
        throw std::runtime_error("inputs: no tensor " + name);
    if (it->second.dtype != dtype)
        throw std::runtime_error("inputs: " + name + " is " + it->second.dtype + ", expected " + dtype);
    return it->second;
}

}  // namespace kit
