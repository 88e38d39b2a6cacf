"""The README and docs say what the code does: size, names, links, generated tables, examples that run."""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from tests.conftest import model_folder

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}


def test_the_readme_is_a_users_page_of_at_most_12_kb():
    assert len(README.encode()) <= 12 * 1024


def test_the_readme_opens_with_the_two_setup_commands():
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "pip install -e . && .venv/bin/glm-asr demo" in first_block
    assert "python3 -m tox -e py" in first_block
    assert "python3 -m tox -e py" in (ROOT / ".ci" / "run").read_text()


def test_every_glm_asr_name_the_readme_uses_exists():
    names = set(re.findall(r"\bglm_asr(?:\.[A-Za-z_]\w*)+", README))
    assert "glm_asr.load_model_and_processor" in names  # the pattern finds them
    for name in sorted(names):
        parts = name.split(".")
        obj = importlib.import_module(parts[0])
        for part in parts[1:]:
            assert hasattr(obj, part), f"README names {name}, but {part!r} is not there"
            obj = getattr(obj, part)


@pytest.mark.parametrize("doc", list(DOCS), ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file(doc):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", DOCS[doc]):
        assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"


def test_generated_tables_are_current():
    # docs/conformance.md prints the tolerance table; tools/doc_tables.py rewrites it from the code.
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "doc_tables.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_doc_check_sees_a_stale_number(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import doc_tables
    finally:
        sys.path.remove(str(ROOT / "tools"))
    text = (ROOT / "docs" / "conformance.md").read_text()
    stale = text.replace("| 5e-05 |", "| 2e-05 |", 1)
    assert stale != text
    assert doc_tables.render(stale, "tolerances", doc_tables.markdown_table()) == text


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readmes_python_examples_run_as_written(tmp_path, monkeypatch):
    # The examples name a model folder and a clip; both are made where they say, from the tiny golden model.
    folder = model_folder(tmp_path / "path" / "to" / "GLM-ASR-Nano-2512")
    scipy.io.wavfile.write(tmp_path / "speech.wav", 16000, np.random.default_rng(0).uniform(-0.1, 0.1, 16000).astype(np.float32))
    shutil.copy(tmp_path / "speech.wav", tmp_path / "clip.wav")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(README)
    assert len(blocks) >= 2
    for block in blocks:
        if "127.0.0.1:8000" in block:  # the service example: against a live server, on a port the kernel picked
            with served(folder) as port:
                block = block.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
                exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
        else:
            exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


@contextlib.contextmanager
def served(model_dir: Path) -> Iterator[int]:
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    from glm_asr import load_model_and_processor
    from glm_asr.serve.app import Service
    from tests.live_server import live_server

    with live_server(Service(*load_model_and_processor(model_dir))) as port:
        yield port


def test_the_readmes_installs_use_the_venv_it_creates():
    """The README creates .venv first: a bare `pip` after that installs into whatever pip is on the PATH."""
    bare = [line for line in README.splitlines() if re.search(r"(^|[\s#])pip install", line) and "-m pip install" not in line]
    assert not bare, bare
