"""The sampling library: signals score candidates, selectors keep the best under a budget.

Pure code, deterministic for a seed, shared by agent, relay and hub.
"""

from .selectors import WindowedSelector, select_top
from .signals import confidence_band, entropy, least_confidence, margin, random_signal, score

__all__ = ["WindowedSelector", "select_top", "score", "least_confidence", "margin", "entropy",
           "confidence_band", "random_signal"]
