"""Energy, carbon and cost of a simulated run.

:mod:`~simulator.energy.accounting` holds the power and site specs of a config (``PowerSpec``: clocks, caps, energy
mode; ``SiteSpec``: PUE, grid, price) and a run's GPU energy (J), kg CO2e and cost;
:mod:`~simulator.energy.power_trace` spreads that energy over the timeline as per-GPU watts for plotting;
:mod:`~simulator.energy.pricing` holds the $/GPU-hour presets; :mod:`~simulator.energy.carbon` gives operational and
embodied kg CO2e, grid intensities and carbon-aware scheduling.
"""
