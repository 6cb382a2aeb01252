"""Wildcards and alternatives: `{red|green|blue} fox`, `__colors__` (a random line of colors.txt in the
wildcard folder), expanded by dynamicprompts, the engine of A1111's Dynamic Prompts extension.

Random mode picks each image's expansion from that image's seed, so any image can be made again alone;
combinatorial mode makes every combination. A prompt without `{` or `__` is left alone (and dynamicprompts
is not even imported).

What a prompt can read: only wildcard files inside --wildcard-dir. With no --wildcard-dir, no file at all
(a wildcard is an error naming the flag; nothing falls back to the working directory). dynamicprompts' own
file handling is replaced: sdgen lists the folder itself (.txt files, .json/.yaml pantries, hidden folders
skipped), follows no linked folder, and keeps a linked file only if it resolves inside the folder. Every
name a prompt can form, through `__name__`, globs (`__*__`, `__sub/*__`), `..`, absolute paths or the
`${var=...}` variables, is matched against that list only, so nothing outside the folder can be reached.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdgen.config.options import default
from sdgen.errors import NAME, InvalidRequestError
from sdgen.prompts.limits import quoted

MAX_COMBINATIONS = 10_000
WILDCARD_SUFFIXES = (".txt", ".json", ".yaml")
_WILDCARD = re.compile(r"__[^_\s][^\s]*?__")


def has_wildcards(prompt: str) -> bool:
    """Whether dynamicprompts has anything to do: `{` (alternatives, variables) or a `__name__`."""
    return "{" in prompt or _WILDCARD.search(prompt) is not None


def expand_random(
    template: str, seeds: list[int], wildcard_dir: str | None, max_lookups: int = default("max_wildcards")
) -> list[str]:
    """One expansion per seed: the same template and seed always give the same prompt. At most
    `max_lookups` wildcard look-ups per image.

    This is RandomPromptGenerator.generate's own loop (one sampling context, reseeded before each image),
    written out so that the look-ups are counted per image."""
    from random import Random

    from dynamicprompts.enums import SamplingMethod
    from dynamicprompts.sampling_context import SamplingContext

    manager = _confined_manager(wildcard_dir, template, max_lookups, per_image=True)
    context = SamplingContext(wildcard_manager=manager, default_sampling_method=SamplingMethod.RANDOM, rand=Random())

    def generate() -> list[str]:
        results = context.sample_prompts(template, len(seeds))
        prompts = []
        for seed in seeds:
            context.rand.seed(seed)
            manager.lookups = 0
            prompts.append(str(next(iter(results))))
        return prompts

    return [str(prompt) for prompt in _generated(generate, template)]


def expand_all(template: str, wildcard_dir: str | None, max_lookups: int = default("max_wildcards")) -> list[str]:
    """Every combination, in dynamicprompts' order (the first alternative varies slowest); at most
    `max_lookups` wildcard look-ups in all."""
    from dynamicprompts.generators import CombinatorialPromptGenerator

    manager = _confined_manager(wildcard_dir, template, max_lookups, per_image=False)
    generator = CombinatorialPromptGenerator(wildcard_manager=manager)
    prompts = _generated(lambda: generator.generate(template, max_prompts=MAX_COMBINATIONS + 1), template)
    if len(prompts) > MAX_COMBINATIONS:
        raise InvalidRequestError(
            f"Invalid {NAME} {quoted(template)}: more than {MAX_COMBINATIONS} combinations; drop --combinatorial "
            "(one random expansion per image) or use fewer alternatives.",
            "prompt",
        )
    return [str(prompt) for prompt in prompts]


def _generated(generate: Callable[[], list[Any]], template: str) -> list[Any]:
    try:
        prompts = list(generate())
    except InvalidRequestError:
        raise
    except RecursionError:
        raise InvalidRequestError(
            f"Invalid {NAME} {quoted(template)}: its alternatives or wildcards nest too deeply for "
            "dynamicprompts (or a wildcard file names itself); nest fewer.",
            "prompt",
        ) from None
    except Exception as error:  # dynamicprompts' parse errors carry no common base class
        raise InvalidRequestError(
            f"Invalid {NAME} {quoted(template)}: the wildcard syntax does not parse ({error}); "
            "alternatives look like {red|green}, wildcards like __colors__.",
            "prompt",
        ) from None
    if not prompts:
        raise InvalidRequestError(f"Invalid {NAME} {quoted(template)}: it expands to no prompt at all.", "prompt")
    return prompts


def _confined_manager(wildcard_dir: str | None, template: str, limit: int, per_image: bool) -> Any:
    """dynamicprompts' WildcardManager, confined to the folder (see the module's docstring) and counting
    its look-ups: at most `limit`, per image (the caller resets the count) or in all; every failure is an
    InvalidRequestError naming the prompt."""
    folder = None
    if wildcard_dir:
        folder = Path(wildcard_dir).expanduser()
        if not folder.is_dir():
            raise InvalidRequestError(f"Invalid {NAME} {wildcard_dir!r}: no such folder.", "wildcard_dir")
    return _confined_class()(folder, template, limit, per_image)


@functools.cache
def _confined_class() -> type:
    """The WildcardManager subclass, made on first use (dynamicprompts is imported only when needed)."""
    from dynamicprompts.wildcards import WildcardManager
    from dynamicprompts.wildcards.tree import build_tree_from_root_map

    class ConfinedWildcards(WildcardManager):
        """Reads the files `wildcard_files` lists, and nothing else; refuses look-ups past the limit."""

        def __init__(self, folder: Path | None, template: str, limit: int, per_image: bool) -> None:
            super().__init__()
            self.folder, self.template, self.lookups = folder, template, 0
            self.limit, self.per_image = limit, per_image

        @property
        def tree(self) -> Any:
            if self._tree is None:  # listed on the first look-up: {a|b} alone lists nothing
                files = wildcard_files(self.folder) if self.folder is not None else {}
                self._tree = build_tree_from_root_map({"": [files]})
            return self._tree

        def get_values(self, wildcard: str) -> Any:
            self.lookups += 1
            name = str(wildcard).strip("_")
            if self.folder is None:
                raise InvalidRequestError(
                    f"Invalid {NAME} {quoted(self.template)}: it uses wildcard __{name}__, and wildcards are read "
                    f"only from a folder you name; set --wildcard-dir to the folder holding {name}.txt.",
                    "prompt",
                )
            if self.lookups > self.limit:
                per = " per image" if self.per_image else ""
                raise InvalidRequestError(
                    f"Invalid {NAME} {quoted(self.template)}: expanding its wildcards takes more than "
                    f"{self.limit} look-ups{per} (wildcards inside wildcard files count too); "
                    "simplify them, or raise --max-wildcards.",
                    "prompt",
                )
            path = name.replace("\\", "/").strip()
            if ".." in path or path.startswith(("/", "~")):
                raise InvalidRequestError(
                    f"Invalid {NAME} {quoted(self.template)}: wildcard __{name}__ points outside --wildcard-dir; "
                    "a wildcard name is a path inside that folder (no '..', no absolute path).",
                    "prompt",
                )
            values = super().get_values(wildcard)
            if not values:
                raise InvalidRequestError(
                    f"Invalid {NAME} {quoted(self.template)}: wildcard __{name}__ has no file {name}.txt (or "
                    f".yaml/.json) in {str(self.folder)!r} (only files inside it are read; links out of it are "
                    "not followed).",
                    "prompt",
                )
            return values

    return ConfinedWildcards


def wildcard_files(folder: Path) -> dict[str, Any]:
    """name -> dynamicprompts collection for every wildcard file inside `folder`, named by its path under
    the folder without the suffix (`animals/cats`), as dynamicprompts names them. Linked folders are not
    entered; a linked file is kept only if it resolves inside the folder (and is then read at its target)."""
    from dynamicprompts.wildcards.collection import WildcardTextFile
    from dynamicprompts.wildcards.collection.structured import parse_structured_file

    root = folder.resolve()
    found: dict[str, Any] = {}
    for current, dirs, files in os.walk(root):  # followlinks=False: a linked folder is listed, not entered
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        here = Path(current)
        for file in sorted(files):
            path = here / file
            if path.suffix not in WILDCARD_SUFFIXES:
                continue
            real = path.resolve()
            if not real.is_relative_to(root) or not real.is_file():
                continue
            relative = path.relative_to(root).with_suffix("").as_posix()
            if path.suffix == ".txt":
                found[relative] = WildcardTextFile(real)
                continue
            prefix = here.relative_to(root).as_posix()
            try:
                pantry = list(parse_structured_file(real))
            except Exception as error:  # a broken pantry: said by name, as dynamicprompts only logs it
                raise InvalidRequestError(
                    f"Invalid {NAME} {str(path)!r}: not a wildcard pantry dynamicprompts can read ({error}).",
                    "wildcard_dir",
                ) from None
            for name, collection in pantry:
                found[name if prefix == "." else f"{prefix}/{name}"] = collection
    return found
