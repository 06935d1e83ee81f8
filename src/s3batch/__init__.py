"""s3batch: S3 Batch Operations' job model, run anywhere.

The public surface is small on purpose: the job service (create, describe, list, update),
settings, and the error tree. Everything else is reachable through its module.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
