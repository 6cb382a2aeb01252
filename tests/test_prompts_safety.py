"""Issue 22, part A: what a prompt can read and how much work it can ask for.

Wildcards are read only inside --wildcard-dir (never the working directory, no links out, no `..`, no
absolute names, globs confined); the limits on length, nesting, BREAKs, LoRAs/embeddings and wildcard
look-ups are refused by name before anything loads, within a second; weights that overflow and text that is
not valid Unicode are one-line usage errors (exit 2, 422 from the server)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError
from sdgen.prompts.emphasis import _BREAK, _SYNTAX, ROUND, SQUARE, Piece, _joined, _number, parse_emphasis
from sdgen.prompts.limits import MAX_WEIGHT, nesting_depth
from sdgen.prompts.wildcards import expand_all, expand_random

runner = CliRunner()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A working directory with a secret, a folder outside the wildcard folder, and the wildcard folder with
    a subfolder, a link to the outside folder, a link to an outside file and a link inside itself."""
    (tmp_path / "secret.txt").write_text("SECRET-LINE\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "loot.txt").write_text("OUTSIDE-LINE\n")
    folder = tmp_path / "wildcards"
    (folder / "animals").mkdir(parents=True)
    (folder / "colors.txt").write_text("red\ngreen\n")
    (folder / "animals" / "cats.txt").write_text("tabby\n")
    (folder / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    (folder / "loot.txt").symlink_to(tmp_path / "outside" / "loot.txt")
    (folder / "hues.txt").symlink_to(folder / "colors.txt")
    return tmp_path


def expanded(prompt: str, folder: Path | None, **fields: object) -> tuple[str, ...]:
    request = GenerationRequest(prompt, seed=1, num_images=3, wildcard_dir=folder and str(folder), **fields)
    checked = check_request(request)
    prompts = tuple(job.prompt for job in checked.jobs)
    return prompts if set(prompts) != {checked.prompt} else (checked.prompt,)


# --- what a prompt can read ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt", ["a __secret__", "${f=secret}__${f}__", "{a|__secret__}", "__*__", "${x=__ secret __} ${x}"]
)
def test_without_a_wildcard_dir_no_file_is_read_not_even_the_working_directorys(tree, monkeypatch, prompt) -> None:
    monkeypatch.chdir(tree)  # secret.txt is right here: the old fallback read it
    with pytest.raises(InvalidRequestError, match="wildcards are read only from a folder you name; set --wildcard-dir"):
        expanded(prompt, None)


def test_alternatives_need_no_folder() -> None:
    assert set(expanded("a {red|blue} fox", None)) <= {"a red fox", "a blue fox"}


@pytest.mark.parametrize(
    "prompt",
    ["__../secret__", "__animals/../../secret__", "__/etc/passwd__", "${f=../secret}__${f}__",
     "__animals\\..\\..\\secret__"],
)
def test_names_that_leave_the_folder_are_refused(tree, prompt) -> None:
    with pytest.raises(InvalidRequestError, match="points outside --wildcard-dir"):
        expanded(prompt, tree / "wildcards")


@pytest.mark.parametrize("prompt", ["__linked/loot__", "__linked/*__", "__loot__"])
def test_links_out_of_the_folder_are_not_followed(tree, prompt) -> None:
    with pytest.raises(InvalidRequestError, match="has no file .* links out of it are not followed"):
        expanded(prompt, tree / "wildcards")


def test_globs_and_links_stay_inside_the_folder(tree) -> None:
    folder = tree / "wildcards"
    everything = set(expand_all("__*__", str(folder))) | set(expand_all("__**__", str(folder)))
    assert everything == {"red", "green", "tabby"}  # colors, hues (a link inside: kept), animals/cats
    assert expand_all("__animals/*__", str(folder)) == ["tabby"]
    assert set(expand_all("__hues__", str(folder))) == {"red", "green"}
    assert set(expanded("a __colors__ fox", folder)) <= {"a red fox", "a green fox"}


def test_lora_tags_and_embedding_words_reach_only_files_inside_their_folders(tmp_path) -> None:
    (tmp_path / "outside").mkdir()
    for name in ("far.safetensors", "evil.pt"):
        (tmp_path / "outside" / name).write_bytes(b"x")
    loras, embeddings = tmp_path / "loras", tmp_path / "embeddings"
    (loras / "sub").mkdir(parents=True)
    embeddings.mkdir()
    (loras / "near.safetensors").write_bytes(b"x")
    (loras / "far.safetensors").symlink_to(tmp_path / "outside" / "far.safetensors")
    (loras / "alias.safetensors").symlink_to(loras / "near.safetensors")
    (loras / "sub" / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    (embeddings / "evil.pt").symlink_to(tmp_path / "outside" / "evil.pt")
    folders = {"lora_dir": str(loras), "embedding_dir": str(embeddings)}
    for tag in ("<lora:far>", "<lora:../outside/far>", f"<lora:{tmp_path}/outside/far>"):
        with pytest.raises(InvalidRequestError, match="no .*safetensors in"):
            check_request(GenerationRequest(f"a fox {tag}", seed=1, **folders))
    request = GenerationRequest("a fox <lora:near> <lora:alias>, evil", seed=1, negative_prompt="evil", **folders)
    image = check_request(request).jobs[0]
    assert [Path(ref.source).name for ref in image.lora_refs] == ["near.safetensors", "alias.safetensors"]
    assert image.embedding_refs == ()  # evil.pt links out of the folder: not a word's file


def test_the_command_line_has_no_working_directory_fallback(tree, monkeypatch, no_weights_load) -> None:
    monkeypatch.chdir(tree)
    result = runner.invoke(app, ["a __secret__", "--model", "never/loaded"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("sdgen: error: Invalid prompt 'a __secret__': it uses wildcard __secret__")
    assert "set --wildcard-dir" in result.stderr and "SECRET" not in result.stderr + result.stdout
    assert result.stderr.count("\n") == 1


# --- limits on the work a prompt asks for ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "fields", "flag"),
    [
        ("x" * 5001, {}, "--max-prompt-length"),
        ("a " * 40, {"max_prompt_length": 50}, "--max-prompt-length"),
        ("(" * 33 + "deep" + ")" * 33, {}, "--max-nesting"),
        ("[" * 20 + "{a|" * 13 + "b" + "}" * 13 + "]" * 20, {}, "--max-nesting"),
        ("((a))", {"max_nesting": 1}, "--max-nesting"),
        ("a BREAK " * 33, {}, "--max-breaks"),
        ("a BREAK b BREAK c", {"max_breaks": 1}, "--max-breaks"),
        ("a fox" + " <lora:x:0.1>" * 65, {}, "--max-networks"),
    ],
)
def test_each_limit_is_refused_by_name(prompt, fields, flag) -> None:
    with pytest.raises(InvalidRequestError, match=f"allowed; .*raise {flag}"):
        check_request(GenerationRequest(prompt, seed=1, **fields))


def test_prompts_within_the_limits_pass() -> None:
    check_request(GenerationRequest("(" * 32 + "deep" + ")" * 32 + " BREAK b" * 32, seed=1))
    check_request(GenerationRequest("x" * 5000, seed=1, negative_prompt="y" * 5000))
    check_request(GenerationRequest("x" * 6000, seed=1, max_prompt_length=6000))


def test_the_negative_prompt_is_held_to_the_same_limits() -> None:
    with pytest.raises(InvalidRequestError, match=r"^Invalid negative_prompt 'a BREAK .*raise --max-breaks"):
        check_request(GenerationRequest("a fox", seed=1, negative_prompt="a BREAK " * 40))


def test_expanded_prompts_are_held_to_the_limits_too(tmp_path) -> None:
    (tmp_path / "long.txt").write_text("y" * 4000 + "\n")
    with pytest.raises(InvalidRequestError, match=r"expanded to 'a yyy.*more than the 3000 allowed"):
        expanded("a __long__", tmp_path, max_prompt_length=3000)
    (tmp_path / "loud.txt").write_text("(((((x:90)))))\n")
    with pytest.raises(InvalidRequestError, match="the weight of 'x' comes to"):
        expanded("a __loud__", tmp_path)


def test_lora_tags_are_counted_before_any_folder_is_searched(tmp_path) -> None:
    tags = " ".join(f"<lora:l{i}:0.1>" for i in range(5))
    with pytest.raises(InvalidRequestError, match="uses 5 LoRAs and embeddings, more than the 4 allowed"):
        check_request(GenerationRequest(tags, seed=1, max_networks=4))  # no --lora-dir needed to say so


def test_wildcard_look_ups_are_bounded(tmp_path) -> None:
    """Each file names the next one twice: 2**12 look-ups for one image, refused at the limit, fast."""
    for level in range(12):
        (tmp_path / f"w{level}.txt").write_text(f"__w{level + 1}__ __w{level + 1}__\n")
    (tmp_path / "w12.txt").write_text("leaf\n")
    started = time.perf_counter()
    with pytest.raises(InvalidRequestError, match="more than 100 look-ups per image .*raise --max-wildcards"):
        expanded("__w0__", tmp_path)
    assert time.perf_counter() - started < 2
    with pytest.raises(InvalidRequestError, match="more than 20 look-ups per image"):
        expand_random("__w0__", [1], str(tmp_path), max_lookups=20)
    assert expand_random("__w10__", [1], str(tmp_path), max_lookups=20) == ["leaf leaf leaf leaf"]


def test_a_wildcard_file_that_names_itself_is_a_usage_error(tmp_path) -> None:
    (tmp_path / "loop.txt").write_text("again __loop__\n")
    with pytest.raises(InvalidRequestError, match="nest too deeply|look-ups"):
        expanded("__loop__", tmp_path)


@pytest.mark.parametrize("key", ["max_prompt_length", "max_nesting", "max_breaks", "max_networks", "max_wildcards"])
def test_a_limit_must_be_a_whole_number_from_one(key, no_weights_load) -> None:
    with pytest.raises(InvalidRequestError, match=f"^Invalid {key} 0: a limit is a whole number from 1"):
        check_request(GenerationRequest("a fox", seed=1, **{key: 0}))
    flag = "--" + key.replace("_", "-")
    result = runner.invoke(app, ["a fox", "--model", "never/loaded", flag, "0"])
    assert result.exit_code == 2 and result.stderr.startswith(f"sdgen: error: Invalid {flag} 0: a limit is")


def test_limits_come_from_the_settings_layers(no_weights_load) -> None:
    result = runner.invoke(app, ["a " * 30, "--model", "never/loaded"], env={"SDGEN_MAX_PROMPT_LENGTH": "20"})
    assert result.exit_code == 2
    assert "60 characters, more than the 20 allowed; shorten it, or raise --max-prompt-length." in result.stderr


# --- the refusals are fast, and the emphasis parser's work is bounded ------------------------------------


def test_a_100_kb_nested_prompt_is_refused_within_a_second() -> None:
    for prompt, fields in [
        ("(a" * 50_000 + ")" * 50_000, {}),  # 44 s in the old parser
        ("(a" * 50_000 + ")" * 50_000, {"max_prompt_length": 200_000}),  # refused by its depth, unparsed
        ("[a" * 25_000 + "{b|" * 10_000, {"max_prompt_length": 200_000}),
    ]:
        started = time.perf_counter()
        with pytest.raises(InvalidRequestError, match="--max-prompt-length|--max-nesting"):
            check_request(GenerationRequest(prompt, seed=1, **fields))
        assert time.perf_counter() - started < 2


def test_thousands_of_breaks_are_refused_before_any_encoding(no_weights_load, monkeypatch) -> None:
    import sdgen.engine.text

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the prompt was tokenized")

    monkeypatch.setattr(sdgen.engine.text, "chunk_prompt", never)
    started = time.perf_counter()
    result = runner.invoke(app, ["a BREAK " * 7500, "--model", "never/loaded", "--max-prompt-length", "100000"])
    assert time.perf_counter() - started < 2
    assert result.exit_code == 2, result.output
    assert "7500 BREAKs, more than the 32 allowed" in result.stderr and result.stderr.count("\n") == 1


def test_the_emphasis_parser_is_linear_in_the_prompts_length() -> None:
    """Wide (100 kB of groups 32 deep) and deep (30,000 brackets, 90 kB): each parsed within a second or two;
    the old parser took 44 s for 100 kB of nested brackets."""
    wide = ("(a" * 32 + ")" * 32 + " [b] ") * 1000
    deep = "(a" * 30_000 + ")" * 30_000
    assert len(wide) > 100_000 and nesting_depth(wide) == 32 and nesting_depth(deep) == 30_000
    for prompt, text in ((wide, ("a" * 32 + " b ") * 1000), (deep, "a" * 30_000)):
        started = time.perf_counter()
        assert "".join(piece.text for piece in parse_emphasis(prompt)) == text
        assert time.perf_counter() - started < 2


def a1111_parse(prompt: str) -> list[Piece]:
    """The reference: A1111's parse_prompt_attention, multiplying every piece after a bracket when it closes."""
    pieces: list[Piece] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece.weight *= factor

    for match in _SYNTAX.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append(Piece(token[1:]))
        elif token in ("(", "["):
            (round_open if token == "(" else square_open).append(len(pieces))
        elif weight is not None and round_open:
            multiply_from(round_open.pop(), _number(weight))
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE)
        else:
            for number, part in enumerate(_BREAK.split(token)):
                if number:
                    pieces.append(Piece("BREAK", is_break=True))
                pieces.append(Piece(part))
    for start in round_open:
        multiply_from(start, ROUND)
    for start in square_open:
        multiply_from(start, SQUARE)
    return _joined(pieces) or [Piece("")]


def test_the_parser_gives_a1111s_weights_bit_for_bit() -> None:
    """Random prompts of brackets, weights, escapes and BREAKs: the same pieces and the same float weights."""
    parts = ["(", ")", "[", "]", "a", "b c", ":", ":1.3)", ": 0.5 )", "\\(", "\\\\", "\\", " BREAK ", ",",
             ":1.2.3)", ":-1)", ":1.1)", "((", "]]", "x:"]
    rng = random.Random(22)
    for _ in range(3000):
        prompt = "".join(rng.choice(parts) for _ in range(rng.randint(0, 40)))
        ours = [(p.text, p.weight, p.is_break) for p in parse_emphasis(prompt)]
        assert ours == [(p.text, p.weight, p.is_break) for p in a1111_parse(prompt)], prompt
    exact = "(a" * 40 + "[b" * 24 + "c:1.3)" + "]" * 10 + ")" * 20  # 64 deep, partly unclosed
    assert [p.weight for p in parse_emphasis(exact)] == [p.weight for p in a1111_parse(exact)]
    deeper = "(a" * 100 + ")" * 100  # past EXACT_DEPTH: the same product up to rounding
    assert [p.weight for p in parse_emphasis(deeper)] == pytest.approx([p.weight for p in a1111_parse(deeper)])


# --- weights and text the model cannot take -------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "weight"),
    [
        ("a (fox:" + "9" * 400 + ")", "inf"),
        ("((((fox:99))))", "131.769"),
        ("((fox:" + "9" * 400 + "):0)", "nan"),
        ("(fox:-101)", "-101.0"),
    ],
)
def test_weights_past_the_maximum_are_refused(prompt, weight) -> None:
    with pytest.raises(InvalidRequestError, match=f"the weight of 'fox' comes to {weight}.*between -100 and 100"):
        check_request(GenerationRequest(prompt, seed=1))


def test_weights_up_to_the_maximum_pass_and_no_weighting_reads_them_as_text() -> None:
    check_request(GenerationRequest(f"(fox:{MAX_WEIGHT:g}) [(owl:-{MAX_WEIGHT:g})]", seed=1))
    check_request(GenerationRequest("(fox:" + "9" * 400 + ")", seed=1, weighting=False))


def test_an_overflowing_weight_exits_2_before_loading(no_weights_load) -> None:
    result = runner.invoke(app, ["a fox", "-N", "(blur:1000000000)", "--model", "never/loaded"])
    assert result.exit_code == 2
    assert result.stderr.startswith("sdgen: error: Invalid --negative-prompt '(blur:1000000000)': the weight of")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("text", ["a \ud800 fox", "\udcff", "fox \udfff"])
@pytest.mark.parametrize("key", ["prompt", "negative_prompt"])
def test_lone_surrogates_are_refused_by_field(text, key) -> None:
    fields = {"prompt": "a fox", key: text}
    with pytest.raises(InvalidRequestError, match=rf"^Invalid {key} .*is not valid Unicode \(a lone surrogate\)"):
        check_request(GenerationRequest(**fields, seed=1))


def test_a_lone_surrogate_on_the_command_line_exits_2_in_one_line(no_weights_load) -> None:
    result = runner.invoke(app, ["a \udcff fox", "--model", "never/loaded"])  # what Python makes of a bad byte
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "sdgen: error: Invalid prompt 'a \\udcff fox': character 3 ('\\udcff') is not valid Unicode (a lone "
        "surrogate); remove it.\n"
    )


# --- the server reads only what its own flags allow, and answers 422 -----------------------------------


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, hf_home: Path, tmp_path_factory: pytest.TempPathFactory):
    from sdgen.serve.app import create_app
    from sdgen.serve.server import serving

    from .serving import make_engine

    folder = tmp_path_factory.mktemp("server-wildcards")
    (folder / "colors.txt").write_text("teal\n")
    bare = make_engine(tiny_model_dir, max_prompt_length=200)  # no --wildcard-dir
    with_dir = make_engine(tiny_model_dir, wildcard_dir=str(folder))
    with serving(create_app(bare), bare) as bare_url, serving(create_app(with_dir), with_dir) as dir_url:
        yield bare_url, dir_url
    bare.close()
    with_dir.close()


def txt2img(url: str, prompt: str, **body: object) -> requests.Response:
    body = {"prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": 1, **body}
    return requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)


@pytest.mark.parametrize(
    ("prompt", "body", "detail"),
    [
        ("a __colors__ fox", {}, "it uses wildcard __colors__, and wildcards are read only from a folder you name"),
        ("${f=colors}__${f}__", {}, "set --wildcard-dir"),
        ("x" * 201, {}, "201 characters, more than the 200 allowed; shorten it, or raise --max-prompt-length"),
        ("(" * 40 + "a" + ")" * 40, {}, "raise --max-nesting"),
        ("a fox", {"negative_prompt": "BREAK " * 33}, "Invalid negative_prompt 'BREAK BREAK"),
        ("a (fox:1000)", {}, "the weight of 'fox' comes to 1000.0"),
        # the server's body check refuses it first, in the same words for every text field
        ("a \ud800 fox", {}, "must be valid Unicode text (character 3 is a lone surrogate)"),
    ],
)
def test_the_server_answers_422_naming_the_limit(server, tmp_path, monkeypatch, prompt, body, detail) -> None:
    bare_url, _ = server
    (tmp_path / "colors.txt").write_text("SECRET\n")
    monkeypatch.chdir(tmp_path)  # the server's working directory holds colors.txt: never read
    started = time.perf_counter()
    answer = txt2img(bare_url, prompt, **body)
    assert time.perf_counter() - started < 2
    assert answer.status_code == 422, answer.text
    assert detail in answer.json()["detail"] and "SECRET" not in answer.text


def test_the_server_reads_wildcards_from_its_own_folder_only(server) -> None:
    _, dir_url = server
    answer = txt2img(dir_url, "a __colors__ fox")
    assert answer.status_code == 200, answer.text
    assert answer.json()["parameters"]["prompt"] == "a __colors__ fox"
    assert "a teal fox" in answer.json()["info"]
    refused = txt2img(dir_url, "__../colors__")
    assert refused.status_code == 422 and "points outside --wildcard-dir" in refused.json()["detail"]


@pytest.mark.parametrize("command", ["generate", "batch", "grid", "serve"])
def test_every_command_that_reads_prompts_takes_the_limits(command) -> None:
    shown = runner.invoke(app, [command, "--help"], terminal_width=200).stdout
    for flag in ("--max-prompt-length", "--max-nesting", "--max-breaks", "--max-networks", "--max-wildcards"):
        assert flag in shown, (command, flag)


def test_the_folder_listing_names_files_as_dynamicprompts_does(tmp_path) -> None:
    """Without links, sdgen's own listing holds the names and lines dynamicprompts' would."""
    from dynamicprompts.wildcards.tree import build_tree_from_path

    from sdgen.prompts.wildcards import wildcard_files

    (tmp_path / "people" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden\n")
    (tmp_path / "colors.txt").write_text("red\n# a comment\n\ngreen\n")
    (tmp_path / "people" / "deep" / "names.txt").write_text("ann\nbob\n")
    (tmp_path / "people" / "pantry.json").write_text('{"hats": ["cap", "fez"], "more": {"shoes": ["boot"]}}')
    (tmp_path / "flat.json").write_text('["one", "two"]')
    (tmp_path / "notes.md").write_text("not a wildcard\n")
    ours = {name: list(collection.get_values()) for name, collection in wildcard_files(tmp_path).items()}
    theirs = {name: list(collection.get_values()) for name, collection in build_tree_from_path(tmp_path).map.items()}
    assert ours == theirs
    assert set(ours) == {"colors", "people/deep/names", "people/hats", "people/more/shoes", "flat"}
