"""Baselines FOCUS is compared with, on the same adapters and behind the same :class:`~focus_tool.result.FocusResult`.

- :mod:`focus_tool.baselines.vanilla`: the whole image, no search.
- :mod:`focus_tool.baselines.zoomeye`: ZoomEye's confidence-ranked tree search (arXiv 2411.16044).
- :mod:`focus_tool.baselines.vicrop`: ViCrop rel-att / grad-att (arXiv 2502.17422), eager attention only.
"""
