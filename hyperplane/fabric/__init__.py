"""The fabric (pure): which kernel objects a topology needs, as records, and ``plan(old, new)``
between two sets of them; the same topology as a picture (``picture``, ``draw``).
"""
