"""YAML configuration: typed, validated, with errors that name the file and the field."""

from mlorch.config.load import load_cluster_config, load_yaml, validate

__all__ = ["load_cluster_config", "load_yaml", "validate"]
