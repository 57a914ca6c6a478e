"""Studies: many runs from one description, and the machinery that runs them.

* :mod:`sim.studies.sweep`: a sweep file (base scenario, ``matrix``, ``seeds``) expanded into
  validated cells;
* :mod:`sim.studies.policies`: a scenario's ``policies:`` expanded into one child scenario per label,
  and a comparison run through the same cell runner as a sweep;
* :mod:`sim.studies.sweep_run`: running cells (resumable, one directory per cell) and the sweep index;
* :mod:`sim.studies.executors`: where cells run (this process, a local process pool, or Ray);
* :mod:`sim.studies.fuzz`: random and mutated scenario documents for the loader's robustness tests.

Depends on the core of :mod:`sim` (loader, runner, store) and on :mod:`sim.views.compare` for the
comparison table; nothing in the core imports this package.
"""
