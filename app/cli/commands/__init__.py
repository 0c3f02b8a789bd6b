"""The `hugllama` subcommands, grouped by what they act on; each takes a Context and returns the exit code."""
