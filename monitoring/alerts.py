"""Alert emails to the data scientist.

With ``smtp_host`` set, through SMTP (STARTTLS, TLS or plain, optional login). Without one (the
local default), the message is written as an .eml file to <home>/outbox and printed, so the demo
shows every alert. An SMTP failure falls back to the outbox and says so: an alert is never lost.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

log = logging.getLogger(__name__)


def build(subject: str, body: str, *, sender: str, to: list[str], attachments: list[Path] | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="mnist-continual")
    msg.set_content(body)
    for path in attachments or []:
        msg.add_attachment(Path(path).read_bytes(), maintype="text", subtype="html", filename=Path(path).name)
    return msg


def send(subject: str, body: str, settings, attachments: list[Path] | None = None) -> dict:
    """Send (or write) one alert; returns where it went: {"via": "smtp"|"outbox", "path"?, "error"?}."""
    to = [a.strip() for a in settings.alert_to.split(",") if a.strip()]
    msg = build(f"[mnist-continual] {subject}", body, sender=settings.alert_from, to=to, attachments=attachments)
    error = None
    if settings.smtp_host:
        try:
            _smtp(msg, settings)
            log.info("alert emailed to %s: %s", msg["To"], subject)
            return {"via": "smtp", "to": to, "subject": msg["Subject"]}
        except (OSError, smtplib.SMTPException) as exc:
            error = f"SMTP {settings.smtp_host}:{settings.smtp_port} failed: {exc}"
            log.warning("%s; writing the alert to the outbox", error)
    path = _outbox(msg, settings.outbox)
    print(f"ALERT -> {path}\n  {msg['Subject']}\n  " + body.strip().replace("\n", "\n  "), flush=True)
    return {"via": "outbox", "path": str(path), "to": to, "subject": msg["Subject"], **({"error": error} if error else {})}


def _smtp(msg: EmailMessage, s) -> None:
    if s.smtp_tls == "ssl":
        server = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=20, context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=20)
    with server:
        if s.smtp_tls == "starttls":
            server.starttls(context=ssl.create_default_context())
        if s.smtp_user:
            server.login(s.smtp_user, s.smtp_password.get_secret_value())
        server.send_message(msg)


def _outbox(msg: EmailMessage, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = folder / f"{stamp}-{msg['Message-ID'].strip('<>').split('@')[0]}.eml"
    path.write_bytes(bytes(msg))
    return path
