"""scorelab: score-based generative models (NCSN, NCSNv2, score SDEs)."""

__version__ = "0.1.0"
