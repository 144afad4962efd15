"""YAML presets (validated by :class:`prefloop.config.ProjectConfig`) and judge templates."""
