"""The rule-based desks of the quickstart: tickets a small model should not answer alone.

- `reply_in_kind`: a ticket not written in English gets an acknowledgement in its own language
  (fastText identifies it) and is flagged for a colleague who speaks it.
- `complaint_desk`: an unhappy customer gets an apology and a case number, and the case goes
  to a person; threats of chargebacks, lawyers or reviews mark it urgent.
- `human_handoff`: the last resort of every path, when no model could answer in time.

Each is a `type: callable` model: `function(request) -> str`. Case and ticket numbers are
derived from the message text, so the same ticket always gets the same number.
"""

from __future__ import annotations

import hashlib
import re

from modelyard.demo.orders import order_numbers
from modelyard.types import ChatRequest

ACKNOWLEDGEMENTS = {
    "de": (
        "Vielen Dank für Ihre Nachricht! Ein Kollege aus unserem deutschsprachigen Team "
        "antwortet Ihnen innerhalb eines Werktags. Ihre Ticketnummer: {ticket}."
    ),
    "fr": (
        "Merci pour votre message ! Un membre de notre équipe francophone vous répondra "
        "sous un jour ouvré. Votre numéro de ticket : {ticket}."
    ),
    "es": (
        "¡Gracias por su mensaje! Un compañero de nuestro equipo de habla hispana le "
        "responderá en un día laborable. Su número de ticket: {ticket}."
    ),
    "it": (
        "Grazie per il suo messaggio! Un collega del nostro team di lingua italiana le "
        "risponderà entro un giorno lavorativo. Il suo numero di ticket: {ticket}."
    ),
    "pt": (
        "Obrigado pela sua mensagem! Um colega da nossa equipa de língua portuguesa "
        "responderá dentro de um dia útil. O seu número de pedido de suporte: {ticket}."
    ),
    "nl": (
        "Bedankt voor uw bericht! Een collega van ons Nederlandstalige team antwoordt u "
        "binnen één werkdag. Uw ticketnummer: {ticket}."
    ),
}
FALLBACK_ACKNOWLEDGEMENT = (
    "Thank you for your message. We don't have a colleague who speaks your language ({code}) "
    "on duty, so our team will reply in English within one business day. "
    "Your ticket number: {ticket}."
)
URGENT = re.compile(
    r"\b(chargeback|lawyer|solicitor|legal|court|review|trustpilot|formal complaint|"
    r"harass\w*|compensation)\b",
    re.IGNORECASE,
)


def reference(prefix: str, text: str) -> str:
    """A stable reference number for a message: the same text always gets the same one."""
    digest = hashlib.sha256(text.strip().encode("utf-8")).hexdigest()
    return f"{prefix}-{int(digest[:8], 16) % 1_000_000:06d}"


def reply_in_kind(request: ChatRequest) -> str:
    """An acknowledgement in the ticket's own language, flagged for a colleague who speaks it."""
    from modelyard.local.langdetect import detect_language

    text = request.last_user_text
    code, _ = detect_language(text)
    template = ACKNOWLEDGEMENTS.get(code, FALLBACK_ACKNOWLEDGEMENT)
    return template.format(ticket=reference("T", text), code=code)


def complaint_desk(request: ChatRequest) -> str:
    """An apology, a case number, and a promise a person keeps."""
    text = request.last_user_text
    case = reference("C", text)
    orders = order_numbers(text)
    about = f" about order {', '.join(orders)}" if orders else ""
    urgent = URGENT.search(text) is not None
    priority = "marked it urgent and " if urgent else ""
    within = "today" if urgent else "within one business day"
    return (
        f"I'm very sorry about this - that is not the experience we want you to have. "
        f"I've opened case {case}{about}, {priority}passed it to our customer-care lead, "
        f"who will contact you personally {within}."
    )


def human_handoff(request: ChatRequest) -> str:
    """The last resort: a person takes over, and the customer is told when to expect them."""
    ticket = reference("T", request.last_user_text)
    return (
        "Thanks for your message. We couldn't answer it automatically just now, so a member "
        f"of our team will reply by email within one business day (ticket {ticket})."
    )
