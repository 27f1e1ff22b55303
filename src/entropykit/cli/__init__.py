"""The ``entropykit`` command line: one command, one module per subcommand (``cmd_*.py``)."""
