"""The local hub's pages a team uses every day, in headless Chromium (one browser for the module, as in
``test_localhub_pages``): a private repo as its signed-in owner sees it, user and organization pages,
discussions and pull requests with their diffs, phones, cards that try to look like the site or link
off the hub, and sign-in from another site. The API side (the pull request's ``diff``, ``raw``, the
download headers, HTML or JSON 404s) is checked with the stock clients.

``HUBTOOLS_SCREENSHOTS=DIR`` saves the user, organization, pull request and phone pages there (how
``docs/images/`` was made).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from run_builders import build_run
from test_localhub_pages import (  # noqa: F401 - the fixture browser (one browser for this module)
    _click_and_wait_for_reload,
    _natural_widths,
    _photo,
    _signed_in_client,
    browser,
)

from hubtools.card import render_model_card
from hubtools.publish import push_run
from hubtools.resources import DEMO_CONCEPT_DIR
from hubtools.sample import render_samples

PHONE = (390, 844)
DESKTOP = (1280, 900)


@pytest.fixture(scope="module")
def team_model(local_hub, tiny_model_repo, tmp_path_factory) -> str:
    """A run pushed as ``hubtools push`` pushes it (grids, card, pipeline)."""
    repo_id = f"{local_hub.user}/team-demo-dog"
    run = build_run(tmp_path_factory.mktemp("team-run"), base_model=tiny_model_repo)
    render_samples(run, progress=False)
    render_model_card(run, repo_id=repo_id)
    push_run(run, repo_id, token=local_hub.token)
    return repo_id


@pytest.fixture(scope="module")
def team_dataset(local_hub, tmp_path_factory) -> str:
    """The demo's dog photos as ``hubtools concept push`` publishes them (parquet, thumbnails in the viewer)."""
    from hubtools.concepts import prepare_concept, push_concept

    prepared = tmp_path_factory.mktemp("team-concept") / "prepared"
    prepare_concept(DEMO_CONCEPT_DIR, prepared, resolution=64, caption="a photo of pkblz dog", progress=False)
    repo_id = f"{local_hub.user}/team-dog-photos"
    push_concept(prepared, repo_id, token=local_hub.token, identifier="pkblz", class_noun="dog")
    return repo_id


def _screenshot(driver, name: str, *, full_height: bool = True) -> None:
    folder = os.environ.get("HUBTOOLS_SCREENSHOTS")
    if not folder:
        return
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if full_height:
        page_height = driver.execute_script("window.scrollTo(0, 0); return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(page_height, 600), 1300))
    Path(folder).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(Path(folder) / f"{name}.png"))
    driver.set_window_size(*DESKTOP)


def _sign_in(driver, local_hub, token: str, next_path: str = "/") -> None:
    driver.delete_all_cookies()
    driver.get(f"{local_hub.url}/login?next={quote(next_path)}")
    driver.find_element("id", "token").send_keys(token)
    _click_and_wait_for_reload(driver, driver.find_element("css selector", ".card-form button"))


# ---- a private repo, as its owner sees it ------------------------------------------------------


def test_the_signed_in_owner_sees_every_image_of_a_private_repo_and_others_get_the_same_404(browser, local_hub, api):
    repo_id = f"{local_hub.user}/team-private-album"
    photos = sorted(DEMO_CONCEPT_DIR.glob("*.jpg"))[:2]
    card = ("---\nwidget:\n- text: a photo of pkblz dog\n  output:\n    url: images/one.png\n---\n"
            "# Private album\n\n![one](images/one.png)\n\n<img src=\"images/two.png\" alt=\"two\">\n")
    api.create_repo(repo_id, private=True, exist_ok=True)
    api.create_commit(repo_id, [CommitOperationAdd("README.md", card.encode()),
                                CommitOperationAdd("images/one.png", _photo(photos[0])),
                                CommitOperationAdd("images/two.png", _photo(photos[1]))], commit_message="album")

    _sign_in(browser, local_hub, local_hub.token, f"/{repo_id}")
    widths = _natural_widths(browser, "#model-card img, #widget-image")
    assert len(widths) == 3 and all(width > 0 for width in widths), widths
    browser.get(f"{local_hub.url}/{repo_id}/blob/main/images/two.png")
    assert _natural_widths(browser, "#blob-image")[0] > 0
    download = browser.find_element("link text", "Download").get_attribute("href")
    browser.get(download)  # the Download link opens the image itself
    assert _natural_widths(browser, "img")[0] > 0

    missing = f"{local_hub.user}/team-never-created"
    browser.delete_all_cookies()
    for client_token in (None, local_hub.other_token):
        with (_signed_in_client(local_hub, client_token) if client_token else httpx.Client(base_url=local_hub.url)) as client:
            for path in ("images/one.png", "README.md"):
                secret = client.get(f"/{repo_id}/resolve/main/{path}")
                absent = client.get(f"/{missing}/resolve/main/{path}")
                assert secret.status_code == absent.status_code == 404
                assert secret.content.replace(repo_id.encode(), b"X") == absent.content.replace(missing.encode(), b"X")
    with _signed_in_client(local_hub, local_hub.token) as owner:
        assert owner.get(f"/{repo_id}/resolve/main/images/one.png").status_code == 200
        refused = owner.get(f"/{repo_id}/resolve/main/images/one.png", headers={"sec-fetch-site": "cross-site"})
        assert refused.status_code == 404  # a page of another site cannot use the session


# ---- people, discussions and pull requests -----------------------------------------------------


def _pull_request(local_hub, api: HfApi, repo_id: str) -> tuple[int, int]:
    """A repo with a card, a script and LFS weights, and a pull request changing all three."""
    api.create_repo(repo_id, exist_ok=True)
    api.create_commit(repo_id, [
        CommitOperationAdd("README.md", b"---\nlicense: mit\n---\n# Team model\n\nFirst words.\n"),
        CommitOperationAdd("train.py", b"import os\n\nSTEPS = 400\nprint(STEPS)\n"),
        CommitOperationAdd("model.safetensors", b"\0weights-v1" * 200),
    ], commit_message="first version")
    other = HfApi(endpoint=local_hub.url, token=local_hub.other_token)
    discussion = other.create_discussion(repo_id, title="Where are the grids?", description="Could you add **grids**?")
    other.comment_discussion(repo_id, discussion.num, "Thanks!")
    pr = other.create_commit(repo_id, [
        CommitOperationAdd("train.py", b"import os\n\nSTEPS = 800\nprint(STEPS)\n"),
        CommitOperationAdd("model.safetensors", b"\0weights-v2" * 300),
        CommitOperationAdd("NOTES.md", b"Longer training.\n"),
    ], commit_message="Train longer", create_pr=True, commit_description="800 steps look better.")
    return discussion.num, int(pr.pr_num)


def test_the_api_returns_a_pull_requests_diff_as_git_prints_it(local_hub, api):
    repo_id = f"{local_hub.user}/team-diff-api"
    _, pr_num = _pull_request(local_hub, api, repo_id)
    details = api.get_discussion_details(repo_id, pr_num)
    diff = details.diff
    assert "diff --git a/train.py b/train.py\n" in diff
    assert "--- a/train.py\n+++ b/train.py\n" in diff and "-STEPS = 400\n+STEPS = 800\n" in diff
    assert "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n" in diff and "+++ b/NOTES.md\n@@ -0,0 +1 @@\n+Longer training.\n" in diff
    new_sha = details.diff.split("diff --git a/model.safetensors")[1]
    assert "-size 2200\n" in new_sha and "+size 3300\n" in new_sha and "+oid sha256:" in new_sha  # LFS: its pointer
    discussion = api.get_discussion_details(repo_id, 1)
    assert discussion.diff is None  # a discussion has no diff, as on the Hub


def test_user_and_organization_pages_list_repos_likes_and_members(browser, local_hub, api):
    from selenium.webdriver.common.by import By

    api.create_repo(f"{local_hub.org}/team-org-model", exist_ok=True)
    api.create_repo(f"{local_hub.org}/team-org-secret", private=True, exist_ok=True)
    api.create_repo(f"{local_hub.user}/team-photos", repo_type="dataset", exist_ok=True)
    liked = f"{local_hub.org}/team-org-model"
    liking = httpx.post(f"{local_hub.url}/api/models/{liked}/like", headers={"authorization": f"Bearer {local_hub.token}"})
    assert liking.status_code == 200  # huggingface_hub has no like(): the Hub's endpoint, as its page calls it
    browser.delete_all_cookies()
    browser.get(f"{local_hub.url}/{local_hub.user}")
    assert browser.find_element(By.CSS_SELECTOR, "#profile h1").text == local_hub.user
    datasets = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#dataset-list .repo-id")]
    assert f"{local_hub.user}/team-photos" in datasets
    assert liked in [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#liked-list .repo-id")]
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#user-orgs .person")] == [local_hub.org]
    _screenshot(browser, "localhub_user_page")

    browser.get(f"{local_hub.url}/{local_hub.org}")
    assert browser.find_element(By.ID, "profile").get_attribute("data-kind") == "org"
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#org-members .person")] == [local_hub.user]
    models = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#model-list .repo-id")]
    assert liked in models and f"{local_hub.org}/team-org-secret" not in models  # anonymous: no private repo
    _sign_in(browser, local_hub, local_hub.token, f"/{local_hub.org}")
    models = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#model-list .repo-id")]
    assert f"{local_hub.org}/team-org-secret" in models  # a member sees it
    _screenshot(browser, "localhub_org_page")
    browser.delete_all_cookies()
    assert httpx.get(f"{local_hub.url}/nobody-at-all").status_code == 404


def test_discussion_and_pull_request_pages_show_the_thread_the_diff_and_merge(browser, local_hub, api):
    from selenium.webdriver.common.by import By

    repo_id = f"{local_hub.user}/team-diff-pages"
    discussion_num, pr_num = _pull_request(local_hub, api, repo_id)
    browser.delete_all_cookies()
    browser.get(f"{local_hub.url}/{repo_id}/discussions")
    titles = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#thread-list .thread-title")]
    assert titles == ["Train longer", "Where are the grids?"]

    browser.get(f"{local_hub.url}/{repo_id}/discussions/{discussion_num}")
    comments = browser.find_elements(By.CSS_SELECTOR, "#thread-events .comment-body")
    assert [c.text for c in comments] == ["Could you add grids?", "Thanks!"]
    assert comments[0].find_element(By.TAG_NAME, "strong").text == "grids"
    assert not browser.find_elements(By.ID, "files-changed")

    _sign_in(browser, local_hub, local_hub.token, f"/{repo_id}/discussions/{pr_num}")
    files = {item.get_attribute("data-path"): item for item in browser.find_elements(By.CSS_SELECTOR, ".file-diff")}
    assert sorted(files) == ["NOTES.md", "model.safetensors", "train.py"]
    script = files["train.py"]
    assert script.find_element(By.CSS_SELECTOR, ".gd").text == "-STEPS = 400"  # Pygments' deleted line
    assert script.find_element(By.CSS_SELECTOR, ".gi").text == "+STEPS = 800"  # and inserted line
    weights = files["model.safetensors"]
    assert weights.find_element(By.CSS_SELECTOR, ".badge.lfs").text == "LFS"
    assert "2.2 kB" in weights.text and "3.3 kB" in weights.text
    assert weights.find_elements(By.CSS_SELECTOR, "code.sha")
    _screenshot(browser, "localhub_pull_request")

    _click_and_wait_for_reload(browser, browser.find_element(By.ID, "merge-button"))
    assert browser.find_element(By.ID, "thread-status").text == "merged"
    assert api.hf_hub_download(repo_id, "NOTES.md") and api.get_discussion_details(repo_id, pr_num).status == "merged"

    _sign_in(browser, local_hub, local_hub.other_token, f"/{repo_id}/discussions/{discussion_num}")
    assert not browser.find_elements(By.ID, "merge-button")
    _click_and_wait_for_reload(browser, browser.find_element(By.ID, "status-button"))  # its author closes it
    assert browser.find_element(By.ID, "thread-status").text == "closed"
    browser.delete_all_cookies()


# ---- phones ------------------------------------------------------------------------------------


def test_pages_fit_a_phone_without_sideways_scrolling_and_the_nav_stays_reachable(
        browser, local_hub, team_model, team_dataset):
    repo_id, dataset_id = team_model, team_dataset
    pages = ["/", f"/{repo_id}", f"/{repo_id}/tree/main", f"/{repo_id}/blob/main/hubtools.toml",
             f"/datasets/{dataset_id}", "/hackathon", f"/{local_hub.user}"]
    browser.delete_all_cookies()
    try:
        for (width, height) in (PHONE, DESKTOP):
            browser.set_window_size(width, height)
            inner = browser.execute_script("return window.innerWidth")
            for path in pages:
                browser.get(local_hub.url + path)
                scroll_width = browser.execute_script("return document.documentElement.scrollWidth")
                assert scroll_width <= inner, (path, width, scroll_width)
                for link in ("Sign in", "Hackathon"):
                    box = browser.execute_script(
                        "const a = [...document.querySelectorAll('header a')].find(a => a.textContent.trim() == arguments[0]);"
                        "const r = a.getBoundingClientRect(); return [r.left, r.right, r.width]", link)
                    assert box[2] > 0 and 0 <= box[0] and box[1] <= inner, (path, link, box)
            if (width, height) == PHONE:
                browser.get(f"{local_hub.url}/{repo_id}")
                _screenshot(browser, "localhub_phone_model_page", full_height=False)
    finally:
        browser.set_window_size(*DESKTOP)


# ---- cards that try to pass for the site or lead off the hub -----------------------------------

HOSTILE_CARD = """---
base_model:
- //evil.example/x
- http://evil.example/y
- /evil.example/z
- tester/real-base
datasets: [https://evil.example/data]
---
<div class="topbar alert" id="fake">Security notice: re-enter your token at evil.example</div>

```python
import os
```
"""


def test_a_card_cannot_use_the_sites_classes_and_its_links_stay_on_the_hub(browser, local_hub, api):
    from selenium.webdriver.common.by import By

    repo_id = f"{local_hub.user}/team-lookalike"
    api.create_repo(repo_id, exist_ok=True)
    api.upload_file(path_or_fileobj=HOSTILE_CARD.encode(), path_in_repo="README.md", repo_id=repo_id)
    browser.get(f"{local_hub.url}/{repo_id}")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".topbar")) == 1  # the site's own header only
    assert not browser.find_elements(By.CSS_SELECTOR, "#model-card .alert, #model-card [id]")
    assert browser.find_elements(By.CSS_SELECTOR, "#model-card pre.highlight span.kn")  # highlighting stays
    about = browser.find_element(By.CSS_SELECTOR, ".facts")
    hrefs = [a.get_attribute("href") for a in about.find_elements(By.TAG_NAME, "a")]
    assert hrefs and all(href.startswith(local_hub.url + "/") for href in hrefs), hrefs
    assert f"{local_hub.url}/tester/real-base" in hrefs
    assert "//evil.example/x" in about.text and "http://evil.example/y" in about.text  # shown, not linked


def test_the_card_links_base_model_and_dataset_on_the_hub_it_is_pushed_to(local_hub, tiny_model_repo, tmp_path):
    run = build_run(tmp_path, base_model=tiny_model_repo, concept_source=f"{local_hub.user}/pkblz-dog")
    render_model_card(run, repo_id=f"{local_hub.user}/team-card")
    card = (run / "README.md").read_text()
    assert f"]({local_hub.url}/{tiny_model_repo})" in card
    assert f"]({local_hub.url}/datasets/{local_hub.user}/pkblz-dog)" in card
    assert "huggingface.co" not in card


# ---- sign-in, downloads, errors ----------------------------------------------------------------


def test_sign_in_from_another_site_is_refused(browser, local_hub):
    from selenium.webdriver.common.by import By

    form = (f'<form method="post" action="{local_hub.url}/login"><input name="token" value="{local_hub.other_token}">'
            '<input name="next" value="/"><button id="go">go</button></form>')
    browser.delete_all_cookies()
    browser.get("data:text/html," + quote(form))
    _click_and_wait_for_reload(browser, browser.find_element(By.ID, "go"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Refused"
    browser.get(local_hub.url + "/")
    assert browser.find_element(By.LINK_TEXT, "Sign in")  # not signed in as the attacker's account
    refused = httpx.post(f"{local_hub.url}/login", data={"token": local_hub.token, "next": "/"},
                         headers={"origin": "http://evil.example"})
    assert refused.status_code == 403 and "set-cookie" not in refused.headers


def test_raw_and_resolve_send_safe_headers_and_unicode_names(local_hub, api):
    repo_id = f"{local_hub.user}/team-raw"
    api.create_repo(repo_id, exist_ok=True)
    api.create_commit(repo_id, [CommitOperationAdd("pages/évaluation ü.html", b"<script>alert(1)</script>"),
                                CommitOperationAdd("big.safetensors", b"\0" * 2048)], commit_message="files")
    for mode in ("resolve", "raw"):
        response = httpx.get(f"{local_hub.url}/{repo_id}/{mode}/main/{quote('pages/évaluation ü.html')}")
        assert response.status_code == 200 and response.content == b"<script>alert(1)</script>"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in response.headers["content-security-policy"]
        assert "filename*=UTF-8''%C3%A9valuation%20%C3%BC.html" in response.headers["content-disposition"]
    pointer = httpx.get(f"{local_hub.url}/{repo_id}/raw/main/big.safetensors")
    assert pointer.text.startswith("version https://git-lfs.github.com/spec/v1\noid sha256:")  # as the Hub's raw
    assert pointer.text.endswith("size 2048\n")
    assert httpx.get(f"{local_hub.url}/{repo_id}/resolve/main/big.safetensors").content == b"\0" * 2048


def test_browsers_get_an_html_404_and_api_clients_keep_the_json_one(local_hub):
    page = httpx.get(f"{local_hub.url}/no/such/page/here", headers={"accept": "text/html,*/*"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    api_answer = httpx.get(f"{local_hub.url}/no/such/page/here")
    assert api_answer.status_code == 404 and api_answer.json() == {"error": "Not found: no such endpoint."}
    icon = httpx.get(f"{local_hub.url}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
