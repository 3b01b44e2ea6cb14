"""Operations on a whole database, run by an operator (the ``durably``
command) rather than by an engine: copying between backends (``copy``)."""
