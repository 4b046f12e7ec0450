"""SMS segment counting: GSM-7 or UCS-2, for cost and for the template editor's warnings.

A GSM-7 message holds 160 characters (153 per segment once split); the extension table's
characters (^ { } \\ [ ~ ] | €) take two. Any other character forces UCS-2: 70, or 67 per segment,
counted in UTF-16 code units (an emoji takes two).
"""

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


def sms_segments(text: str) -> tuple[str, int]:
    """``(encoding, segments)`` for ``text``: ("GSM-7", n) or ("UCS-2", n). Empty text is 0 segments."""
    if not text:
        return "GSM-7", 0
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        units = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        return "GSM-7", 1 if units <= 160 else -(-units // 153)
    units = len(text.encode("utf-16-le")) // 2
    return "UCS-2", 1 if units <= 70 else -(-units // 67)
