"""What ``sampler=``, ``schedule=`` and ``init=`` build, and the one draw.

- ``sampler=NAME`` is a sampling function of :mod:`scorelab.sampling` itself, configured with
  ``_partial_: true``: every keyword of the function is ``sampler.<keyword>=`` on the command line.
- ``schedule=NAME`` (:mod:`scorelab.schedules`: ``karras``, ``geometric``, ``sde``, ``level``)
  turns the model's noise process into the grid the function walks (``sigmas``, ``sigma``, or
  the SDE with its step count and end time) and says which score view it needs.
- ``init=NAME`` (:class:`~scorelab.sampling.start.Start`) draws the start at the grid's first
  point: the prior, the data's moments, or uniform noise.

:func:`draw` puts the three together: grid, start, progress bar, one call of the function.
:class:`Sampler` holds them for the entry points, checks them against a model before any
sampling work, and describes them for ``sample_info.json`` and the metrics records.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor

from scorelab.sampling.base import SampleResult
from scorelab.sampling.start import Start

#: Parameters the draw itself supplies (the score, the start, progress, noise) or a conditional
#: sampler's hook: not settable as ``sampler.<name>``.
SUPPLIED = ("score_fn", "x", "callback", "generator", "project")

_SCHEDULE_KEYS = "num_steps sigma_min sigma_max rho clamp_sigma_min clamp_sigma_max num_scales"
#: Settings that moved out of ``sampler.*``, with where they live now.
MOVED = {
    **{k: f"schedule.{k}" for k in (*_SCHEDULE_KEYS.split(), "n_steps", "eps", "sigma")},
    "init": "init=NAME (auto, moments, prior, uniform)",
    **{f"init_{k}": f"init.{k}" for k in ("low", "high", "mean", "std")},
}


@contextmanager
def progress_bar(total: int | None, desc: str, enabled: bool):
    """A tqdm bar advanced by the sampler's callback (None when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)
    try:
        yield lambda info: bar.update(1)
    finally:
        bar.close()


def draw(
    model,
    fn: Callable[..., SampleResult],
    schedule: Callable,
    start: Start,
    shape: tuple[int, ...],
    *,
    device="cpu",
    generator: torch.Generator | None = None,
    progress: tuple[int | None, str] | None = None,
    **given,
) -> tuple[SampleResult, dict]:
    """Draw one batch of ``shape`` from ``model`` with the sampling function ``fn``.

    The schedule evaluated for the model gives the grid (``fn``'s schedule arguments), the score
    view (σ- or time-conditioned) and the marginal at its first point, where ``start`` draws x.
    ``progress``: (total steps, label) for a progress bar, or None. ``given``: a conditional
    sampler's own arguments (``known``, ``mask``, ``grey``). Returns the sampler's result and a
    description of the start."""
    grid = schedule(model)
    x, started = start(model, shape, grid, device=device, generator=generator)
    score = model.sigma_score() if grid.view == "sigma" else model.time_score()
    total, label = progress or (None, "")
    with progress_bar(total, label, progress is not None) as cb:
        res = fn(score, x, **grid.kwargs, **given, callback=cb, generator=generator)
    return res, started


def _zero_score(x: Tensor, cond: Tensor) -> Tensor:
    return torch.zeros_like(x)


class Sampler:
    """A sampling function (a ``functools.partial`` with its keywords), a schedule and a start.

    ``sampler(model, shape, *, device, generator, progress)`` draws one batch;
    ``sample=`` replaces the function by a conditional sampler with the same keywords
    (:func:`~scorelab.sampling.conditional.pc_impute`), whose own arguments come in ``given``.
    """

    def __init__(self, fn: partial, schedule: Callable, start: Start) -> None:
        if not isinstance(fn, partial):
            fn = partial(fn)
        self.fn, self.schedule, self.start = fn, schedule, start
        self.name = sampler_name(fn)
        self.steps: int | None = None  # callbacks per draw, from check()
        self.started_from: dict | None = None  # where the last draw started

    @property
    def function(self) -> Callable:
        return self.fn.func

    def check(self, model, shape: tuple[int, ...] | None = None) -> None:
        """Refuse, in one line, a keyword the function does not take, a schedule it cannot walk
        or a value it refuses: the function runs once on one example of ``shape`` with a zero
        score (no network call), which also counts its steps for the progress bar."""
        try:
            grid = self.schedule(model)
        except ValueError as err:
            raise ValueError(f"sampler={self.name}: {err}") from None
        params = inspect.signature(self.function).parameters
        fname = self.function.__name__
        wrong = [k for k in grid.kwargs if k not in params]
        if wrong:
            raise ValueError(
                f"sampler={self.name} ({fname}) does not take the grid of schedule="
                f"{schedule_name(self.schedule)} ({', '.join(grid.kwargs)}); pick "
                f"{_schedules_for(params)}"
            )
        own = schedule_keywords(self.function)
        for key in self.fn.keywords:
            if key in own:
                raise ValueError(
                    f"sampler.{key} is set by the schedule; use schedule.{key}=VALUE instead"
                )
            if key not in settable_keywords(self.function):
                moved = f"; it moved to {MOVED[key]}" if key in MOVED else ""
                raise ValueError(
                    f"sampler.{key} is not a keyword of {fname} (its keywords: "
                    f"{', '.join(settable_keywords(self.function))}){moved}"
                )
        if shape is None:
            return
        count = [0]
        gen = torch.Generator().manual_seed(0)
        x = grid.prior_std * torch.randn((1, *shape), generator=gen)
        try:
            with torch.no_grad():
                self.fn(
                    _zero_score,
                    x,
                    **grid.kwargs,
                    callback=lambda info: count.__setitem__(0, count[0] + 1),
                    generator=gen,
                )
        except (ValueError, TypeError) as err:
            raise ValueError(f"sampler={self.name}: {err}") from None
        self.steps = count[0] or None

    def __call__(
        self, model, shape, *, device="cpu", generator=None, progress=False, sample=None, **given
    ) -> SampleResult:
        fn = self.fn if sample is None else partial(sample, **self.fn.keywords)
        res, self.started_from = draw(
            model,
            fn,
            self.schedule,
            self.start,
            shape,
            device=device,
            generator=generator,
            progress=(self.steps, self.name) if progress else None,
            **given,
        )
        return res

    def describe(self) -> dict:
        info: dict = {"name": self.name, "function": self.function.__name__}
        for key, v in self.fn.keywords.items():
            info[key] = _json(v) if _plain(v) else _describe_part(v)
        info["schedule"] = {"name": schedule_name(self.schedule), **_settings(self.schedule)}
        info["init"] = self.start.describe()
        if self.started_from is not None:
            info["start"] = dict(self.started_from)
        return info


def schedule_keywords(fn: Callable) -> set[str]:
    """The parameters of a sampling function that its schedule supplies."""
    params = inspect.signature(fn).parameters
    if "sde" in params:
        return {"sde", "n_steps", "eps"}
    return {p for p in ("sigmas", "sigma") if p in params}


def settable_keywords(fn: Callable) -> list[str]:
    """The keywords of a sampling function that ``sampler.<name>`` may set."""
    skip = {*SUPPLIED, *schedule_keywords(fn)}
    return [
        name
        for name, p in inspect.signature(fn).parameters.items()
        if name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _schedules_for(params) -> str:
    if "sde" in params:
        return "schedule=sde"
    if "sigma" in params:
        return "schedule=level"
    return "schedule=karras or schedule=geometric"


def sampler_name(fn: partial) -> str:
    """A short name: the config's (heun, dpmpp, ode, ald, langevin, pc, em, ...)."""
    names = {
        "edm_heun": "heun",
        "dpmpp_multistep": "dpmpp",
        "ode_sampler": "ode",
        "annealed_langevin": "ald",
        "langevin": "langevin",
    }
    fname = getattr(fn.func, "__name__", type(fn.func).__name__)
    if fname != "pc_sampler":
        return names.get(fname, fname)
    if fn.keywords.get("corrector") is not None:
        return "pc"
    pred = _part_name(fn.keywords.get("predictor"))
    return {
        "EulerMaruyamaPredictor": "em",
        "AncestralSamplingPredictor": "ancestral",
        "ReverseDiffusionPredictor": "reverse_diffusion",
    }.get(pred, "pc")


def schedule_name(schedule) -> str:
    return {"Karras": "karras", "Geometric": "geometric", "Times": "sde", "Level": "level"}.get(
        type(schedule).__name__, type(schedule).__name__
    )


def _part_name(v) -> str:
    f = v.func if isinstance(v, partial) else v
    return getattr(f, "__name__", type(f).__name__)


def _describe_part(v) -> dict | str:
    if isinstance(v, partial):
        return {"name": _part_name(v), **{k: x for k, x in v.keywords.items() if _plain(x)}}
    return _part_name(v)


def _settings(obj) -> dict:
    return {k: _json(v) for k, v in vars(obj).items() if _plain(v)}


def _plain(v) -> bool:
    return isinstance(v, int | float | str | bool | type(None))


def _json(v):
    """``v`` for a JSON record: a non-finite float as its string ("inf"), which strict JSON
    readers accept."""
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v
