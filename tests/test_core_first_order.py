"""First-order update rules: step-for-step equal to torch.optim, and convergent (no Spark)."""

import numpy as np
import pytest

from sparkml_aiaas.core.first_order import (RULES, RuleSettings, apply_update, average_states,
                                            init_state, scheduled_step)

torch = pytest.importorskip("torch")


def _torch_optimizer(rule, params, lr, settings):
    if rule == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if rule == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=settings.momentum)
    if rule == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=settings.momentum, nesterov=True)
    if rule == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(settings.beta1, settings.beta2),
                                eps=settings.epsilon)
    if rule == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=settings.rho, eps=settings.epsilon)
    if rule == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=settings.epsilon)
    raise AssertionError(rule)


def _quadratic(seed=0, n=6):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    H = A @ A.T / n + np.eye(n)
    b = rng.standard_normal(n)
    return H, b


@pytest.mark.parametrize("rule", RULES)
def test_rules_match_torch_step_for_step(rule):
    H, b = _quadratic()
    settings = RuleSettings()
    x = np.linspace(-1, 1, len(b))
    state = init_state(rule, len(b))
    param = torch.tensor(x.copy(), dtype=torch.float64, requires_grad=True)
    optimizer = _torch_optimizer(rule, [param], 0.05, settings)
    for _ in range(25):
        grad = H @ x - b
        x, state = apply_update(rule, x, grad, state, 0.05, settings)
        optimizer.zero_grad()
        param.grad = torch.tensor(H @ param.detach().numpy() - b, dtype=torch.float64)
        optimizer.step()
        np.testing.assert_allclose(x, param.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert int(state["t"]) == 25


@pytest.mark.parametrize("rule", RULES)
def test_rules_converge_on_a_quadratic(rule):
    H, b = _quadratic(seed=1)
    optimum = np.linalg.solve(H, b)
    step = {"sgd": 0.2, "momentum": 0.05, "nesterov": 0.05, "adam": 0.05, "rmsprop": 0.01,
            "adagrad": 0.5}[rule]
    x, state = np.zeros(len(b)), init_state(rule, len(b))
    for t in range(4000):
        current = scheduled_step(step, "inverse_time", t, decay=1e-3) if rule == "rmsprop" else step
        x, state = apply_update(rule, x, H @ x - b, state, current)
    np.testing.assert_allclose(x, optimum, atol=1e-3)


def test_l1_prox_gives_exact_zeros():
    # minimize ½‖x − c‖² + λ‖x‖₁: the solution is soft-threshold(c, λ).
    c = np.array([2.0, 0.3, -0.05, -1.0])
    lam = np.full(4, 0.5)
    x, state = np.zeros(4), init_state("sgd", 4)
    for _ in range(200):
        x, state = apply_update("sgd", x, x - c, state, 0.5, l1=lam)
    np.testing.assert_allclose(x, [1.5, 0.0, 0.0, -0.5], atol=1e-12)
    assert x[1] == 0.0 and x[2] == 0.0


def test_schedules():
    assert scheduled_step(1.0, "constant", 100) == 1.0
    assert scheduled_step(1.0, "inverse_time", 9, decay=1.0) == pytest.approx(0.1)
    assert scheduled_step(1.0, "step_decay", 25, decay=0.5, drop_every=10) == 0.25
    with pytest.raises(ValueError, match="unknown step schedule 'cosine'"):
        scheduled_step(1.0, "cosine", 1)


def test_errors_and_settings_validation():
    with pytest.raises(ValueError, match="unknown update rule 'lion'"):
        init_state("lion", 3)
    with pytest.raises(ValueError, match="beta2 must be in"):
        RuleSettings(beta2=1.0).validate()
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        RuleSettings(epsilon=0).validate()


def test_average_states_weights_each_task():
    a = {"t": np.asarray(3), "m": np.array([1.0, 1.0]), "v": np.array([0.0, 2.0])}
    b = {"t": np.asarray(3), "m": np.array([3.0, 5.0]), "v": np.array([4.0, 2.0])}
    averaged = average_states([a, b], [1, 3])
    np.testing.assert_allclose(averaged["m"], [2.5, 4.0])
    np.testing.assert_allclose(averaged["v"], [3.0, 2.0])
    assert int(averaged["t"]) == 3
