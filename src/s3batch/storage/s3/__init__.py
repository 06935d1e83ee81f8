"""The S3 adapter: S3Store and what it is made of.

- store.py: S3Store, the contract and every capability over one endpoint;
- client.py: the botocore session, lean routes, TLS and proxy settings, and the aiobotocore
  client (built, and imported, on first use), shared by the S3Stores of one config;
- credentials.py: the credentials both request paths sign with, resolved once;
- lean.py + http1.py: the lean request path (SigV4 and a small HTTP/1.1 client) for the hot
  calls; they live here because nothing but S3Store uses them;
- shapes.py: botocore's model and the request/response shapes;
- errors.py: S3 error codes and the translation of botocore/aiohttp failures.
"""

from __future__ import annotations

from s3batch.storage.s3.store import S3Store

__all__ = ["S3Store"]
