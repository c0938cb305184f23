"""The console and Swagger UI in a real browser: Debian's chromium driven by Playwright.

Run by controller/tests/e2e.rs (the_console_drives_faults_and_traffic_in_a_real_browser)
with a live controller; it talks to the test on stdin/stdout, one line each way, where the
test checks the kernel: "applied ID" -> (the test sees the fault's effect) -> "go", and
"reverted ID" -> (the test sees the kernel clean) -> "go". Every request the page makes
to another origin is refused and reported: nothing may leave the machine.

usage: console.py BASE_URL OPERATOR_TOKEN VIEWER_TOKEN TARGET_URL SPKI_SHA256 OUT_DIR TLS_DIR
"""

import json
import re
import sys
import time
from urllib.parse import urlsplit

from playwright.sync_api import expect, sync_playwright

base, operator, viewer, target, spki, out, tls = sys.argv[1:8]
origin = urlsplit(base).netloc
elsewhere = []


SCENARIO = """name: console run
load:
  target: {target}
  rate: 50
  timeout: 300ms
hypothesis:
  - error_rate < 50%
phases:
  warmup: 1s
  baseline: 3s
  fault: 2s
  recovery: 3s
faults:
  - at: 0s
    for: 1s
    kind: drop
    interface: eth0
    loss: 10%
    select: role=web
"""


def say(line):
    print(line, flush=True)


def wait_go():
    got = sys.stdin.readline().strip()
    if got != "go":
        raise SystemExit(f"the test said {got!r}")


def until(cond, what, seconds=60):
    """Polls from here: the console's CSP (no eval) refuses Playwright's wait_for_function."""
    for _ in range(seconds * 10):
        if cond():
            return
        time.sleep(0.1)
    raise SystemExit(f"never happened: {what}")


def shot(page, name):
    page.screenshot(path=f"{out}/console-{name}.png", full_page=True)


def only_here(route):
    """Requests to any other origin are refused and remembered (a CDN, fonts, telemetry)."""
    url = route.request.url
    if urlsplit(url).netloc != origin and not url.startswith(("data:", "blob:")):
        elsewhere.append(url)
        return route.abort()
    return route.continue_()


with sync_playwright() as pw:
    browser = pw.chromium.launch(
        executable_path="/usr/bin/chromium",
        # The controller's certificate is trusted by its key's hash, and only it.
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", f"--ignore-certificate-errors-spki-list={spki}"],
    )
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", only_here)
    page = context.new_page()
    console_errors = []
    # Script errors; the browser's own "Failed to load resource" lines are the API's
    # expected refusals (401 before signing in, 404 before any traffic, 400, 403).
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))

    # Closed until a token is given.
    page.goto(base + "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "unauthenticated")
    page.fill("#token", operator)
    page.click("#login button[type=submit]")
    expect(page.locator("#agents tbody tr")).to_have_count(2)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    # The form is the CLI's flags: a missing lease is refused naming the field.
    page.select_option("#kind", "drop")
    page.fill("#setting-interface", "eth0")
    page.fill("#setting-loss", "100%")
    page.fill("#setting-on", "h1")
    page.click("#apply button[type=submit]")
    expect(page.locator("#setting-lease")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#apply-result")).to_contain_text("lease")

    page.fill("#setting-lease", "120s")
    # Safe by default: with no agent named, nothing is sent everywhere; `all` is
    # outlined, and the preview names the hosts before anything is applied.
    page.fill("#setting-on", "")
    page.click("#preview")
    expect(page.locator("#setting-all")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#apply-result")).to_contain_text("all: true")
    page.check("#setting-all")
    page.click("#preview")
    expect(page.locator("#apply-result")).to_contain_text("will hit 2 agents: h1, h2")
    page.uncheck("#setting-all")
    page.fill("#setting-on", "h1")
    page.click("#preview")
    expect(page.locator("#apply-result")).to_contain_text("will hit 1 agent: h1")
    assert page.locator("#faults tbody tr").count() == 0, "a preview applied a fault"
    page.fill("#setting-label", "from the console")
    page.click("#apply button[type=submit]")
    row = page.locator("#faults tbody tr[data-kind=drop]")
    expect(row).to_have_count(1)
    fault = row.get_attribute("data-fault")
    expect(row).to_contain_text("from the console")
    expect(page.locator(f"#events li[data-kind=fault_applied]", has_text=fault)).to_have_count(1)
    # The countdown runs.
    left = float(row.locator("td.left").inner_text().split()[0])
    page.wait_for_timeout(1500)
    assert float(row.locator("td.left").inner_text().split()[0]) < left, "the time left counts down"
    # +1 min renews the lease: more time left than the 120 s it started with.
    row.locator("button.extend").click()
    expect(page.locator("#apply-result")).to_contain_text("renewed")
    until(lambda: float(row.locator("td.left").inner_text().split()[0]) > 150, "a minute more")
    shot(page, "fault-applied")
    say(f"applied {fault}")
    wait_go()

    # Traffic against the lab's nginx; the chart fills second by second.
    page.fill("#traffic-form input[name=target_url]", target)
    page.fill("#traffic-form input[name=rps]", "100")
    page.fill("#traffic-form input[name=duration_seconds]", "60")
    page.click("#traffic-start")
    expect(page.locator("#chart canvas").first).to_be_visible()
    chart = page.locator("#chart")
    until(lambda: int(chart.get_attribute("data-seconds")) >= 3, "three seconds charted")
    first = int(chart.get_attribute("data-requests"))
    until(lambda: int(chart.get_attribute("data-requests")) > first, "the chart moves")
    expect(page.locator("#traffic-status")).to_contain_text("running")
    shot(page, "traffic")

    # Revert from the fault's own button.
    row.locator("button.revert").click()
    expect(page.locator("#faults tbody tr")).to_have_count(0)
    expect(page.locator(f"#events li[data-kind=fault_reverted]", has_text=fault)).to_have_count(1)
    page.click("#traffic-stop")
    expect(page.locator("#traffic-status")).to_contain_text("ended")
    shot(page, "reverted")
    say(f"reverted {fault}")
    wait_go()

    # A scenario run from the console; its report opens in a tab through a link.
    page.fill("#run-scenario", "name: broken\nload: 5\n")
    page.click("#run-form button[type=submit]")
    expect(page.locator("#run-scenario")).to_have_attribute("aria-invalid", "true")
    page.fill("#run-scenario", SCENARIO.format(target=target))
    page.click("#run-form button[type=submit]")
    run = page.locator("#runs tbody tr").first
    expect(run).to_have_attribute("data-state", "passed", timeout=60000)
    with context.expect_page() as opened:
        run.locator("button.report").click()
    report = opened.value
    report.wait_for_load_state("load")
    expect(report).to_have_title(re.compile("faultline run: console run"))
    expect(report.locator("svg").first).to_be_visible()
    report.screenshot(path=f"{out}/console-report.png", full_page=True)
    # The link opens the run's other files too (the PNGs beside the report).
    png = report.goto(report.url.replace("report.html", "throughput.png"))
    assert png.status == 200 and png.headers["content-type"] == "image/png", (png.status, png.headers)
    report.close()
    shot(page, "runs")

    # A viewer watches but cannot inject.
    page.fill("#token", viewer)
    page.click("#login button[type=submit]")
    page.fill("#setting-lease", "10s")
    page.click("#apply button[type=submit]")
    expect(page.locator("#apply-result")).to_contain_text("not allowed")
    expect(page.locator("#faults tbody tr")).to_have_count(0)

    # Swagger UI, from the binary: authorize with the token, try GET /api/agents.
    page.goto(base + "/api/docs/")
    page.click("button.authorize")
    page.fill(".auth-container input", viewer)
    page.click(".auth-btn-wrapper button.authorize")
    page.click(".auth-btn-wrapper button.btn-done")
    op = page.locator("#operations-agents-agents")
    op.locator(".opblock-summary").click()
    op.locator("button.try-out__btn").click()
    op.locator("button.execute").click()
    expect(op.locator(".live-responses-table tr.response .response-col_status")).to_contain_text("200")
    expect(op.locator(".live-responses-table tr.response .response-col_description")).to_contain_text("\"name\": \"h1\"")
    shot(page, "swagger")

    # No token: the viewer's PKCS#12 bundle from `faultline certs init` as the browser's
    # client certificate reads, and cannot inject.
    with open(f"{tls}/viewer.p12.password") as f:
        password = f.read().strip()
    mtls = browser.new_context(client_certificates=[{"origin": base, "pfxPath": f"{tls}/viewer.p12", "passphrase": password}])
    mtls.route("**/*", only_here)
    page = mtls.new_page()
    page.goto(base + "/")
    expect(page.locator("#agents tbody tr")).to_have_count(2)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    page.fill("#setting-interface", "eth0")
    page.fill("#setting-loss", "5%")
    page.fill("#setting-lease", "10s")
    page.click("#apply button[type=submit]")
    expect(page.locator("#apply-result")).to_contain_text("not allowed")
    shot(page, "client-certificate")

    browser.close()

say("result " + json.dumps({"elsewhere": elsewhere, "console_errors": console_errors}))
