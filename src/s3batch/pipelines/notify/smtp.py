"""Email channel: stdlib smtplib in a worker thread; optional STARTTLS and login.

The password is read from the environment variable the settings name, at each delivery, so
it never sits in the pipeline file or the state DB. SMTP 5xx answers, a refused login, a
server that offers no STARTTLS, an unverifiable certificate or a missing password variable
are permanent failures; 4xx answers and connection problems may pass on a later attempt.
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from s3batch.pipelines.notify.base import DeliveryError, Notice, SmtpSettings

SUBJECT_PREFIX = "[s3batch] "


def render_email(settings: SmtpSettings, notice: Notice) -> EmailMessage:
    """Subject = the notice's line; body = its text, then the full JSON payload."""
    message = EmailMessage()
    message["Subject"] = SUBJECT_PREFIX + notice.subject
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="s3batch.local")
    body = json.dumps(notice.payload, indent=2, ensure_ascii=False)
    message.set_content(f"{notice.text}\n\n{body}\n" if notice.text else f"{body}\n")
    return message


def _text(answer: bytes | str) -> str:
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer


class SmtpChannel:
    def __init__(self, settings: SmtpSettings, timeout_s: float) -> None:
        self.settings = settings
        self.label = f"smtp://{settings.host}:{settings.port}"
        self.timeout_s = timeout_s

    async def send(self, notice: Notice) -> None:
        await asyncio.to_thread(self._send, render_email(self.settings, notice))

    def _password(self) -> str:
        name = self.settings.password_env
        assert name is not None
        password = os.environ.get(name)
        if password is None:
            raise DeliveryError(f"environment variable {name} (password_env) is not set", permanent=True)
        return password

    def _send(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            with smtplib.SMTP(s.host, s.port, timeout=self.timeout_s) as client:
                if s.starttls:
                    client.starttls(context=ssl.create_default_context(cafile=s.ca_file))
                if s.username is not None:
                    client.login(s.username, self._password())
                client.send_message(message, from_addr=s.sender, to_addrs=list(s.recipients))
        except smtplib.SMTPRecipientsRefused as exc:
            permanent = min(code for code, _ in exc.recipients.values()) >= 500
            raise DeliveryError(f"recipients refused: {exc.recipients}", permanent=permanent) from None
        except smtplib.SMTPResponseException as exc:
            text = _text(exc.smtp_error)
            raise DeliveryError(f"SMTP {exc.smtp_code}: {text}", permanent=exc.smtp_code >= 500) from None
        except (smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False) from None
