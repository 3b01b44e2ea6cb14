"""What an operator does to a durably database from outside its engines:
back it up (``backup``), copy it between backends (``copy``); each a
module, which the ``durably`` command calls."""
