"""Answer texts for recordings that kept only correctness (RouteLLM's MMLU, RouterDC).

A replayed model must still answer *something* a scorer can check. When the gold letter is
unknown, a pseudo-gold letter is drawn from a hash of the prompt; a model recorded correct
answers it, a model recorded wrong answers one of the other letters (drawn from a hash of the
prompt and the model, so two wrong models agree about a third of the time). Accuracy from such
texts equals the recorded accuracy exactly; agreement between *wrong* answers is invented, so
ensemble votes on these sets are not evidence of real agreement.
"""

from __future__ import annotations

import re

from modelyard.evaluation.recordings import stable_hash

_OPTION = re.compile(r"^\s*([A-J])[.)]\s", re.MULTILINE)


def option_letters(prompt: str) -> str:
    """The option letters a multiple-choice prompt offers (`A. ...` or `A) ...` lines)."""
    seen: list[str] = []
    for letter in _OPTION.findall(prompt):
        if letter not in seen:
            seen.append(letter)
    return "".join(seen)


def pseudo_gold(prompt: str, letters: str = "ABCD") -> str:
    """A deterministic stand-in for an unknown gold letter."""
    return letters[stable_hash("gold", prompt) % len(letters)]


def choice_answer(prompt: str, model: str, correct: bool, letters: str = "ABCD") -> str:
    """The letter `model` answers: the pseudo-gold one when correct, another one when wrong."""
    gold = pseudo_gold(prompt, letters)
    if correct:
        return gold
    others = [letter for letter in letters if letter != gold]
    return others[stable_hash("wrong", prompt, model) % len(others)]
