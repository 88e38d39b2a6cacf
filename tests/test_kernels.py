"""glm_asr/runtime/dispatch.py: each kernel swap computes what the default kernel would, and is left when it must be.
Every branch is forced (glm_asr.runtime.cpu.forced), so each runs on any CPU class."""

import copy
import threading

import pytest
import torch
import torch.nn.functional as F

from glm_asr.runtime import cpu
from glm_asr.runtime import dispatch as kernels
from glm_asr.runtime.dispatch import Linear, use_onednn

pytestmark = pytest.mark.skipif(not kernels.ONEDNN, reason="this PyTorch build has no oneDNN")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 64), (2, 3, 64), (7, 64)])
def test_onednn_path_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    layer = Linear(64, 48, bias=bias).requires_grad_(False)
    x = torch.randn(*shape)
    with cpu.forced(fp32_gemm="onednn", fp32_few_rows="onednn"):
        assert use_onednn(x, layer.weight)
        out = layer(x)
    expected = F.linear(x, layer.weight, layer.bias)
    assert out.shape == expected.shape
    assert float((out - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_without_onednn_every_product_takes_f_linear(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "onednn_linear", lambda *args: calls.append(args) or F.linear(*args))
    layer = Linear(64, 48).requires_grad_(False)
    with cpu.forced(onednn=False):
        assert not use_onednn(torch.randn(3, 64), layer.weight)
        layer(torch.randn(3, 64))
        layer.bfloat16()(torch.randn(3, 64, dtype=torch.bfloat16))  # nor widened bf16, which runs on oneDNN
    assert not calls


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
    with torch.inference_mode(), cpu.forced(fp32_few_rows="onednn"):
        assert use_onednn(torch.randn(3, 64), layer.weight)


@pytest.mark.parametrize("band, rows", [("fp32_few_rows", 3), ("fp32_gemm", cpu.FEW_ROWS)])
@pytest.mark.parametrize("engine", cpu.GEMM_ENGINES)
def test_each_band_of_rows_takes_the_engine_chosen_for_it(monkeypatch, band, rows, engine):
    calls = []
    monkeypatch.setattr(kernels, "onednn_linear", lambda *args: calls.append(args) or F.linear(*args))
    layer = Linear(64, 48).requires_grad_(False)
    other = next(e for e in cpu.GEMM_ENGINES if e != engine)
    # No bf16 in oneDNN either (AVX2): then bf16 products of 2 rows or more are widened, and 3 rows is one. A CPU
    # whose oneDNN emulates bf16 widens only from 32 rows (cpu.py), so the test must not take the host's.
    with cpu.forced(**{"fp32_gemm": other, "fp32_few_rows": other, band: engine}, native_bf16=False, onednn_bf16=False):
        out = layer(torch.randn(rows, 64))
        layer.bfloat16()(torch.randn(rows, 64, dtype=torch.bfloat16))  # widened to fp32 on the same engine
    assert len(calls) == (0 if engine == "torch" else 2)
    assert out.shape == (rows, 48)


@pytest.mark.parametrize("kernel", cpu.MATVEC_KERNELS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 64), (64,)])
def test_each_single_row_kernel_equals_f_linear_and_gives_torch_its_threads_back(shape, bias, kernel):
    torch.manual_seed(0)
    layer = Linear(64, 48, bias=bias).requires_grad_(False)
    x = torch.randn(*shape)
    expected = F.linear(x, layer.weight, layer.bias)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # under xdist the suite runs on one thread, which would hide a missing restore
    try:
        with kernels.single_row_kernel(kernel):
            assert torch.get_num_threads() == (1 if kernel == "openblas" else 2)
            out = layer(x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert out.shape == expected.shape
    assert float((out - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("kernel", cpu.MATVEC_KERNELS)
def test_the_decode_kernel_takes_only_single_rows(monkeypatch, kernel):
    calls = {"openblas": [], "onednn": [], "torch": []}
    monkeypatch.setattr(kernels, "openblas_linear", lambda *args: calls["openblas"].append(args) or F.linear(*args))
    monkeypatch.setattr(kernels, "onednn_linear", lambda *args: calls["onednn"].append(args) or F.linear(*args))
    layer = Linear(64, 48).requires_grad_(False)
    layer(torch.randn(1, 64))
    assert len(calls["onednn"]) == 1 and not calls["openblas"]  # outside the block: oneDNN
    with kernels.single_row_kernel(kernel):
        layer(torch.randn(2, 64))
        assert len(calls["onednn"]) == 2 and not calls["openblas"]  # two rows: oneDNN's GEMM
        layer(torch.randn(1, 1, 64))
    expected = {"openblas": (2, 1), "onednn": (3, 0), "torch": (2, 0)}[kernel]
    assert (len(calls["onednn"]), len(calls["openblas"])) == expected


def test_only_openblas_sets_torchs_thread_count_and_only_the_calling_threads(monkeypatch):
    # The decode loop enters the block every step: a kernel that needs no change must not write the count,
    # and an OpenBLAS block on the scheduler's thread must not take threads from another thread's products.
    threads = torch.get_num_threads()
    set_threads = torch.set_num_threads
    set_threads(2)
    try:
        calls = []
        monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or set_threads(n))
        for kernel in ("torch", "onednn"):
            with kernels.single_row_kernel(kernel):
                pass
        assert calls == []
        inside, leave, seen = threading.Event(), threading.Event(), []

        def decoding() -> None:
            with kernels.single_row_kernel("openblas"):
                seen.append(torch.get_num_threads())
                inside.set()
                assert leave.wait(10)
        worker = threading.Thread(target=decoding)
        worker.start()
        assert inside.wait(10)
        seen.append(torch.get_num_threads())  # this thread, meanwhile
        leave.set()
        worker.join()
        assert seen == [1, 2] and calls == [1, 2] and torch.get_num_threads() == 2
    finally:
        set_threads(threads)


def test_single_row_kernel_defaults_to_the_machines_choice():
    with cpu.forced(matvec="onednn"), kernels.single_row_kernel() as kernel:
        assert kernel == "onednn"
    with cpu.forced(matvec="openblas"), kernels.single_row_kernel() as kernel:
        assert kernel == "openblas" and torch.get_num_threads() == 1


def test_bf16_gemms_convolutions_and_attention_are_widened_to_fp32_and_rounded_once():
    torch.manual_seed(0)
    layer = Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    with cpu.forced(native_bf16=False, onednn_bf16=False):  # no bf16 kernel at all: 2 rows and more are widened
        assert kernels.widen_bf16(x, layer.weight) and not kernels.widen_bf16(x.float(), layer.weight.float())
        out = layer(x)
        assert out.dtype == torch.bfloat16
        # bf16 values are exact in fp32, so the fp32 product rounded once is what a bf16 GEMM means.
        assert torch.equal(out, F.linear(x.float(), layer.weight.float(), layer.bias.float()).bfloat16())
        assert float((out.float() - F.linear(x, layer.weight, layer.bias).float()).abs().max()) <= 1e-2 * float(out.float().abs().max())

        conv = kernels.Conv1d(8, 16, kernel_size=3, stride=2, padding=1).to(torch.bfloat16).requires_grad_(False)
        x = torch.randn(2, 8, 20, dtype=torch.bfloat16)
        out = conv(x)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, F.conv1d(x.float(), conv.weight.float(), conv.bias.float(), stride=2, padding=1).bfloat16())

        q, k, v = (torch.randn(1, h, 6, 16, dtype=torch.bfloat16) for h in (4, 2, 2))
        out = kernels.Attention()(q, k, v)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, F.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True).bfloat16())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_single_query_attends_as_sdpa_does(dtype):
    """Decode steps: one query on a GQA cache, some keys masked out (left padding), in either dtype."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 1, 16).to(dtype), torch.randn(2, 2, 9, 16).to(dtype), torch.randn(2, 2, 9, 16).to(dtype)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., :3] = False
    out = kernels.single_query_attention(q, k, v, mask)
    assert out.dtype == dtype
    # The module takes this path in bf16; in fp32 it keeps SDPA, which is as fast there.
    taken = out if dtype == torch.bfloat16 else F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.equal(kernels.Attention()(q, k, v, mask), taken)
    # The reference point: PyTorch's SDPA on the same values in fp32 (bf16 values are exact there), rounded once.
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True)
    tolerance = 1e-6 if dtype == torch.float32 else 4e-3  # bf16: one rounding of the result (2^-8 relative)
    assert float((out.float() - expected).abs().max()) <= tolerance * float(expected.abs().max())
    assert kernels.Attention()(q[:, :, :1].expand(2, 8, 2, 16), k, v).shape == (2, 8, 2, 16)  # two queries: SDPA


def test_native_bf16_keeps_pytorchs_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "onednn_linear", lambda *args: calls.append(args) or F.linear(*args))
    layer = Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    conv = kernels.Conv1d(8, 16, kernel_size=3).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(2, 8, 20, dtype=torch.bfloat16)
    with cpu.forced(native_bf16=True):
        assert not kernels.widen_bf16(x, conv.weight)
        layer(torch.randn(5, 64, dtype=torch.bfloat16))
        assert torch.equal(conv(x), F.conv1d(x, conv.weight, conv.bias))
    assert not calls


# Each capability forced, so every branch runs whatever the host has: native bf16 widens nothing; oneDNN's (emulated)
# bf16 kernel keeps up to 31 rows; with no bf16 kernel at all, 2 rows and more are widened.
@pytest.mark.parametrize("native, onednn_bf16, widened_from", [(True, True, None), (False, True, 32), (False, False, 2)])
def test_a_decode_steps_few_bf16_rows_keep_the_bf16_kernel(monkeypatch, native, onednn_bf16, widened_from):
    calls = []
    widened = kernels.widened_linear
    monkeypatch.setattr(kernels, "widened_linear", lambda *args: calls.append(args) or widened(*args))
    layer = Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    with cpu.forced(native_bf16=native, onednn_bf16=onednn_bf16):
        assert cpu.rules().bf16_widen_rows == (widened_from or 1)
        layer(torch.randn(1, 1, 64, dtype=torch.bfloat16))  # a decode step reads weights: bf16 halves the bytes
        layer(torch.randn((widened_from or 65) - 1, 64, dtype=torch.bfloat16))  # a batched step's few rows
        assert not calls
        layer(torch.randn(widened_from or 64, 64, dtype=torch.bfloat16))  # a prompt's rows
    assert len(calls) == (0 if native else 1)  # widened to fp32 only without native bf16


def _can_pack_bf16() -> bool:
    try:
        kernels.pack_bf16_weight(torch.zeros(8, 8, dtype=torch.bfloat16))
        return True
    except RuntimeError:
        return False


@pytest.fixture
def stand_in_packing(monkeypatch):
    """Packing and the packed product replaced by PyTorch's, so the packed branch's dispatch and caching run on
    any CPU (oneDNN packs bf16 only on some); the real kernel is checked where it runs, below."""
    packed = []
    monkeypatch.setattr(kernels, "pack_bf16_weight", lambda w: packed.append(w) or w.clone())
    monkeypatch.setattr(kernels, "onednn_linear", F.linear)
    return packed


def test_packed_bf16_branch_packs_once_follows_the_weight_and_stays_out_of_copies(stand_in_packing):
    torch.manual_seed(0)
    layer = Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    with cpu.forced(native_bf16=True, bf16_packed=True), kernels.single_row_kernel("torch"):
        out = layer(x)
        layer(x)
        assert len(stand_in_packing) == 1 and "_packed_bf16" not in layer.state_dict()
        assert out.shape == (1, 1, 48) and torch.equal(out, F.linear(x, layer.weight, layer.bias))
        layer.weight.mul_(2)  # a changed weight is packed again, never read stale
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias)) and len(stand_in_packing) == 2
        layer(torch.randn(3, 64, dtype=torch.bfloat16))  # more rows: PyTorch's bf16 product, as outside the block
        assert len(stand_in_packing) == 2
    copied = copy.deepcopy(layer)  # the opaque packed tensor is left out of copies, and packed again on use
    assert not hasattr(copied, "_packed_bf16") and hasattr(layer, "_packed_bf16")
    with cpu.forced(native_bf16=True, bf16_packed=True), kernels.single_row_kernel("torch"):
        assert torch.equal(copied(x), layer(x)) and len(stand_in_packing) == 3
    del layer._packed_bf16
    with cpu.forced(native_bf16=True, bf16_packed=False), kernels.single_row_kernel("torch"):
        layer(x)
    assert not hasattr(layer, "_packed_bf16") and len(stand_in_packing) == 3


@pytest.mark.skipif(not _can_pack_bf16(), reason="oneDNN cannot pack bf16 weights on this CPU (needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT)")
def test_onednns_packed_bf16_product_equals_pytorchs_for_single_rows():
    # The kernel itself, where it exists; which CPUs choose it is cpu.py's rule, tested with forced features.
    torch.manual_seed(0)
    layer = Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    with cpu.forced(bf16_packed=True), kernels.single_row_kernel("torch"):
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    copy.deepcopy(layer)  # a packed layer can be copied
