"""arcface_torch-format training configs for qgface_plugin (``config = edict(...)`` per file).

``base.py`` holds every key with its default and meaning; each job config overrides a few.
Load one with ``qgface_plugin.arcface.config.load_config(name_or_path)``.
"""
