"""GUI grounding (paper 4, GroundCUA / GroundNext): schemas, synthetic screens, one coordinate
frame, the answer format and the reward. Spec: ``specs/looped_grounding_kaleidoscope.md`` §2.

The frame rule of this package: a model sees a screenshot resized by the processor's
``smart_resize`` and emits an integer point in that *resized* frame; every box from a dataset or
a benchmark file is converted into the same frame (:mod:`jaxlab.grounding.frames`) before it is
compared with a point (:mod:`jaxlab.grounding.geometry`) or rewarded.
"""
