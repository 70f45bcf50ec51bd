"""Handler modules that ``--handler`` loading is tested against."""
