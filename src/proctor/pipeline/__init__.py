"""Layer 3: the event pipeline and its processors."""

from proctor.pipeline.cost import CostProcessor
from proctor.pipeline.pipeline import Pipeline, Processor

__all__ = ["CostProcessor", "Pipeline", "Processor"]
