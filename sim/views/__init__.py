"""Views: reading finished result directories back and presenting them.

* :mod:`sim.views.results`: run, comparison and sweep directories as pandas DataFrames;
* :mod:`sim.views.compare`: one table over runs (text, markdown, CSV, LaTeX);
* :mod:`sim.views.style`: the one matplotlib style, colours and atomic figure writer of every figure;
* :mod:`sim.views.plots`: the plots ``fedfleet run`` writes into a run directory;
* :mod:`sim.views.figures`: paper-style figures over several runs (``fedfleet plot``);
* :mod:`sim.views.report`: one self-contained HTML page (``fedfleet report``);
* :mod:`sim.views.paper` and :mod:`sim.views.paper_text`: the paper-reproduction page.

Reads only the files a run writes (plus the store's atomic writers); never runs a simulation.
"""
