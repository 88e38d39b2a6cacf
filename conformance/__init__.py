"""The conformance harness: golden cases, the reference runner, comparison metrics and the tolerance table."""
