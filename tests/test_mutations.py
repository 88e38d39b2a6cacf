"""The mutation catalogue (conformance/harness/mutations.py) still applies to the code it mutates."""

from pathlib import Path

import pytest

from conformance.harness.mutations import MUTATIONS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_mutation_text_occurs_exactly_once(name):
    mutation = MUTATIONS[name]
    source = (ROOT / mutation.path).read_text()
    assert source.count(mutation.old) == 1, f"{name}: its text is in {mutation.path} {source.count(mutation.old)} times, not once"
    assert mutation.new != mutation.old
