"""What an operator does to a durably database from outside its engines:
back it up, copy it between backends (each a module; the CLI calls them)."""
