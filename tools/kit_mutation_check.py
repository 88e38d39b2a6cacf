"""Proves the kit names the bugs it knows: applies each text edit of conformance/harness/mutations.py to a copy of the
checkout, runs tools/ports/ours_port.py there (the mutated model as a port) on the case of EACH tiny model that
conformance/kit/bugs.py names (`shown_on`), and checks the results with this checkout's (unmutated) kit checker.
On both models, each bug must fail the kit at the stage bugs.py says it first shows, with a diagnosis naming it and, from the port's sub-stage tensors, the operation inside that stage ("its
input is right, its output is wrong"); a bug the cases cannot see must pass, as bugs.py says. NEW_BUGS below are
one-line bugs outside the catalogue: no diagnosis names them, the operation line must. Each failing case is also
checked with its sub-stage tensors removed, as from a port that gives stages only, and that line printed.

    python tools/kit_mutation_check.py [NAMES...] [--kit DIR]
    python tools/kit_mutation_check.py NAMES... --kit DIR --full   # on the full-size speech_like case instead

At full size (a kit exported with --full) the kit keeps too little of each stage to name a bug: the bug must
fail the case at its stage, and the diagnosis say where the error lies and point to the tiny cases.

Exit 0 when every outcome is as expected, 1 otherwise. Nothing in this checkout is modified.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from safetensors.torch import load_file, save_file  # noqa: E402

from conformance.kit import export as kit  # noqa: E402
from conformance.kit import check as kit_check
from conformance.harness.cases import MODELS  # noqa: E402
from conformance.kit.bugs import BUGS, shown_on  # noqa: E402
from conformance.harness.mutations import MUTATIONS, Mutation  # noqa: E402
from conformance.kit.ops import sub_stage_names  # noqa: E402

DEFAULT_CASE = "speech_like/fp32"  # of each tiny model, for k_bias, which has no entry in BUGS
FULL_CASE = "full/speech_like/fp32"
# One-line bugs outside the catalogue (no entry in conformance/kit/bugs.py, so no diagnosis can name them): the
# kit must still name the operation, in these words, from the sub-stages. name -> (edit, case, stage, operation)
NEW_BUGS: dict[str, tuple[Mutation, str, str, str]] = {
    "projector_tanh_gelu": (Mutation("glm_asr/model/projector.py", "return self.linear_2(F.gelu(self.linear_1(merged)))",
                                     'return self.linear_2(F.gelu(self.linear_1(merged), approximate="tanh"))', "tanh GELU in the projector"),
                            "tiny_a/speech_like/fp32", "projector", "the projector's activation"),
    "encoder_q_bias_dropped": (Mutation("glm_asr/model/encoder.py", "q = self.q_proj(x).view(",
                                        "q = F.linear(x, self.q_proj.weight).view(", "the encoder's q_proj bias left out"),
                               "tiny_b/speech_like/fp32", "encoder.layers.0", "the query projection (q_proj) computed with no bias"),  # q_proj not called: no sub-stage
    "encoder_causal_mask": (Mutation("glm_asr/model/encoder.py", "out = self.attention(q, k, v)",
                                     "out = F.scaled_dot_product_attention(q, k, v, is_causal=True)", "a causal mask in the encoder"),
                            "tiny_b/speech_like/fp32", "encoder.layers.0", "the attention itself"),
    "decoder_residual_from_norm": (Mutation("glm_asr/model/decoder.py", "h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, offset)",
                                            "n = self.input_layernorm(x)\n        h = n + self.self_attn(n, cos, sin, mask, cache, offset)",
                                            "the normalised input as the attention's residual"),
                                   "tiny_a/speech_like/fp32", "decoder.layers.0", "the attention's residual add"),
    "decoder_mlp_scaled": (Mutation("glm_asr/model/decoder.py", "return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))",
                                    "return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x) * 1.01)",
                                    "the decoder MLP's gated product scaled by 1.01: no variant the kit knows"),
                           "tiny_a/speech_like/fp32", "decoder.layers.0", "the MLP's gated activation (SiLU(gate) * up): its input is right"),
}


def expected(name: str) -> tuple[str | None, str | None]:
    """(first failing stage, bug named) the kit must report; (None, None) for a bug the cases cannot see."""
    if name == "k_bias":
        return "load", None  # the checkpoint has no k bias: the mutated model refuses to load it
    bug = BUGS[name]
    if bug.visible.startswith("none"):
        return None, None
    stage = bug.stage + "0" if bug.stage.endswith(".") else bug.stage
    return stage, name


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)


def case_ids(name: str, full: bool) -> list[str]:
    """The cases a bug is run on: the catalogue's case of EACH tiny model, so no bug can hide in one of them."""
    if full:
        return [FULL_CASE]
    if name in NEW_BUGS:
        return [NEW_BUGS[name][1]]
    return shown_on(BUGS[name]) if name in BUGS else [f"{model}/{DEFAULT_CASE}" for model in MODELS]


def run_port(copy: Path, kit_dir: Path, results: Path, cases: list[str], front: list[str], env: dict) -> subprocess.CompletedProcess:
    """tools/ports/ours_port.py of the mutated copy on `cases`: in one run where one --case text selects them all."""
    in_kit = kit.load_kit(kit_dir, verify=False)["cases"]
    common = "/" + cases[0].split("/", 1)[1]
    selections = [common] if sorted(c for c in in_kit if common in c) == sorted(cases) else cases
    for selection in selections:
        port = subprocess.run([sys.executable, str(copy / "tools/ports/ours_port.py"), str(kit_dir), str(results), "--case", selection, *front],
                              cwd=copy, capture_output=True, text=True, env=env)
        if port.returncode:
            break
    return port


def run(name: str, kit_dir: Path, work: Path, full: bool = False) -> list[tuple[str, bool, str]]:
    """(case, as expected, what the kit said) for each case the mutated port runs."""
    m = MUTATIONS[name] if name in MUTATIONS else NEW_BUGS[name][0]
    cases = case_ids(name, full)
    copy = work / name / "repo"
    copy_checkout(copy)
    source = (copy / m.path).read_text()
    if source.count(m.old) != 1:
        return [(case_id, False, f"the text to replace is not in {m.path} exactly once") for case_id in cases]
    (copy / m.path).write_text(source.replace(m.old, m.new))
    results = work / name / "results"
    front = ["--own-front-end"] if name in BUGS and BUGS[name].front_end else []
    env = {**os.environ, "PYTHONPATH": str(copy)}
    probe = "import glm_asr, pathlib, sys; sys.exit(0 if pathlib.Path(glm_asr.__file__).is_relative_to(pathlib.Path.cwd()) else 1)"
    if subprocess.run([sys.executable, "-c", probe], cwd=copy, env=env).returncode:
        raise SystemExit("the copy does not import its own glm_asr; run from an editable install or a plain checkout")
    port = run_port(copy, kit_dir, results, cases, front, env)
    want_stage = expected(name)[0] if name not in NEW_BUGS else NEW_BUGS[name][2]
    if port.returncode:
        got = "port failed: " + (port.stderr.strip().splitlines() or ["?"])[-1][:120]
        return [(case_id, want_stage == "load", got) for case_id in cases]
    return [(case_id, *verdict(name, kit_dir, work / name, results, case_id, full)) for case_id in cases]


def verdict(name: str, kit_dir: Path, work: Path, results: Path, case_id: str, full: bool) -> tuple[bool, str]:
    want_stage, want_bug = expected(name) if name not in NEW_BUGS else (NEW_BUGS[name][2], None)
    (result,) = kit_check.check(kit_dir, results, case_id)
    got = f"{result.first_failure or 'pass'}: {result.diagnosis or ''}\n    operation (with the sub-stages the port gave): {result.operation}"
    if result.first_failure and not full and result.first_failure not in ("input_ids", "input_features_mask", "mel"):
        # The same port as one that gives its stages only: the recomputation from its own stage inputs.
        bare = work / ("stages-only-" + case_id.replace("/", "."))
        bare.mkdir()
        subs = set(sub_stage_names(kit_check.case_config(kit_dir, kit.load_kit(kit_dir, verify=False)["cases"][case_id])))
        path = results / kit.case_dir(case_id + ".safetensors")
        save_file({k: v for k, v in load_file(path).items() if k not in subs}, bare / path.name)
        (stages_only,) = kit_check.check(kit_dir, bare, case_id)
        got += f"\n    operation, from the stages only: {stages_only.operation}"
    if name in NEW_BUGS:
        return result.first_failure == want_stage and NEW_BUGS[name][3] in (result.operation or ""), got
    if want_stage is None:
        return result.first_failure is None, got
    if full:
        return result.first_failure == want_stage and "run them for a diagnosis" in (result.diagnosis or ""), got
    named = want_bug is not None and f"`{want_bug}`" in (result.diagnosis or "")
    op_named = BUGS[name].front_end or "its input is right, its output is wrong" in (result.operation or "")
    return result.first_failure == want_stage and named and op_named, got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", choices=[[], *MUTATIONS, *NEW_BUGS])
    parser.add_argument("--kit", type=Path, default=None, help="an exported kit (default: export one to a temporary folder)")
    parser.add_argument("--full", action="store_true", help=f"run each on {FULL_CASE} of a kit exported with --full")
    args = parser.parse_args()
    if args.full and (args.kit is None or not args.names):
        parser.error("--full needs --kit (a kit exported with --full) and the names of the mutations to run")
    wrong = 0
    with tempfile.TemporaryDirectory() as tmp:
        kit_dir = args.kit or kit.export(Path(tmp) / "kit") and Path(tmp) / "kit"
        for name in args.names or [*MUTATIONS, *([] if args.full else NEW_BUGS)]:
            stage, bug = expected(name) if name not in NEW_BUGS else (NEW_BUGS[name][2], None)
            bug = None if args.full else bug
            want = "pass (invisible: " + BUGS[name].visible + ")" if stage is None else f"{stage}" + (f", `{bug}`" if bug else "")
            want += f", operation: {NEW_BUGS[name][3]} (not in the catalogue)" if name in NEW_BUGS else ""
            for case_id, ok, got in run(name, kit_dir, Path(tmp), args.full):
                wrong += not ok
                print(f"{name:26} {case_id:30} {'ok   ' if ok else 'WRONG'} expected {want}; got {got}", flush=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
