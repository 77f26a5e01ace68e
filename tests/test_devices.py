"""The same checks on every available device: CPU always, CUDA where CuPy sees a GPU.

Everything here goes through the backend module, so a test that passes on the CPU and
fails on the GPU points at a device-specific path (CuPy's scatter-add, host copies, ...).
"""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from tests.op_cases import DEVICE_COMPOSITIONS

# Compositions beyond the one-op entries (which test_contract.py sweeps over every device):
# they live in tests/op_cases.py with the other op tables.
OPS = DEVICE_COMPOSITIONS


def leaf(shape: tuple[int, ...], device: str, seed: int) -> mt.Tensor:
    data = np.random.default_rng(seed).standard_normal(shape)
    return mt.tensor(data, requires_grad=True, device=device)


@pytest.mark.parametrize("name, fn, shapes", OPS, ids=[op[0] for op in OPS])
def test_op_gradcheck_on_device(name, fn, shapes, device: str) -> None:
    inputs = [leaf(shape, device, seed) for seed, shape in enumerate(shapes)]
    assert mt.gradcheck(fn, inputs)


@pytest.mark.parametrize("name, fn, shapes", OPS, ids=[op[0] for op in OPS])
def test_op_matches_cpu(name, fn, shapes, device: str) -> None:
    on_device = [leaf(shape, device, seed) for seed, shape in enumerate(shapes)]
    on_cpu = [leaf(shape, "cpu", seed) for seed, shape in enumerate(shapes)]
    out, ref = fn(*on_device), fn(*on_cpu)
    assert out.device == device
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-10)
    out.sum().backward()
    ref.sum().backward()
    for x, y in zip(on_device, on_cpu):
        assert x.grad.device == device
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_attention_layers_gradcheck_on_device(device: str) -> None:
    mt.manual_seed(0)
    mha = mt.nn.MultiHeadAttention(4, 2).double().to(device)
    x = leaf((1, 3, 4), device, 0)
    future = mt.tensor(np.triu(np.ones((3, 3), dtype=bool), k=1), device=device)
    assert mt.gradcheck(lambda x: mha(x, attn_mask=future)[0], [x])
    q, k, v = (leaf((1, 2, 3, 4), device, seed) for seed in range(3))
    assert mt.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [q, k, v])


def test_encoder_layer_and_loss_on_device(device: str) -> None:
    mt.manual_seed(0)
    layer = mt.nn.TransformerEncoderLayer(4, 2, batch_first=True,
                                          dim_feedforward=8, dropout=0.0).double().to(device)
    x = leaf((2, 3, 4), device, 0)
    target = mt.tensor(np.array([[0, 1, 2], [3, 0, 1]]), device=device)
    assert mt.gradcheck(lambda x: F.cross_entropy(layer(x).reshape(-1, 4), target.reshape(-1)),
                        [x])


def test_optimizer_steps_match_cpu(device: str) -> None:
    def run(dev: str) -> np.ndarray:
        mt.manual_seed(0)
        model = mt.nn.Linear(3, 2).double().to(dev)
        optimizer = mt.optim.AdamW(model.parameters(), lr=0.1)
        x = mt.tensor(np.linspace(-1, 1, 12).reshape(4, 3), device=dev)
        for _ in range(5):
            optimizer.zero_grad()
            (model(x) ** 2).mean().backward()
            mt.optim.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
        return model.weight.detach().numpy()

    np.testing.assert_allclose(run(device), run("cpu"), rtol=1e-12)


def test_checkpoint_crosses_devices(device: str, tmp_path) -> None:
    mt.manual_seed(0)
    model = mt.nn.Linear(3, 2).to(device)
    path = tmp_path / "model.npz"
    mt.save({"model": model.state_dict()}, path)
    assert model.weight.device == device  # saving does not move the model
    restored = mt.nn.Linear(3, 2)
    restored.load_state_dict(mt.load(path)["model"])  # onto the CPU
    np.testing.assert_array_equal(restored.weight.detach().numpy(),
                                  model.weight.detach().numpy())
    back = mt.load(path, device=device)["model"]["weight"]
    assert back.device == device


def test_module_to_keeps_parameters_and_trains(device: str) -> None:
    mt.manual_seed(0)
    model = mt.nn.Sequential(mt.nn.Linear(4, 8), mt.nn.Linear(8, 2))
    weights = list(model.parameters())
    model.to(device)
    assert [p is q for p, q in zip(model.parameters(), weights)] == [True] * len(weights)
    optimizer = mt.optim.SGD(model.parameters(), lr=0.1)
    x = mt.randn(16, 4, device=device, generator=np.random.default_rng(0))
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = (model(x) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_default_device_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "cpu")
    assert mt.zeros(2).device == "cpu"
    assert mt.tensor([1.0]).device == "cpu"
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "tpu")
    with pytest.raises(mt.DeviceError, match="MINITRANSFORMER_DEVICE='tpu'"):
        mt.zeros(2)


def test_cuda_default_lands_on_the_gpu_or_names_what_is_missing(monkeypatch) -> None:
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "cuda")
    if mt.cuda_is_available():
        assert mt.tensor([1.0]).device == "cuda"
        return
    with pytest.raises(mt.DeviceError, match=r"minitransformer\[gpu\]|no CUDA GPU"):
        mt.tensor([1.0])
