"""`--plot`: one PNG per case of each stage's error relative to its tolerance, on a log scale, with the
tolerance at 1 and the first failing stage marked. matplotlib is imported here only (`pip install glm-asr[plot]`)."""

from __future__ import annotations

import math
from pathlib import Path

from conformance.harness.metrics import Metrics
from conformance.harness.tolerances import Tolerance

FLOOR, CEILING = 1e-6, 1e6  # the plot's range of error / tolerance; 0 and inf are drawn at its edges


def ratio(m: Metrics, t: Tolerance) -> float:
    """The worst of a stage's metrics over its limit: above 1 fails."""
    if m.problem:
        return math.inf
    parts = [m.max_abs / t.max_abs if t.max_abs else 0.0, m.max_rel / t.max_rel if t.max_rel else 0.0,
             m.nmse / t.nmse if t.nmse else 0.0, (1 - m.min_cos) / (1 - t.min_cos) if t.min_cos is not None and t.min_cos < 1 else 0.0]
    return max(parts)


def _pyplot():  # noqa: ANN202
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install glm-asr[plot]") from e
    return plt


def plot_case(path: Path, title: str, stages: list[str], series: dict[str, list[float | None]], first_failure: str | None) -> Path:
    """`series`: label -> error / tolerance per stage (None: not compared)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(stages) + 2), 4.2))
    x = list(range(len(stages)))
    for (label, values), marker in zip(series.items(), "os^D"):
        xs = [i for i, v in enumerate(values) if v is not None]
        ys = [min(max(values[i], FLOOR), CEILING) for i in xs]
        ax.plot(xs, ys, marker=marker, linewidth=1.2, markersize=4, label=label)
    ax.axhline(1.0, color="tab:red", linestyle="--", linewidth=1, label="tolerance")
    if first_failure in stages:
        i = stages.index(first_failure)
        ax.axvline(i, color="tab:red", alpha=0.25, linewidth=6)
        ax.annotate(f"first failure: {first_failure}", (i, 1.0), xytext=(4, 12), textcoords="offset points", color="tab:red", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 2, CEILING * 2)
    ax.set_xticks(x, stages, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("error / tolerance (worst metric; 0 drawn at the floor)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _file(case: str) -> str:
    return case.replace("/", ".") + ".png"


def plot_kit(results: list, out: Path) -> list[Path]:
    """A PNG per checked case (conformance.kit_check.CaseResult): the port's error per stage."""
    paths = []
    for c in results:
        stages = [r.stage for r in c.rows]
        values: list[float | None] = []
        for r in c.rows:
            if r.status == "not provided":
                values.append(None)
            elif r.metrics is None:  # compared exactly
                values.append(CEILING if r.status == "FAIL" else FLOOR)
            else:
                values.append(ratio(r.metrics, r.tolerance))
        paths.append(plot_case(out / _file(c.case), f"{c.case}: port vs reference", stages, {"port": values}, c.first_failure))
    return paths


def plot_conformance(rows: list, out: Path) -> list[Path]:
    """A PNG per golden case (conformance.runner.Row): chained and isolated, stage by stage."""
    paths = []
    for case in dict.fromkeys(r.case for r in rows):
        mine = [r for r in rows if r.case == case]
        stages = list(dict.fromkeys(r.stage for r in mine))
        series = {mode: [next((ratio(r.metrics, r.tolerance) for r in mine if r.mode == mode and r.stage == s), None) for s in stages]
                  for mode in ("chained", "isolated")}
        first = next((r.stage for r in mine if r.mode == "chained" and not r.ok), None)
        first = first or next((r.stage for r in mine if not r.ok), None)
        paths.append(plot_case(out / _file(case), f"{case}: glm-asr vs reference", stages, series, first))
    return paths
