"""The golden cases can tell a broken port from a working one (issue 23): on each tiny model the reference's greedy
ids follow the audio (no row is one token repeated, no two rows alike), and a case ends in eos before the
token limit. Reads the stored goldens only; that every catalogue bug fails both models is tests/test_kit.py's."""

import pytest
import torch

from conformance.harness import golden
from conformance.harness.cases import MODELS

MANIFEST = golden.load_manifest()
LIMIT = MANIFEST["generate"]["max_new_tokens"]


def fp32_cases(model: str) -> dict[str, dict[str, torch.Tensor]]:
    return {case_id: golden.load_case(golden.ROOT, entry) for case_id, entry in MANIFEST["cases"].items()
            if entry["model"] == model and entry["dtype"] == "fp32"}


def rows(model: str) -> dict[str, list[int]]:
    """'case row r' -> the reference's greedy ids of that batch row."""
    return {f"{case_id} row {r}": ids for case_id, stored in fp32_cases(model).items()
            for r, ids in enumerate(stored["generated_ids"].tolist())}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_no_greedy_row_is_one_token_repeated(model):
    # A tied LM head over embeddings as large as what the layers write echoes the last prompt token: ids that a
    # port with a broken encoder matches too (conformance/harness/cases.py says how the scales avoid it).
    made = rows(model)
    assert len(made) >= len(fp32_cases(model)) > 1
    for name, ids in made.items():
        assert len(ids) == LIMIT and len(set(ids)) > 1, f"{name}: {ids} is one token repeated"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_greedy_ids_differ_between_audio_inputs(model):
    seen: dict[tuple[int, ...], str] = {}
    for name, ids in rows(model).items():
        assert tuple(ids) not in seen, f"{name} and {seen[tuple(ids)]}: the same greedy ids for different audio"
        seen[tuple(ids)] = name


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_case_ends_in_eos_before_the_token_limit_and_its_row_is_padded(model):
    """The batch case's early-stop run (tools/regenerate_golden.py early_stop_id; the kit's `batch_eos` cases):
    row 1 says an eos id before the limit and is padded with eos[0] while row 0 goes on."""
    (stored,) = [s for s in fp32_cases(model).values() if "early_stop.generated_ids" in s]
    eos, ids = stored["early_stop.eos_token_id"].tolist(), stored["early_stop.generated_ids"].tolist()
    ends = [next((i for i, t in enumerate(row) if t in eos), None) for row in ids]
    assert ends[1] is not None and ends[1] < LIMIT - 1, f"row 1 {ids[1]} does not end in eos {eos} before {LIMIT} tokens"
    assert ends[0] is None or ends[0] > ends[1], f"row 0 {ids[0]} ends no later than row 1 {ids[1]}: nothing is padded"
    assert ids[1][ends[1] + 1:] == [eos[0]] * (len(ids[1]) - ends[1] - 1), f"row 1 {ids[1]} is not padded with {eos[0]}"
    assert ids[0] == stored["generated_ids"][0, : len(ids[0])].tolist()  # row 0: the same run until it stops
