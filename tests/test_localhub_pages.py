"""The local hub's HTML pages, driven in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver`` through selenium) against the session's local hub, with content pushed by the real
clients: a run pushed by ``hubtools push``, a concept set by ``hubtools concept push``, cards uploaded
with ``HfApi``.

Without chromium the browser tests skip locally with the reason, and fail on CI (``CI`` set), where
``.ci/run`` installs it. ``HUBTOOLS_SCREENSHOTS=DIR`` saves the model page and the leaderboard there
(how ``docs/images/`` was made).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi
from PIL import Image
from run_builders import build_run

from hubtools.card import render_model_card
from hubtools.publish import push_run
from hubtools.resources import DEMO_CONCEPT_DIR
from hubtools.sample import render_samples

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PAGE_TIMEOUT_S = 20
PHOTO_PX = 192

XSS_CARD = """---
license: mit
tags: [xss-test]
---
# A card that tries everything

<script>window.pwned = "script"; document.title = "pwned";</script>
<img src="nope.png" onerror="window.pwned = 'onerror'; document.title = 'pwned'">
<a id="js-html-link" href="javascript:window.pwned='html-link';document.title='pwned'">an html link</a>
[a markdown link](javascript:window.pwned='md-link')
<a id="js-entity-link" href="jav&#x09;ascript:window.pwned='entity-link'">an obfuscated link</a>
<svg onload="window.pwned='svg-onload'"><script>window.pwned = "svg-script"</script><circle r="5"/></svg>
<iframe srcdoc="<script>parent.pwned = 'iframe'</script>"></iframe>
<details open ontoggle="window.pwned = 'ontoggle'"><summary>details</summary>inside</details>
<object data="javascript:window.pwned='object'"></object>
<form action="javascript:window.pwned='form'"><button id="xss-button">go</button></form>
<div style="background:url(javascript:window.pwned='style')">styled</div>
<a id="data-link" href="data:text/html,<script>alert(1)</script>">a data link</a>

Plain text survives: **bold** and `code`.
"""


def _photo(path: Path) -> bytes:
    """One of the shipped dog photos as a small square PNG (what a widget image of an entry looks like)."""
    with Image.open(path) as image:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.convert("RGB").crop((left, top, left + side, top + side)).resize((PHOTO_PX, PHOTO_PX))
    out = io.BytesIO()
    square.save(out, format="PNG")
    return out.getvalue()


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    reason = None
    if not (CHROMIUM and CHROMEDRIVER):
        reason = "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            reason = "selenium is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run on CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--hide-scrollbars", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo_model(local_hub, tiny_model_repo, tmp_path_factory) -> tuple[str, Path]:
    """A model pushed the way ``hubtools demo`` pushes it: grids, card, pipeline, config."""
    repo_id = f"{local_hub.user}/pages-demo-dog"
    run = build_run(tmp_path_factory.mktemp("pages-run"), base_model=tiny_model_repo)
    render_samples(run, progress=False)
    render_model_card(run, repo_id=repo_id)
    push_run(run, repo_id, token=local_hub.token)
    return repo_id, run


@pytest.fixture(scope="module")
def concept_dataset(local_hub, tmp_path_factory) -> tuple[str, str]:
    """The demo's dog photos as ``hubtools concept push`` publishes them (parquet), and the prepared
    folder uploaded as it is (an imagefolder with metadata.jsonl)."""
    from hubtools.concepts import prepare_concept, push_concept
    prepared = tmp_path_factory.mktemp("pages-concept") / "prepared"
    prepare_concept(DEMO_CONCEPT_DIR, prepared, resolution=64, caption="a photo of pkblz dog", progress=False)
    parquet_repo = f"{local_hub.user}/pages-dog-photos"
    push_concept(prepared, parquet_repo, token=local_hub.token, identifier="pkblz", class_noun="dog")
    folder_repo = f"{local_hub.user}/pages-dog-folder"
    api = HfApi(endpoint=local_hub.url, token=local_hub.token)
    api.create_repo(folder_repo, repo_type="dataset")
    api.upload_folder(repo_id=folder_repo, repo_type="dataset", folder_path=prepared)
    return parquet_repo, folder_repo


@contextmanager
def _signed_in_client(local_hub, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_hub.url, follow_redirects=False) as client:
        response = client.post("/login", data={"token": token, "next": "/"})
        assert response.status_code == 303
        yield client


def _wait_for_images(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll(arguments[0])].every(i => i.complete)", selector))
    return driver.find_elements(By.CSS_SELECTOR, selector)


def _natural_widths(driver, selector: str) -> list[int]:
    _wait_for_images(driver, selector)
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(i => i.naturalWidth)", selector)


def _click_and_wait_for_reload(driver, element) -> None:
    """Click what submits a form, then wait for the next page (the old one's elements go stale)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import WebDriverException

    def old_page_gone(_driver) -> bool:
        try:
            return expected_conditions.staleness_of(element)(_driver)
        except WebDriverException:  # Chromium mid-navigation: "Node with given id does not belong to the document"
            return True

    element.click()
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(old_page_gone)
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _screenshot(driver, name: str) -> None:
    folder = os.environ.get("HUBTOOLS_SCREENSHOTS")
    if not folder:
        return
    height = driver.execute_script("window.scrollTo(0, 0); return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 700), 1400))
    Path(folder).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(Path(folder) / f"{name}.png"))
    driver.set_window_size(1280, 1000)


# ---- the model page --------------------------------------------------------------------------


def test_model_page_shows_the_rendered_card_with_its_grid_the_files_and_the_commits(browser, local_hub, demo_model, api):
    from selenium.webdriver.common.by import By

    repo_id, run = demo_model
    browser.get(f"{local_hub.url}/{repo_id}")
    assert browser.title.startswith(repo_id)
    card = browser.find_element(By.ID, "model-card")
    assert card.find_element(By.TAG_NAME, "h1").text == repo_id.split("/")[1]
    assert card.find_elements(By.CSS_SELECTOR, "pre.highlight span.kn"), "the card's Python code is highlighted"
    grid_selector = "#model-card img[src*='/resolve/main/images/']"
    widths = _natural_widths(browser, grid_selector)
    assert widths and all(width > 0 for width in widths), widths
    grid = Image.open(run / "images" / "samples_grid.png")
    assert grid.width in widths, "the sample grid itself is drawn"
    assert _natural_widths(browser, "#widget-image") [0] > 0
    tags = [tag.text for tag in browser.find_elements(By.CSS_SELECTOR, ".repo-header .tags .tag")]
    assert "diffusers" in tags and "text-to-image" in tags
    snippet = browser.find_element(By.ID, "snippet-code").text
    assert "DiffusionPipeline.from_pretrained(" in snippet and f'"{repo_id}"' in snippet
    _screenshot(browser, "localhub_model_page")

    _click_and_wait_for_reload(browser, browser.find_element(By.LINK_TEXT, "Files and versions"))
    names = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#file-tree td:first-child a")]
    for expected in ("unet/", "images/", "model_index.json", "README.md", "hubtools.toml"):
        assert any(name.endswith(expected) for name in names), (expected, names)
    _click_and_wait_for_reload(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "unet/"))
    row = browser.find_element(By.XPATH, "//tr[.//a[contains(., 'diffusion_pytorch_model.safetensors')]]")
    weights = run / "unet" / "diffusion_pytorch_model.safetensors"
    assert row.find_element(By.CSS_SELECTOR, ".badge.lfs").text == "LFS"
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert row.find_element(By.CSS_SELECTOR, "code.sha").get_attribute("title") == sha256

    _click_and_wait_for_reload(browser, browser.find_element(By.LINK_TEXT, "Commits"))
    commits = api.list_repo_commits(repo_id)
    shown = browser.find_elements(By.CSS_SELECTOR, "#commit-list .commit-title")
    assert [item.text for item in shown] == [commit.title for commit in commits]
    assert browser.find_element(By.CSS_SELECTOR, "#commit-list .author").text == local_hub.user


def test_blob_pages_preview_text_and_images_and_link_the_download(browser, local_hub, demo_model):
    from selenium.webdriver.common.by import By

    repo_id, run = demo_model
    browser.get(f"{local_hub.url}/{repo_id}/blob/main/hubtools.toml")
    assert "[concept]" in browser.find_element(By.CSS_SELECTOR, ".code-view").text
    download = browser.find_element(By.LINK_TEXT, "Download").get_attribute("href")
    assert httpx.get(download).content == (run / "hubtools.toml").read_bytes()
    browser.get(f"{local_hub.url}/{repo_id}/blob/main/images/samples_grid.png")
    assert _natural_widths(browser, "#blob-image")[0] == Image.open(run / "images" / "samples_grid.png").width


def test_branches_and_tags_are_listed_and_browse_their_own_files(browser, local_hub, demo_model, api):
    from selenium.webdriver.common.by import By

    repo_id, _ = demo_model
    api.create_tag(repo_id, tag="v1.0")
    api.create_branch(repo_id, branch="experiment")
    api.upload_file(path_or_fileobj=b"only here", path_in_repo="EXPERIMENT.txt", repo_id=repo_id,
                    revision="experiment", commit_message="Try something")
    browser.get(f"{local_hub.url}/{repo_id}/tree/main")
    browser.find_element(By.CSS_SELECTOR, "#ref-selector summary").click()
    refs = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#ref-selector .refs-menu a")]
    assert {"main", "experiment", "v1.0"} <= set(refs)
    _click_and_wait_for_reload(browser, browser.find_element(By.LINK_TEXT, "experiment"))
    assert "/tree/experiment" in browser.current_url
    assert browser.find_elements(By.PARTIAL_LINK_TEXT, "EXPERIMENT.txt")
    browser.get(f"{local_hub.url}/{repo_id}/commits/experiment")
    assert browser.find_element(By.CSS_SELECTOR, "#commit-list .commit-title").text == "Try something"


# ---- datasets ----------------------------------------------------------------------------------


def test_dataset_pages_show_the_first_rows_with_thumbnails(browser, local_hub, concept_dataset):
    from selenium.webdriver.common.by import By

    for repo_id in concept_dataset:  # parquet from concept push, then the imagefolder as uploaded
        browser.get(f"{local_hub.url}/datasets/{repo_id}")
        viewer = browser.find_element(By.ID, "dataset-viewer")
        widths = _natural_widths(browser, "#dataset-viewer img.thumb")
        assert len(widths) == 5 and all(width > 0 for width in widths), (repo_id, widths)
        assert "a photo of pkblz dog" in viewer.text
        assert f'load_dataset("{repo_id}")' in browser.find_element(By.ID, "snippet-code").text


# ---- the hackathon leaderboard -----------------------------------------------------------------


def _hackathon_card(theme: str, *, licence: bool = True) -> str:
    lines = ["---", "tags: [dreambooth-hackathon, " + theme + "]"]
    if licence:
        lines.append("license: creativeml-openrail-m")
    lines += [
        "widget:", "- text: a photo of pkblz dog", "  output:", "    url: images/widget.png",
        "model-index:", "- name: entry", "  results:", "  - task: {type: text-to-image}",
        "    dataset: {name: DreamBench dog, type: dreambench}",
        "    metrics:", "    - {type: dino, name: DINO, value: 0.6123}",
        "---", "", "# An entry", "", "![samples](images/widget.png)", "",
    ]
    return "\n".join(lines)


def test_leaderboard_orders_entries_by_likes_within_each_theme_with_the_rule_badge(browser, local_hub, api):
    from safetensors.torch import save as save_safetensors
    import torch
    from selenium.webdriver.common.by import By

    seeded = {"animal": {"pages-corgi": 3, "pages-good-boy": 11, "pages-sks-pup": 7},
              "food": {"pages-dog-cake": 2, "pages-hot-dog": 5}}
    lora = save_safetensors({"unet.down.lora_A.weight": torch.zeros(2, 2)})
    photos = iter(sorted(DEMO_CONCEPT_DIR.glob("*.jpg")))
    for theme, entries in seeded.items():
        for name, likes in entries.items():
            repo_id = f"{local_hub.user}/{name}"
            api.create_repo(repo_id, exist_ok=True)
            from huggingface_hub import CommitOperationAdd

            api.create_commit(repo_id, [
                CommitOperationAdd("README.md", _hackathon_card(theme, licence=name != "pages-hot-dog").encode()),
                CommitOperationAdd("images/widget.png", _photo(next(photos))),
                CommitOperationAdd("pytorch_lora_weights.safetensors", lora),
            ], commit_message="Hackathon entry")
            local_hub.set_likes(repo_id, likes)

    browser.get(f"{local_hub.url}/hackathon")
    for theme, entries in seeded.items():
        shown = [item.get_attribute("data-repo") for item in
                 browser.find_elements(By.CSS_SELECTOR, f"#theme-{theme} li.entry")]
        ours = [repo.split("/")[1] for repo in shown if repo.split("/")[1] in entries]
        assert ours == sorted(entries, key=lambda name: -entries[name]), (theme, shown)
        likes = [int(item.get_attribute("data-likes")) for item in
                 browser.find_elements(By.CSS_SELECTOR, f"#theme-{theme} li.entry")]
        assert likes == sorted(likes, reverse=True)
    best = browser.find_element(By.CSS_SELECTOR, f"li.entry[data-repo='{local_hub.user}/pages-good-boy']")
    assert best.find_element(By.CSS_SELECTOR, ".rule-badge").text == "✓ valid entry"
    unlicensed = browser.find_element(By.CSS_SELECTOR, f"li.entry[data-repo='{local_hub.user}/pages-hot-dog']")
    badge = unlicensed.find_element(By.CSS_SELECTOR, ".rule-badge.fail")
    assert badge.text.startswith("1 rule failing")
    badge.find_element(By.TAG_NAME, "summary").click()
    assert "license" in badge.text and "creativeml-openrail-m" in badge.text
    widths = _natural_widths(browser, f"li.entry[data-repo^='{local_hub.user}/pages-'] img")
    assert len(widths) == 5 and all(width == PHOTO_PX for width in widths)
    _screenshot(browser, "localhub_leaderboard")

    browser.get(f"{local_hub.url}/{local_hub.user}/pages-good-boy")
    evals = browser.find_element(By.ID, "eval-results").text
    assert "DINO" in evals and "0.6123" in evals and "DreamBench dog" in evals


# ---- security ----------------------------------------------------------------------------------


def test_a_hostile_card_runs_nothing_in_the_browser(browser, local_hub, api):
    from selenium.webdriver.common.by import By

    repo_id = f"{local_hub.user}/pages-xss"
    api.create_repo(repo_id, exist_ok=True)
    api.upload_file(path_or_fileobj=XSS_CARD.encode(), path_in_repo="README.md", repo_id=repo_id)
    browser.get(f"{local_hub.url}/{repo_id}")
    card = browser.find_element(By.ID, "model-card")
    assert "Plain text survives" in card.text
    for link in card.find_elements(By.TAG_NAME, "a"):
        href = link.get_attribute("href") or ""
        assert not href.lower().startswith(("javascript:", "data:")), href
        if not href:
            link.click()  # a link stripped of its target does nothing when clicked
    buttons = card.find_elements(By.TAG_NAME, "button")
    assert not buttons, "forms and buttons are not part of a card"
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert browser.title.startswith(repo_id) and "pwned" not in browser.title
    html = card.get_attribute("innerHTML").lower()
    for forbidden in ("<script", "<svg", "<iframe", "<object", "<form", "onerror", "onload", "ontoggle", "style="):
        assert forbidden not in html, forbidden
    assert not re.search(r"""(href|src|action|data)\s*=\s*["']?\s*(javascript|data):""", html)


def test_every_page_sends_a_content_security_policy(local_hub, demo_model):
    repo_id, _ = demo_model
    paths = ["/", f"/{repo_id}", f"/{repo_id}/tree/main", f"/{repo_id}/blob/main/hubtools.toml",
             f"/{repo_id}/commits/main", "/hackathon", "/login", "/nobody/nothing-here"]
    for path in paths:
        response = httpx.get(local_hub.url + path)
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "default-src 'none'" in policy, path
        assert "unsafe-inline" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-type"].startswith("text/html")


def test_private_repos_are_404_to_anonymous_visitors_and_other_users(local_hub, browser):
    from selenium.webdriver.common.by import By

    owner = HfApi(endpoint=local_hub.url, token=local_hub.token)
    repo_id = f"{local_hub.user}/pages-secret"
    owner.create_repo(repo_id, private=True, exist_ok=True)
    owner.upload_file(path_or_fileobj=b"# Secret model\n\nnothing to see", path_in_repo="README.md", repo_id=repo_id)
    missing = f"{local_hub.user}/pages-never-created"
    paths = ["", "/tree/main", "/blob/main/README.md", "/commits/main", "/resolve/main/README.md", "/tree/main/x"]

    def bodies(client: httpx.Client) -> None:
        for suffix in paths:
            secret = client.get(f"/{repo_id}{suffix}")
            absent = client.get(f"/{missing}{suffix}")
            assert secret.status_code == absent.status_code == 404, suffix
            assert secret.text.replace(repo_id, "X") == absent.text.replace(missing, "X"), suffix
            assert "Secret model" not in secret.text
        listing = client.get("/", params={"search": "pages-secret"}).text
        assert repo_id not in listing

    with httpx.Client(base_url=local_hub.url) as anonymous:
        bodies(anonymous)
    with _signed_in_client(local_hub, local_hub.other_token) as other:
        bodies(other)
    with _signed_in_client(local_hub, local_hub.token) as signed_in:
        assert signed_in.get(f"/{repo_id}").status_code == 200
        assert repo_id in signed_in.get("/", params={"search": "pages-secret"}).text

    moved = f"{local_hub.user}/pages-secret-moved"
    owner.create_repo(moved, private=True, exist_ok=True)
    owner.move_repo(moved, f"{local_hub.user}/pages-secret-renamed")
    old_page = httpx.get(f"{local_hub.url}/{moved}", follow_redirects=False)
    assert old_page.status_code == 404 and "renamed" not in old_page.text  # a private repo's new name stays hidden

    browser.delete_all_cookies()
    browser.get(f"{local_hub.url}/{repo_id}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    browser.get(f"{local_hub.url}/login?next=/{repo_id}")
    browser.find_element(By.ID, "token").send_keys(local_hub.token)
    _click_and_wait_for_reload(browser, browser.find_element(By.CSS_SELECTOR, ".card-form button"))
    assert browser.find_element(By.CSS_SELECTOR, ".repo-header h1").text == repo_id
    assert "Secret model" in browser.find_element(By.ID, "model-card").text
    browser.delete_all_cookies()


def test_sign_in_sets_an_httponly_samesite_cookie_and_never_shows_the_token(local_hub):
    with httpx.Client(base_url=local_hub.url) as client:
        refused = client.post("/login", data={"token": "not-a-token", "next": "/"})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        response = client.post("/login", data={"token": local_hub.token, "next": "//evil.example/"})
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert local_hub.token not in response.headers["set-cookie"]
        page = client.get("/")
        assert local_hub.user in page.text and local_hub.token not in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
        assert "Sign in" in client.get("/").text


def test_the_api_still_answers_json_beside_the_pages(local_hub, demo_model):
    repo_id, _ = demo_model
    info = httpx.get(f"{local_hub.url}/api/models/{repo_id}").json()
    assert info["id"] == repo_id
    resolved = httpx.get(f"{local_hub.url}/{repo_id}/resolve/main/model_index.json")
    assert resolved.status_code == 200 and resolved.json()["_class_name"]
    assert httpx.get(f"{local_hub.url}/api/models/{local_hub.user}/pages-never-created").headers[
        "content-type"].startswith("application/json")


def test_a_signed_in_visitor_likes_and_unlikes_from_the_page(browser, local_hub, demo_model, api):
    from selenium.webdriver.common.by import By

    repo_id, _ = demo_model
    browser.delete_all_cookies()
    browser.get(f"{local_hub.url}/{repo_id}")
    before = int(browser.find_element(By.ID, "like-count").text)
    _click_and_wait_for_reload(browser, browser.find_element(By.ID, "like-button"))  # anonymous: sign in first
    assert "/login" in browser.current_url
    browser.find_element(By.ID, "token").send_keys(local_hub.other_token)
    _click_and_wait_for_reload(browser, browser.find_element(By.CSS_SELECTOR, ".card-form button"))
    assert browser.current_url.endswith(f"/{repo_id}")
    _click_and_wait_for_reload(browser, browser.find_element(By.ID, "like-button"))
    assert int(browser.find_element(By.ID, "like-count").text) == before + 1
    assert "Liked" in browser.find_element(By.ID, "like-button").text
    assert local_hub.other_user in [user.username for user in api.list_repo_likers(repo_id)]
    _click_and_wait_for_reload(browser, browser.find_element(By.ID, "like-button"))
    assert int(browser.find_element(By.ID, "like-count").text) == before
    assert local_hub.other_user not in [user.username for user in api.list_repo_likers(repo_id)]
    browser.delete_all_cookies()


def test_the_index_searches_filters_by_tag_sorts_and_pages(browser, local_hub, api):
    from huggingface_hub import CommitOperationAdd
    from selenium.webdriver.common.by import By

    names = [f"pages-index-{index:02d}" for index in range(30)]
    for index, name in enumerate(names):
        repo_id = f"{local_hub.user}/{name}"
        api.create_repo(repo_id, exist_ok=True, private=index == 0)
        card = f"---\ntags: [pages-index-tag]\n---\n# {name}\n"
        api.create_commit(repo_id, [CommitOperationAdd("README.md", card.encode())], commit_message="card")
        local_hub.set_likes(repo_id, index)

    browser.delete_all_cookies()
    browser.get(f"{local_hub.url}/?tag=pages-index-tag&sort=likes")
    shown = [item.text.split("\n")[0] for item in browser.find_elements(By.CSS_SELECTOR, "#repo-list .repo-id")]
    assert shown == [f"{local_hub.user}/{name}" for name in reversed(names[1:])][:24]  # the private one is left out
    _click_and_wait_for_reload(browser, browser.find_element(By.CSS_SELECTOR, ".pager a:not(.current)"))
    shown = [item.text.split("\n")[0] for item in browser.find_elements(By.CSS_SELECTOR, "#repo-list .repo-id")]
    assert shown == [f"{local_hub.user}/{name}" for name in reversed(names[1:6])]
    browser.get(f"{local_hub.url}/?search=pages-index-07")
    shown = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#repo-list .repo-id")]
    assert shown == [f"{local_hub.user}/pages-index-07"]
    browser.get(f"{local_hub.url}/?sort=updated&search=pages-index")
    shown = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#repo-list .repo-id")]
    assert shown[0] == f"{local_hub.user}/{names[-1]}"
    browser.get(f"{local_hub.url}/?type=dataset")
    assert browser.find_element(By.CSS_SELECTOR, ".type-tabs a.active").text == "Datasets"


def test_a_read_token_signs_in_to_look_but_cannot_like(tmp_path):
    from fastapi.testclient import TestClient

    from hubtools.localhub.app import create_app
    from hubtools.localhub.auth import TokenBook
    from hubtools.localhub.storage import Storage

    storage = Storage(tmp_path / "hub")
    storage.create_repo("model", "writer/secret", "writer", True)
    tokens = TokenBook({"writer": "writer-write-token"})
    tokens.add("writer", "writer-read-token", role="read")
    with TestClient(create_app(storage, tokens), follow_redirects=False) as client:
        assert client.post("/login", data={"token": "writer-read-token", "next": "/"}).status_code == 303
        page = client.get("/writer/secret")
        assert page.status_code == 200  # a read token reads its user's private repos
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        refused = client.post("/writer/secret/like", data={"csrf": csrf})
        assert refused.status_code == 403 and "read token" in refused.text
        assert storage.get_repo("model", "writer/secret").likes == 0
        assert client.post("/writer/secret/like", data={"csrf": "forged"}).status_code == 403
