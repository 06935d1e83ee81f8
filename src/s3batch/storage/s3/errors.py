"""How the S3 adapter reports a failed call: S3 error codes and statuses, and the translation of
whatever botocore, aiohttp or the socket raise into a StorageError.

Shared by the aiobotocore path (store.py, client.py) and the lean request path (lean.py), so
both classify a failure alike.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import SSLError as BotoSSLError

from s3batch.errors import StorageError

#: Error codes worth retrying later: throttling and transient server trouble.
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: HEAD answers carry no body, so botocore reports the bare status as the code.
STATUS_CODE_NAMES = {"404": "NoSuchKey", "403": "AccessDenied"}
#: StorageError code of a TLS failure: a refused certificate or an unreadable CA bundle.
TLS_ERROR = "TLSError"
#: What to do about a refused certificate (docs/compatibility.md, "TLS and proxies").
TLS_HINT = (
    "point AWS_CA_BUNDLE (or ca_bundle in the AWS profile) at the CA that signed the endpoint's "
    "certificate, or turn verification off with S3BATCH_VERIFY_SSL=0"
)
#: How deep `_tls_refused` looks into an exception's causes for the certificate error.
_CAUSE_DEPTH = 8

_T = TypeVar("_T")


def storage_error(code: str, message: str, status: int | None) -> StorageError:
    """The StorageError for an S3 error answer; a bodiless one (HEAD) is named by its status."""
    code = STATUS_CODE_NAMES.get(code, code) or STATUS_CODE_NAMES.get(str(status), str(status))
    retryable = code in RETRYABLE_CODES or status in RETRYABLE_STATUSES
    return StorageError(code, message or code, status, retryable)


async def local_io(path: Path, work: Awaitable[_T]) -> _T:
    """A local file read for put_file; its OSError is the caller's problem, not S3's."""
    try:
        return await work
    except OSError as exc:
        raise StorageError("LocalFileError", f"{path}: {exc}") from exc


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """Turn whatever botocore, aiohttp or the socket raise into a StorageError."""
    try:
        yield
    except StorageError:
        raise
    except ClientError as exc:
        raise _from_client_error(exc) from exc
    except (TimeoutError, ReadTimeoutError, ConnectTimeoutError) as exc:
        raise StorageError("RequestTimeout", _describe(exc), None, True) from exc
    except BotoSSLError as exc:
        if _tls_refused(exc):  # as the lean path reports it: lean.connection_error
            raise StorageError(TLS_ERROR, f"{_describe(exc)}; {TLS_HINT}") from exc
        raise StorageError("ConnectionError", _describe(exc), None, True) from exc
    except (BotoConnectionError, HTTPClientError, IncompleteReadError, OSError) as exc:
        raise StorageError("ConnectionError", _describe(exc), None, True) from exc
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise StorageError("CredentialsError", _describe(exc)) from exc
    except ParamValidationError as exc:
        raise StorageError("InvalidArgument", _describe(exc)) from exc
    except BotoCoreError as exc:
        raise StorageError(type(exc).__name__, _describe(exc)) from exc
    except Exception as exc:
        if isinstance(exc, _aiohttp_errors()):  # a connection failure, as the OSErrors above
            raise StorageError("ConnectionError", _describe(exc), None, True) from exc
        raise


def _aiohttp_errors() -> tuple[type[BaseException], ...]:
    """aiohttp's client errors, once aiohttp is loaded (with the aiobotocore client, on first
    use: client.py); before that nothing can raise one."""
    # getattr: another thread may be importing aiohttp at this moment, half-initialised.
    error = getattr(sys.modules.get("aiohttp"), "ClientError", None)
    return (error,) if isinstance(error, type) else ()


def _tls_refused(exc: BaseException) -> bool:
    """Whether a certificate refusal (untrusted, expired, wrong host) is among `exc`'s causes;
    other TLS failures (a handshake cut short) may pass and stay retryable."""
    cause: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if cause is None:
            return False
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _from_client_error(exc: ClientError) -> StorageError:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code") or status or "Unknown")
    return storage_error(code, str(error.get("Message") or exc), status)
