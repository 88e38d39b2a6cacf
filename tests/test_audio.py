import math

import numpy as np
import pytest
import torch

from glm_asr import log_mel
from glm_asr.model.front_end import mel_filters


@pytest.mark.parametrize("samples, windows, valid", [(0, 1, [0]), (1, 1, [1]), (12345, 1, [78]), (480_000, 1, [3000]), (480_001, 2, [3000, 1]), (496_000, 2, [3000, 100])])
def test_windows_and_valid_frames(samples, windows, valid):
    features, mask = log_mel(np.zeros(samples, dtype=np.float32))
    assert features.shape == (windows, 128, 3000) and features.dtype == torch.float32
    assert mask.shape == (windows, 3000) and mask.sum(-1).tolist() == valid
    assert [int(m.nonzero().max()) + 1 if m.any() else 0 for m in mask] == valid  # valid frames come first


def test_silence_is_the_floor_everywhere():
    features, _ = log_mel(np.zeros(16000, dtype=np.float32))
    assert torch.all(features == (-10.0 + 4.0) / 4.0)  # log10(1e-10), nothing louder to clamp against


def test_each_window_is_normalised_on_its_own():
    loud, quiet = np.full(480_000, 0.5, np.float32), np.full(16000, 1e-3, np.float32)
    both, _ = log_mel(np.concatenate([loud, quiet]))
    alone, _ = log_mel(quiet)
    assert torch.equal(both[1], alone[0])


def test_mel_filters_shape_and_normalisation():
    # Property checks only: equality with the reference's filters is what the golden `mel` stage proves.
    filters = mel_filters(128)
    assert filters.shape == (201, 128) and filters.dtype == np.float64 and filters.min() == 0.0
    # Slaney normalisation: every triangle has area 1 in Hz (height 2 / width); sampled on 40 Hz bins, the
    # wide high filters show it, the narrow low ones fall between bins.
    area = filters.sum(0) * (8000 / 200)
    assert np.all(np.abs(area[100:-1] - 1) < 0.05)
    peaks = filters.argmax(0)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] == 195


def test_float64_and_tensor_inputs_give_the_same_features():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(20000) * 0.1
    a, _ = log_mel(audio)
    b, _ = log_mel(torch.from_numpy(audio.astype(np.float32)))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "audio, kwargs, message",
    [
        (np.zeros(100, np.float32), {"sampling_rate": 8000}, "sampling_rate=8000: features need 16000 Hz"),
        (np.zeros((2, 100), np.float32), {}, r"shape \(2, 100\): expected 1-D mono"),
        (np.zeros(100, np.int16), {}, "dtype torch.int16: expected float samples"),
        (np.array([0.0, math.nan], np.float32), {}, "NaN or infinite"),
        (np.array([0.0, math.inf], np.float32), {}, "NaN or infinite"),
    ],
)
def test_bad_audio_is_named(audio, kwargs, message):
    with pytest.raises(ValueError, match=message):
        log_mel(audio, **kwargs)


def test_log_mel_records_the_mel_stage():
    from glm_asr import capture

    with capture() as taps:
        features, _ = log_mel(np.zeros(16000, np.float32))
    assert list(taps) == ["mel"] and torch.equal(taps["mel"], features)
