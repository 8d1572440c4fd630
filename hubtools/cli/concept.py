"""`hubtools concept ...` commands: prepare a photo set, push it as a dataset repo, pull one back."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from hubtools.cli import console
from hubtools.cli.console import styled
from hubtools.cli.run_options import run_flag

app = typer.Typer(help="Prepare, push and pull concept image sets (the photos of your subject).", no_args_is_help=True)



def register(root: typer.Typer) -> None:
    root.add_typer(app, name="concept")


_STATUS_STYLES = {"accepted": "green", "rejected": "bold red", "duplicate": "yellow", "ignored": "dim"}
_CROP_HELP = "Which square to keep after resizing: center, top, bottom, left or right."


def _print_report(concept) -> None:
    # File names and reasons are data: the console reads no markup, so a photo called "[red].jpg" prints as itself.
    title = concept.source + (f" @ {concept.source_revision[:12]}" if concept.source_revision else "")
    table = Table(title=title)
    table.add_column("input", overflow="fold")
    table.add_column("status")
    table.add_column("reason", overflow="fold")
    table.add_column("output", overflow="fold")
    for entry in concept.entries:
        style = _STATUS_STYLES.get(entry.status, "")
        reason = entry.reason + (f"; {entry.caption_warning}" if entry.caption_warning else "")
        output = (entry.output or "") + (f" ({entry.bucket[0]}x{entry.bucket[1]})" if entry.bucket else "")
        table.add_row(entry.label, styled(entry.status, style), reason, output)
    console.result(table)
    counts = concept.counts
    buckets = concept.bucket_counts()
    where = (", in buckets " + ", ".join(f"{label} ({count})" for label, count in buckets.items()) if buckets
             else f", at {concept.resolution}x{concept.resolution} px")
    console.result(
        f"{counts['accepted']} accepted, {counts['rejected']} rejected, {counts['duplicate']} duplicate, "
        f"{counts['ignored']} ignored{where}"
    )
    console.result(f"images:        {concept.dir / 'images'}")
    console.result(f"manifest:      {concept.manifest_path}")
    console.result(f"contact sheet: {concept.contact_sheet_path}")
    if concept.source_revision:
        console.result(f"revision:      {concept.source_revision}")


def _prepare(source: str, out: Path, *, hub_only: bool, **options) -> None:
    from hubtools.concepts import ConceptNotUsableError, prepare_concept

    try:
        with console.ConsoleReporter() as reporter:
            concept = prepare_concept(source, out, hub_only=hub_only, reporter=reporter, **options)
    except ConceptNotUsableError as error:
        _print_report(error.concept)  # show why before the one-line error
        raise
    _print_report(concept)


# Options that prepare and pull share: one declaration each, so their help can't drift apart.
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Folder to write the prepared set to (replaced if it is one).")]
Resolution = Annotated[int, typer.Option("--resolution", "-r", help="Training resolution: square side in pixels.")]
Caption = Annotated[
    Optional[str], typer.Option("--caption", help="Caption (instance prompt) for images that come without one.")
]
MinImages = Annotated[int, typer.Option("--min-images", help="Fail unless at least this many images are usable.")]
Strict = Annotated[bool, typer.Option("--strict", help="Fail if any image is rejected.")]
AllowUpscale = Annotated[
    bool, typer.Option("--allow-upscale", help="Keep images smaller than the resolution (upscaled).")
]
ImageColumn = Annotated[
    Optional[str], typer.Option("--image-column", help="Image column of a Hub dataset (detected if unset).")
]
Crop = Annotated[str, typer.Option("--crop", help=_CROP_HELP)]
# The bucket and caption flags are the run commands' own (train, train-and-push): one declaration each.
Buckets = run_flag("buckets").annotation
SizeMultiple = Annotated[int, typer.Option(
    "--size-multiple", help="Bucket sides are multiples of this (the model's VAE factor times its patch size: "
                            "8 for Stable Diffusion and SDXL, 16 for FLUX.1).")]
CaptionTemplate = run_flag("caption_template").annotation
IdentifierOption = run_flag("identifier").annotation
ClassNounOption = run_flag("class_noun").annotation
PrependIdentifier = run_flag("prepend_identifier").annotation


def _prepare_command(*, hub_only: bool, source_help: str, doc: str):
    """prepare and pull: the same options, one reading any source, the other only Hub datasets."""

    def command(
        source: Annotated[str, typer.Argument(metavar="SOURCE", help=source_help)],
        out: OutDir,
        resolution: Resolution = 512,
        caption: Caption = None,
        min_images: MinImages = 1,
        strict: Strict = False,
        allow_upscale: AllowUpscale = False,
        image_column: ImageColumn = None,
        crop: Crop = "center",
        buckets: Buckets = None,
        size_multiple: SizeMultiple = 16,
        caption_template: CaptionTemplate = None,
        identifier: IdentifierOption = None,
        class_noun: ClassNounOption = None,
        prepend_identifier: PrependIdentifier = False,
    ) -> None:
        from hubtools.concepts.captions import CaptionRules

        rules = CaptionRules(template=caption_template, identifier=identifier, class_noun=class_noun,
                             prepend_identifier=prepend_identifier)
        _prepare(
            source, out, hub_only=hub_only, resolution=resolution, caption=caption, min_images=min_images,
            strict=strict, allow_upscale=allow_upscale, image_column=image_column, crop=crop, buckets=buckets,
            size_multiple=size_multiple, captions=rules,
        )

    command.__doc__ = doc
    return command


app.command("prepare")(_prepare_command(
    hub_only=False, source_help="A folder of photos, or a Hub dataset namespace/name[@revision].",
    doc="Check and convert a set of photos for training, and say what happened to each file.",
))
app.command("pull")(_prepare_command(
    hub_only=True, source_help="Hub dataset namespace/name[@revision].",
    doc="Fetch a concept set from the Hub and prepare it; the commit used is recorded in manifest.json.",
))


@app.command("push")
def push(
    dir: Path = typer.Argument(..., help="A folder written by `hubtools concept prepare`."),
    repo: str = typer.Argument(..., help="Dataset repo to publish to: namespace/name."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    identifier: str | None = typer.Option(None, "--identifier", help="The rare token naming the subject, for the card."),
    class_noun: str | None = typer.Option(None, "--class-noun", help="What the subject is (dog, mug...), for the card."),
    license: str = typer.Option("cc-by-4.0", "--license", help="Licence of the photos (a Hub licence id)."),
) -> None:
    """Publish a prepared set as a Hub dataset (image + text columns) with a dataset card."""
    from hubtools.concepts import push_concept

    # token=None: huggingface_hub finds HF_TOKEN or the stored login itself.
    url = push_concept(dir, repo, private=private, identifier=identifier, class_noun=class_noun, license=license)
    console.result(url, data={"url": url})
