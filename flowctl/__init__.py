"""flowctl: declarative YAML pipelines for AI and document workflows."""

__version__ = "0.1.0"
