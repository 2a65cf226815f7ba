"""The web console in Chromium against the real gateway: the board, changes with and without a
valid token, the deployment panel, compare, the monitor's charts and drift table, and axe-core on
every view."""

import re
import time

from conftest import TOKEN


def best_validation(model):
    """The version with the highest validation score of the highlight metric, computed here."""
    scored = [
        (v["metrics"]["validation"][v["highlight"]], v["version"])
        for v in model["versions"]
        if v.get("highlight") and v["highlight"] in v.get("metrics", {}).get("validation", {})
    ]
    return max(scored)[1] if scored else None


def board_table(page, model):
    return page.get_by_role("table", name=f"Versions of {model}")


def wait_for_history(gateway, model, points):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, history = gateway.call("GET", f"/admin/models/{model}/monitoring/history")
        assert status == 200, history
        champion = [v for v in history["versions"] if v["role"] == "champion"]
        if champion and len(champion[0]["points"]) >= points:
            return history
        time.sleep(0.1)
    raise AssertionError(f"fewer than {points} history points for {model} after 30 s")


def test_without_a_token_the_console_says_so_and_offers_no_change(console):
    console.open()
    access = console.page.get_by_role("status", name="Access")
    assert "No admin token" in access.inner_text()
    assert console.page.get_by_role("button", name=re.compile("^Promote")).count() == 0
    console.sign_in("not-the-token")
    console.page.wait_for_function(
        "() => document.body.innerText.includes('no valid admin token')"
    )
    assert "401" in access.inner_text()
    assert console.page.get_by_role("button", name=re.compile("^Promote")).count() == 0
    console.shot("refused-token")
    assert console.axe_violations() == []


def test_board_lists_every_version_of_every_model_and_cups_the_best(console, gateway):
    console.open()
    console.sign_in()
    status, board = gateway.call("GET", "/admin/models")
    assert status == 200
    assert len(board["models"]) >= 2
    for model in board["models"]:
        table = board_table(console.page, model["name"])
        table.wait_for()
        rows = table.locator("tbody tr")
        assert rows.count() == len(model["versions"])
        best = best_validation(model)
        assert best == model["best_validation"]
        for i, version in enumerate(model["versions"]):
            row = rows.nth(i)
            assert row.get_by_role("rowheader").inner_text() == version["version"]
            has_cup = row.get_by_role("img", name="cup").count() == 1
            assert has_cup == (version["version"] == best), (model["name"], version["version"])
            assert ("best" in row.inner_text().split()) == (version["version"] == best)
            assert row.get_by_role("button", name=f"Promote {model['name']} version {version['version']}").count() == 1
            assert row.get_by_role("button", name=f"Shadow {model['name']} version {version['version']}").count() == 1
            assert row.get_by_role("link", name=f"Download {model['name']} version {version['version']}").count() == 1
            badge = row.locator(".badge").inner_text()
            assert badge.startswith(version["role"])
    console.shot("board")
    assert console.axe_violations() == []
    assert console.errors == []


def test_promote_without_a_token_fails_visibly_and_changes_nothing(console, gateway):
    console.open()
    console.sign_in()
    before = gateway.model("iris")["champion"]
    target = gateway.not_champion("iris")
    board_table(console.page, "iris").wait_for()
    console.forget_token_behind_its_back()
    console.page.get_by_role("button", name=f"Promote iris version {target}").click()
    dialog = console.page.get_by_role("dialog")
    assert "Promote iris version" in dialog.inner_text()
    dialog.get_by_role("button", name="Promote").click()
    access = console.page.get_by_role("status", name="Access")
    console.page.wait_for_function("() => document.body.innerText.includes('no valid admin token')")
    assert "401" in access.inner_text()
    assert console.page.get_by_role("button", name=re.compile("^Promote")).count() == 0
    assert gateway.model("iris")["champion"] == before
    console.shot("promote-without-token")
    # The only errors are the refused call's own.
    assert all("401" in e for e in console.errors), console.errors


def test_promote_with_the_token_confirms_then_shows_the_new_champion(console, gateway):
    console.open()
    console.sign_in()
    target = gateway.not_champion("iris")
    console.page.get_by_role("button", name=f"Promote iris version {target}").click()
    dialog = console.page.get_by_role("dialog")
    assert f"version {target}" in dialog.inner_text()
    console.shot("promote-confirmation")
    dialog.get_by_role("button", name="Promote").click()
    outcome = console.page.get_by_role("status", name="Result of the last change to iris")
    console.page.wait_for_function("() => document.body.innerText.includes('Done.')")
    assert f"champion version {target}" in outcome.inner_text()
    assert gateway.model("iris")["champion"] == target
    row = board_table(console.page, "iris").locator("tbody tr").filter(
        has=console.page.get_by_role("rowheader", name=target, exact=True)
    )
    row.locator(".badge", has_text="champion").wait_for()
    assert console.page.get_by_role("button", name=f"Promote iris version {target}").is_disabled()
    console.shot("promoted")
    assert console.errors == []


def test_shadow_from_the_board_sets_its_fraction(console, gateway):
    console.open()
    console.sign_in()
    target = gateway.not_champion("iris")
    console.page.get_by_role("button", name=f"Shadow iris version {target}").click()
    dialog = console.page.get_by_role("dialog")
    dialog.get_by_label("Shadow fraction").fill("0.25")
    dialog.get_by_role("button", name="Shadow").click()
    console.page.wait_for_function("() => document.body.innerText.includes('Done.')")
    shadows = gateway.model("iris")["shadows"]
    assert [(s["version"], s["fraction"]) for s in shadows] == [(target, 0.25)]
    assert "shadow 25 %" in board_table(console.page, "iris").inner_text()


def test_threshold_slider_sets_the_threshold_and_rollback_restores(console, gateway):
    first = gateway.model("iris")["champion"]
    other = gateway.not_champion("iris")
    status, _ = gateway.call("PUT", "/admin/models/iris/champion", {"version": other})
    assert status == 200
    console.open("deploy", "iris")
    console.sign_in()
    slider = console.page.get_by_label("Confidence threshold")
    slider.fill("0.73")
    console.page.wait_for_function("() => document.body.innerText.includes('Threshold set')")
    assert gateway.model("iris")["threshold"] == 0.73
    assert console.page.get_by_role("status", name="Threshold value").inner_text() == "0.73"
    console.shot("deployment-threshold")
    assert console.axe_violations() == []
    console.page.get_by_role("button", name="Rollback iris").click()
    dialog = console.page.get_by_role("dialog")
    assert f"version {first}" in dialog.inner_text()
    dialog.get_by_role("button", name="Rollback").click()
    console.page.wait_for_function("() => document.body.innerText.includes('Rolled back')")
    assert gateway.model("iris")["champion"] == first
    audit = console.page.get_by_role("table", name=re.compile("Latest changes to iris"))
    audit.get_by_role("cell", name="rollback", exact=False).first.wait_for()
    assert "threshold" in audit.inner_text()
    console.shot("deployment-rolled-back")
    assert console.errors == []


def test_compare_shows_versions_side_by_side_and_hides_equal_rows(console, gateway):
    console.open("compare", "iris")
    console.sign_in()
    table = console.page.get_by_role("table", name=re.compile("^iris: versions"))
    table.wait_for()
    headers = table.locator("thead th").all_inner_texts()
    assert headers[0] == "Field" and len(headers) == 3
    assert all(h.startswith("Version ") for h in headers[1:])
    rows_before = table.locator("tbody tr").count()
    inputs_row = table.get_by_role("row", name=re.compile("^Inputs"))
    assert inputs_row.count() == 1  # both versions take the same input: an equal row
    run_row = table.get_by_role("row", name=re.compile("^Run"))
    assert run_row.count() == 1
    console.shot("compare")
    assert console.axe_violations() == []
    console.page.get_by_role("switch", name="Show differences only").check()
    assert table.get_by_role("row", name=re.compile("^Inputs")).count() == 0
    assert table.get_by_role("row", name=re.compile("^Run")).count() == 1
    assert table.locator("tbody tr").count() < rows_before
    for row in table.locator("tbody tr:not(.section)").all():
        cells = row.locator("td").all_inner_texts()
        assert len(set(cells)) > 1, cells
    console.shot("compare-differences-only")
    assert console.errors == []


def painted_pixels(page, figure):
    return page.evaluate(
        """(caption) => {
            const figure = [...document.querySelectorAll('figure.chart')]
                .find((f) => f.querySelector('figcaption').innerText.startsWith(caption));
            const canvas = figure && figure.querySelector('canvas');
            if (!canvas) return 0;
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
            return painted;
        }""",
        figure,
    )


def test_monitor_draws_charts_and_a_drift_row_per_feature(console, gateway):
    wait_for_history(gateway, "iris", 1)
    for _ in range(5):
        gateway.infer("iris", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], 40)
        time.sleep(0.25)
    wait_for_history(gateway, "iris", 3)
    status, evaluated = gateway.call("POST", "/admin/models/iris/monitoring/evaluate")
    assert status == 200, evaluated
    drift = evaluated["versions"][0]["drift"]
    assert drift is not None, evaluated
    features = [f["feature"] for f in drift["features"]]
    console.open("monitor", "iris")
    console.sign_in()
    table = console.page.get_by_role("table", name=re.compile("^KS drift of version"))
    table.first.wait_for()
    rows = table.first.locator("tbody tr")
    assert rows.count() == len(features)
    assert [r.get_by_role("rowheader").inner_text() for r in rows.all()] == features
    for row, feature in zip(rows.all(), drift["features"]):
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == f"{feature['statistic']:.4f}"
        assert cells[2] == ("drifted" if feature["drifted"] else "no drift")
    for chart in ["Request rate", "Latency", "Outlier scores", "Prediction distribution"]:
        console.page.wait_for_function(
            """(caption) => [...document.querySelectorAll('figure.chart')]
                .some((f) => f.querySelector('figcaption').innerText.startsWith(caption)
                     && f.querySelector('canvas'))""",
            arg=chart,
        )
        assert painted_pixels(console.page, chart) > 500, chart
    console.shot("monitor")
    assert console.axe_violations() == []
    assert console.errors == []


def test_board_fits_a_narrow_screen(browser, gateway):
    context = browser.new_context(viewport={"width": 390, "height": 844}, timezone_id="UTC", locale="en-US")
    page = context.new_page()
    page.goto(f"{gateway.base}/console/")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("table", name="Versions of iris").wait_for()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px screen"
    page.screenshot(path=str(__import__("conftest").SHOTS / "board-narrow.png"), full_page=True)
    context.close()


def test_live_accuracy_from_feedback_shows_on_the_board_and_in_compare(console, gateway):
    import json
    import urllib.request

    body = json.dumps({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
    for i in range(30):
        request = urllib.request.Request(f"{gateway.base}/v2/models/iris/infer", data=body,
                                         headers={"Content-Type": "application/json",
                                                  "X-Request-Id": f"console-{i}"})
        answer = json.loads(urllib.request.urlopen(request).read())
        assert answer["outputs"][0]["data"] == [0]  # setosa
    champion = gateway.model("iris")["champion"]
    # 20 right, 10 wrong: 66.7 %, whatever the order the labels arrive in.
    items = [{"id": f"console-{i}", "label": "setosa" if i < 20 else "virginica"} for i in range(30)]
    deadline = time.monotonic() + 30
    while True:
        status, result = gateway.call("POST", "/v1/models/iris/feedback", {"items": items})
        assert status == 200, result
        if all(r["status"] in ("accepted", "duplicate") for r in result["results"]):
            break
        assert time.monotonic() < deadline, result
        time.sleep(0.2)
    while True:
        status, quality = gateway.call("GET", "/admin/models/iris/quality")
        version = [v for v in quality["versions"] if v["version"] == champion]
        if version and version[0]["labelled"] == 30:
            break
        assert time.monotonic() < deadline, quality
        time.sleep(0.2)
    expected = f"{100 * version[0]['recent']['accuracy']['value']:.1f} %"
    assert expected == "66.7 %"
    console.open()
    console.sign_in()
    row = board_table(console.page, "iris").locator("tbody tr").filter(
        has=console.page.get_by_role("rowheader", name=champion, exact=True)
    )
    row.get_by_text(expected).wait_for()
    assert "95 % CI" in row.inner_text()
    console.open("compare", "iris")
    table = console.page.get_by_role("table", name=re.compile("^iris: versions"))
    live = table.get_by_role("row", name=re.compile("^Live accuracy"))
    live.get_by_text(expected).wait_for()
    console.shot("board-live-accuracy")


def test_download_fetches_the_version_archive_with_the_token(console, gateway):
    console.open()
    console.sign_in()
    link = console.page.get_by_role("link", name="Download iris version 1")
    with console.page.expect_download() as download:
        link.click()
    path = download.value.path()
    data = open(path, "rb").read()
    assert data[:2] == b"\x1f\x8b", "a gzip archive"
    assert download.value.suggested_filename == "iris-1.tar.gz"
    import gzip
    import io
    import tarfile

    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))).getnames()
    assert any(name.endswith("model.onnx") for name in names), names
