"""The synthetic world: ToyParts (the demo's part benchmark) and the generic shapes of the tiny SAM.

Beside the real-data loaders of :mod:`wps_sam.data`: nothing here reads a user's data set.
"""
