"""Rectified Adam and Adam-2k, our own implementations of Liu et al. (2020), "On the Variance
of the Adaptive Learning Rate and Beyond" (ICLR 2020, arXiv:1908.03265).

``rho`` and ``rectification`` are the paper's Sec. 4 quantities as pure functions of the step,
shared by ``RAdam`` and ``scripts/plot_rectification.py``. The builder ``adam_2k`` lives here
and is registered in ``trainrepro.optim.factory.OPTIMIZERS`` (``adam_eps`` is the factory's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from trainrepro.errors import ConfigError, check_int
from trainrepro.optim.params import ADAM_KEYS, DECAY_KEYS, closure_loss, flag, option

# torch.optim.RAdam and the authors' code switch to the rectified step once rho_t > 5; the
# paper's Algorithm 2 says rho_t > 4, where r_t is already real. See RAdam's docstring.
RHO_THRESHOLD = 5.0
PAPER_RHO_THRESHOLD = 4.0
ADAM_2K_STEPS = 2000  # Sec. 3.1: "Adam-2k" estimates v from 2000 gradients before moving

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


# ---------------------------------------------------------------- the paper's rho_t and r_t
def rho_inf(beta2: float) -> float:
    """Maximum length of the approximated simple moving average, 2 / (1 - beta2) - 1."""
    return 2.0 / (1.0 - beta2) - 1.0


def rho(step: int, beta2: float) -> float:
    """rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t): the degrees of freedom of the
    adaptive rate's approximate scaled inverse chi-square distribution after ``step`` updates
    (Liu et al. 2020, Sec. 4). rho_1 = 1; rho_t rises to rho_inf."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
    beta2_t = beta2**step
    return rho_inf(beta2) - 2.0 * step * beta2_t / (1.0 - beta2_t)


def rectification(step: int, beta2: float, threshold: float = RHO_THRESHOLD) -> float | None:
    """The variance rectification term r_t of Algorithm 2, or None while rho_t <= ``threshold``
    (the variance of the adaptive rate is intractable and RAdam takes a momentum-SGD step).

    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)) -> 1.
    """
    if threshold < PAPER_RHO_THRESHOLD:
        raise ValueError(f"threshold must be >= 4 (r_t is imaginary below), got {threshold}")
    rho_t = rho(step, beta2)
    if not rho_t > threshold:
        return None
    r_max = rho_inf(beta2)
    return math.sqrt((rho_t - 4) * (rho_t - 2) * r_max / ((r_max - 4) * (r_max - 2) * rho_t))


def _check_hyper(lr: float, betas: Sequence[float], eps: float, weight_decay: float) -> None:
    # Plain ValueErrors for direct use, like torch.optim; the builders raise ConfigError first.
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not eps >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"Invalid betas: {betas}")
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def _moment_state(state: dict[str, Any], p: torch.Tensor) -> None:
    """Lazy state, keyed as torch.optim's Adam family: ``step``, the moments like p.

    ``step`` is a Python int, not torch's float32 CPU scalar: the step's maths (bias
    corrections, RAdam's rho_t branch) needs it as a number, and reading a tensor back each
    step per parameter is a host read (trainrepro/engine/train.py: none per update)."""
    if not state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


class _MomentOptimizer(torch.optim.Optimizer):
    """What RAdam and Adam2k share: the checks and defaults of Adam's hyper-parameters (plus
    the subclass's ``extra``), and a step that counts each parameter's updates in its lazy
    state before the subclass's ``_update``."""

    def __init__(
        self,
        params: Params,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        **extra: Any,
    ) -> None:
        _check_hyper(lr, betas, eps, weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, {**defaults, **extra})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                _moment_state(state, p)
                state["step"] += 1
                self._update(p, group, state, state["step"])
        return loss

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before ``step`` was an int (and torch.optim.RAdam's) hold a
        # float32 tensor, exact up to 2**24: the same count, read back once here on load.
        super().__setstate__(state)
        for s in self.state.values():
            if isinstance(s.get("step"), torch.Tensor):
                s["step"] = int(s["step"].item())

    def _update(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], t: int
    ) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- RAdam
class RAdam(_MomentOptimizer):
    """Rectified Adam, Algorithm 2 of Liu et al. (2020).

    Per parameter, at update t (g_t the gradient):
        m_t = beta1 m + (1 - beta1) g_t,  v_t = beta2 v + (1 - beta2) g_t^2,
        m_hat = m_t / (1 - beta1^t),  rho_t as in ``rho``;
        if rho_t > rho_threshold:
            l_t = sqrt(1 - beta2^t) / (sqrt(v_t) + eps),  r_t as in ``rectification``,
            theta -= lr * r_t * l_t * m_hat
        else:
            theta -= lr * m_hat          (the un-adapted momentum step)

    ``eps`` is added to sqrt(v_t) before the bias correction sqrt(1 - beta2^t) is applied, as
    in torch.optim.RAdam and the authors' code (Adam proper adds it to sqrt(v_hat)); the
    paper's l_t has no eps. ``rho_threshold``: the paper's text says 4; the authors' code and
    torch use 5, a safety margin since rho_t is an approximation; 5 is our default, so this
    matches torch.optim.RAdam. The authors' packaged code tests rho_t >= 5 and by default
    skips the update below it; torch and we test rho_t > 5 and take the momentum step (the
    two tests agree unless rho_t is exactly 5).

    ``weight_decay`` is L2 (added to the gradient, so it enters m and v) unless
    ``decoupled_weight_decay``: then theta *= 1 - lr * weight_decay before the step, as in
    torch's AdamW and RAdam(decoupled_weight_decay=True) and the authors' code.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        rho_threshold: float = RHO_THRESHOLD,
    ) -> None:
        if not rho_threshold >= PAPER_RHO_THRESHOLD:
            raise ValueError(f"Invalid rho_threshold (must be >= 4): {rho_threshold}")
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            rho_threshold=rho_threshold,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Groups saved by torch.optim.RAdam (earlier runs of the radam option) lack our key.
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("rho_threshold", RHO_THRESHOLD)

    def _update(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], t: int
    ) -> None:
        """One RAdam update of ``p``, its ``t``-th."""
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        grad = p.grad
        if wd != 0:
            if group["decoupled_weight_decay"]:
                p.mul_(1.0 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias1 = 1.0 - beta1**t
        r_t = rectification(t, beta2, group["rho_threshold"])
        if r_t is None:
            p.add_(m, alpha=-lr / bias1)
        else:
            denom = v.sqrt().add_(eps)
            p.addcdiv_(m, denom, value=-lr * r_t * math.sqrt(1.0 - beta2**t) / bias1)


# ---------------------------------------------------------------- Adam-2k
# How Adam2k divides the first moment m at update t > k (``bias_correction``):
#   "authors": by 1 - beta1^t, t counting every update since the start, frozen ones included.
#       The authors' code, github.com/LiyuanLucasLiu/RAdam nmt/my_module/adam2.py (class
#       Adam2, run with --tb-tag adam_1k --adam-freeze 2000, nmt/recipes.md "Adam-2k"): one
#       step counter, line 133, bias_correction1 = 1 - beta1 ** state['step'] at line 141,
#       m updated only once step > adam_freeze (lines 147-151). Also torch.optim.Adam resumed
#       at step k with m = 0 and the accumulated v. As 1 - beta1^t ~ 1 past k, m (which starts
#       at 0 at update k + 1) is left biased low: update k + 1 is (1 - beta1) times Adam's.
#   "shifted": by 1 - beta1^(t - k), the count of gradients m has seen, so update k + 1 is
#       Adam's first step from a fresh m and the accumulated v (our earlier default). It is
#       1 / (1 - beta1^(t - k)) times "authors": 10x at update k + 1 with beta1 0.9, still
#       above 1.01x at update k + 43.
BIAS_CORRECTIONS = ("authors", "shifted")


class Adam2k(_MomentOptimizer):
    """Adam-2k of Liu et al. (2020, Sec. 3.1): for the first ``k`` updates only the second
    moment v is updated from the gradients, so the adaptive rate is estimated from k samples
    before it is used; the parameters and the first moment m stay fixed. Plain Adam after.

    Bias correction: v has averaged every gradient since the start, so update t divides it by
    1 - beta2^t. m starts at update k + 1; ``bias_correction`` says what it is divided by:
    ``"authors"`` (default) 1 - beta1^t, as the authors' code (nmt/my_module/adam2.py of
    github.com/LiyuanLucasLiu/RAdam) and torch.optim.Adam resumed at step k with m = 0 and
    the accumulated v; ``"shifted"`` 1 - beta1^(t - k), the count of gradients m has seen,
    which makes update k + 1 Adam's first step from a fresh m (1 / (1 - beta1) = 10x the
    authors' update there with beta1 0.9). See ``BIAS_CORRECTIONS``.

    Step after the first k: theta -= lr * m_hat / (sqrt(v_hat) + eps), eps added to sqrt(v_hat)
    as in torch.optim.Adam (k=0 is torch's Adam). The authors' code adds eps to sqrt(v) before
    the bias correction sqrt(1 - beta2^t), i.e. uses eps / sqrt(1 - beta2^t): 1.07 eps at
    t = 2000 with beta2 0.999, 1.6 eps at t = 500; we keep torch's. ``weight_decay`` is L2,
    as in Adam: g += weight_decay * theta; during the first k updates the decay term enters v
    only, so it does not move the parameters either. With ``decoupled_weight_decay`` it is
    AdamW's decay, theta *= 1 - lr * weight_decay before each step after the first k (k=0 is
    torch's AdamW; the authors' code decays so, and only after the freeze, too).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        k: int = ADAM_2K_STEPS,
        decoupled_weight_decay: bool = False,
        bias_correction: str = "authors",
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"Invalid k (updates that only estimate v, >= 0): {k}")
        if bias_correction not in BIAS_CORRECTIONS:
            choices = ", ".join(BIAS_CORRECTIONS)
            raise ValueError(f"Invalid bias_correction: {bias_correction!r} (one of {choices})")
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            k=k,
            decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Groups saved before the key existed were trained with the shifted correction.
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("bias_correction", "shifted")

    def _update(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], t: int
    ) -> None:
        """Update v; past the first ``k`` updates also m and ``p`` (Adam)."""
        beta1, beta2 = group["betas"]
        lr, eps, wd, k = group["lr"], group["eps"], group["weight_decay"], group["k"]
        coupled_wd = 0.0 if group["decoupled_weight_decay"] else wd
        grad = p.grad if coupled_wd == 0 else p.grad.add(p, alpha=coupled_wd)
        v = state["exp_avg_sq"]
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if t <= k:
            return
        if wd != 0 and group["decoupled_weight_decay"]:
            p.mul_(1.0 - lr * wd)
        m = state["exp_avg"]
        m.lerp_(grad, 1.0 - beta1)
        bias1 = 1.0 - beta1 ** (t - k if group["bias_correction"] == "shifted" else t)
        bias2_sqrt = math.sqrt(1.0 - beta2**t)
        denom = (v.sqrt() / bias2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bias1)


# ---------------------------------------------------------------- builders (registered in optim)
def _k(key: str, options: Mapping[str, Any]) -> int:
    return check_int("optimizer.k", options[key], 0)


def _bias_correction(key: str, options: Mapping[str, Any]) -> str:
    value = options[key]
    if not isinstance(value, str) or value not in BIAS_CORRECTIONS:
        raise ConfigError(
            "optimizer.bias_correction", value, f"must be one of: {', '.join(BIAS_CORRECTIONS)}"
        )
    return value


@option(
    Adam2k,
    {
        **ADAM_KEYS,
        "decoupled_weight_decay": False,
        "k": ADAM_2K_STEPS,
        "bias_correction": "authors",
        **DECAY_KEYS,
    },
    k=_k,
    decoupled_weight_decay=flag,
    bias_correction=_bias_correction,
)
def adam_2k() -> None:
    """Adam-2k (Liu et al. 2020, Sec. 3.1): v alone for ``k`` updates, then Adam; m's bias
    correction ``authors`` (1 - beta1^t) or ``shifted`` (1 - beta1^(t - k)), see Adam2k."""
