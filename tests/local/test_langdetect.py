"""Language identification with the bundled fastText model."""

from __future__ import annotations

import pytest

from modelyard.errors import BadRequestError
from modelyard.local.langdetect import LanguageDetector, LanguageModel, detect_language
from modelyard.model import ModelInfo
from modelyard.types import user

pytestmark = pytest.mark.local

SENTENCES = {
    "en": "Where is my order? It should have arrived yesterday.",
    "fr": "Où est ma commande ? Elle aurait dû arriver hier.",
    "de": "Wo ist meine Bestellung? Sie hätte gestern ankommen sollen.",
    "es": "¿Dónde está mi pedido? Debería haber llegado ayer.",
    "it": "Dov'è il mio ordine? Sarebbe dovuto arrivare ieri.",
    "pt": "Onde está o meu pedido? Deveria ter chegado ontem.",
    "nl": "Waar is mijn bestelling? Die had gisteren moeten aankomen.",
    "ru": "Где мой заказ? Он должен был прийти вчера.",
    "ja": "私の注文はどこですか？昨日届くはずでした。",
    "zh": "我的订单在哪里？它昨天就应该到了。",
}


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_detects_the_language(code: str, detector: LanguageDetector) -> None:
    best, score = detector.detect(SENTENCES[code], k=1)[0]
    assert best == code
    assert 0.5 < score <= 1.0


def test_plain_function_returns_code_and_probability() -> None:
    code, score = detect_language("Bonjour, je voudrais annuler mon abonnement.")
    assert code == "fr"
    assert 0.5 < score <= 1.0


def test_text_without_letters_is_undetermined(detector: LanguageDetector) -> None:
    assert detector.detect("12345 !!!") == [("und", 0.0)]


async def test_model_answers_the_code_with_its_confidence(detector: LanguageDetector) -> None:
    model = LanguageModel(ModelInfo(name="lang", kind="langdetect"), detector)
    response = await model.complete(user(SENTENCES["de"]))
    assert response.text == "de"
    assert response.confidence is not None and response.confidence > 0.5
    assert response.decision is not None
    assert response.decision.scores["de"] == response.confidence
    assert len(response.decision.scores) == 3


async def test_model_refuses_an_empty_message(detector: LanguageDetector) -> None:
    model = LanguageModel(ModelInfo(name="lang", kind="langdetect"), detector)
    with pytest.raises(BadRequestError):
        await model.complete(user("   "))
