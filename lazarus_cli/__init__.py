"""The ``lazarus`` command line: renders core results; owns no analysis logic."""
