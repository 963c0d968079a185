"""edgeloop.sim: a deterministic simulated camera fleet with ground truth.

Real handwritten digits (scikit-learn) drawn over real photos (scikit-image), seen under
day / dusk / night lighting and clear / rain / fog weather. See `world.World`.
"""

from .world import CONDITIONS, WEATHER, Dataset, Frame, World

__all__ = ["World", "Frame", "Dataset", "CONDITIONS", "WEATHER"]
