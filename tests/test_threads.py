"""Engine state is per thread: grad mode, the module being run, the default generator."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

import minitransformer as mt
import minitransformer.nn as nn
from minitransformer.optim import Adam


def _run_in_threads(*targets: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_no_grad_in_one_thread_does_not_stop_recording_in_another() -> None:
    inside, checked = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def quiet() -> None:
        with mt.no_grad():
            inside.set()
            assert checked.wait(10)

    def recording() -> None:
        assert inside.wait(10)
        x = mt.tensor([1.0], requires_grad=True)
        seen["enabled"] = mt.is_grad_enabled()
        seen["requires_grad"] = (x * 2).requires_grad
        checked.set()

    _run_in_threads(quiet, recording)
    assert seen == {"enabled": True, "requires_grad": True}


def test_composed_attention_in_one_thread_leaves_another_on_the_fused_path() -> None:
    """composed_attention() (what ``explain`` switches on) is per thread, as grad mode is:
    while one thread is inside the block, another's attention still runs one fused node."""
    import minitransformer.functional as F

    inside, checked = threading.Event(), threading.Event()
    nodes: dict[str, str] = {}
    q = mt.randn(1, 3, 4, requires_grad=True)

    def node() -> str:
        out, _ = F.scaled_dot_product_attention_with_weights(q, q, q)
        return type(out._ctx).__name__

    def composed() -> None:
        with F.composed_attention():
            nodes["inside"] = node()
            inside.set()
            assert checked.wait(10)
        nodes["after"] = node()

    def other() -> None:
        assert inside.wait(10)
        nodes["other"] = node()
        checked.set()

    _run_in_threads(composed, other)
    assert nodes == {"inside": "MatMul", "other": "ScaledDotProductAttention",
                     "after": "ScaledDotProductAttention"}


def test_overlapping_no_grad_blocks_in_two_threads_restore_grad_mode() -> None:
    # A enters, B enters, A leaves, B leaves: with one global flag B restored "off" for good.
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    after: dict[str, bool] = {}
    shared = mt.no_grad()  # one instance entered by both threads at once

    def a() -> None:
        with shared:
            a_in.set()
            assert b_in.wait(10)
        a_out.set()
        after["a"] = mt.is_grad_enabled()

    def b() -> None:
        assert a_in.wait(10)
        with shared:
            b_in.set()
            assert a_out.wait(10)
        after["b"] = mt.is_grad_enabled()

    _run_in_threads(a, b)
    assert after == {"a": True, "b": True}
    assert mt.is_grad_enabled()


def test_set_grad_enabled_as_a_call_and_as_a_block() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    mt.set_grad_enabled(False)  # a bare call switches, as in PyTorch
    try:
        assert not (x * 2).requires_grad
        with mt.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not mt.is_grad_enabled()
    finally:
        mt.set_grad_enabled(True)
    assert (x * 2).requires_grad

    @mt.set_grad_enabled(False)
    def double(t: mt.Tensor) -> mt.Tensor:
        return t * 2

    assert mt.is_grad_enabled()  # decorating switches nothing
    assert not double(x).requires_grad


def test_manual_seed_is_per_thread() -> None:
    draws: dict[str, np.ndarray] = {}
    go = threading.Barrier(2)

    def draw(name: str, seed: int) -> Callable[[], None]:
        def run() -> None:
            mt.manual_seed(seed)
            go.wait(10)
            draws[name] = np.concatenate([mt.randn(4).numpy() for _ in range(20)])

        return run

    _run_in_threads(draw("a", 1), draw("b", 2))
    mt.manual_seed(1)
    np.testing.assert_array_equal(draws["a"], np.concatenate([mt.randn(4).numpy()
                                                              for _ in range(20)]))


def _train(seed: int, steps: int, barrier: threading.Barrier | None) -> list[np.ndarray]:
    """A tiny attention model trained with dropout, evaluating under no_grad every step."""
    mt.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.1))
    attention = nn.MultiHeadAttention(8, 2, dropout=0.1)
    params = [*model.parameters(), *attention.parameters()]
    optimizer = Adam(params, lr=0.01)
    x = mt.randn(2, 5, 6)
    for _ in range(steps):
        if barrier is not None:
            barrier.wait(30)  # both threads inside the same step: the states interleave
        h = model(x)
        out, _ = attention(h, h, h)
        loss = (out * out).mean()
        optimizer.zero_grad()
        loss.backward()
        with mt.no_grad():
            attention(h, h, h)  # an evaluation while the other thread records
        optimizer.step()
    return [p.detach().numpy().copy() for p in params]


def test_two_threads_train_exactly_like_one_after_the_other() -> None:
    steps = 12
    alone = [_train(seed, steps, None) for seed in (3, 4)]
    barrier = threading.Barrier(2)
    together: dict[int, list[np.ndarray]] = {}

    def job(seed: int) -> Callable[[], None]:
        def run() -> None:
            together[seed] = _train(seed, steps, barrier)

        return run

    _run_in_threads(job(3), job(4))
    for seed, expected in zip((3, 4), alone):
        for got, want in zip(together[seed], expected):
            np.testing.assert_array_equal(got, want)
    assert mt.is_grad_enabled()


def test_overlapping_single_threaded_blas_blocks_restore_the_setting() -> None:
    from minitransformer.tuning import _openblas, single_threaded_blas

    library = _openblas()
    if library is None:  # NumPy without OpenBLAS: the block is a no-op (nothing to restore)
        with single_threaded_blas():
            return
    get_threads, set_threads = library
    before = get_threads()
    set_threads(2)
    try:
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
        inside: dict[str, int] = {}

        def a() -> None:
            with single_threaded_blas():
                a_in.set()
                assert b_in.wait(10)
            a_out.set()

        def b() -> None:
            assert a_in.wait(10)
            with single_threaded_blas():
                b_in.set()
                assert a_out.wait(10)
                inside["b"] = get_threads()  # A has left; B is still inside

        _run_in_threads(a, b)
        assert inside["b"] == 1
        assert get_threads() == 2
    finally:
        set_threads(before)


def test_threads_running_backward_into_one_shared_leaf_lose_no_accumulation() -> None:
    """Each thread's backward adds into the same .grad: the read-add-write is under a lock.

    NumPy lets go of the GIL while it adds large arrays, and a tiny switch interval makes
    the threads switch often, so that without the lock another thread reads the old .grad
    between the read and the write, and sums are lost, within a few steps."""
    import sys

    shared = mt.tensor(np.zeros(100_000), dtype=mt.float64, requires_grad=True)
    steps = 200
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()  # all four at once: otherwise one may finish before the next starts
        for _ in range(steps):
            (shared * 1.0).sum().backward()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _run_in_threads(work, work, work, work)
    finally:
        sys.setswitchinterval(interval)
    np.testing.assert_array_equal(shared.grad.numpy(), np.full(100_000, 4.0 * steps))
