"""Personal data and secrets that must not be in training data: Chinese mobile numbers, Chinese ID
numbers (checksum and birth date checked), bank cards (Luhn and issuer prefix checked), e-mail
addresses (documentation domains allowed) and API keys / private keys. Each finding has a label
used for redaction (`[PHONE]`, `[ID_NUMBER]`, `[BANK_CARD]`, `[EMAIL]`, `[API_KEY]`)."""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass

_PHONE_RE = re.compile(r"(?<![\d.])(?:\+?86[\s-]?)?(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?![\d.])")
_ID_RE = re.compile(r"(?<![\dA-Za-z])(\d{6})(\d{4})(\d{2})(\d{2})(\d{3})([\dXx])(?![\dA-Za-z])")
_CARD_RE = re.compile(r"(?<![\d.-])(?:\d[ -]?){15,18}\d(?![\d.-])")
_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
_KEY_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("openai", re.compile(r"\bsk-(?:proj-|ant-|or-v1-)?[A-Za-z0-9_-]{20,}")),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{60,}")),
    ("google", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("slack", re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}")),
    ("huggingface", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("stripe", re.compile(r"\b[rs]k_live_[0-9A-Za-z]{20,}")),
    ("private_key", re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP )?PRIVATE KEY(?: BLOCK)?-----")),
)
#: Documentation and placeholder domains (RFC 2606 and their habitual stand-ins).
EMAIL_ALLOWED_DOMAINS = frozenset(
    {
        "example.com",
        "example.org",
        "example.net",
        "example.edu",
        "test.com",
        "domain.com",
        "yourdomain.com",
        "email.com",
        "mail.com",
        "company.com",
        "xxx.com",
        "xx.com",
        "abc.com",
        "localhost",
        "your-domain.com",
        "yourcompany.com",
        "sample.com",
        "foo.com",
        "bar.com",
    }
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
#: Bank card issuer prefixes: UnionPay 62, Visa 4, Mastercard 51-55/2221-2720, Amex 34/37, JCB 35, Discover 6011/65.
_CARD_PREFIX_RE = re.compile(r"^(?:62|4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|35|6011|65)")


@dataclass(slots=True, frozen=True)
class PIIMatch:
    """One finding: kind (`phone`, `id_number`, `bank_card`, `email`, `api_key`), the span in the
    text and the redaction label."""

    kind: str
    start: int
    end: int
    text: str
    detail: str = ""

    @property
    def label(self) -> str:
        return {
            "phone": "[PHONE]",
            "id_number": "[ID_NUMBER]",
            "bank_card": "[BANK_CARD]",
            "email": "[EMAIL]",
            "api_key": "[API_KEY]",
        }[self.kind]


def id_number_valid(number: str) -> bool:
    """True for an 18-character PRC resident ID with a valid birth date and ISO 7064 checksum."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if not (datetime.date(1900, 1, 1) <= born <= datetime.date.today()):
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _key_looks_real(s: str) -> bool:
    body = s.split("-", 1)[-1].split("_", 1)[-1]
    if re.search(r"(?i)x{4,}|\.{3}|your|example|placeholder|<|\*{3}", s):
        return False
    return bool(re.search(r"\d", body)) and bool(re.search(r"[A-Za-z]", body)) and len(set(body)) >= 8


def find_pii(text: str) -> list[PIIMatch]:
    """Every personal-data or secret finding in text, in order, non-overlapping (earlier kinds in
    the order ID number, bank card, phone, e-mail, API key win overlaps)."""
    orig = text
    if not text.isascii():
        # match full-width digits and @ too, but report spans of the original text
        nf = unicodedata.normalize("NFKC", text)
        text = nf if len(nf) == len(orig) else orig
    found: list[PIIMatch] = []
    for m in _ID_RE.finditer(text):
        if id_number_valid(m.group(0)):
            found.append(PIIMatch("id_number", m.start(), m.end(), m.group(0)))
    for m in _CARD_RE.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if (
            16 <= len(digits) <= 19
            and _CARD_PREFIX_RE.match(digits)
            and luhn_valid(digits)
            and len(set(digits)) > 2
        ):
            found.append(PIIMatch("bank_card", m.start(), m.end(), m.group(0)))
    for m in _PHONE_RE.finditer(text):
        digits = "".join(m.groups())
        if len(set(digits[3:])) > 1:  # 13800000000-style placeholders have one repeated digit
            found.append(PIIMatch("phone", m.start(), m.end(), m.group(0)))
    for m in _EMAIL_RE.finditer(text):
        domain = m.group(0).rsplit("@", 1)[1].lower()
        if domain not in EMAIL_ALLOWED_DOMAINS and not domain.endswith(
            (".example", ".test", ".invalid", ".local")
        ):
            found.append(PIIMatch("email", m.start(), m.end(), m.group(0)))
    for name, rx in _KEY_PATTERNS:
        for m in rx.finditer(text):
            if name == "private_key" or _key_looks_real(m.group(0)):
                found.append(PIIMatch("api_key", m.start(), m.end(), m.group(0), name))
    found.sort(key=lambda p: (p.start, -p.end))
    out: list[PIIMatch] = []
    for p in found:
        if out and p.start < out[-1].end:
            continue
        out.append(p)
    if text is not orig:
        out = [PIIMatch(p.kind, p.start, p.end, orig[p.start : p.end], p.detail) for p in out]
    return out


def redact_pii(text: str, matches: list[PIIMatch] | None = None) -> str:
    """text with every finding replaced by its label."""
    matches = find_pii(text) if matches is None else matches
    out, pos = [], 0
    for p in matches:
        out.append(text[pos : p.start])
        out.append(p.label)
        pos = p.end
    out.append(text[pos:])
    return "".join(out)
