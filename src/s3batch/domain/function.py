"""The function a LambdaInvoke job calls, as resolved when the job was created (a pure value).

It lives in the domain because three layers share it: `functions` (which resolves and runs it),
`operations` (LambdaInvoke, through `JobContext`) and `service` (which records it with the job).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """A resolved function for LambdaInvoke, recorded with the job so resumes use the same."""

    #: The FunctionArn as the caller wrote it (goes into the Lambda context).
    arn: str
    #: Function name (the ARN's name, or the callable's for python: references).
    name: str
    #: "package.module:callable".
    handler: str
    #: Prepended to sys.path in worker processes (the creator's working directory).
    sys_path: tuple[str, ...] = ()
    #: Seconds one invocation may run before it is killed and its task fails.
    timeout_s: float = 60.0
    #: Reported by context.memory_limit_in_mb; not enforced.
    memory_mb: int = 1024
