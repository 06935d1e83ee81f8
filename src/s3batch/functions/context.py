"""The `context` argument handlers get, shaped like AWS Lambda's Python runtime's.

Plain attributes (not properties) as in AWS's runtime, so code that reads them, copies them
or passes the object to Powertools (`Logger.inject_lambda_context`, `@event_source`, any
`@lambda_handler_decorator`) works unchanged. As in AWS's runtime, `memory_limit_in_mb` is
a string (it comes from the environment there).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

#: AWS's value for an unpublished function; there are no versions locally.
LATEST_VERSION = "$LATEST"
#: Milliseconds per second, for get_remaining_time_in_millis.
_MS_PER_S = 1000


def log_group_name(function_name: str) -> str:
    """The CloudWatch log group AWS would use for the function."""
    return f"/aws/lambda/{function_name}"


def new_log_stream_name(version: str = LATEST_VERSION) -> str:
    """A log stream name in AWS's format: one per execution environment (worker process)."""
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    return f"{day}/[{version}]{uuid.uuid4().hex}"


class LambdaContext:
    """What a handler learns about its invocation and function.

    `deadline_monotonic` is a `time.monotonic()` value: the remaining time cannot jump when
    the wall clock is adjusted.
    """

    def __init__(
        self,
        *,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int | str,
        aws_request_id: str,
        deadline_monotonic: float,
        log_stream_name: str | None = None,
        function_version: str = LATEST_VERSION,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.aws_request_id = aws_request_id
        self.log_group_name = log_group_name(function_name)
        self.log_stream_name = log_stream_name or new_log_stream_name(function_version)
        # Only set for mobile-SDK / Cognito callers; never for S3 Batch Operations.
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline_monotonic = deadline_monotonic

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation is killed; 0 once past the deadline."""
        left_s = self._deadline_monotonic - time.monotonic()
        return max(0, int(left_s * _MS_PER_S))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([function_name={self.function_name},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"aws_request_id={self.aws_request_id}])"
        )
