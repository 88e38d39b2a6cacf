"""Corpus transcription: batched across inputs equals one at a time, inputs from directories and manifests,
results records, resume, subtitle files, stop-on-repeat, progress."""

import importlib.util
import io
import json
from pathlib import Path

import pytest
import scipy.io.wavfile

from glm_asr import load_model_and_processor, transcribe_detailed
from glm_asr.corpus.batching import transcribe_items
from glm_asr_cli import main
from glm_asr.corpus.inputs import Item, expand_inputs
from glm_asr_cli.corpus import Progress
from glm_asr.transcription.presets import demo_clip
from glm_asr.transcription.repetition import RepeatStop, ends_in_cycle
from glm_asr.corpus.subtitles import render
from glm_asr.transcription.transcribe import Segment
from tests.conftest import model_folder

SECONDS = [2.0, 5.5, 3.0, 9.0, 31.0]  # 31 s: two windows in one prompt, or two units when chunked


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """tiny_b's golden weights and tokenizer as a checkpoint folder: the fastest model with varied transcripts."""
    return model_folder(tmp_path_factory.mktemp("tiny_b"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):  # noqa: ANN001, ANN201
    return load_model_and_processor(tiny_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for i, seconds in enumerate(SECONDS):
        paths.append(folder / f"{i}.wav")
        scipy.io.wavfile.write(paths[-1], 16000, demo_clip(seconds, seed=i))
    return paths


@pytest.mark.parametrize("chunked", [None, True])
def test_batched_across_files_equals_one_at_a_time(tiny, corpus, chunked):
    model, processor = tiny
    items = [Item(p, str(p)) for p in corpus]
    batched = list(transcribe_items(model, processor, items, max_new_tokens=6, chunked=chunked, batch_size=4, pool_batches=1))
    alone = list(transcribe_items(model, processor, items, max_new_tokens=6, chunked=chunked, batch_size=1))
    assert [r.item for r in batched] == items  # in input order, though batched by length
    assert [(r.text, r.segments, r.duration) for r in batched] == [(r.text, r.segments, r.duration) for r in alone]
    assert len({r.text for r in batched}) > 1  # the clips' transcripts differ, so a mix-up would show
    (reference,) = transcribe_detailed(model, processor, corpus[4], max_new_tokens=6, chunked=chunked)
    assert (batched[4].text, batched[4].segments) == (reference.text, reference.segments)


def test_unreadable_inputs_are_results_with_an_error_and_the_rest_go_on(tiny, corpus, tmp_path):
    model, processor = tiny
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all")
    items = [Item(tmp_path / "missing.wav", "missing.wav"), Item(corpus[0], "a"), Item(bad, "bad")]
    results = list(transcribe_items(model, processor, items, max_new_tokens=2, batch_size=2))
    assert [r.error is None for r in results] == [False, True, False]
    assert "missing.wav: no such file" in results[0].error and "bad.mp3" in results[2].error
    only_bad = list(transcribe_items(model, processor, items[:1], max_new_tokens=2))
    assert len(only_bad) == 1 and only_bad[0].error


def test_directories_and_manifests_expand(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/b.mp3", "d/sub/a.flac", "d/notes.txt", "d/a.WAV"]:
        (tmp_path / name).write_bytes(b"x")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "d/b.mp3", "offset": 1.5, "duration": 2, "text": "ref", "speaker": 3}) + "\n\n"
                        + json.dumps({"audio_filepath": "/abs/x.wav"}) + "\n")
    items = expand_inputs([tmp_path / "d", manifest, tmp_path / "loose.ogg"])
    assert [i.audio_filepath for i in items] == [str(tmp_path / "d/a.WAV"), str(tmp_path / "d/b.mp3"), str(tmp_path / "d/sub/a.flac"),
                                                 "d/b.mp3", "/abs/x.wav", str(tmp_path / "loose.ogg")]
    assert items[2].relative == Path("sub/a.flac")
    assert (items[3].path, items[3].offset, items[3].duration) == (tmp_path / "d/b.mp3", 1.5, 2.0)
    assert items[3].extra == {"manifest_duration": 2, "manifest_text": "ref", "speaker": 3}  # kept, never overwritten
    for line, fragment in [("{oops", "m.jsonl:1: not a JSON object"), ('{"file": "a.wav"}', 'm.jsonl:1: no "audio_filepath"'),
                           ('{"audio_filepath": "a.wav", "duration": -1}', "m.jsonl:1: offset 0.0, duration -1")]:
        manifest.write_text(line + "\n")
        with pytest.raises(ValueError, match=fragment):
            expand_inputs([manifest])


def test_output_records_resume_and_never_overwrite(tiny_dir, corpus, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": str(p), "text": f"ref {i}"}) + "\n" for i, p in enumerate(corpus[:2]))
                        + json.dumps({"audio_filepath": str(corpus[3]), "offset": 1.0, "duration": 4.0}) + "\n")
    out = tmp_path / "results.jsonl"
    args = ["transcribe", str(manifest), str(tmp_path / "missing.wav"), "--output", str(out), "--max-new-tokens", "3", "--model", str(tiny_dir)]
    assert main(args) == 2  # one input failed, after the others were written
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["audio_filepath"] for r in records] == [str(corpus[0]), str(corpus[1]), str(corpus[3]), str(tmp_path / "missing.wav")]
    assert records[0]["manifest_text"] == "ref 0" and records[0]["text"] != "ref 0" and records[0]["segments"][0]["start"] == 0.0
    assert records[2]["duration"] == 4.0 and records[2]["offset"] == 1.0 and records[2]["manifest_duration"] == 4.0
    assert set(records[0]["timings"]) == {"read_s", "model_s", "real_time_factor"}
    assert "no such file" in records[3]["error"] and "text" not in records[3]
    before = out.read_bytes()
    assert main(args) == 2 and "exists; pass --resume" in capsys.readouterr().err and out.read_bytes() == before
    with open(out, "ab") as f:
        f.write(b'{"audio_filepath": "cut sh')  # a record a kill cut short: dropped, its input runs again
    assert main([*args, "--resume"]) == 0 and out.read_bytes() == before  # every input recorded: nothing to do


def test_subtitle_files(tiny_dir, corpus, tmp_path):
    out_dir = tmp_path / "subs"
    assert main(["transcribe", str(corpus[0]), str(corpus[4]), "--chunked", "--format", "srt", "--output-dir", str(out_dir),
                 "--max-new-tokens", "3", "--model", str(tiny_dir)]) == 0
    srt = (out_dir / "4.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:30,000\n") and "\n2\n00:00:30,000 --> 00:00:31,000\n" in srt
    assert (out_dir / "0.srt").exists()
    assert main(["transcribe", str(corpus[0]), "--format", "srt", "--output-dir", str(out_dir), "--model", str(tiny_dir)]) == 2  # would overwrite 0.srt


def test_render_formats():
    segments = [Segment(0.0, 30.0, " hello "), Segment(30.0, 3725.5, "world"), Segment(3725.5, 3726.0, "")]
    assert render(segments, "srt") == "1\n00:00:00,000 --> 00:00:30,000\nhello\n\n2\n00:00:30,000 --> 01:02:05,500\nworld\n"
    assert render(segments, "vtt") == "WEBVTT\n\n00:00:00.000 --> 00:00:30.000\nhello\n\n00:00:30.000 --> 01:02:05.500\nworld\n"
    assert render(segments, "txt") == "hello\nworld\n"


def test_cycle_detector():
    assert ends_in_cycle([5, 7, 7, 7], 3) and not ends_in_cycle([5, 7, 7, 7], 4)
    assert ends_in_cycle([9, 1, 2, 3, 1, 2, 3], 2) and not ends_in_cycle([9, 1, 2, 3, 1, 2, 4], 2)
    eight = list(range(8))
    assert ends_in_cycle(eight * 3, 3) and not ends_in_cycle(list(range(9)) * 3, 3)  # n = 8 at most
    assert not ends_in_cycle([1, 2, 1], 2) and not ends_in_cycle([], 2)
    stop = RepeatStop(batch=2, times=3, eos=(0,))
    import torch

    ended = [stop(torch.tensor(step)).tolist() for step in [[4, 0], [4, 0], [4, 0], [5, 0]]]
    assert ended == [[False, False], [False, False], [True, False], [False, False]]  # eos padding is not a loop
    assert stop.stopped == [True, False]
    with pytest.raises(ValueError, match="2 or more"):
        RepeatStop(1, 1, (0,))


def test_stop_on_repeat_ends_a_loop_and_is_recorded(small, corpus, tmp_path):
    model, processor = small
    items = [Item(p, str(p)) for p in corpus[:2]]
    full = list(transcribe_items(model, processor, items, max_new_tokens=12))
    stopped = list(transcribe_items(model, processor, items, max_new_tokens=12, stop_on_repeat=3))
    for a, b in zip(full, stopped):  # the random model repeats one word: cut after its third time
        assert b.stopped_on_repeat and len(b.text) < len(a.text) and a.text.startswith(b.text)
        assert len(set(b.text.split())) == 1 and len(b.text.split()) <= 3
    assert not any(r.stopped_on_repeat for r in full)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(corpus):
    pytest.importorskip("tqdm")
    from glm_asr.engine.units import FileResult

    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(total=4, done=1, stream=stream)
        progress.update(FileResult(Item(corpus[0], "a"), duration=1800.0))
        progress.close()
    assert "2/4" in terminal.getvalue() and "0.50 h audio" in terminal.getvalue() and "RTF" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_ray_without_the_extra_is_one_line(corpus, capsys):
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("Ray is installed here: tests/test_ray.py runs it (tox -e ray)")
    assert main(["transcribe", str(corpus[0]), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install glm-asr[ray]" in err
