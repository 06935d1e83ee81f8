"""Run Lambda-style Python handlers locally for LambdaInvoke jobs.

- `registry`: FunctionArn → handler ("module:callable"), resolved when a job is created;
- `pool`: persistent worker processes that import a handler once and invoke it per task;
- `context`: the `context` object handlers receive, shaped like AWS's Python runtime's;
- `objects`: `read_object()` for built-in handlers, reading through the job's own store;
- `builtin`: functions that ship with s3batch (`s3batch-sentiment`).

Nothing is imported here so that loading one piece never loads the others.
"""

from __future__ import annotations
