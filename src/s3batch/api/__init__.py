"""The HTTP API: an S3 Control-compatible job server (REST-XML, SigV4) over JobService.

xml.py      REST-XML request parsing and response rendering, driven by botocore's model
sigv4.py    AWS Signature Version 4 verification (header and presigned forms)
auth.py     access keys → account (server.toml, S3BATCH_ACCESS_KEYS)
control.py  the eight S3 Control job operations as Starlette routes
app.py      create_app(settings): routes + job store + the in-process job worker
"""

from __future__ import annotations
