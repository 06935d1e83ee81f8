"""Job service, runner and worker: the one core the CLI, Python API and HTTP API share."""
