"""The rule-based desks: complaints, non-English tickets and the human hand-off."""

from __future__ import annotations

import pytest

from modelyard.demo.desk import complaint_desk, human_handoff, reference, reply_in_kind
from modelyard.types import user


def test_a_complaint_gets_an_apology_and_a_stable_case_number() -> None:
    text = "Your courier threw my parcel over the fence. Disgraceful."
    answer = complaint_desk(user(text))
    assert answer.startswith("I'm very sorry about this")
    assert f"opened case {reference('C', text)}," in answer
    assert "within one business day" in answer
    assert answer == complaint_desk(user(text))


def test_a_threat_of_a_chargeback_makes_the_case_urgent_and_names_the_order() -> None:
    answer = complaint_desk(user("Order 733742 never came. I'll do a chargeback!"))
    assert "about order ORD-733742" in answer
    assert "marked it urgent" in answer and "personally today" in answer


def test_the_handoff_promises_a_person_and_a_ticket() -> None:
    text = "anything at all"
    assert f"(ticket {reference('T', text)})" in human_handoff(user(text))


@pytest.mark.local
@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("Où est ma commande ? J'attends depuis dix jours.", "Merci pour votre message !"),
        ("Ich habe mein Passwort vergessen.", "Vielen Dank für Ihre Nachricht!"),
        ("Ik kan niet inloggen, mijn wachtwoord werkt niet.", "Bedankt voor uw bericht!"),
    ],
)
def test_a_non_english_ticket_is_acknowledged_in_its_language(text: str, start: str) -> None:
    assert reply_in_kind(user(text)).startswith(start)


@pytest.mark.local
def test_a_language_without_a_template_is_answered_in_english_naming_it() -> None:
    answer = reply_in_kind(user("Gdzie jest moje zamówienie? Czekam już dwa tygodnie."))
    assert answer.startswith("Thank you for your message.")
    assert "(pl)" in answer
