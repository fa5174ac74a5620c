"""The allocation as a subject of its own: the generator of its SQL views (:mod:`~.render`) and the plain
Python reference allocator (:mod:`~.reference`) that property tests hold the views to."""
