"""Slicer-side helpers of the CondNet module: MRML node <-> :class:`CondNetLogic.volume.Volume`
adapters, coil placement geometry, the background-process runner, dependency installation and the
workflow checks shared by the in-Slicer self-test and the pytest suite.

Nothing here imports Qt at module level, so everything except :mod:`.install` and the Qt timer in
:mod:`.process` runs on a bare ``slicer-core`` MRML scene.
"""
