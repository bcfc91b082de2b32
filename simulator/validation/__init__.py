"""Validation: clustersim's numbers against what others published.

- :mod:`~simulator.validation.tables`: published training measurements (Megatron-LM SC'21, vTrain
  MICRO'24), each row simulated with one rule for what the table leaves unpublished;
- :mod:`~simulator.validation.claims`: the claims gallery, every quantitative claim of the source
  material as a scenario with a prediction and a verdict.
"""
