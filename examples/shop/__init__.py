"""A sample application: a shop's order workflows declared once, without an
engine (flows.py), run by the application's engine (app.py) and tested on
engines of the tests' own (tests/: the pytest plugin, virtual time, the
crash-test helper and the Replayer)."""
