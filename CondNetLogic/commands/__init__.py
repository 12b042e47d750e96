"""Subcommands of the ``condnet`` command line, one module each."""
