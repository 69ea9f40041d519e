"""OAuth client authentication by certificate instead of secret (RFC 7523 ``private_key_jwt``).

Entra ID accepts, in place of ``client_secret``, a short-lived JWT signed with the private key of
a certificate uploaded to the app registration: header ``alg: RS256`` and ``x5t`` (the
certificate's SHA-1 thumbprint, base64url), claims ``aud`` = the token endpoint, ``iss`` = ``sub``
= the client id, a fresh ``jti``, ``nbf``/``iat``/``exp`` (10 minutes)
(learn.microsoft.com/entra/identity-platform/certificate-credentials). The certificate file is a
PEM holding the private key and the certificate, or a PKCS#12 (``.pfx``/``.p12``) file.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LIFETIME = 600


class CertificateError(ValueError):
    """The certificate file cannot be used; the message says why (never its content)."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """An RSA private key and the certificate Entra knows it by."""

    key: rsa.RSAPrivateKey
    thumbprint: str  # base64url SHA-1 of the DER certificate (``x5t``)

    def form(self, *, client_id: str, token_url: str) -> dict[str, str]:
        """The form fields that replace ``client_secret`` in a token request."""
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(client_id=client_id, audience=token_url),
        }

    def assertion(self, *, client_id: str, audience: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "iat": now,
            "exp": now + LIFETIME,
        }
        return jwt.encode(
            claims, self.key, algorithm="RS256", headers={"x5t": self.thumbprint, "typ": "JWT"}
        )


def load_certificate(path: str, password: str | None = None) -> Certificate:
    """Read a PEM (key + certificate) or PKCS#12 file; raise :class:`CertificateError`.

    Blocking file I/O: call it at start-up or in a worker thread."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CertificateError(f"cannot read {path} ({type(e).__name__})") from None
    secret = password.encode() if password else None
    key: object
    cert: x509.Certificate | None
    try:
        if data.lstrip().startswith(b"-----"):
            key = serialization.load_pem_private_key(data, secret)
            cert = x509.load_pem_x509_certificate(data)
        else:
            key, cert, _ = pkcs12.load_key_and_certificates(data, secret)
    except (ValueError, TypeError) as e:
        raise CertificateError(
            f"{path} is not a PEM with a private key and a certificate, nor a PKCS#12 file "
            f"(or its password is wrong): {type(e).__name__}"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey) or cert is None:
        raise CertificateError(f"{path} must hold an RSA private key and its certificate")
    cert_key = cert.public_key()
    if not isinstance(cert_key, rsa.RSAPublicKey) or (
        cert_key.public_numbers() != key.public_key().public_numbers()
    ):
        raise CertificateError(f"{path}: the private key does not belong to the certificate")
    der = cert.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 (x5t is defined as SHA-1)
    digest.update(der)
    thumbprint = base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()
    return Certificate(key=key, thumbprint=thumbprint)
