"""Checks a port's results against a kit: every provided stage with the suite's metrics and tolerances, the
first diverging stage of each case in pipeline order, and a diagnosis of it (conformance/kit/diagnose.py)."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from glm_asr.model.config import GlmAsrConfig

from conformance.harness.metrics import Metrics, failures, measure
from conformance.kit.ops import sub_stage_names
from conformance.kit.export import MODE, KitError, KitStage, checkpoint_dir, kit_stages, load_kit
from conformance.harness.stages import kept_length, select, take_rows
from conformance.harness.tolerances import Tolerance, tolerance

OK, FAIL, MISSING = "ok", "FAIL", "not provided"


@dataclass(frozen=True)
class StageResult:
    stage: str
    status: str  # OK, FAIL or MISSING
    shape: tuple[int, ...]  # the expected tensor's
    metrics: Metrics | None = None
    tolerance: Tolerance | None = None  # None: compared exactly
    failures: tuple[str, ...] = ()


@dataclass
class CaseResult:
    case: str
    results_file: str
    rows: list[StageResult]
    unknown: list[str] = field(default_factory=list)  # tensors that name no stage or sub-stage: the case fails
    diagnosis: str | None = None
    # Front-end stages that fail after the first: the prompt builder and the feature extractor's mask and
    # features are separate computations, so each failure there is its own bug, diagnosed on its own.
    also: dict[str, str] = field(default_factory=dict)
    port_error: str | None = None  # the port's own word that it stopped partway (the file's metadata "error")
    error: str | None = None  # the results file is missing, unreadable or names no case: nothing else compared
    operation: str | None = None  # the first wrong operation inside the first failing stage (localise.py)
    notes: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> str | None:
        return next((r.stage for r in self.rows if r.status == FAIL), None)

    @property
    def passed(self) -> bool:
        return self.first_failure is None and self.port_error is None and self.error is None and not self.unknown


def case_config(kit_dir: Path, case: dict) -> GlmAsrConfig:
    path = checkpoint_dir(kit_dir, case) / "config.json"
    return GlmAsrConfig.from_dict(json.loads(path.read_text()), str(path))


def _exact(name: str, got: torch.Tensor, want: torch.Tensor) -> StageResult:
    if tuple(got.shape) != tuple(want.shape):
        return StageResult(name, FAIL, tuple(want.shape), failures=(f"shape {tuple(got.shape)} != reference {tuple(want.shape)}",))
    if got.is_floating_point() and not torch.equal(got, got.round()):
        return StageResult(name, FAIL, tuple(want.shape), failures=("not integers",))
    wrong = got.long() != want.long()
    if not wrong.any():
        return StageResult(name, OK, tuple(want.shape))
    at = tuple(int(i) for i in wrong.nonzero()[0])
    return StageResult(name, FAIL, tuple(want.shape), failures=(
        f"{int(wrong.sum())} of {wrong.numel()} differ, first at {at}: {int(got[at])} where the reference has {int(want[at])}",))


def prepare(stage: KitStage, tensor: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A port's stage tensor as the kit stores the reference's: fp32, cropped, padding rows zeroed."""
    s, tensor = stage.stage, tensor.to(torch.float32)
    if s.padded_tokens:
        if tensor.ndim != 3 or tensor.shape[:2] != inputs["attention_mask"].shape:
            return tensor  # another prompt length: `measure` reports the shape
        tensor = torch.where(inputs["attention_mask"][..., None].bool(), tensor, 0.0)  # whatever a port left there
    if s.frame_axis is not None and tensor.ndim > s.frame_axis and tensor.shape[s.frame_axis] < kept_length(s, inputs["input_features_mask"]):
        return tensor  # too short: `measure` reports the shape
    return select(s, tensor, inputs)


def _shape_problem(entry: dict, s: KitStage, got: torch.Tensor, inputs: dict[str, torch.Tensor]) -> str | None:
    """The port's own shape, quoted when it is not the uncropped shape the kit asks for (kit.json full_shape);
    a frame axis longer than the kept frames is accepted (the checker crops it), a shorter one is not."""
    full = entry.get("full_shape", entry["shape"])
    shape = tuple(got.shape)
    if len(shape) == len(full) and all(g == f or (i == s.stage.frame_axis and g >= kept_length(s.stage, inputs["input_features_mask"]))
                                       for i, (g, f) in enumerate(zip(shape, full))):
        return None
    return f"shape {shape} (the port's) != {tuple(full)} expected (kit.json full_shape; see the layout in the README)"


def check_case(kit_dir: Path, case_id: str, case: dict, results: dict[str, torch.Tensor], source: str = "",
               port_error: str | None = None) -> CaseResult:
    """One case; `source` names the results file in messages; `port_error` is what the port said went wrong."""
    inputs = load_file(kit_dir / case["dir"] / "inputs.safetensors")
    expected = load_file(kit_dir / case["dir"] / "expected.safetensors")
    config = case_config(kit_dir, case)
    order = [s for s in kit_stages(config) if s.name in expected or s.name in inputs]
    entries = {e["name"]: e for e in case["stages"]}
    rows, prepared = [], {}
    for s in order:
        want = expected.get(s.name, inputs.get(s.name))
        if s.name not in results:
            rows.append(StageResult(s.name, MISSING, tuple(want.shape)))
            continue
        got = results[s.name]
        if s.exact:
            rows.append(_exact(s.name, got, want))
            continue
        tol = tolerance(s.name, case["dtype"], MODE)
        problem = _shape_problem(entries[s.name], s, got, inputs)
        if problem is not None:
            rows.append(StageResult(s.name, FAIL, tuple(entries[s.name]["shape"]), tolerance=tol, failures=(problem,)))
            continue
        prepared[s.name] = prepare(s, got, inputs)
        if "rows" in entries[s.name]:  # a full-size case: the reference's tensor is kept at these entries only
            prepared[s.name] = take_rows(s.stage, prepared[s.name], entries[s.name]["rows"]["index"])
        metrics = measure(prepared[s.name], want, s.stage.feature_axis)
        problems = tuple(failures(metrics, tol))
        rows.append(StageResult(s.name, FAIL if problems else OK, tuple(want.shape), metrics, tol, problems))
    known = {s.name for s in kit_stages(config)} | set(sub_stage_names(config))
    unknown = sorted(set(results) - known)
    result = CaseResult(case_id, case["results"], rows, unknown, port_error=port_error)
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        result.notes.append(f"unknown tensor {name!r}: not a stage or sub-stage name of {case_id}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not any(r.status != MISSING for r in rows) and not unknown and port_error is None and "generated_ids" not in results:
        result.error = (f"{source or case['results']}: no tensor named after a stage of {case_id} (found: {', '.join(sorted(results)) or 'none'}); "
                        f"expected some of: {', '.join(s.name for s in order)}")
    if "generated_ids" in results and "generated_ids" not in expected:
        result.notes.append(f"generated_ids not compared: {case['dtype']} cases keep no greedy ids (a {case['dtype']} argmax "
                            "may flip on near-ties between implementations that both meet the logits tolerance)")
    given = [r.stage for r in rows if r.status != MISSING]
    ids = expected.get("generated_ids")
    if given == ["generated_ids"] and ids is not None and all(len(set(row.tolist())) == 1 for row in ids):
        result.notes.append("only generated_ids compared, and the reference's are one token repeated in this case: they prove "
                            "little (a broken encoder can give the same); dump logits or the stages before them")
    first = result.first_failure
    if first is not None:
        from conformance.kit.diagnose import FRONT_END, diagnose, diagnose_sampled, locate  # imports the model: only when something failed

        def why(name: str) -> str:
            stage, port = next(s for s in order if s.name == name), prepared.get(name, results[name])
            return (diagnose_sampled(stage, port, expected, entries[name]) if case.get("sampled")
                    else diagnose(kit_dir, case, config, stage, port, expected, inputs))

        result.diagnosis = why(first)
        result.also = {r.stage: why(r.stage) for r in rows if r.status == FAIL and r.stage in FRONT_END and r.stage != first}
        if not case.get("sampled") and first not in ("input_ids", "input_features_mask", "generated_ids"):
            try:
                result.operation = locate(kit_dir, case, next(s for s in order if s.name == first), results, expected, inputs)
            except (RuntimeError, ValueError, KeyError, IndexError) as e:  # a port's odd tensor must not cost the verdict
                result.operation = f"not localised: the recomputation stopped ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
    return result


def load_results(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """A port's tensors, and the "error" entry of the file's metadata if the port says it stopped partway."""
    try:
        with safe_open(path, "pt") as f:
            error = (f.metadata() or {}).get("error")
        return load_file(path), error
    except (SafetensorError, OSError, ValueError) as e:
        raise KitError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]}); write one tensor per stage with safetensors") from e


def check(kit_dir: Path, results_dir: Path, case_filter: str = "") -> list[CaseResult]:
    """Every case of the kit (with `case_filter`, a comma-separated list, those whose id contains one of its
    parts: a subset chosen explicitly): a case without its results
    file, or whose file cannot be read, fails with the reason, and so does a .safetensors file in `results_dir`
    that names no case of the kit; every other case is still checked."""
    kit = load_kit(kit_dir)
    if not results_dir.is_dir():
        raise KitError(f"{results_dir}: not a directory; expected a folder holding <case>.safetensors files")
    parts = [p.strip() for p in case_filter.split(",")]
    selected = {case_id: case for case_id, case in kit["cases"].items() if any(p in case_id for p in parts)}
    if not selected:
        raise KitError(f"--case {case_filter!r}: matches no case of {kit_dir}; case ids look like {next(iter(kit['cases']))}")
    out = []
    for case_id, case in selected.items():
        path = results_dir / case["results"]
        if not path.is_file():
            out.append(CaseResult(case_id, case["results"], [], error=(
                f"no results file: {path} is missing; every case of the kit needs one (use --case to check a subset on purpose)")))
            continue
        try:
            tensors, error = load_results(path)
        except KitError as e:
            out.append(CaseResult(case_id, case["results"], [], error=str(e)))
            continue
        out.append(check_case(kit_dir, case_id, case, tensors, str(path), error))
    names = {case["results"] for case in kit["cases"].values()}
    for path in sorted(results_dir.glob("*.safetensors")):
        if path.name not in names:
            close = difflib.get_close_matches(path.name, sorted(names), n=1, cutoff=0.6)
            out.append(CaseResult(path.name, path.name, [], error=(
                f"{path}: names no case of the kit" + (f" (did you mean {close[0]}?)" if close else "") +
                "; results files are named by kit.json cases.<case>.results")))
    return out


def _limit(t: Tolerance | None) -> str:
    if t is None:
        return "exact"
    parts = [f"abs<={t.max_abs:g}" if t.max_abs is not None else "", f"rel<={t.max_rel:g}" if t.max_rel is not None else "",
             f"nmse<={t.nmse:g}" if t.nmse is not None else "", f"1-cos<={1 - t.min_cos:.0e}" if t.min_cos is not None else ""]
    return " ".join(p for p in parts if p)


def format_report(results: list[CaseResult]) -> str:
    header = f"{'stage':20} {'shape':16} {'max abs':>8} {'max rel':>8} {'NMSE':>8} {'1-min cos':>9}  {'tolerance':38} verdict"
    lines = []
    for c in results:
        lines.append(f"== {c.case} ({c.results_file})")
        if c.error:
            lines += [f"fail: {c.error}", ""]
            continue
        lines += [header, "-" * len(header)]
        for r in c.rows:
            shape = "x".join(map(str, r.shape))
            if r.metrics is None:
                nums = f"{'':8} {'':8} {'':8} {'':9}"
            else:
                m = r.metrics
                nums = f"{m.max_abs:8.1e} {m.max_rel:8.1e} {m.nmse:8.1e} {1 - m.min_cos:9.1e}"
            verdict = r.status if r.status != FAIL else "FAIL: " + "; ".join(r.failures)
            lines.append(f"{r.stage:20} {shape:16} {nums}  {_limit(r.tolerance) if r.status != MISSING else '':38} {verdict}")
        lines += c.notes
        provided = sum(r.status != MISSING for r in c.rows)
        if c.port_error:
            lines.append(f"port error: {c.port_error}")
        if c.first_failure:
            lines.append(f"first diverging stage: {c.first_failure}")
            if c.diagnosis:
                lines.append(f"diagnosis: {c.diagnosis}")
            if c.operation:
                lines.append(f"operation: {c.operation}")
            lines += [f"also failing, {stage}: {text}" for stage, text in c.also.items()]
        elif c.port_error:
            lines.append(f"fail: the port stopped; {provided} of {len(c.rows)} stages provided, those within tolerance")
        elif c.unknown:
            lines.append(f"fail: {len(c.unknown)} tensor name(s) the kit does not know (above); rename them to the README's stage "
                         "and sub-stage names, or leave them out")
        else:
            lines.append(f"pass: {provided} of {len(c.rows)} stages provided, all within tolerance")
        lines.append("")
    failed = [c.case for c in results if not c.passed]
    lines.append(f"{len(results) - len(failed)} of {len(results)} cases pass" + (f"; failing: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def report_json(kit_dir: Path, results_dir: Path, results: list[CaseResult]) -> dict:
    def row(r: StageResult) -> dict:
        d = {"stage": r.stage, "status": r.status, "shape": list(r.shape), "failures": list(r.failures)}
        if r.metrics is not None:
            d["metrics"] = {k: _finite(v) if isinstance(v, float) else v for k, v in asdict(r.metrics).items()}
        if r.tolerance is not None:
            d["tolerance"] = r.tolerance.as_dict()
        elif r.status != MISSING:
            d["tolerance"] = "exact"
        return d

    return {
        "kit": str(kit_dir), "results": str(results_dir),
        "passed": all(c.passed for c in results),
        "cases": {c.case: {"results_file": c.results_file, "pass": c.passed, "error": c.error, "port_error": c.port_error,
                           "first_failure": c.first_failure, "also": c.also, "diagnosis": c.diagnosis, "operation": c.operation,
                           "unknown": c.unknown, "notes": c.notes, "stages": [row(r) for r in c.rows]} for c in results},
    }
