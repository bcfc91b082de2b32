"""Calibration: measure kernels on a real GPU, fit a hardware profile to them, and validate it.

Why: datasheet peaks overstate what kernels reach; a fitted profile (``clustersim calibrate``, or
``clustersim fit`` on saved measurements) makes the simulator's costs match the measured device.
"""
