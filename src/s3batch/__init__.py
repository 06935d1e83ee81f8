"""s3batch: S3 Batch Operations' job model, run anywhere.

The public surface is small on purpose:

- `S3Batch`: the Python API, with boto3 `s3control`'s method names and shapes;
- `s3control(...)`: a boto3 `s3control` client configured for an `s3batch serve` endpoint;
- the error tree in `s3batch.errors` (`S3BatchError` and the S3 Control error codes).

Everything else is reachable through its module. Imports are lazy so that `import s3batch`
stays cheap (botocore and the job store load only when used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["S3Batch", "S3BatchError", "__version__", "s3control"]

if TYPE_CHECKING:
    from s3batch.client import S3Batch, s3control
    from s3batch.errors import S3BatchError


def __getattr__(name: str) -> Any:
    if name in ("S3Batch", "s3control"):
        from s3batch import client

        return getattr(client, name)
    if name == "S3BatchError":
        from s3batch.errors import S3BatchError

        return S3BatchError
    raise AttributeError(f"module 's3batch' has no attribute {name!r}")
