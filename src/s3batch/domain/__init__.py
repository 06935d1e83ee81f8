"""Pure job, task, manifest and report model. Nothing here does I/O."""
