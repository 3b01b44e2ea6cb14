"""Crash-injection harness: kill the engine at named points and check the outcome."""
