"""Devices: names, the MINILORA_DEVICE default, clear errors without a GPU, CuPy parity."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from strategies import F32_ATOL, F32_RTOL, leaf, on, to_host

import minilora as ml
from minilora import backend, ops
from minilora import functional as F


# ---- device names and the default ----------------------------------------------------
def test_device_names():
    assert backend.DEVICES == ("cpu", "cuda")
    assert backend.check_device("cpu") == "cpu" and backend.check_device("cuda") == "cuda"


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:0", ""])
def test_invalid_device_names_the_choices(bad):
    with pytest.raises(ValueError, match=r"is not a device; expected one of \('cpu', 'cuda'\)"):
        backend.check_device(bad)
    with pytest.raises(ValueError, match="is not a device"):
        ml.tensor([1.0], device=bad)


@pytest.mark.parametrize("value, expected", [("cpu", "cpu"), (" CPU ", "cpu"), ("", "cpu")])
def test_minilora_device_sets_the_default(monkeypatch, value, expected):
    monkeypatch.setenv("MINILORA_DEVICE", value)
    assert backend.default_device() == expected
    assert backend.check_device(None) == expected
    assert ml.tensor([1.0]).device == expected


def test_minilora_device_unset_means_cpu(monkeypatch):
    monkeypatch.delenv("MINILORA_DEVICE", raising=False)
    assert backend.default_device() == "cpu"
    assert ml.zeros(2).device == "cpu"


def test_invalid_minilora_device(monkeypatch):
    monkeypatch.setenv("MINILORA_DEVICE", "tpu")
    with pytest.raises(ValueError, match="MINILORA_DEVICE='tpu' is not a device"):
        backend.default_device()


def test_array_modules():
    x = np.zeros(3)
    assert backend.array_module("cpu") is np
    assert backend.get_array_module(x) is np and backend.device_of(x) == "cpu"
    assert backend.to_device(x, "cpu") is x and backend.to_numpy(x) is x
    with pytest.raises(TypeError, match="expected a numpy or cupy array, got list"):
        backend.get_array_module([1.0])


def test_scatter_add_adds_repeated_indices(device):
    target = on(device, np.zeros(3))
    backend.scatter_add(target, on(device, np.array([0, 2, 0])), on(device, np.ones(3)))
    np.testing.assert_array_equal(to_host(target), [2.0, 0.0, 1.0])


def test_tensors_live_on_the_requested_device(device):
    x = ml.tensor(np.ones(2), device=device, requires_grad=True)
    assert x.device == device and ml.randn(2, device=device).device == device
    assert backend.device_of(x.data) == device
    assert x.to(device) is x  # already there: no copy, no graph node


# ---- asking for "cuda" without CuPy or a GPU ---------------------------------------------
@pytest.mark.skipif(ml.cuda_available(), reason="CUDA is available here")
def test_cuda_without_cupy_or_gpu_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    for ask in (
        lambda: ml.tensor([1.0], device="cuda"),
        lambda: ml.zeros(2, device="cuda"),
        lambda: backend.array_module("cuda"),
    ):
        with pytest.raises(RuntimeError) as info:
            ask()
        message = str(info.value)
        assert "device 'cuda'" in message
        if "CuPy, which is not installed" in message:
            assert "minilora[gpu]" in message and "device='cpu'" in message
        else:  # CuPy present but no usable GPU
            assert "no CUDA device" in message or "no GPU" in message
    assert not ml.cuda_available()


class _FakeRuntime:
    def __init__(self, count=None, error=None):
        self.count, self.error = count, error

    def getDeviceCount(self):  # noqa: N802 (CuPy's name)
        if self.error:
            raise self.error
        return self.count


def _fake_cupy(runtime):
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=runtime)
    return fake


@pytest.mark.parametrize(
    "runtime, missing",
    [
        (None, "CuPy, which is not installed"),
        (_FakeRuntime(error=OSError("libcuda.so not found")), "no CUDA device can be used"),
        (_FakeRuntime(count=0), "no GPU was found"),
    ],
)
def test_each_missing_piece_is_named(monkeypatch, runtime, missing):
    """Simulated: CuPy missing, CuPy without a driver, CuPy with no GPU."""
    monkeypatch.setattr(backend, "_cupy", None)
    # sys.modules[name] = None makes ``import cupy`` raise ImportError
    monkeypatch.setitem(sys.modules, "cupy", None if runtime is None else _fake_cupy(runtime))
    with pytest.raises(RuntimeError, match=missing) as info:
        backend.array_module("cuda")
    assert "cpu" in str(info.value)
    if runtime is None:
        assert "pip install 'minilora[gpu]'" in str(info.value)
    assert backend.cuda_available() is False


# ---- CuPy float32 against NumPy float64 ------------------------------------------------------
PARITY = {
    "matmul": (lambda x, w: ops.matmul(x, w.transpose()), [(2, 5, 8), (6, 8)]),
    "linear": (F.linear, [(2, 5, 8), (6, 8), (6,)]),
    "softmax": (lambda x: F.softmax(x * 2.0, axis=0), [(3, 7)]),
    "layer_norm": (F.layer_norm, [(4, 16), (16,), (16,)]),
    "gelu": (lambda x, w: F.gelu(x) * w, [(3, 9), (9,)]),
    "sum_max": (lambda x, w: ops.max(x, axis=0) + ops.sum(x * w, axis=0), [(6, 5), (5,)]),
    "cross_entropy": (lambda x, w: F.cross_entropy(x + w, np.array([1, 0, 4])), [(3, 5), (5,)]),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", PARITY)
def test_cupy_float32_matches_numpy_float64(name):
    """The same op on the GPU in float32 agrees with the CPU in float64, forward and backward."""
    fn, input_shapes = PARITY[name]
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-2.0, 2.0, size=s) for s in input_shapes]

    def run(device, dtype):
        inputs = [leaf(a.astype(dtype), device) for a in arrays]
        out = fn(*inputs)
        weights = np.linspace(-1.0, 1.0, out.size).reshape(out.shape).astype(dtype)
        (out * on(device, weights)).sum().backward()  # every output element counts
        return out, inputs

    reference, ref_inputs = run("cpu", np.float64)
    result, gpu_inputs = run("cuda", np.float32)
    assert result.device == "cuda" and result.dtype == np.float32
    np.testing.assert_allclose(result.numpy(), reference.numpy(), rtol=F32_RTOL, atol=F32_ATOL)
    for ref, got in zip(ref_inputs, gpu_inputs):
        assert got.grad.dtype == np.float32
        np.testing.assert_allclose(to_host(got.grad), ref.grad, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.gpu
def test_to_device_round_trip_is_differentiable():
    x = leaf(np.array([1.0, 2.0]), "cpu")
    y = x.to("cuda")
    assert y.device == "cuda" and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.__class__ is np.ndarray
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
