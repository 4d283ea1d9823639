"""The `flowctl` command line: one module per command group, errors rendered once."""
