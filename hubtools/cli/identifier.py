"""`hubtools identifier ...` commands: check an identifier, suggest rare ones."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from hubtools.cli import console as out
from hubtools.cli.console import styled

app = typer.Typer(help="Check a DreamBooth identifier, or find rare single tokens to use.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="identifier")


_BASE_MODEL_HELP = (
    "Base model (Hub id or folder) whose tokenizer, and text encoder for neighbours and prior, to use. "
    "Default: Stable Diffusion 1.x's CLIP tokenizer, built offline, without weights."
)

# Options that check and suggest share.
BaseModel = Annotated[Optional[str], typer.Option("--base-model", help=_BASE_MODEL_HELP)]
Revision = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit of the base model.")]
ClassNoun = Annotated[Optional[str], typer.Option("--class-noun", help="The subject's class, e.g. dog (for the prior).")]


def _load_tools(base_model: str | None, revision: str | None, weights: bool):
    """(tokenizer, text encoder or None): the base model's own when one is named."""
    from hubtools.identifier import default_tokenizer, load_tokenizer_and_text_encoder

    if base_model is None:
        return default_tokenizer(), None
    from hubtools.base_model import check_model_reference

    check_model_reference(base_model)
    tokenizer, text_encoder, notes = load_tokenizer_and_text_encoder(base_model, revision=revision, weights=weights)
    for note in notes:
        out.note(note)
    return tokenizer, text_encoder


def _further_tokenizers(base_model: str | None, revision: str | None) -> dict:
    from hubtools.families.tokenizers import further_tokenizers

    tokenizers, problem = further_tokenizers(base_model, revision)
    if problem:
        out.note(problem)
    return tokenizers


@app.command("check")
def check(
    text: str = typer.Argument(..., help="The identifier to check, e.g. pkblz."),
    base_model: BaseModel = None,
    revision: Revision = None,
    class_noun: ClassNoun = None,
    weights: bool = typer.Option(True, "--weights/--no-weights", help="Load the text encoder of --base-model."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when there is any warning."),
) -> None:
    """Tokenize TEXT as the base model does and say whether it makes a good identifier."""
    from hubtools.identifier import check_identifier

    tokenizer, text_encoder = _load_tools(base_model, revision, weights)
    report = check_identifier(text, tokenizer=tokenizer, text_encoder=text_encoder, class_noun=class_noun,
                              other_tokenizers=_further_tokenizers(base_model, revision))
    if as_json:
        out.data_json(report.to_dict())
    else:
        _print_report(report)
    if strict and report.warnings:
        raise SystemExit(1)  # typer.Exit's code is lost under main()'s standalone_mode=False


def _print_report(report) -> None:
    # Identifiers and tokens are data (an identifier may well contain brackets): styled as Text, never markup.
    yes_no = {True: styled("yes", "green"), False: styled("no", "red")}
    pieces = Text("  ").join(Text.assemble((piece, "bold"), f" ({token_id})")
                             for piece, token_id in zip(report.tokens, report.token_ids))
    out.result(f"identifier     {report.text}")
    out.result(Text.assemble(f"tokens         {report.num_tokens}: ", pieces))
    out.result(Text.assemble("single token   ", yes_no[report.single_token]))
    for split in report.other_tokenizers or []:
        out.result(Text.assemble(f"{split['tokenizer']:<15}{split['num_tokens']} ({split['tokenizer_class']}): ",
                                    Text(" + ".join(split["tokens"]), style="bold")))
    if report.byte_level_of is not None:
        out.result(Text.assemble("byte-level of  ", (report.byte_level_of, "bold")))
    out.result(Text.assemble("ordinary word  ", styled("yes", "red") if report.is_word else styled("no", "green")))
    if report.rarity is not None:
        out.result(f"rarity         {report.rarity:.3f} (0 most frequent .. 1 rarest, by BPE merge order)")
    if report.prior_strength is not None:
        with_id, without = report.prior_prompts
        out.result(f"prior strength {report.prior_strength:.4f} (cosine distance of {with_id!r} from {without!r})")
    if report.nearest_neighbours:
        table = Table("nearest token", "id", "cosine", title="nearest neighbours (token embeddings)")
        for neighbour in report.nearest_neighbours:
            table.add_row(neighbour.token, str(neighbour.token_id), f"{neighbour.similarity:.3f}")
        out.result(table)
    for warning in report.warnings:
        out.result(Text.assemble(("warning:", "yellow"), f" {warning}"))
    if report.suggestion:
        out.result(Text.assemble("suggestion     type ", (report.suggestion, "bold"), " instead"))
    if report.ok:
        out.result(Text.assemble(("looks good:", "green"), " one rare token with no known meaning to the tokenizer"))


@app.command("suggest")
def suggest(
    n: int = typer.Option(10, "--n", help="How many identifiers to suggest."),
    base_model: BaseModel = None,
    revision: Revision = None,
    class_noun: ClassNoun = None,
    weights: bool = typer.Option(True, "--weights/--no-weights", help="Rank by weak prior with the text encoder."),
    as_json: bool = typer.Option(False, "--json", help="Print the suggestions as JSON."),
) -> None:
    """Rare single tokens that are not words, names, emoji or known bad choices, rarest (or weakest prior) first."""
    from hubtools.identifier import suggest_identifiers

    tokenizer, text_encoder = _load_tools(base_model, revision, weights)
    suggestions = suggest_identifiers(n, tokenizer=tokenizer, text_encoder=text_encoder, class_noun=class_noun)
    if as_json:
        out.data_json([s.to_dict() for s in suggestions])
        return
    with_prior = text_encoder is not None
    table = Table("identifier", "token id", "rarity", *(["prior strength"] if with_prior else []),
                  title="rare single-token identifiers" + (", weakest prior first" if with_prior else ", rarest first"))
    for s in suggestions:
        table.add_row(s.text, str(s.token_id), f"{s.rarity:.3f}",
                      *([f"{s.prior_strength:.4f}"] if with_prior else []))
    out.result(table)
