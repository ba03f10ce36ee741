"""The course machinery, independent of any lesson's code: notebook parameters and their checks
(``parameters``), every lesson's parameter declaration (``lessons``), the suite runner (``runner``), metrics a
notebook reports (``report``), one figure style and where figures go (``plotting``, ``figures``), and
sliders (``widgets``)."""
