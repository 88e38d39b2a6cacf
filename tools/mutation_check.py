"""Proves the default suite can fail: applies one deliberate bug at a time to a copy of the checkout and runs
the suite there, expecting it to go red. The bugs are the traps other ports fell into.

    python tools/mutation_check.py            # all mutations
    python tools/mutation_check.py k_bias     # one of them

Exit 0 when every mutation is caught, 1 when one slips through. Nothing in this checkout is modified.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from any directory

from conformance.harness.mutations import MUTATIONS  # noqa: E402


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.split()


def run_mutation(name: str, pytest_args: list[str]) -> tuple[bool, str]:
    """(caught, summary): the suite's verdict on a copy of the checkout with one mutation applied."""
    mutation = MUTATIONS[name]
    path, old, new = mutation.path, mutation.old, mutation.new
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        for rel in tracked_files():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, copy / rel)
        source = (copy / path).read_text()
        if source.count(old) != 1:
            raise SystemExit(f"mutation {name}: the text to replace is not in {path} exactly once; update MUTATIONS")
        (copy / path).write_text(source.replace(old, new))
        probe = "import glm_asr, pathlib, sys; sys.exit(0 if pathlib.Path(glm_asr.__file__).is_relative_to(pathlib.Path.cwd()) else 1)"
        if subprocess.run([sys.executable, "-c", probe], cwd=copy).returncode:
            raise SystemExit("the copy does not import its own glm_asr; run from an editable install or a plain checkout")
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                                cwd=copy, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    failed = [ln.split(" - ")[0].removeprefix("FAILED ").removeprefix("ERROR ") for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    summary = lines[-1] if lines else result.stderr.strip().splitlines()[-1]
    shown = ", ".join(failed[:3]) + (f" (+{len(failed) - 3} more)" if len(failed) > 3 else "")
    return result.returncode != 0, f"{summary}; e.g. {shown}" if failed else summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", choices=[[], *MUTATIONS], help="mutations to try (default: all)")
    # The ONNX and benchmark tests re-export and re-time models: minutes per mutation for checks the
    # conformance, generation and loader tests already make.
    parser.add_argument("--pytest-args", default="-n 2 tests --ignore=tests/test_onnx.py --ignore=tests/test_bench.py",
                        help="what to run in the copy (default: %(default)s)")
    args = parser.parse_args()
    missed = 0
    for name in args.names or MUTATIONS:
        caught, summary = run_mutation(name, args.pytest_args.split())
        missed += not caught
        print(f"{name:28} {'caught' if caught else 'MISSED'}: {summary}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
