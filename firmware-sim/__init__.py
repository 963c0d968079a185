"""edgeloop.sim: deterministic simulated camera fleets with ground truth.

Two worlds. `world.World`: real handwritten digits (scikit-learn) drawn over real photos
(scikit-image), one label a frame (classification). `scenes.ScenesWorld`: what fixed cameras see as
video, twelve classes of objects moving through streets and depots, boxes for a detector. Both are
seen under day / dusk / night lighting and clear / rain / fog weather.
"""

from .scenes import CLASSES, DRIFT_KINDS, LIGHTINGS, DetectionDataset, SceneFrame, ScenesWorld
from .world import CONDITIONS, WEATHER, Dataset, Frame, World

__all__ = ["World", "Frame", "Dataset", "CONDITIONS", "WEATHER",
           "ScenesWorld", "SceneFrame", "DetectionDataset", "CLASSES", "LIGHTINGS", "DRIFT_KINDS"]
