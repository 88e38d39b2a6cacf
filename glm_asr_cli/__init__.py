"""The `glm-asr` command line: the face on top of both the model package (`glm_asr`) and the conformance
harness and kit (`conformance`). Neither of those imports it."""

from glm_asr_cli.main import main

__all__ = ["main"]
