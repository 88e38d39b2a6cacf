"""The folder listing is the architecture: which room may import which, no import circle, and a plain model.

The import graph is read from the source (every `import` and `from ... import`, lazy ones inside functions
included), so a rule broken anywhere fails here, not only on the paths some other test happens to run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from torch import nn

from glm_asr import GlmAsrModel
from glm_asr.model.attention import ScaledDotProductAttention
from glm_asr.model.decoder import LanguageModel
from glm_asr.runtime import dispatch
from glm_asr.transcription.presets import PRESETS, random_model

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("glm_asr", "glm_asr_cli", "conformance")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports (`from pkg import name` counts as pkg.name where that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            found |= submodules or {base}  # `from pkg import module` runs the module; pkg is its parent, already importing
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


GRAPH = import_graph()


def test_the_graph_was_read():
    assert "glm_asr.model.decoder" in GRAPH["glm_asr.model.glm_asr"]
    assert "glm_asr.runtime.cpu" in GRAPH["glm_asr.runtime.dispatch"]
    assert "conformance.harness.runner" in GRAPH["glm_asr_cli.main"]  # a lazy import inside a function


def test_the_model_package_never_imports_the_harness_or_the_command_line():
    upward = {(a, b) for a, deps in GRAPH.items() if a.startswith("glm_asr.") or a == "glm_asr"
              for b in deps if b.startswith(("conformance", "glm_asr_cli"))}
    assert not upward


def test_the_model_room_is_plain_pytorch():
    # A reader of the model never opens the runtime: model files import only each other (and torch, numpy).
    outside = {(a, b) for a, deps in GRAPH.items() if a.startswith("glm_asr.model") for b in deps if not b.startswith("glm_asr.model")}
    assert not outside
    assert not {b for b in GRAPH["glm_asr.transcription.generate"] if b.startswith("glm_asr.runtime")}  # nor the greedy loop


def test_no_import_circle():
    graph = GRAPH
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_a_circle_would_be_found(monkeypatch):
    # The check above can fail: a graph with a circle in it is reported.
    monkeypatch.setitem(GRAPH, "glm_asr.runtime.cpu", GRAPH["glm_asr.runtime.cpu"] | {"glm_asr.runtime.dispatch"})
    with pytest.raises(pytest.fail.Exception, match="glm_asr.runtime.cpu -> glm_asr.runtime.dispatch -> glm_asr.runtime.cpu"):
        test_no_import_circle()


def plain_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


def test_a_built_model_is_plain_and_loading_swaps_in_the_runtime(tmp_path):
    config = PRESETS["small"]
    plain = plain_types(GlmAsrModel(config))
    assert {nn.Linear, nn.Conv1d, ScaledDotProductAttention, LanguageModel} <= plain
    assert not {t for t in plain if t.__module__.startswith("glm_asr.runtime")}
    prepared = random_model("small")
    swapped = plain_types(prepared)
    assert {dispatch.Linear, dispatch.Conv1d, dispatch.Attention, dispatch.DecodeStepsLanguageModel} <= swapped
    assert not {nn.Linear, nn.Conv1d, ScaledDotProductAttention, LanguageModel} & swapped
    # the swap keeps every parameter and the tied head
    assert prepared.language_model.lm_head.weight is prepared.language_model.model.embed_tokens.weight
    assert list(prepared.state_dict()) == list(GlmAsrModel(config).state_dict())


def test_the_single_row_kernel_is_chosen_at_load_not_at_the_first_token(monkeypatch):
    # Loading measures (once per machine, cached); the greedy loop never does.
    import torch

    from glm_asr.runtime import cpu
    from glm_asr.transcription.generate import greedy_generate

    calls = []
    monkeypatch.setattr(cpu, "calibrate", lambda refresh=False: calls.append("measured") or ("torch", {"torch": 1.0}, "stub"))
    monkeypatch.setattr(cpu, "_choices", None)
    model = random_model("small")
    assert calls == ["measured"]
    ids = torch.tensor([[1, 2, 3]])
    greedy_generate(model, ids, torch.ones_like(ids), None, None, max_new_tokens=3, eos_token_id=(0,))
    assert calls == ["measured"]


def test_generation_goes_through_the_models_own_decode(monkeypatch):
    import torch

    from glm_asr.transcription.generate import greedy_generate

    model = random_model("small")
    calls = []
    real = type(model).decode
    monkeypatch.setattr(type(model), "decode", lambda self, *a, **k: calls.append(k.get("last_only")) or real(self, *a, **k))
    ids = torch.tensor([[1, 2, 3]])
    greedy_generate(model, ids, torch.ones_like(ids), None, None, max_new_tokens=4, eos_token_id=(0,))
    assert calls == [True] * 4  # the prefill and three steps, each computing only the last position's logits


def test_the_library_path_names_no_backend():
    """transcription/ is below the ONNX backend (which uses its greedy loop's semantics): the faces load a backend
    and pass it in, so no arrow runs from transcription up to glm_asr.onnx."""
    assert not {(a, b) for a, deps in GRAPH.items() if a.startswith("glm_asr.transcription") for b in deps if b.startswith("glm_asr.onnx")}


def test_the_batching_engine_sits_below_the_corpus_path_and_the_server():
    # Both faces batch with the engine; the engine knows neither, and the corpus path no longer holds it.
    engine = {a for a in GRAPH if a.startswith("glm_asr.engine")}
    assert {"glm_asr.engine.units", "glm_asr.engine.batch", "glm_asr.engine.running"} <= engine
    upward = {(a, b) for a in engine for b in GRAPH[a] if b.startswith(("glm_asr.corpus", "glm_asr.serve"))}
    assert not upward
    assert "glm_asr.engine.running" in GRAPH["glm_asr.serve.scheduler"]
    assert "glm_asr.engine.batch" in GRAPH["glm_asr.corpus.batching"]
    assert not {b for b in GRAPH["glm_asr.serve.scheduler"] | GRAPH["glm_asr.serve.segments"] if b == "glm_asr.corpus.batching"}
