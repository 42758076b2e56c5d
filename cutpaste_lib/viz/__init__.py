"""Figures shared by the notebooks and the CLI, one module per topic.

Every function returns a :class:`matplotlib.figure.Figure` (it never calls ``plt.show()``),
so notebooks show it and the CLI saves it with :func:`cutpaste_lib.viz.common.save_figure`.
"""
