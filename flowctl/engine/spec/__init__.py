"""YAML → document → diagnostics → TaskFlow IR: the pure, I/O-free spec layer."""
