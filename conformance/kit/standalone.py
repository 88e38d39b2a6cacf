#!/usr/bin/env python3
"""The kit's checker for a porter without this repository: numpy only (Python 3.9+; no torch, no glm-asr,
no safetensors package: the format is read here). Exported into every kit as check_kit.py; gives the same
verdicts as `glm-asr kit check` (every stage's status, each case's pass or fail and first diverging stage, the
exit code), without its diagnosis and operation lines, which recompute stages with the reference model.

    python check_kit.py KIT RESULTS [--case ID[,ID...]] [--json FILE]

Exit 0 when every case passes, 1 when one fails (a case without its results file, an unreadable file, a
results file or tensor name the kit does not know all fail), 2 when the kit or the arguments are unusable.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


class Unusable(Exception):
    """The kit or the arguments cannot be used: exit 2."""


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Tensors (bf16 widened to float32) and the metadata of a safetensors file; ValueError if it is not one."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("header length beyond the end of the file")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"header is not JSON ({e})") from e
    meta, out, body = header.pop("__metadata__", None) or {}, {}, memoryview(data)[8 + n :]
    for name, info in header.items():
        start, end = info["data_offsets"]
        raw = np.frombuffer(body[start:end], dtype=np.uint16 if info["dtype"] == "BF16" else _DTYPES[info["dtype"]])
        arr = (raw.astype(np.uint32) << 16).view(np.float32) if info["dtype"] == "BF16" else raw
        out[name] = arr.reshape(info["shape"])
    return out, meta


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_kit(kit_dir: Path) -> dict:
    path = kit_dir / "kit.json"
    if not path.is_file():
        raise Unusable(f"{path}: missing; is {kit_dir} a folder written by `glm-asr kit export`?")
    kit = json.loads(path.read_text())
    if kit.get("format") != "glm-asr-conformance-kit":
        raise Unusable(f"{path}: not a glm-asr conformance kit")
    for rel, digest in kit["files"].items():
        if not (kit_dir / rel).is_file():
            raise Unusable(f"{kit_dir / rel}: listed in {path} but missing; export the kit again")
        if _sha256(kit_dir / rel) != digest:
            raise Unusable(f"{kit_dir / rel}: sha256 differs from {path}'s; the kit was altered, export it again")
    return kit


def violation(name: str, value: float, op: str, bound: float) -> str:
    digits = next((d for d in range(3, 18) if float(f"{bound:.{d}g}") == bound and f"{value:.{d}g}" != f"{bound:.{d}g}"), 17)
    return f"{name} {value:.{digits}g} {op} {bound:.{digits}g}"


def measure(a: np.ndarray, b: np.ndarray, feature_axis: int) -> tuple[dict, str | None]:
    """max_abs, max_rel, nmse, min_cos as the kit defines them (its README); or why none can be read."""
    if a.shape != b.shape:
        return {}, f"shape {a.shape} != reference {b.shape}"
    a, b = a.astype(np.float64), b.astype(np.float64)
    bad_a, bad_b = ~np.isfinite(a), ~np.isfinite(b)
    if bad_a.any() or bad_b.any():
        if not np.array_equal(bad_a, bad_b) or not np.array_equal(np.nan_to_num(a[bad_a]), np.nan_to_num(b[bad_b])):
            return {}, f"{int(bad_a.sum())} non-finite values vs {int(bad_b.sum())} in the reference"
        a, b = np.where(bad_a, 0.0, a), np.where(bad_b, 0.0, b)
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    energy = float((b * b).sum())
    nmse = float((diff * diff).sum()) / energy if energy > 0 else (0.0 if max_abs == 0 else math.inf)
    ar = np.moveaxis(a, feature_axis, -1).reshape(-1, a.shape[feature_axis])
    br = np.moveaxis(b, feature_axis, -1).reshape(-1, b.shape[feature_axis])
    na, nb = np.linalg.norm(ar, axis=-1), np.linalg.norm(br, axis=-1)
    cos = np.where((na == 0) & (nb == 0), 1.0, (ar * br).sum(-1) / np.maximum(na * nb, 1e-300))
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return {"max_abs": max_abs, "max_rel": rel, "nmse": nmse, "min_cos": float(cos.min()) if cos.size else 1.0}, None


def failures(m: dict, tol: dict) -> list[str]:
    out = [violation(k, m[k], ">", tol[k]) for k in ("max_abs", "max_rel", "nmse") if tol[k] is not None and m[k] > tol[k]]
    if tol["min_cos"] is not None and m["min_cos"] < tol["min_cos"]:
        out.append(violation("min_cos", m["min_cos"], "<", tol["min_cos"]))
    return out


def _exact(got: np.ndarray, want: np.ndarray) -> list[str]:
    if got.shape != want.shape:
        return [f"shape {got.shape} != reference {want.shape}"]
    if got.dtype.kind == "f" and not np.array_equal(got, np.round(got)):
        return ["not integers"]
    wrong = got.astype(np.int64) != want.astype(np.int64)
    if not wrong.any():
        return []
    at = tuple(int(i) for i in np.argwhere(wrong)[0])
    return [f"{int(wrong.sum())} of {wrong.size} differ, first at {at}: {int(got[at])} where the reference has {int(want[at])}"]


def _prepare(entry: dict, got: np.ndarray, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray | None, str | None]:
    """The port's tensor as the kit keeps the reference's (fp32, cropped, padding rows zeroed); or the shape problem."""
    full, axis, shape = entry["full_shape"], entry["frame_axis"], got.shape
    kept = entry["shape"][axis] if axis is not None else None
    if not (len(shape) == len(full) and all(g == f or (i == axis and g >= kept) for i, (g, f) in enumerate(zip(shape, full)))):
        return None, f"shape {tuple(shape)} (the port's) != {tuple(full)} expected (kit.json full_shape; see the layout in the README)"
    t = got.astype(np.float32)
    if entry["padded_tokens"]:
        t = np.where(inputs["attention_mask"][..., None].astype(bool), t, np.float32(0.0))
    if axis is not None:
        t = np.take(t, np.arange(kept), axis=axis)
    if entry["padded_tokens"]:
        t = t * inputs["attention_mask"].astype(np.float32)[..., None]
    if "rows" in entry:
        t = np.take(t, entry["rows"]["index"], axis=entry["rows"]["axis"])
    return t, None


def check_case(kit_dir: Path, kit: dict, case_id: str, case: dict, results: dict[str, np.ndarray], meta: dict, source: str) -> dict:
    inputs, _ = read_safetensors(kit_dir / case["dir"] / "inputs.safetensors")
    expected, _ = read_safetensors(kit_dir / case["dir"] / "expected.safetensors")
    rows, notes = [], []
    for entry in case["stages"]:
        name = entry["name"]
        want = expected.get(name, inputs.get(name))
        row = {"stage": name, "status": "not provided", "shape": list(want.shape), "failures": []}
        rows.append(row)
        if name not in results:
            continue
        got = results[name]
        if entry.get("exact"):
            row["failures"] = _exact(got, want)
        else:
            tol = kit["tolerances"][entry["tolerance"]]
            prepared, problem = _prepare(entry, got, inputs)
            if problem is None:
                m, problem = measure(prepared, want, entry["feature_axis"])
            row["failures"] = [problem] if problem else failures(m, tol)
            if problem is None:
                row["metrics"] = m
        row["status"] = "FAIL" if row["failures"] else "ok"
    known = set(case["known_names"])
    unknown = sorted(set(results) - known)
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        notes.append(f"unknown tensor {name!r}: not a stage or sub-stage name of {case_id}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    stage_names = [e["name"] for e in case["stages"]]
    if "generated_ids" in results and "generated_ids" not in stage_names:
        notes.append(f"generated_ids not compared: {case['dtype']} cases keep no greedy ids")
    error = None
    if not any(r["status"] != "not provided" for r in rows) and not unknown and "error" not in meta and "generated_ids" not in results:
        error = f"{source}: no tensor named after a stage of {case_id}; expected some of: {', '.join(stage_names)}"
    first = next((r["stage"] for r in rows if r["status"] == "FAIL"), None)
    return {"results_file": case["results"], "pass": first is None and not unknown and error is None and "error" not in meta,
            "error": error, "port_error": meta.get("error"), "first_failure": first, "unknown": unknown, "notes": notes, "stages": rows}


def check(kit_dir: Path, results_dir: Path, case_filter: str = "") -> dict:
    kit = load_kit(kit_dir)
    if not results_dir.is_dir():
        raise Unusable(f"{results_dir}: not a directory; expected a folder holding <case>.safetensors files")
    parts = [p.strip() for p in case_filter.split(",")]
    selected = {cid: c for cid, c in kit["cases"].items() if any(p in cid for p in parts)}
    if not selected:
        raise Unusable(f"--case {case_filter!r}: matches no case of {kit_dir}")
    cases = {}
    for case_id, case in selected.items():
        path = results_dir / case["results"]
        if not path.is_file():
            cases[case_id] = {"results_file": case["results"], "pass": False, "first_failure": None,
                              "error": f"no results file: {path} is missing; every case of the kit needs one (use --case to check a subset on purpose)"}
            continue
        try:
            results, meta = read_safetensors(path)
        except (ValueError, KeyError, OSError) as e:
            cases[case_id] = {"results_file": case["results"], "pass": False, "first_failure": None,
                              "error": f"{path}: not a readable safetensors file ({e})"}
            continue
        cases[case_id] = check_case(kit_dir, kit, case_id, case, results, meta, str(path))
    names = {c["results"] for c in kit["cases"].values()}
    for path in sorted(results_dir.glob("*.safetensors")):
        if path.name not in names:
            cases[path.name] = {"results_file": path.name, "pass": False, "first_failure": None,
                                "error": f"{path}: names no case of the kit; results files are named by kit.json cases.<case>.results"}
    return {"kit": str(kit_dir), "results": str(results_dir), "passed": all(c["pass"] for c in cases.values()), "cases": cases}


def report(made: dict) -> str:
    lines = []
    for case_id, c in made["cases"].items():
        lines.append(f"== {case_id} ({c['results_file']}): {'pass' if c['pass'] else 'FAIL'}")
        if c.get("error"):
            lines.append(f"   {c['error']}")
        for r in c.get("stages", []):
            if r["status"] == "FAIL":
                lines.append(f"   {r['stage']}: FAIL: {'; '.join(r['failures'])}")
        lines += [f"   {n}" for n in c.get("notes", [])]
        if c.get("port_error"):
            lines.append(f"   port error: {c['port_error']}")
        if c.get("first_failure"):
            lines.append(f"   first diverging stage: {c['first_failure']} (glm-asr kit check also names the bug or the operation)")
    failed = [cid for cid, c in made["cases"].items() if not c["pass"]]
    lines.append(f"{len(made['cases']) - len(failed)} of {len(made['cases'])} cases pass" + (f"; failing: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--case", default="", help="only cases whose id contains this text (or one of several, comma-separated)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    try:
        made = check(args.kit, args.results, args.case)
    except Unusable as e:
        print(f"check_kit: {e}", file=sys.stderr)
        return 2
    print(report(made))
    if args.json:
        args.json.write_text(json.dumps(made, indent=1, default=str) + "\n")
    return 0 if made["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
