"""The sampling library: signals score candidates, selectors keep the best under a budget.

Pure code, deterministic for a seed, shared by agent, relay and hub.
"""

from .batch import class_quotas, kcenter, near_duplicates, select_diverse
from .selectors import WindowedSelector, select_top
from .signals import (FIRES_AT, Observation, SignalContext, SignalState, confidence_band, detection_uncertainty,
                      entropy, least_confidence, margin, random_signal, score)

__all__ = ["WindowedSelector", "select_top", "select_diverse", "kcenter", "near_duplicates", "class_quotas",
           "Observation", "SignalContext", "SignalState", "FIRES_AT", "score", "least_confidence", "margin", "entropy",
           "confidence_band", "detection_uncertainty", "random_signal"]
