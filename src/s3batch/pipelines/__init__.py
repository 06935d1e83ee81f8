"""Event pipelines: new object in a staging bucket → operation or function → archive or error bucket."""

from __future__ import annotations
