"""Runtime: workflow contexts, replay, step dispatch and the workflow runner."""
