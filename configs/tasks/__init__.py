"""Task plug-ins shipped with prefloop (see prefloop.sim.task)."""
