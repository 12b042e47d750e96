"""Run the Slicer panel (CondNetSlicer.py) without Slicer's application: fake Qt/CTK widgets, timers and dialogs
(:mod:`.fakeqt`), fake application pieces (:mod:`.fakeslicer`) and a stand-in for ``slicer.parameterNodeWrapper``
(:mod:`.parameter_node_wrapper`), on top of the ``slicer-core`` wheel's real MRML scene and ``slicer.util``.

The fakes replace ``qt``/``ctk`` and add attributes to ``slicer`` for the whole interpreter, so they are only ever
installed in a subprocess of their own: ``Testing/Python/test_slicer_widget.py`` runs :mod:`.panel_scenario`
(``python Testing/Python/slicer_gui_fakes/panel_scenario.py WORKDIR``), which drives the real
``CondNetSlicerWidget`` step by step.  Importing this package installs nothing.
"""
