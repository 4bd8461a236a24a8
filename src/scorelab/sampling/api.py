"""Public names of :mod:`scorelab.sampling` (re-exported by the package)."""

from scorelab.sampling.base import SampleResult
from scorelab.sampling.dpm_solver import dpmpp_multistep
from scorelab.sampling.edm import edm_heun
from scorelab.sampling.langevin import annealed_langevin, langevin, tweedie_denoise
from scorelab.sampling.ode import ode_sampler
from scorelab.sampling.pc import (
    AncestralSamplingPredictor,
    AnnealedLangevinCorrector,
    Corrector,
    EulerMaruyamaPredictor,
    LangevinCorrector,
    NoneCorrector,
    NonePredictor,
    Predictor,
    ReverseDiffusionPredictor,
    ancestral_sampler,
    em_sampler,
    pc_sampler,
    reverse_diffusion_sampler,
)

__all__ = [
    "AncestralSamplingPredictor",
    "AnnealedLangevinCorrector",
    "Corrector",
    "EulerMaruyamaPredictor",
    "LangevinCorrector",
    "NoneCorrector",
    "NonePredictor",
    "Predictor",
    "ReverseDiffusionPredictor",
    "SampleResult",
    "ancestral_sampler",
    "annealed_langevin",
    "dpmpp_multistep",
    "edm_heun",
    "em_sampler",
    "langevin",
    "ode_sampler",
    "pc_sampler",
    "reverse_diffusion_sampler",
    "tweedie_denoise",
]
