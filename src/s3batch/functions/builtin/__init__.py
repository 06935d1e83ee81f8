"""Functions that ship with s3batch; the registry knows them by name (`s3batch-sentiment`)."""

from __future__ import annotations
