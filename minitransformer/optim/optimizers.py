"""Optimizers: SGD (with momentum), Adam and AdamW, with PyTorch's exact update rules.

An optimizer holds ``param_groups``: a list of dicts, each with ``"params"`` (the tensors)
and the hyperparameters for them (``"lr"``, ...). ``step()`` moves every parameter that has
a gradient; ``zero_grad()`` clears the gradients for the next backward.

The updates work on the raw backend arrays (``p.data``, ``p.grad.data``), in place: no
graph is recorded, the parameter objects stay the same (a model keeps pointing at them),
float32 stays float32, and the same lines run on NumPy and CuPy arrays.

    opt = AdamW(model.parameters(), lr=3e-4)
    for batch in data:
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

from minitransformer import backend
from minitransformer.autograd import enable_grad, mark_changed
from minitransformer.tensor import Tensor

ParamsArg = Iterable[Tensor] | Iterable[dict[str, Any]]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``step`` and (de)serialisation.

    Subclasses pass their default hyperparameters to ``__init__``, check them in
    ``_check_hyperparameters`` and write the update of one parameter in ``_update``.
    """

    def __init__(self, params: ParamsArg, defaults: dict[str, Any]) -> None:
        self._check_hyperparameters(defaults)
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        # Per-parameter state (moment estimates, step counts), keyed by the parameter tensor.
        self.state: dict[Tensor, dict[str, Any]] = {}
        if isinstance(params, Tensor):
            raise TypeError(
                "params must be an iterable of Tensors or of dicts, got a single Tensor "
                f"of shape {params.shape}; wrap it in a list"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ----- parameter groups ---------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters; hyperparameters it does not set take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if params is None:
            raise ValueError("a param group needs a 'params' entry")
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but params[{i}] of group "
                    f"{len(self.param_groups)} is a {type(p).__name__}"
                )
            if not p.is_leaf:
                raise ValueError(
                    f"can't optimize a non-leaf Tensor (params[{i}] of group "
                    f"{len(self.param_groups)}, shape {p.shape}, made by {p._ctx.name})"
                )
        known = {id(p) for group in self.param_groups for p in group["params"]}
        if len({id(p) for p in params}) != len(params) or known & {id(p) for p in params}:
            raise ValueError("some parameters appear more than once in the optimizer's groups")

        group = {**self.defaults, **param_group, "params": params}
        self._check_hyperparameters(group)
        self.param_groups.append(group)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        """Raise ValueError for a hyperparameter outside its range (subclasses extend)."""
        if "lr" in group and not group["lr"] >= 0.0:
            raise ValueError(f"invalid learning rate lr={group['lr']}: must be >= 0")
        if "weight_decay" in group and not group["weight_decay"] >= 0.0:
            raise ValueError(
                f"invalid weight_decay={group['weight_decay']}: must be >= 0"
            )

    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    # ----- the training loop --------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every parameter's ``.grad`` to None (the next backward starts afresh), or
        with ``set_to_none=False`` to zeros, as in PyTorch."""
        from minitransformer.nn.module import zero_grad_of

        for p in self._all_params():
            zero_grad_of(p, set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; parameters whose ``.grad`` is None
        are left alone. ``closure``, if given, recomputes the loss (it is returned)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                self._update(p, p.grad.data, state, group)
                mark_changed(p, f"{type(self).__name__}.step()")
        return loss

    def _update(self, param: Tensor, grad: Any, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        """Move ``param.data`` in place, given its gradient array and its state dict."""
        raise NotImplementedError

    # ----- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the optimizer: ``{"state": ..., "param_groups": ...}``.

        Parameters are named by their index in the order of ``param_groups`` (the tensors
        themselves are not saved). ``"state"`` maps the index, as a string (so the dict can
        go through :func:`minitransformer.save`), to that parameter's state: plain numbers
        and copies of the arrays, so later steps do not change the snapshot.
        """
        index = {id(p): i for i, p in enumerate(self._all_params())}
        state = {
            str(index[id(p)]): {key: _copy(value) for key, value in param_state.items()}
            for p, param_state in self.state.items()
        }
        groups = [
            {**{k: v for k, v in group.items() if k != "params"},
             "params": [index[id(p)] for p in group["params"]]}
            for group in self.param_groups
        ]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict`; the groups must hold as many
        parameters as when it was taken. Later steps equal those of an uninterrupted run.
        Floating-point state arrays are copied to each parameter's device and dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups, "
                f"but the optimizer has {len(self.param_groups)}"
            )
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"param group {i} has {len(group['params'])} parameters, "
                    f"but the state_dict's group {i} has {len(saved['params'])}"
                )
        params = self._all_params()
        state: dict[Tensor, dict[str, Any]] = {}
        for key, saved_state in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"state_dict has state for parameter {i}, "
                                 f"but the optimizer has {len(params)} parameters")
            p = params[i]
            state[p] = {name: _to_param(value, p, f"state of parameter {i}: {name}")
                        for name, value in saved_state.items()}
        for saved, group in zip(saved_groups, self.param_groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            settings = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} tensors, {settings}")
        return "\n".join([*lines, ")"])


def _copy(value: Any) -> Any:
    return value.copy() if backend.is_array(value) else value


def _to_param(value: Any, param: Tensor, what: str) -> Any:
    """A state value from a snapshot, as an array next to ``param`` (or the plain value),
    checked now so that a damaged snapshot fails when loaded, not at the next step."""
    if what.endswith(": step") and (not isinstance(value, numbers.Integral)
                                    or isinstance(value, bool) or value < 0):
        raise ValueError(f"{what} is {value!r}; a step count is an integer >= 0")
    if not backend.is_array(value):
        return value
    if value.ndim > 0 and tuple(value.shape) != param.shape:
        raise ValueError(f"{what} has shape {tuple(value.shape)}, but the parameter has "
                         f"shape {param.shape}")
    if value.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {value.dtype}; expected numbers")
    xp = backend.array_module(param.device)
    dtype = param.dtype if value.dtype.kind == "f" else value.dtype
    return xp.array(backend.to_device(value, param.device), dtype=dtype)  # a fresh copy


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum (PyTorch's formulation).

    With gradient :math:`g_t`, weight decay :math:`\lambda`, momentum :math:`\mu`,
    dampening :math:`\tau` and learning rate :math:`\eta`:

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1}                         \\
        b_t &= g_t \text{ on the first step, else } \mu\,b_{t-1} + (1-\tau)\,g_t \\
        d_t &= g_t + \mu\,b_t \text{ (Nesterov) or } b_t                     \\
        \theta_t &= \theta_{t-1} - \eta\,d_t

    Without momentum (:math:`\mu = 0`) the step is just :math:`\theta - \eta g`.
    """

    def __init__(self, params: ParamsArg, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:  # PyTorch's order and defaults
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        super()._check_hyperparameters(group)
        if not group["momentum"] >= 0.0:
            raise ValueError(f"invalid momentum={group['momentum']}: must be >= 0")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum needs momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _update(self, param: Tensor, grad: Any, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        momentum = group["momentum"]
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data  # L2 penalty's gradient
        if momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()  # b_1 = g_1: no dampening at first
            else:
                buffer = state["momentum_buffer"]
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            buffer = state["momentum_buffer"]
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.data -= group["lr"] * grad


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), exactly as PyTorch computes it.

    With gradient :math:`g_t` at step :math:`t = 1, 2, \dots`:

    .. math::
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1}
              \quad\text{(weight decay as an L2 penalty: it goes through } m, v)\\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t                          \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2                        \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
                    \frac{m_t}{\sqrt{v_t}\,/\sqrt{1-\beta_2^t} + \epsilon}

    :math:`m_0 = v_0 = 0`; dividing by :math:`1-\beta^t` removes the bias towards 0 of
    the early averages. Note :math:`\epsilon` is added after the bias correction of
    :math:`\sqrt{v_t}`, as in PyTorch.
    """

    def __init__(self, params: ParamsArg, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        super()._check_hyperparameters(group)
        if not group["eps"] >= 0.0:
            raise ValueError(f"invalid eps={group['eps']}: must be >= 0")
        for i, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"invalid betas[{i}]={beta}: must be in [0, 1)")

    def _update(self, param: Tensor, grad: Any, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data
        _adam_move(param, grad, state, group)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as in PyTorch.

    The decay shrinks the weights directly instead of being added to the gradient, so it
    is not rescaled by Adam's :math:`1/\sqrt{v}`:

    .. math::
        \theta &\leftarrow \theta\,(1 - \eta\lambda)                            \\
        \theta_t &= \theta - \frac{\eta}{1-\beta_1^t}\,
                    \frac{m_t}{\sqrt{v_t}\,/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`m_t, v_t` the moment estimates of :class:`Adam` (on the plain gradient).

    ``fused`` and ``foreach`` are accepted so that PyTorch code runs unchanged (nanoGPT
    asks ``'fused' in inspect.signature(AdamW).parameters``) and are ignored: there is one
    implementation, and it updates each parameter in turn.
    """

    def __init__(self, params: ParamsArg, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, foreach: bool | None = None,
                 fused: bool | None = None) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _update(self, param: Tensor, grad: Any, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        param.data *= 1 - group["lr"] * group["weight_decay"]
        _adam_move(param, grad, state, group)


def _adam_move(param: Tensor, grad: Any, state: dict[str, Any], group: dict[str, Any]) -> None:
    """The Adam step shared by Adam and AdamW: update m, v and move ``param.data``."""
    xp = backend.array_module(param.device)
    beta1, beta2 = group["betas"]
    if not state:
        state["step"] = 0
        state["exp_avg"] = xp.zeros_like(param.data)  # m: running mean of g
        state["exp_avg_sq"] = xp.zeros_like(param.data)  # v: running mean of g^2
    state["step"] += 1
    t = state["step"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    step_size = group["lr"] / (1 - beta1**t)
    denom = xp.sqrt(v) / (1 - beta2**t) ** 0.5 + group["eps"]
    param.data -= step_size * (m / denom)
