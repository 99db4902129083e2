"""Experiments: size presets, the experiment context and its run stores, run-or-reuse and
sweeps, the notebooks' declarations and reports, figures, and the notebook suite."""
