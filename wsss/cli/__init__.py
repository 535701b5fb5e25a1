"""Command line: click commands only. Each command builds a stage config and calls the stage's ``run()``."""
