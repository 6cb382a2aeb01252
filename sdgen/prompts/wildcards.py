"""Wildcards and alternatives: `{red|green|blue} fox`, `__colors__` (a random line of colors.txt in the
wildcard folder), expanded by dynamicprompts, the engine of A1111's Dynamic Prompts extension.

Random mode picks each image's expansion from that image's seed, so any image can be made again alone;
combinatorial mode makes every combination. A prompt without `{` or `__` is left alone (and dynamicprompts
is not even imported).
"""

from __future__ import annotations

import re
from pathlib import Path

from sdgen.errors import NAME, InvalidRequestError

MAX_COMBINATIONS = 10_000
_WILDCARD = re.compile(r"__[^_\s][^\s]*?__")


def has_wildcards(prompt: str) -> bool:
    return "{" in prompt or _WILDCARD.search(prompt) is not None


def expand_random(template: str, seeds: list[int], wildcard_dir: str | None) -> list[str]:
    """One expansion per seed: the same template and seed always give the same prompt."""
    from dynamicprompts.generators import RandomPromptGenerator

    generator = RandomPromptGenerator(wildcard_manager=_wildcards(wildcard_dir, template))
    prompts = _generated(lambda: generator.generate(template, num_images=len(seeds), seeds=seeds), template)
    return [str(prompt) for prompt in prompts]


def expand_all(template: str, wildcard_dir: str | None) -> list[str]:
    """Every combination, in dynamicprompts' order (the first alternative varies slowest)."""
    from dynamicprompts.generators import CombinatorialPromptGenerator

    generator = CombinatorialPromptGenerator(wildcard_manager=_wildcards(wildcard_dir, template))
    prompts = _generated(lambda: generator.generate(template, max_prompts=MAX_COMBINATIONS + 1), template)
    if len(prompts) > MAX_COMBINATIONS:
        raise InvalidRequestError(
            f"Invalid {NAME} {template!r}: more than {MAX_COMBINATIONS} combinations; drop --combinatorial "
            "(one random expansion per image) or use fewer alternatives.",
            "prompt",
        )
    return [str(prompt) for prompt in prompts]


def _generated(generate, template: str) -> list:
    try:
        prompts = list(generate())
    except InvalidRequestError:
        raise
    except Exception as error:  # dynamicprompts' parse errors carry no common base class
        raise InvalidRequestError(
            f"Invalid {NAME} {template!r}: the wildcard syntax does not parse ({error}); "
            "alternatives look like {red|green}, wildcards like __colors__.",
            "prompt",
        ) from None
    if not prompts:
        raise InvalidRequestError(f"Invalid {NAME} {template!r}: it expands to no prompt at all.", "prompt")
    return prompts


def _wildcards(wildcard_dir: str | None, template: str):
    """dynamicprompts' WildcardManager over the folder, after checking that every __name__ used exists
    (dynamicprompts would otherwise leave the text in the prompt as it is)."""
    from dynamicprompts.wildcards import WildcardManager

    names = [match.group(0)[2:-2] for match in _WILDCARD.finditer(template)]
    if names and not wildcard_dir:
        raise InvalidRequestError(
            f"Invalid {NAME} {template!r}: it uses wildcard __{names[0]}__; set --wildcard-dir to the folder "
            f"holding {names[0]}.txt.",
            "prompt",
        )
    folder = Path(wildcard_dir or ".").expanduser()
    if wildcard_dir and not folder.is_dir():
        raise InvalidRequestError(f"Invalid {NAME} {wildcard_dir!r}: no such folder.", "wildcard_dir")
    manager = WildcardManager(folder)
    for name in names:
        if not any(True for _ in _matching(manager, name)):
            raise InvalidRequestError(
                f"Invalid {NAME} {template!r}: wildcard __{name}__ has no file {name}.txt (or .yaml/.json) in "
                f"{str(folder)!r}.",
                "prompt",
            )
    return manager


def _matching(manager, name: str):
    try:
        return manager.get_values(name)
    except Exception:  # an unknown or unreadable wildcard
        return []
