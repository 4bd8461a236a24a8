"""What every entry point shares: Hydra resolvers, run names, command-line checks and error
handling (result files are written with :mod:`scorelab.io`)."""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scorelab.io import write_json_atomic

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def run_name(override_dirname: str) -> str:
    """A directory-safe, deterministic name for a run from its overrides ("default" if none)."""
    if not override_dirname:
        return "default"
    # No '=' or ',' in the name: paths under it can then be passed back as override values
    # (ckpt_path=.../last.ckpt) without quoting.
    name = override_dirname.replace("=", "-").replace(",", "__")
    name = re.sub(r"[^A-Za-z0-9_.+\-]", "_", name)
    if len(name) > 120:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
        name = f"{name[:100]}_{digest}"
    return name


def sweep_group(default: str) -> str:
    """A W&B group for the current job: ``<default>/<sweep dir name>`` inside a multirun, so
    every job of one sweep shares it (whatever the launcher), else ``default``."""
    if not is_multirun():
        return default
    from hydra.core.hydra_config import HydraConfig

    return f"{default}/{Path(str(HydraConfig.get().sweep.dir)).name}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("scorelab.run_name"):
        OmegaConf.register_new_resolver("scorelab.run_name", run_name)
    if not OmegaConf.has_resolver("scorelab.sweep_group"):
        OmegaConf.register_new_resolver("scorelab.sweep_group", sweep_group)


register_resolvers()


def task_overrides() -> list[str]:
    """The command-line overrides of the current Hydra job ([] outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return []


def is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ValueError, ImportError):
        return False


def unknown_group_option(args: list[str], conf_dir: str | Path = CONF_DIR) -> str | None:
    """A one-line message for a ``group=option`` override whose config file does not exist
    (e.g. ``sampler=bogus``), or None. Hydra's own message for it spans several lines."""
    conf_dir = Path(conf_dir)
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key.startswith("hydra") or value in ("", "null"):
            continue  # Hydra's own groups (launcher, sweeper) live in its plugins, not here
        if not (conf_dir / key).is_dir():
            continue
        for option in value.split(","):  # a multirun sweep: a,b,c
            if not (conf_dir / key / f"{option}.yaml").is_file():
                choices = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
                return (
                    f"unknown {key} option {option!r} in {arg!r}; choose one of: "
                    f"{', '.join(choices)}"
                )
    return None


#: The groups that say how to draw; picking a sampler brings its own schedule and start.
DRAW_GROUPS = ("sampler", "schedule", "init")


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def group_choice(overrides: list[str], group: str) -> str | None:
    """The option ``group=OPTION`` among command-line ``overrides`` picks, or None."""
    for item in overrides:
        if "=" in item and _override_key(item) == group:
            return item.split("=", 1)[1]
    return None


def own_group_settings(
    cfg: DictConfig, config_name: str, overrides: list[str], group: str = "sampler"
) -> DictConfig:
    """Give ``cfg[group]`` the settings of the option the command line picks, when an
    experiment picked another one.

    An experiment sets keys for its own choice (``experiment=toy_gmm`` sets annealed Langevin's
    ``sampler.n_steps_each``); Hydra merges them into whatever option the command line picks
    (``sampler=pc``), where they mean something else or nothing. The option picked on the
    command line therefore comes with its own config file, plus the ``group.*`` keys of the
    command line; picking the experiment's own option keeps the experiment's settings. Needs
    Hydra initialised (inside ``hydra.main`` or ``initialize_config_dir``); otherwise ``cfg``
    is returned as it is.
    """
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    chosen = group_choice(overrides, group)
    if chosen is None or cfg.get(group) is None or not GlobalHydra.instance().is_initialized():
        return cfg
    groups = DRAW_GROUPS if group == "sampler" else (group,)
    mine = [o for o in overrides if _override_key(o).split(".")[0] in groups]
    rest = [o for o in overrides if o not in mine]
    before = compose(config_name, overrides=rest, return_hydra_config=True)
    if before.hydra.runtime.choices.get(group) in (None, chosen):
        return cfg
    own = compose(config_name, overrides=mine)
    for g in groups:  # the sampler comes with its own schedule and start
        cfg[g] = own.get(g)
    return cfg


def _with_own_sampler(cfg: DictConfig) -> DictConfig:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return cfg
    hc = HydraConfig.get()
    return own_group_settings(cfg, str(hc.job.config_name), list(hc.overrides.task))


def moved_sampler_keys(args: list[str]) -> list[str]:
    """``sampler.KEY=VALUE`` for a setting that moved to ``schedule.``/``init.`` made
    ``++sampler.KEY=VALUE``, so that the sampler's check names where it lives now instead of
    Hydra's "not in struct"."""
    from scorelab.draw import MOVED

    def key(a: str) -> str:
        return a.split("=", 1)[0]

    return [
        f"++{a}" if a.startswith("sampler.") and "=" in a and key(a)[8:] in MOVED else a
        for a in args
    ]


def run_cli(main: Callable[[], Any]) -> None:
    """Run a Hydra ``main``; an unknown config-group option ends with one line and exit 2."""
    sys.argv[1:] = moved_sampler_keys(sys.argv[1:])
    problem = unknown_group_option(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()


def entry_point(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a Hydra task: a sampler picked on the command line comes with its own settings
    (:func:`own_group_settings`); bad input exits with one line (code 2), as does an error that
    carries an ``exit_code`` (a run stopped on purpose, e.g. on a non-finite loss); in a
    multirun a failed job records ``status: failed`` in its metrics.json and the sweep goes
    on."""

    @wraps(task)
    def wrapped(cfg):
        start = time.time()
        try:
            return task(_with_own_sampler(cfg))
        except Exception as err:
            if is_multirun():
                _record_failure(cfg, err, start)
                return float("nan")
            code = getattr(err, "exit_code", None)  # a run stopped on purpose, e.g. on NaN
            if isinstance(err, ValueError | FileNotFoundError):
                code = 2
            if not isinstance(code, int):
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(code)

    return wrapped


def _record_failure(cfg, err: BaseException, start: float) -> None:
    out = Path(cfg.paths.output_dir)
    write_json_atomic(
        {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "overrides": task_overrides(),
            "task": cfg.get("task_name"),
            "wall_time_s": time.time() - start,
            "metrics": {},
        },
        out / "metrics.json",
    )
    print(
        f"run failed ({type(err).__name__}: {err}); recorded in {out / 'metrics.json'}",
        file=sys.stderr,
    )
