"""One noise-process interface: VE, VP, sub-VP and NCSN's discrete levels answer the same
methods with the same shapes, and the code above ``sde.py`` calls them instead of checking the
process's type."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

import scorelab
from scorelab.sde import VESDE, VPSDE, NoiseLevels, NoiseProcess, as_sde, subVPSDE

F64 = torch.float64
PROCESSES = {
    "ve": lambda: VESDE(0.01, 20.0, 50),
    "vp": lambda: VPSDE(0.1, 20.0, 50),
    "subvp": lambda: subVPSDE(0.1, 20.0, 50),
    "ncsn": lambda: NoiseLevels(20.0, 0.01, 50),
}
# Every method and property of the interface (NoiseProcess's public names).
INTERFACE = sorted(n for n in vars(NoiseProcess) if not n.startswith("_"))

# ----------------------------------------------------------------------------- type dispatch
PROCESS_CLASSES = {"NoiseProcess", "NoiseLevels", "SDE", "VESDE", "VPSDE", "subVPSDE", "_BetaSDE"}
PROCESS_ATTRS = {
    "alphas",
    "betas",
    "discrete_betas",
    "discrete_sigmas",
    "alphas_cumprod",
    "sigmas",
    "is_discrete",
}
MAX_DISPATCH = 3


def _names(node: ast.AST):
    if isinstance(node, ast.Tuple | ast.List):
        for e in node.elts:
            yield from _names(e)
    elif isinstance(node, ast.BinOp):  # A | B
        yield from _names(node.left)
        yield from _names(node.right)
    elif isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr


def dispatch_sites(source: str) -> list[int]:
    """Lines that branch on the kind of noise process: ``isinstance``/``issubclass`` against a
    process class, ``getattr``/``hasattr`` of a process's tables, and any ``is_discrete``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        hit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2:
            what, arg = node.func.id, node.args[1]
            if what in ("isinstance", "issubclass"):
                hit = bool(PROCESS_CLASSES & set(_names(arg)))
            elif what in ("getattr", "hasattr"):
                hit = isinstance(arg, ast.Constant) and arg.value in PROCESS_ATTRS
        elif isinstance(node, ast.Attribute):
            hit = node.attr == "is_discrete"
        elif isinstance(node, ast.FunctionDef):
            hit = node.name == "is_discrete"
        if hit:
            lines.append(node.lineno)
    return lines


def test_the_counter_sees_each_kind_of_dispatch():
    src = (
        "if isinstance(noise, NoiseLevels): pass\n"
        "if isinstance(sde, VESDE | VPSDE): pass\n"
        "a = getattr(sde, 'alphas', None)\n"
        "b = model.is_discrete\n"
        "if isinstance(x, (int, subVPSDE)): pass\n"
        "if isinstance(x, torch.Tensor): pass\n"
        "c = getattr(m, 'weight')\n"
    )
    assert dispatch_sites(src) == [1, 2, 3, 4, 5]


def test_code_outside_sde_py_calls_methods_instead_of_checking_the_process_type():
    root = Path(scorelab.__file__).parent
    sites = [
        f"{path.relative_to(root)}:{line}"
        for path in sorted(root.rglob("*.py"))
        if path != root / "sde.py"
        for line in dispatch_sites(path.read_text())
    ]
    assert len(sites) <= MAX_DISPATCH, f"type dispatch on the noise process at {sites}"


# ----------------------------------------------------------------------------- the interface
@pytest.mark.parametrize("name", list(PROCESSES))
def test_every_process_implements_the_whole_interface(name):
    process = PROCESSES[name]()
    cls = type(process)
    assert not inspect.isabstract(cls)
    for method in INTERFACE:
        assert hasattr(cls, method), f"{cls.__name__} lacks {method}"
    assert isinstance(process.N, int) and process.N == 50
    assert isinstance(process.prior_std, float)  # a property everywhere, never a method
    lo, hi = process.sigma_range()
    assert isinstance(lo, float) and isinstance(hi, float) and 0 < lo < hi
    assert process.prior_std == pytest.approx(hi, rel=1e-6) or process.prior_std == 1.0


@pytest.mark.parametrize("name", list(PROCESSES))
def test_marginals_on_the_process_grid(name):
    process = PROCESSES[name]()
    grid = process.grid().to(F64)
    assert grid.shape == (process.N,)
    alpha, std = process.marginal_coeffs(grid)
    assert alpha.shape == std.shape == grid.shape
    sigma = process.sigma(grid)
    torch.testing.assert_close(sigma, std / alpha)
    assert (sigma[:-1] > sigma[1:]).all(), "the grid is noisiest first"
    inner = grid[:-1] if isinstance(process, VPSDE | subVPSDE) else grid  # σ(0) = 0 there
    torch.testing.assert_close(process.t_from_sigma(process.sigma(inner)), inner)
    x = torch.randn(process.N, 3, dtype=F64)
    mean, sd = process.marginal_prob(x, grid)
    torch.testing.assert_close(mean, alpha[:, None] * x)
    torch.testing.assert_close(sd, std)
    frac = process.noise_fraction(grid[:-1])
    assert frac.shape == (process.N - 1,) and (frac >= 0).all() and (frac <= 1 + 1e-6).all()
    assert len(process.bucket_names(4)) == 4


def test_the_grid_std_is_the_levels():
    levels = PROCESSES["ncsn"]()
    assert torch.equal(levels.marginal_coeffs(levels.grid())[1], levels.sigmas)
    ve = PROCESSES["ve"]()
    std = ve.marginal_coeffs(ve.grid().to(F64))[1]
    torch.testing.assert_close(std, ve.discrete_sigmas.flip(0).to(F64), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_prior_and_a_copy_with_other_steps(name):
    process = PROCESSES[name]()
    z = process.prior_sampling((4000, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert z.shape == (4000, 2)
    assert z.std().item() == pytest.approx(process.prior_std, rel=0.05)
    assert process.prior_logp(z).shape == (4000,)
    copy = process.with_num_steps(7)
    assert type(copy) is type(process) and copy.N == 7 and process.N == 50
    assert copy.sigma_range() == pytest.approx(process.sigma_range())
    assert copy.grid().shape == (7,)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_score_conversions_round_trip(name):
    process = PROCESSES[name]()
    g = torch.Generator().manual_seed(1)
    cond = process.grid()[:-1].to(F64)[:8]
    x = torch.randn(8, 3, generator=g, dtype=F64)

    def time_score(x, c):  # an arbitrary score in the process's own noise argument
        return -x * process.sigma(c)[:, None]

    sigma_score = process.to_sigma_score(time_score)
    back = process.from_sigma_score(sigma_score)
    torch.testing.assert_close(back(x, cond), time_score(x, cond))
    alpha = process.marginal_coeffs(cond)[0][:, None]
    # s_σ(y) = α s(α y) at σ(cond)
    torch.testing.assert_close(
        sigma_score(x, process.sigma(cond)), alpha * time_score(alpha * x, cond)
    )


@pytest.mark.parametrize("name", list(PROCESSES))
def test_step_sizes_and_what_only_some_processes_have(name):
    process = PROCESSES[name]()
    cond = process.grid()[:4].to(F64)
    x = torch.randn(4, 2, dtype=F64)
    alpha = process.corrector_alpha(cond, x)
    assert alpha.shape == (4,) and alpha.dtype == F64 and ((alpha > 0) & (alpha <= 1)).all()
    if name in ("ve", "vp"):
        x_mean, std = process.ancestral_step(x, -x, cond)
        assert x_mean.shape == x.shape and std.shape == (4,) and (std >= 0).all()
    else:
        with pytest.raises(ValueError, match="sampler=ancestral is defined for VE and VP only"):
            process.ancestral_step(x, -x, cond)
    if name == "ncsn":
        torch.testing.assert_close(process.dsm_sigmas("loss=dsm_discrete"), process.sigmas)
        with pytest.raises(ValueError, match=r"^sampler=pc needs an SDE model \(sde=edm"):
            as_sde(process, "sampler=pc needs an SDE model")
        with pytest.raises(ValueError, match="net_cond='time' needs an SDE"):
            process.check_net_cond("time")
        process.check_net_cond("index")
    else:
        assert as_sde(process, "unused") is process
        with pytest.raises(ValueError, match=r"needs discrete σ levels \(sde=ncsn\), but sde is"):
            process.dsm_sigmas("loss=dsm_discrete")
        with pytest.raises(ValueError, match="net_cond='index' needs discrete noise levels"):
            process.check_net_cond("index")
        process.check_net_cond("time")


def test_errors_are_one_line():
    for make in PROCESSES.values():
        for call in (
            lambda p: p.ancestral_step(torch.zeros(1, 1), torch.zeros(1, 1), p.grid()[:1]),
            lambda p: p.dsm_sigmas("loss=x"),
            lambda p: as_sde(p, "x needs an SDE"),
            lambda p: p.check_net_cond("index"),
            lambda p: p.check_net_cond("time"),
        ):
            try:
                call(make())
            except ValueError as err:
                assert "\n" not in str(err)
    with pytest.raises(ValueError, match="sde must be a noise process"):
        as_sde("ve", "x needs an SDE")
