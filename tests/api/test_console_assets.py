"""The console's files: every one the pages name is served from the package; nothing else is."""

import re


def test_every_asset_the_pages_name_is_served(running_api):
    with running_api.client() as http:
        for page in ("/", "/live/cam1"):
            html = http.get(page).text
            assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
            assert assets, page
            for asset in assets:
                r = http.get(asset)
                assert r.status_code == 200 and r.content, asset
            assert not re.search(r'(?:src|href)="(?:https?:)?//', html), "nothing from elsewhere"


def test_only_the_console_files_are_served(running_api):
    with running_api.client() as http:
        for name in ("nope.js", "..%2Fapp.py", "console.py", ".hidden.js", "%2Fetc%2Fpasswd"):
            assert http.get(f"/static/{name}").status_code == 404, name
        assert http.get("/static/console.css").headers["content-type"].startswith("text/css")
