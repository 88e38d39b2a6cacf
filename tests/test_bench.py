"""The benchmark is a tool, not a test: this only checks that its smoke run works and reports every field."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path):
    pytest.importorskip("tokenizers", reason="the benchmark's tokenizer.json is built with tokenizers")
    pytest.importorskip("onnxruntime", reason="the onnxruntime systems need onnxruntime")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py"), "--smoke", "--systems", "ours,onnxruntime", "--dtypes", "fp32,int8",
         "--cache", str(tmp_path / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())["records"]
    assert [(r["system"], r["dtype"]) for r in records] == [("ours", "fp32"), ("ours", "int8"), ("onnxruntime", "fp32"),
                                                            ("onnxruntime", "int8")], done.stderr
    for record in records:
        for key in ("system", "dtype", "load_s", "load_peak_rss_bytes", "encoder_s_per_window", "prefill_s", "decode_ms_per_token",
                    "rtf_30s_100tok", "bandwidth_gbs", "matmul_gflops", "decode_vs_limit", "encoder_vs_limit", "tokens_equal_fraction"):
            assert key in record and record[key] is not None, (record["system"], record["dtype"], key)
    assert "decode ms/tok" in done.stdout
