"""durably's examples: scripts to run, and a sample application (shop/)
with its own test suite, which durably's suite runs too (pyproject testpaths)."""
