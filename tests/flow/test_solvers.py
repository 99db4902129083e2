
import pytest
import torch

from fmrec_lib.flow.paths import CosinePath
from fmrec_lib.flow.solvers import count_model_calls, solve, time_grid
from fmrec_lib.flow.time_samplers import TIME_EPS


def cubic_field(x, t):
    """x1_hat whose textbook straight-path velocity is 3 t^2: x1_hat = x + (1 - t) 3 t^2."""
    return x + (1 - t)[:, None] * 3 * t[:, None] ** 2


@pytest.mark.parametrize("method, steps, tol", [("euler", 1000, 5e-3), ("heun", 100, 5e-4)])
def test_velocity_3t2_integrates_to_t3(method, steps, tol):
    x_0 = torch.zeros(3, 2, dtype=torch.float64)
    sol = solve(cubic_field, x_0, steps=steps, method=method, update="textbook")
    assert torch.allclose(sol.x, torch.full_like(x_0, 1 - TIME_EPS ** 3), atol=tol)


def test_heun_is_second_order_and_euler_first_order():
    x_0 = torch.zeros(1, 1, dtype=torch.float64)
    err = {m: [abs(float(solve(cubic_field, x_0, steps=n, method=m, update="textbook").x) - (1 - TIME_EPS ** 3))
               for n in (20, 40)] for m in ("euler", "heun")}
    assert err["euler"][0] / err["euler"][1] == pytest.approx(2, rel=0.15)
    assert err["heun"][0] / err["heun"][1] > 3.5


def test_paper_update_on_fixed_noise_is_the_mean_of_predictions():
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(5, 8, generator=g, dtype=torch.float64)
    w = torch.randn(8, 8, generator=g, dtype=torch.float64)
    predict = lambda x, t: torch.tanh(x @ w) + t[:, None]
    sol = solve(predict, x_0, steps=30, update="paper", return_trajectory=True)
    assert sol.n_calls == 30 and len(sol.predictions) == 30 and len(sol.trajectory) == 31
    assert torch.allclose(sol.x, torch.stack(sol.predictions).mean(0))


@pytest.mark.parametrize("update", ["paper", "textbook"])
def test_exact_x1_predictor_reaches_target_in_one_straight_step(update):
    x_1 = torch.randn(4, 3, dtype=torch.float64)
    sol = solve(lambda x, t: x_1, torch.randn(4, 3, dtype=torch.float64), steps=1, update=update)
    assert torch.allclose(sol.x, x_1)


def test_cosine_path_needs_many_steps_where_straight_needs_one():
    g = torch.Generator().manual_seed(0)
    x_1, x_0 = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    errors = [float((solve(lambda x, t: x_1, x_0, steps=n, update="textbook", path=CosinePath()).x - x_1).norm())
              for n in (1, 10, 100)]
    assert errors[0] > 0.1 and errors[0] > errors[1] > errors[2]


def test_stochastic_sampler_follows_its_generator():
    x_0 = torch.zeros(4, 3)
    f = lambda x, t: x + 1
    run = lambda seed, scale: solve(f, x_0, steps=5, method="stochastic", noise_scale=scale,
                                    generator=torch.Generator().manual_seed(seed)).x
    assert torch.equal(run(1, 0.5), run(1, 0.5))
    assert not torch.equal(run(1, 0.5), run(2, 0.5))
    assert torch.equal(run(1, 0.0), solve(f, x_0, steps=5).x)


def test_model_call_counts():
    f = lambda x, t: x
    for method, update in [("euler", "paper"), ("heun", "paper"), ("heun", "textbook"), ("stochastic", "paper")]:
        assert solve(f, torch.zeros(1, 1), steps=7, method=method, update=update).n_calls == count_model_calls(7, method, update)
    assert count_model_calls(7, "heun", "textbook") == 13


def test_time_grid_matches_the_authors():
    assert time_grid(30)[:2] == [TIME_EPS, 1 / 30 * (1 - TIME_EPS) + TIME_EPS] and time_grid(30)[-1] == pytest.approx(1.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        solve(lambda x, t: x, torch.zeros(1, 1), steps=0)
    with pytest.raises(ValueError, match="unknown method"):
        solve(lambda x, t: x, torch.zeros(1, 1), method="rk4")
    with pytest.raises(ValueError, match="unknown update"):
        solve(lambda x, t: x, torch.zeros(1, 1), update="fancy")
