"""Live object tables of a pipeline's source bucket: a journal of every change and a live
inventory of every object (docs/pipeline-tables.md).

Kept import-light: `pipelines/config.py` reads `tables.config`; the rest loads only when a
pipeline declares `[tables]`.
"""

from __future__ import annotations
