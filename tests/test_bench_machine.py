"""``benchmarks.machine``: torch's float32 product peak is the better of its two product libraries,
and the convolution it times is the product of an n² matmul."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hyperzzw_core.benchmarks import machine  # noqa: E402


def test_the_product_peak_is_the_better_of_the_matmul_and_the_convolution() -> None:
    """The roofline's float32 peak: the convolution where it is faster, the matmul where it is, and
    the matmul alone in a result measured before the convolution was; other libraries and float64
    keep their matmul."""
    pk = {"torch_matmul_float32": 2e11, "torch_conv1x1_float32": 4.3e11, "numpy_matmul_float32": 1e11}
    assert machine.product_peak(pk) == 4.3e11
    assert machine.product_peak(dict(pk, torch_conv1x1_float32=1e11)) == 2e11
    assert machine.product_peak({"torch_matmul_float32": 2e11}) == 2e11
    assert machine.product_peak(pk, "numpy", "float32") == 1e11
    pk.update(torch_copy=3e10, numpy_copy=2e10)
    assert machine.peak_for(pk, "torch-eager", "float32") == (4.3e11, 3e10)
    assert machine.peak_for(pk, "numpy", "float32") == (1e11, 2e10)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
def test_the_timed_convolution_is_an_n_squared_product() -> None:
    """Its operands: n channels in and out over n positions (2n³ FLOPs), the input channels-last;
    the convolution's values are the weight times each position's channels, in float64 by einsum."""
    n = 64
    x, w = machine.conv1x1_operands(torch, n)
    assert x.shape == (1, n, 32, n // 32) and w.shape == (n, n, 1, 1)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert 2 * x.shape[2] * x.shape[3] * w.shape[0] * w.shape[1] == 2 * n**3
    got = torch.nn.functional.conv2d(x, w).double()
    want = torch.einsum("oi,bihw->bohw", w[:, :, 0, 0].double(), x.double())
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)
