#!/usr/bin/env python3
"""The dashboard as a person uses it, in Debian's Chromium through selenium (driven by
scripts/e2e-dashboard.sh, which starts whisperd): refused without the token, log in, see the
fleet, open a character, watch its memory chart climb after it allocates, restart it with the
button and see the new pid, edit character.md (a bad edit refused) and see the next reply use
it. Prints PASS/FAIL lines; exits 1 if any failed."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--elena-port", type=int, required=True)
parser.add_argument("--ctl", required=True)
parser.add_argument("--socket", required=True)
parser.add_argument("--characters", required=True)
parser.add_argument("--screenshots", required=True)
args = parser.parse_args()
base = f"http://127.0.0.1:{args.port}"
failures = 0


def check(description, condition, detail=""):
    global failures
    if condition:
        print(f"PASS {description}", flush=True)
    else:
        failures += 1
        print(f"FAIL {description} {detail}", flush=True)


def http(method, path, headers=None, body=None):
    """(status, body text, headers) without following redirects."""
    request = urllib.request.Request(base + path, method=method, data=body, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


def eventually(predicate, timeout=20.0, step=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is mid-render: try again
            pass
        time.sleep(step)
    return None


def character(name):
    return json.loads(http("GET", f"/v1/characters/{name}")[1])


login_url = subprocess.run([args.ctl, "--socket", args.socket, "dashboard"], capture_output=True, text=True, check=True).stdout.strip()
check("whisperctl dashboard prints a login URL with the token", re.fullmatch(rf"{re.escape(base)}/login\?token=[0-9a-f]{{64}}", login_url), login_url)
token = login_url.split("token=")[1]

# ---- Without the token, over plain HTTP ------------------------------------------------
status, body, headers = http("GET", "/")
check("GET / serves the page with a strict CSP (no inline script)", status == 200 and "script-src 'self'" in headers.get("Content-Security-Policy", "")
      and "<script>" not in body and 'src="/dashboard/app.js"' in body, f"{status} {headers.get('Content-Security-Policy')}")
check("the fleet is readable without the token", http("GET", "/dashboard/api/characters/hog/samples")[0] == 200)
refused = {
    "POST restart": http("POST", "/dashboard/api/characters/elena/restart", {"Origin": base})[0],
    "POST stop": http("POST", "/dashboard/api/characters/hog/stop", {"Origin": base})[0],
    "PUT character.md": http("PUT", "/dashboard/api/characters/elena/files/character.md", {"Origin": base}, b"Marker: EVIL")[0],
    "GET logs": http("GET", "/dashboard/api/characters/elena/logs")[0],
    "GET env": http("GET", "/dashboard/api/characters/elena/env")[0],
    "GET files": http("GET", "/dashboard/api/characters/elena/files")[0],
    "GET incidents": http("GET", "/dashboard/api/characters/elena/incidents")[0],
    "POST on the old read-only route": http("POST", "/v1/characters/elena/restart")[0],
}
check("without the token every action and private read is refused (401/403; 405 on the read-only routes)",
      all(code in (401, 403, 405) for code in refused.values()) and refused["POST on the old read-only route"] == 405, str(refused))
check("a wrong token does not log in", http("GET", "/login?token=" + "0" * 64)[0] == 401)
check("a foreign Host (DNS rebinding) is refused", http("GET", "/", {"Host": f"evil.example:{args.port}"})[0] == 421)

status, _, headers = http("GET", "/login?token=" + token)
cookie = headers.get("Set-Cookie", "")
check("login sets an HttpOnly SameSite=Strict cookie and leaves the token out of the URL",
      status == 303 and headers.get("Location") == "/" and "HttpOnly" in cookie and "SameSite=Strict" in cookie, f"{status} {cookie}")
session = cookie.split(";")[0]
csrf = json.loads(http("GET", "/dashboard/api/session", {"Cookie": session})[1]).get("csrf", "")
pid_before = character("hog").get("pid")
partial = {
    "no CSRF header": http("POST", "/dashboard/api/characters/hog/restart", {"Cookie": session, "Origin": base})[0],
    "wrong CSRF header": http("POST", "/dashboard/api/characters/hog/restart", {"Cookie": session, "Origin": base, "X-CSRF-Token": "0" * 64})[0],
    "foreign Origin": http("POST", "/dashboard/api/characters/hog/restart", {"Cookie": session, "Origin": "http://evil.example", "X-CSRF-Token": csrf})[0],
    "no Origin": http("POST", "/dashboard/api/characters/hog/restart", {"Cookie": session, "X-CSRF-Token": csrf})[0],
}
check("a session without its CSRF token or from another Origin is refused (403)", all(code == 403 for code in partial.values()), str(partial))
check("…and nothing was restarted", character("hog").get("pid") == pid_before)

# ---- In the browser --------------------------------------------------------------------
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(30)


def text(css):
    return driver.find_element(By.CSS_SELECTOR, css).text


try:
    driver.get(base + "/#/c/elena")
    check("without the token the buttons are disabled", eventually(lambda: driver.find_element(By.ID, "action-restart").get_attribute("disabled") is not None))
    check("…and the page says it is read-only", "read-only" in text("#who"))
    csp_errors = [entry for entry in driver.get_log("browser") if "Content Security Policy" in entry.get("message", "")]
    check("the page runs under its CSP without violations", not csp_errors, str(csp_errors))

    driver.get(login_url)
    check("logging in with the URL whisperctl printed works", eventually(lambda: "logged in" in text("#who")))
    check("the token is gone from the address bar", "token" not in driver.current_url, driver.current_url)
    rows = eventually(lambda: [row.get_attribute("data-name") for row in driver.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")] or None)
    check("the fleet shows every character", rows is not None and {"elena", "hog", "snoop"} <= set(rows), str(rows))
    check("the fleet shows state and memory against its limit", eventually(lambda: "running" in text("#fleet tr[data-name=hog]") and "/ 512.0 MiB" in text("#fleet tr[data-name=hog]")))
    eventually(lambda: "%" in text("#fleet tr[data-name=hog]"))
    driver.save_screenshot(os.path.join(args.screenshots, "dashboard-fleet.png"))

    # Memory: the chart climbs after hog allocates 160 MiB.
    driver.find_element(By.CSS_SELECTOR, "#fleet tr[data-name=hog] a").click()
    before = eventually(lambda: float(driver.find_element(By.ID, "chart-memory").get_attribute("data-last")))
    check("the memory chart has points", before is not None)
    hog_pid = character("hog")["pid"]
    os.kill(hog_pid, signal.SIGUSR1)
    after = eventually(lambda: (lambda v: v if v > (before or 0) + 150 * 2**20 else None)(
        float(driver.find_element(By.ID, "chart-memory").get_attribute("data-last"))), timeout=25)
    check("the memory chart climbs after the character allocates 160 MiB", after is not None, f"before {before}, after {after}")
    points = int(driver.find_element(By.ID, "chart-memory").get_attribute("data-points"))
    check("…drawn as a line of several points", points >= 2 and driver.find_element(By.CSS_SELECTOR, "#chart-memory polyline").get_attribute("points").count(",") >= 2, str(points))
    check("the log tail streams live (Server-Sent Events)", eventually(lambda: "hog holds 160 MiB" in text("#logs")))
    driver.save_screenshot(os.path.join(args.screenshots, "dashboard-character.png"))

    # An incident: hog killed; its page shows it on the timeline after whisperd restarts it.
    os.kill(character("hog")["pid"], signal.SIGKILL)
    eventually(lambda: character("hog").get("restarts", 0) >= 1 and character("hog").get("ready"))
    driver.refresh()
    check("the incident shows on the timeline", eventually(lambda: "SIGKILL" in text("#incidents")), text("#incidents"))

    # Restart with the button: a new pid.
    driver.get(base + "/#/c/elena")
    old_pid = eventually(lambda: int(text("#pid")))
    check("the environment shows, secrets redacted", eventually(lambda: "LLM_API_KEY" in text("#env") and "<redacted>" in text("#env"))
          and "sk-e2e-dashboard-secret" not in driver.page_source)
    driver.find_element(By.ID, "action-restart").click()
    new_pid = eventually(lambda: (lambda p: p if p != old_pid and text("#state") == "running" else None)(int(text("#pid"))), timeout=30)
    check("the restart button gives elena a new pid", new_pid is not None, f"old {old_pid}, new {new_pid}")
    check("the restart is logged with who did it", eventually(lambda: "restart elena" in open(os.environ["WHISPERD_LOG"]).read()
                                                          and re.search(r"dashboard.*session [0-9a-f]{8}: restart elena", open(os.environ["WHISPERD_LOG"]).read())))

    # Edit character.md: a bad core.yaml first (refused, nothing written), then a new persona.
    path = os.path.join(args.characters, "elena", "character.md")
    stat_before = os.stat(path)
    core_before = open(os.path.join(args.characters, "elena", "core.yaml")).read()
    select = eventually(lambda: Select(driver.find_element(By.ID, "file-select")) if driver.find_elements(By.CSS_SELECTOR, "#file-select option") else None)
    select.select_by_value("core.yaml")
    area = driver.find_element(By.ID, "file-text")
    area.clear()
    area.send_keys("purpose: [unclosed")
    driver.find_element(By.ID, "file-save").click()
    check("an invalid core.yaml is refused before it is saved", eventually(lambda: "not saved" in text("#file-result")), text("#file-result"))
    check("…and the file on disk is unchanged", open(os.path.join(args.characters, "elena", "core.yaml")).read() == core_before)

    pid_before_edit = character("elena")["pid"]
    select.select_by_value("character.md")
    area.clear()
    area.send_keys("You are Elena, a marine biologist. Marker: EDITED-FROM-BROWSER")
    driver.save_screenshot(os.path.join(args.screenshots, "dashboard-edit.png"))
    driver.find_element(By.ID, "file-save").click()
    check("saving character.md restarts elena", eventually(lambda: "saved character.md; restarting elena" in text("#file-result")), text("#file-result"))
    check("…the file holds the edit", "EDITED-FROM-BROWSER" in open(path).read())
    stat_after = os.stat(path)
    check("…with the old file's owner and mode (atomic replace)", (stat_after.st_uid, stat_after.st_gid, stat_after.st_mode) == (stat_before.st_uid, stat_before.st_gid, stat_before.st_mode)
          and stat_after.st_ino != stat_before.st_ino, f"{stat_before} {stat_after}")
    ready = eventually(lambda: (lambda c: c.get("pid") != pid_before_edit and c.get("ready"))(character("elena")), timeout=30)
    check("elena is back, ready, with a new pid", ready)
    reply = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{args.elena_port}/api/chat", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"user_id": "e2e-dashboard", "message": "Who are you?"}).encode()), timeout=20).read())
    check("elena's next reply uses the edited character.md", "EDITED-FROM-BROWSER" in reply.get("response", ""), str(reply))

    # Narrow screen: the fleet still fits.
    driver.set_window_size(420, 900)
    driver.get(base + "/")
    check("on a narrow screen the fleet still shows every character", eventually(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")) >= 3))
    width = driver.execute_script("return document.documentElement.scrollWidth")
    check("…without the page scrolling sideways far", width <= 700, str(width))

    driver.set_window_size(1280, 1000)
    driver.find_element(By.ID, "logout").click()
    check("log out ends the session", eventually(lambda: "read-only" in text("#who")))
    logout = http("POST", "/logout", {"Cookie": session, "Origin": base, "X-CSRF-Token": csrf})[0]
    after_logout = http("POST", "/dashboard/api/characters/hog/restart", {"Cookie": session, "Origin": base, "X-CSRF-Token": csrf})[0]
    check("a logged-out session's cookie is refused", logout == 200 and after_logout == 401, f"{logout} {after_logout}")
finally:
    driver.quit()

sys.exit(1 if failures else 0)
