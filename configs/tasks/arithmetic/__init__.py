"""The worked example of a task plug-in: short arithmetic and unit questions (see task.py)."""
