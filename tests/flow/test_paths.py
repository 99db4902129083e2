import pytest
import torch

from fmrec_lib.flow.paths import CosinePath, StraightPath, make_path
from fmrec_lib.flow.time_samplers import NAMES, TIME_EPS, mode, sample_time


@pytest.fixture
def xs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.rand(6, generator=g) * 0.98 + 0.01


@pytest.mark.parametrize("path", [StraightPath(), CosinePath()])
def test_endpoints(path, xs):
    x_0, x_1, _ = xs
    assert torch.allclose(path.sample(x_0, x_1, torch.zeros(6))[0], x_0, atol=1e-6)
    assert torch.allclose(path.sample(x_0, x_1, torch.ones(6))[0], x_1, atol=1e-6)


@pytest.mark.parametrize("path", [StraightPath(), CosinePath()])
def test_velocity_is_the_time_derivative(path, xs):
    x_0, x_1, t = xs
    h = 1e-3
    x0d, x1d, td = x_0.double(), x_1.double(), t.double()
    fd = (path.sample(x0d, x1d, td + h)[0] - path.sample(x0d, x1d, td - h)[0]) / (2 * h)
    assert torch.allclose(path.sample(x0d, x1d, td)[1], fd, atol=1e-5)


@pytest.mark.parametrize("path", [StraightPath(), CosinePath()])
def test_x1_velocity_conversions_are_inverse_and_exact(path, xs):
    x_0, x_1, t = (x.double() for x in xs)
    x_t, v = path.sample(x_0, x_1, t)
    assert torch.allclose(path.velocity_from_x1(x_1, x_t, t), v)
    assert torch.allclose(path.x1_from_velocity(v, x_t, t), x_1)
    assert torch.allclose(path.velocity_with_noise(x_1, x_0, t), v)


def test_straight_path_closed_forms(xs):
    x_0, x_1, t = xs
    path = StraightPath()
    x_t, _ = path.sample(x_0, x_1, t)
    col = t[:, None]
    assert torch.allclose(path.velocity_from_x1(x_1, x_t, t), (x_1 - x_t) / (1 - col), atol=1e-5)
    assert torch.allclose(path.velocity_with_noise(x_1, x_0, t), x_1 - x_0)


def test_unknown_path():
    with pytest.raises(ValueError, match="unknown path 'spiral'"):
        make_path("spiral")


@pytest.mark.parametrize("name", NAMES)
def test_time_samplers_stay_in_range_and_follow_the_generator(name):
    a = sample_time(name, 10_000, generator=torch.Generator().manual_seed(1))
    b = sample_time(name, 10_000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.min() >= TIME_EPS and a.max() <= 1.0


def test_mode_sampler_formula_and_skew():
    u = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(mode(u), torch.tensor([1.0, 0.5 - (0.5 - 1 + 0.5), 0.0]), atol=1e-6)
    # s = 1 puts more mass at large t than uniform does
    assert sample_time("mode", 50_000, generator=torch.Generator().manual_seed(0)).mean() > 0.5
    with pytest.raises(ValueError, match="unknown time sampler"):
        sample_time("beta", 3)
