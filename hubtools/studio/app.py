"""The studio's routes: a JSON API for every action, and the three pages (new run, job, publish) as one
client of it. Pages use the local hub's stack: its Jinja base template, CSS, Content-Security-Policy (plus
``connect-src 'self'`` for the API and the event stream) and card sanitiser.

Nothing here decides anything the CLI does not: photos are judged by ``concepts.prepare_concept``, the
identifier by ``runner.check_identifier_for``, the config is built by ``cli.run_options.build_config`` (the
``--set`` rules), the plan is ``runner.plan`` printed as ``--dry-run`` prints it, the card is
``runner.card`` rendered by the hub's own sanitiser, and training, sampling and pushing are the CLI's
commands in child processes (``jobs``).
"""

from __future__ import annotations

import asyncio
import io
import json
import mimetypes
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from hubtools.errors import HubtoolsError
from hubtools.studio.auth import StudioAuth
from hubtools.studio.jobs import CONFIG_FILE, FINAL_STATES, Job, JobStore, Worker, append_event, read_events

HERE = Path(__file__).parent
DEFAULT_UPLOAD_LIMIT = 50 * 2**20
HF_HUB = "https://huggingface.co"
# Settings the studio chooses itself: the photos are the job's, the repo is chosen when publishing.
SERVER_SETTINGS = ("concept.source", "publish.repo_id")
STUDIO_FILES = {"studio.css": "text/css", "studio.js": "text/javascript"}


def _security_headers() -> dict[str, str]:
    from hubtools.localhub.pages.render import SECURITY_HEADERS

    headers = dict(SECURITY_HEADERS)
    headers["Content-Security-Policy"] += "; connect-src 'self'"
    return headers


@lru_cache(maxsize=1)
def _templates() -> Environment:
    from hubtools.localhub.pages import render

    hub_templates = render.HERE / "templates"
    env = Environment(loader=ChoiceLoader([FileSystemLoader(HERE / "templates"), FileSystemLoader(hub_templates)]),
                      autoescape=select_autoescape(["j2", "html"]), trim_blocks=True, lstrip_blocks=True)
    env.globals.update(quote=lambda text, safe="/": text)
    return env


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def create_app(data_dir: Path, *, token: str | None = None, upload_limit: int = DEFAULT_UPLOAD_LIMIT,
               worker_slots: int | None = None, start_worker: bool = True) -> FastAPI:
    """The studio over ``data_dir``: jobs left running by a crash are queued again, and the worker starts."""
    from hubtools.studio.jobs import gpu_slots

    store = JobStore(Path(data_dir))
    store.recover()
    worker = Worker(store, slots=worker_slots or gpu_slots())
    if start_worker:
        worker.start()
    auth = StudioAuth(token)
    app = FastAPI(title="hubtools studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.worker, app.state.auth, app.state.upload_limit = store, worker, auth, upload_limit
    headers = _security_headers()

    @app.middleware("http")
    async def sign_in(request: Request, call_next):
        path = request.url.path
        presented = request.query_params.get("token")
        if presented is not None and auth.token_ok(presented):
            rest = {key: value for key, value in request.query_params.items() if key != "token"}
            response = RedirectResponse(path + (f"?{urlencode(rest)}" if rest else ""), status_code=303)
            auth.set_cookie(response, request)
            return response
        if not (path.startswith("/static/") or auth.allowed(request)):
            if path.startswith("/api/"):
                return JSONResponse({"error": "sign in: open the address `hubtools studio` printed "
                                              "(it ends in ?token=...), or send Authorization: Bearer TOKEN"},
                                    status_code=401)
            return _page("signin.html.j2", headers, status=401)
        response = await call_next(request)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HubtoolsError)
    async def user_error(request: Request, error: HubtoolsError):
        return JSONResponse({"error": str(error)}, status_code=400)

    _add_static(app)
    _add_api(app, store, worker)
    _add_pages(app, store, headers)
    return app


def _page(template: str, headers: dict[str, str], status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=headers)


def _add_static(app: FastAPI) -> None:
    from hubtools.localhub.pages.routes_site import static_file

    @app.get("/static/hubtools/{name}")
    def hub_static(name: str) -> Response:
        return static_file(name)

    @app.get("/static/studio/{name}")
    def studio_static(name: str) -> Response:
        if name not in STUDIO_FILES:
            return Response("Not found", status_code=404, media_type="text/plain")
        return Response((HERE / "static" / name).read_bytes(), media_type=STUDIO_FILES[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


# -- helpers over a job's folder ------------------------------------------------------------------------


def _job(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id) if job_id.isalnum() else None
    if job is None:
        raise ApiError(f"no job {job_id}", 404)
    return job


def _inside(root: Path, relative: str) -> Path:
    """``root/relative`` when it stays inside ``root`` (no ``..``, no link out), else a 404."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise ApiError("no such file", 404)
    return path


def _file_response(path: Path) -> Response:
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not media_type.startswith("image/"):
        media_type = "text/plain; charset=utf-8" if media_type.startswith("text/") else "application/octet-stream"
    return Response(path.read_bytes(), media_type=media_type,
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "default-src 'none'"})


def _concept_report(store: JobStore, job: Job, refused: list | None = None) -> dict[str, Any]:
    """The prepared set as ``concept prepare`` reports it: counts, each file's status and reason."""
    from dataclasses import asdict

    from hubtools.concepts.manifest import load_prepared_concept

    folder = store.folder(job.id) / "concept"
    entries = [asdict(entry) for entry in refused or []]
    try:
        concept = load_prepared_concept(folder)
    except HubtoolsError:
        return {"entries": entries, "counts": None, "contact_sheet": None, "accepted": 0}
    entries += [asdict(entry) | {"label": entry.label} for entry in concept.entries]
    for entry in entries:
        entry.setdefault("label", entry.get("path") or "?")
    return {"entries": entries, "counts": concept.counts, "accepted": concept.counts["accepted"],
            "resolution": concept.resolution,
            "contact_sheet": f"/jobs/{job.id}/files/concept/contact_sheet.png?v={int(concept.manifest_path.stat().st_mtime_ns)}"}


def _prepare(store: JobStore, job: Job, source: str, resolution: int, *, hub_only: bool) -> None:
    from hubtools.concepts import ConceptNotUsableError, prepare_concept

    try:
        prepare_concept(source, store.folder(job.id) / "concept", resolution=resolution, hub_only=hub_only,
                        progress=False)
    except ConceptNotUsableError:
        pass  # the report below says why each file was left out


def _config_from(payload: dict[str, Any], source: str | None):
    """The run's ``RunConfig`` from the form: named settings by their config key, then ``--set`` lines."""
    from hubtools.cli.run_options import build_config

    settings = dict(payload.get("settings") or {})
    for key in SERVER_SETTINGS:
        settings.pop(key, None)
    settings = {key: (None if value == "" else value) for key, value in settings.items()}
    lines = [line.strip() for line in str(payload.get("set") or "").splitlines() if line.strip()]
    if any(line.split("=", 1)[0].strip() in SERVER_SETTINGS for line in lines):
        raise ApiError("the studio sets concept.source (your photos) and publish.repo_id (on the publish page)")
    settings["concept.source"] = source
    return build_config(None, lines, settings)


def _plan_text(checked, data_dir: Path) -> str:
    """The plan exactly as ``--dry-run`` prints it (the same rich table, as text), with the job's folders named
    from the data folder on (``studio-data/jobs/ID/run``): the page shows them whole, and no more of the disk."""
    from dataclasses import replace

    from rich.console import Console

    from hubtools.cli.tables import plan_table

    def shown(path: Any) -> Any:
        if path is None or not Path(str(path)).is_absolute():
            return path
        try:
            return str(Path(data_dir.name) / Path(str(path)).relative_to(data_dir))
        except ValueError:
            return path

    config = checked.config.model_copy(deep=True)
    config.concept.source = shown(config.concept.source)
    console = Console(record=True, width=92, markup=False, highlight=False, file=io.StringIO())
    console.print(plan_table(replace(checked, config=config, run_dir=shown(checked.run_dir))))
    return console.export_text()


def _job_images(store: JobStore, job: Job) -> list[str]:
    images = store.folder(job.id) / "run" / "images"
    if not images.is_dir():
        return []
    return sorted(path.name for path in images.glob("*.png"))


def _push_targets() -> list[dict[str, str]]:
    """Where a push may go: the endpoint of this studio's environment (a local hub) and the Hub."""
    from hubtools.hubenv import current_endpoint

    endpoint = current_endpoint().rstrip("/")
    targets = [{"url": endpoint, "label": "Hugging Face Hub" if endpoint == HF_HUB else f"local hub ({endpoint})"}]
    if endpoint != HF_HUB:
        targets.append({"url": HF_HUB, "label": "Hugging Face Hub"})
    return targets


def _eval_rows(store: JobStore, job: Job) -> list[dict[str, Any]]:
    from hubtools.runfolder import RunFolder, read_eval_result

    result = read_eval_result(RunFolder(store.folder(job.id) / "run"))
    if result is None:
        return []
    rows = [("this model", result.ours), ("base model", result.baseline), ("real photos", result.real)]
    return [{"name": name, **{key: getattr(scores, key) for key in ("dino", "clip_i", "clip_t", "pres", "div")}}
            for name, scores in rows if scores is not None]


# -- the API ----------------------------------------------------------------------------------------------


def _add_api(app: FastAPI, store: JobStore, worker: Worker) -> None:
    @app.post("/api/jobs")
    def new_job() -> dict[str, Any]:
        return store.create().to_dict()

    @app.get("/api/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return [job.to_dict() for job in store.list()]

    @app.get("/api/jobs/{job_id}")
    def job_info(job_id: str) -> dict[str, Any]:
        job = _job(store, job_id)
        return job.to_dict() | {"images": _job_images(store, job), "eval": _eval_rows(store, job)}

    @app.post("/api/jobs/{job_id}/photos")
    async def upload(job_id: str, request: Request, resolution: int = 512) -> dict[str, Any]:
        from hubtools.studio.uploads import receive_photos

        job = _draft(store, job_id)
        photos = store.folder(job.id) / "photos"
        outcome = await receive_photos(request.headers.get("content-type", ""), request.stream(), photos,
                                       limit_bytes=request.app.state.upload_limit)
        if any(photos.iterdir()):
            await run_in_threadpool(_prepare, store, job, str(photos), resolution, hub_only=False)
        store.update(job.id, source="upload")
        return _concept_report(store, job, outcome.refused)

    @app.post("/api/jobs/{job_id}/dataset")
    async def from_dataset(job_id: str, request: Request) -> dict[str, Any]:
        job = _draft(store, job_id)
        payload = await _json(request)
        name = str(payload.get("name") or "").strip()
        await run_in_threadpool(_prepare, store, job, name, int(payload.get("resolution") or 512), hub_only=True)
        store.update(job.id, source=name)
        return _concept_report(store, job)

    @app.get("/api/jobs/{job_id}/concept")
    def concept(job_id: str) -> dict[str, Any]:
        return _concept_report(store, _job(store, job_id))

    @app.get("/api/identifier")
    def identifier(text: str, base_model: str | None = None, class_noun: str | None = None) -> dict[str, Any]:
        from hubtools.config import RunConfig
        from hubtools.runner import check_identifier_for

        config = RunConfig()
        config.concept.identifier, config.concept.class_noun = text, class_noun or None
        if base_model:
            config.model.base_model = base_model
        report = check_identifier_for(config)
        assert report is not None
        return {"text": report.text, "num_tokens": report.num_tokens, "tokens": report.tokens,
                "warnings": report.warnings, "other_tokenizers": report.other_tokenizers or [],
                "ok": not report.warnings}

    @app.get("/api/identifier/suggest")
    def suggest(n: int = 6) -> list[dict[str, Any]]:
        from hubtools.identifier import suggest_identifiers

        return [suggestion.to_dict() for suggestion in suggest_identifiers(min(max(n, 1), 20))]

    @app.get("/api/defaults")
    def defaults(base_model: str | None = None) -> dict[str, Any]:
        """The settings of a new run on ``base_model``, with its family's defaults filled in."""
        from hubtools.config import RunConfig
        from hubtools.pipelines import with_family_defaults

        config = RunConfig()
        if base_model:
            config.model.base_model = base_model
        family_name, note = None, None
        try:
            family, config = with_family_defaults(config)
            family_name = getattr(family, "title", None) or getattr(family, "name", None)
        except HubtoolsError as error:
            note = str(error)
        except OSError as error:
            note = f"could not read {config.model.base_model} now ({type(error).__name__}): its family's defaults are not filled in"
        resolved = config.resolve()
        return {"family": family_name, "note": note, "settings": {
            f"{section}.{key}": value
            for section, values in resolved.model_dump(mode="json").items() for key, value in values.items()}}

    @app.post("/api/jobs/{job_id}/plan")
    async def plan(job_id: str, request: Request) -> dict[str, Any]:
        from hubtools import runner

        job = _job(store, job_id)
        config = _config_from(await _json(request), _source_of(store, job))
        checked = await run_in_threadpool(runner.plan, config, store.folder(job.id) / "run", push=False)
        return {"plan": _plan_text(checked, store.data_dir), "notes": checked.notes}

    @app.post("/api/jobs/{job_id}/start")
    async def start(job_id: str, request: Request) -> dict[str, Any]:
        from hubtools import runner
        from hubtools.config import save_config

        job = _draft(store, job_id)
        config = _config_from(await _json(request), _source_of(store, job))
        checked = await run_in_threadpool(runner.plan, config, store.folder(job.id) / "run", push=False)
        save_config(checked.config, store.folder(job.id) / CONFIG_FILE)
        title = f"{checked.config.concept.identifier} {checked.config.concept.class_noun}"
        store.update(job.id, title=title)
        store.queue(job.id)
        worker.wake()
        return _job(store, job.id).to_dict() | {"url": f"/jobs/{job.id}"}

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        job = _job(store, job_id)
        if job.state not in ("queued", "running"):
            raise ApiError(f"job {job.id} is {job.state}: only a queued or running job can be cancelled", 409)
        worker.cancel(job.id)
        return _job(store, job.id).to_dict()

    @app.post("/api/jobs/{job_id}/resume")
    def resume(job_id: str) -> dict[str, Any]:
        job = _job(store, job_id)
        if job.state not in ("cancelled", "failed"):
            raise ApiError(f"job {job.id} is {job.state}: only a cancelled or failed job can be resumed", 409)
        append_event(store.folder(job.id), "note", message="resumed: training continues from its last checkpoint")
        store.queue(job.id)
        worker.wake()
        return _job(store, job.id).to_dict()

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: each ``--json`` event of the job's commands, then its state when it changes."""
        job = _job(store, job_id)
        folder = store.folder(job.id)
        start_at = request.headers.get("last-event-id", "0")
        offset = int(start_at) if start_at.isdigit() else 0

        async def stream():
            position, last_state = offset, None
            while not await request.is_disconnected():
                lines, position = await run_in_threadpool(read_events, folder, position)
                for after, event in lines:
                    yield f"id: {after}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                current = store.get(job.id)
                state = (current.state, current.push_state, current.push_url) if current else None
                if state != last_state and current is not None:
                    last_state = state
                    yield f"event: job\ndata: {json.dumps(current.to_dict())}\n\n"
                await asyncio.sleep(0.4)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post("/api/jobs/{job_id}/card")
    async def card(job_id: str, request: Request) -> dict[str, Any]:
        from hubtools import runner
        from hubtools.config import check_repo_id, load_run_config
        from hubtools.localhub.pages.markdown import render_card

        job = _finished(store, job_id)
        payload = await _json(request)
        repo_id = check_repo_id(str(payload.get("repo_id") or ""))
        run = store.folder(job.id) / "run"
        path = await run_in_threadpool(runner.card, run, repo_id=repo_id)
        html = render_card(path.read_text(encoding="utf-8"), repo_path=f"/jobs/{job.id}/run", revision="main")
        check = None
        if load_run_config(run).publish.hackathon_theme:
            check = await run_in_threadpool(_hackathon_precheck, run, repo_id, bool(payload.get("private")))
        return {"html": html, "hackathon": check}

    @app.post("/api/jobs/{job_id}/push")
    async def push(job_id: str, request: Request) -> dict[str, Any]:
        from hubtools.config import check_repo_id

        job = _finished(store, job_id)
        if job.push_state == "pushing":
            raise ApiError("a push of this job is under way", 409)
        payload = await _json(request)
        repo_id = check_repo_id(str(payload.get("repo_id") or ""))
        target = str(payload.get("endpoint") or _push_targets()[0]["url"]).rstrip("/")
        if target not in [choice["url"] for choice in _push_targets()]:
            raise ApiError(f"push to one of: {', '.join(choice['url'] for choice in _push_targets())}")
        store.update(job.id, push_state="pushing", repo_id=repo_id, push_url=None)
        import threading

        threading.Thread(target=_push_job, args=(store, job.id, repo_id, target, bool(payload.get("private"))),
                         name=f"hubtools-studio-push-{job.id}", daemon=True).start()
        return _job(store, job.id).to_dict()

    @app.get("/api/push-targets")
    def push_targets() -> list[dict[str, str]]:
        return _push_targets()

    @app.get("/api/whoami")
    def whoami(endpoint: str) -> dict[str, Any]:
        """Who this studio's token is on a push target (to fill in the namespace); never the token."""
        from huggingface_hub import HfApi

        from hubtools.hub_errors import hub_errors

        if endpoint.rstrip("/") not in [choice["url"] for choice in _push_targets()]:
            raise ApiError("not one of the push targets", 404)
        with hub_errors("the token", action="check", missing=None):
            user = HfApi(endpoint=endpoint.rstrip("/")).whoami()
        return {"name": user.get("name"), "orgs": [org.get("name") for org in user.get("orgs", []) or []]}


def _hackathon_precheck(run: Path, repo_id: str, private: bool) -> dict[str, Any]:
    """The hackathon's rules (``hackathon.check_rules``, as ``hackathon check`` applies them on the Hub) over
    what a push of the run would publish: its files and the card just rendered for ``repo_id``."""
    from hubtools.hackathon import check_rules, submission_from_readme
    from hubtools.runfolder import RunFolder, published_files

    folder = RunFolder(run)
    files = published_files(folder)
    readme = folder.card.read_text(encoding="utf-8") if folder.card.is_file() else None
    submission = submission_from_readme(repo_id, private, sorted(files), readme, lambda name: files[name])
    rules = check_rules(submission)
    return {"repo_id": repo_id, "passed": all(rule.passed for rule in rules), "rules": [rule.to_dict() for rule in rules]}


def _push_job(store: JobStore, job_id: str, repo_id: str, endpoint: str, private: bool) -> None:
    """``hubtools push RUN REPO`` (then ``hackathon check REPO`` for a hackathon entry) against ``endpoint``."""
    from hubtools.config import load_run_config
    from hubtools.studio.jobs import run_command

    folder = store.folder(job_id)
    run = folder / "run"
    env = {"HF_ENDPOINT": endpoint}
    code = run_command(folder, ["push", str(run), repo_id, *(["--private"] if private else [])], env=env)
    events, _ = read_events(folder)
    urls = [event.get("data", {}).get("url") for _, event in events
            if event.get("event") == "result" and isinstance(event.get("data"), dict) and event["data"].get("url")]
    if code != 0 or not urls:
        from hubtools.studio.jobs import last_error

        store.update(job_id, push_state="failed", error=last_error(folder))
        return
    if load_run_config(run).publish.hackathon_theme:
        run_command(folder, ["hackathon", "check", repo_id, "--json"], env=env)  # its rules, as a result event
    store.update(job_id, push_state="pushed", push_url=urls[-1])


def _draft(store: JobStore, job_id: str) -> Job:
    job = _job(store, job_id)
    if job.state != "draft":
        raise ApiError(f"job {job.id} has started: its photos and settings are fixed (start a new run)", 409)
    return job


def _finished(store: JobStore, job_id: str) -> Job:
    job = _job(store, job_id)
    if job.state != "done":
        raise ApiError(f"job {job.id} is {job.state}: publish it once it is done", 409)
    return job


def _source_of(store: JobStore, job: Job) -> str:
    if job.source == "upload":
        return str(store.folder(job.id) / "photos")
    if job.source:
        return job.source
    raise ApiError("add photos first: upload them or name a Hub dataset")


async def _json(request: Request) -> dict[str, Any]:
    try:
        payload = await request.json()
    except ValueError:
        raise ApiError("send a JSON object") from None
    if not isinstance(payload, dict):
        raise ApiError("send a JSON object")
    return payload


# -- the pages ---------------------------------------------------------------------------------------------


def _add_pages(app: FastAPI, store: JobStore, headers: dict[str, str]) -> None:
    from hubtools.hackathon import theme_names

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return _page("jobs.html.j2", headers, jobs=store.list(), final_states=FINAL_STATES)

    @app.get("/new", response_class=HTMLResponse)
    def new_run() -> HTMLResponse:
        return _page("new.html.j2", headers, themes=theme_names())

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(job_id: str) -> Response:
        try:
            job = _job(store, job_id)
        except ApiError as error:
            return _page("studio_error.html.j2", headers, status=404, message=error.message)
        return _page("job.html.j2", headers, job=job, images=_job_images(store, job))

    @app.get("/jobs/{job_id}/publish", response_class=HTMLResponse)
    def publish_page(job_id: str) -> Response:
        from hubtools.config import load_run_config

        try:
            job = _job(store, job_id)
        except ApiError as error:
            return _page("studio_error.html.j2", headers, status=404, message=error.message)
        run = store.folder(job.id) / "run"
        config = load_run_config(run) if (run / CONFIG_FILE).is_file() else None
        name = f"{config.concept.identifier}-{config.concept.class_noun}" if config else "my-model"
        return _page("publish.html.j2", headers, job=job, images=_job_images(store, job),
                     eval_rows=_eval_rows(store, job), targets=_push_targets(), default_name=name,
                     theme=config.publish.hackathon_theme if config else None)

    @app.get("/jobs/{job_id}/files/{path:path}")
    def job_file(job_id: str, path: str) -> Response:
        job = _job(store, job_id)
        return _file_response(_inside(store.folder(job.id), path))

    @app.get("/jobs/{job_id}/run/resolve/{revision}/{path:path}")
    def card_file(job_id: str, revision: str, path: str) -> Response:
        """A file of the run as the card links it (``images/...``), as the hub's ``resolve/`` would serve it."""
        job = _job(store, job_id)
        return _file_response(_inside(store.folder(job.id) / "run", path))
