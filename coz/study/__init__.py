"""The paper's user study (Appendix D, Figure 10) as a tool: ``python -m coz.study build|serve|report``.

``build`` (:mod:`coz.study.build`) turns zoom runs or evaluate sweeps into a study folder,
``serve`` (:mod:`coz.study.server`) is the rating page, votes go to a database
(:mod:`coz.study.votes`), ``report`` (:mod:`coz.study.report`) computes MOS, std and t-tests
(:mod:`coz.study.analysis`). The command line is :mod:`coz.study.tool`.
"""
