"""glm_asr/linear.py: the oneDNN path for fp32 CPU linear layers equals F.linear, and is left when it must be."""

import pytest
import torch
import torch.nn.functional as F

from glm_asr import linear
from glm_asr.linear import Linear, use_onednn

pytestmark = pytest.mark.skipif(not linear.ONEDNN, reason="this PyTorch build has no oneDNN")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 64), (2, 3, 64), (7, 64)])
def test_onednn_path_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    layer = Linear(64, 48, bias=bias).requires_grad_(False)
    x = torch.randn(*shape)
    assert use_onednn(x, layer.weight)
    out = layer(x)
    expected = F.linear(x, layer.weight, layer.bias)
    assert out.shape == expected.shape
    assert float((out - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_a_non_contiguous_input_is_read_by_its_strides():
    layer = Linear(64, 48).requires_grad_(False)
    x = torch.randn(2, 5, 64)[:, 1:4]
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_other_dtypes_and_autograd_take_f_linear():
    layer = Linear(64, 48)
    x = torch.randn(3, 64, requires_grad=True)
    assert not use_onednn(x, layer.weight)  # training: oneDNN's op has no backward here
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    assert not use_onednn(torch.randn(3, 64, dtype=torch.bfloat16), layer.weight.detach().bfloat16())
    with torch.inference_mode():
        assert use_onednn(torch.randn(3, 64), layer.weight)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 64), (64,)])
def test_openblas_matvec_equals_f_linear_and_gives_torch_its_threads_back(shape, bias):
    torch.manual_seed(0)
    layer = Linear(64, 48, bias=bias).requires_grad_(False)
    x = torch.randn(*shape)
    expected = F.linear(x, layer.weight, layer.bias)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # under xdist the suite runs on one thread, which would hide a missing restore
    try:
        with linear.openblas_matvec():
            assert torch.get_num_threads() == 1
            out = layer(x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert out.shape == expected.shape
    assert float((out - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_openblas_takes_only_single_rows(monkeypatch):
    calls = []
    monkeypatch.setattr(linear, "openblas_linear", lambda *args: calls.append(args) or F.linear(*args))
    layer = Linear(64, 48).requires_grad_(False)
    layer(torch.randn(1, 64))
    assert not calls  # outside the block: oneDNN
    with linear.openblas_matvec():
        layer(torch.randn(2, 64))
        assert not calls  # two rows: oneDNN's GEMM
        layer(torch.randn(1, 1, 64))
    assert len(calls) == 1
