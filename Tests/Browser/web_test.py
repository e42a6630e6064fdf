"""Folio's web app in headless Chromium, as a user would use it.

Run by ops/browser-tests, which starts a throwaway server and passes:
  FOLIO_URL          the server's origin (http://127.0.0.1:PORT)
  FOLIO_BINARY       the folio binary (to read the development outbox)
  FOLIO_DATA_DIR     the server's data directory
  FOLIO_ADMIN_EMAIL / FOLIO_ADMIN_PASSWORD   an administrator made beforehand
  FOLIO_SCREENSHOTS  where to write the screenshots (optional)
  FOLIO_FAKE_ALPACA_PORT   the port the server's ALPACA_PAPER_URL names; the fake Alpaca is started there
Each check raises AssertionError with what was expected; the script exits 1 on the first failure.
"""
import base64, csv, glob, hashlib, hmac, http.server, io, json, os, re, secrets, struct, subprocess, sys, threading, time, urllib.parse
from decimal import Decimal

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

import fake_alpaca

BASE = os.environ["FOLIO_URL"].rstrip("/")
BINARY = os.environ["FOLIO_BINARY"]
DATA_DIR = os.environ["FOLIO_DATA_DIR"]
SHOTS = os.environ.get("FOLIO_SCREENSHOTS")
DOWNLOADS = os.environ.get("FOLIO_DOWNLOADS", "/tmp/folio-browser-downloads")
PAGE_BUDGET = 150 * 1024

passed = []


def check(name):
    def wrap(function):
        def run(*args):
            started = time.time()
            function(*args)
            passed.append(name)
            print(f"ok   {name} ({time.time() - started:.1f}s)", flush=True)
        return run
    return wrap


def browser(javascript=True):
    options = webdriver.ChromeOptions()
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                     "--host-resolver-rules=MAP evil.test 127.0.0.1", "--lang=en-US"]:
        options.add_argument(argument)
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.makedirs(DOWNLOADS, exist_ok=True)
    prefs = {"download.default_directory": DOWNLOADS, "download.prompt_for_download": False}
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    options.add_experimental_option("prefs", prefs)
    service = webdriver.ChromeService(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    return driver


def wait(driver, condition, seconds=15, message=""):
    return WebDriverWait(driver, seconds).until(condition, message)


def replaced(element):
    """A wait condition: the page that held `element` is gone. Chromium, asked about a node
    while the next page replaces it, may answer "does not belong to the document"
    instead of a stale reference: that is gone too."""
    def check(driver):
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return True
            raise
    return check


def visible(driver, css, seconds=15):
    return wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, css)), seconds, f"{css} never became visible on {driver.current_url}")


def fill(driver, css, text):
    field = visible(driver, css)
    field.clear()
    field.send_keys(text)
    return field


def no_csp_violations(driver):
    """The page ran no blocked script or style: a CSP report in the console fails the test."""
    for entry in driver.get_log("browser"):
        assert "Content Security Policy" not in entry["message"], f"CSP violation on {driver.current_url}: {entry['message']}"


def text_of(driver, css):
    """An element's text on a page that may be reloading under us (a run being followed)."""
    for _ in range(20):
        try:
            return driver.find_element(By.CSS_SELECTOR, css).text
        except WebDriverException:  # not there yet, stale, or (Chromium's words) a node of the replaced document
            time.sleep(0.25)
    raise AssertionError(f"{css} never settled on {driver.current_url}")


def outbox_link(email, path):
    """The newest link to `path` mailed to `email`, from the development outbox (`folio outbox`)."""
    for _ in range(40):
        text = subprocess.run([BINARY, "outbox", "--env", "development"], env=dict(os.environ, DATA_DIR=DATA_DIR),
                              capture_output=True, text=True, check=True).stdout
        for block in text.split("--- ")[1:]:
            if f"to: {email}" in block:
                found = re.search(r"(https?://\S+" + re.escape(path) + r"\?token=[\w-]+)", block)
                if found:
                    return found.group(1)
        time.sleep(0.5)
    raise AssertionError(f"no mail to {email} with a {path} link in the outbox")


def totp(secret, at=None, digits=6, period=30):
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((at or time.time()) // period)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return str((struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits).zfill(digits)


def page_weight(driver):
    """Bytes the page and everything it loaded came as (encoded bodies; a fresh profile caches nothing)."""
    return driver.execute_script("""
        const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
        return entries.reduce((sum, entry) => sum + (entry.encodedBodySize || 0) + 300, 0);""")


def unlabeled_controls(driver):
    """Visible controls without an accessible name: inputs need a label, buttons and links text or aria-label."""
    return driver.execute_script("""
        const missing = [];
        for (const element of document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href]')) {
          if (!element.getClientRects().length) continue;
          const labelled = element.labels?.length || element.getAttribute('aria-label') || element.getAttribute('aria-labelledby')
            || ((element.tagName === 'BUTTON' || element.tagName === 'A') && (element.textContent.trim() || element.querySelector('img[alt]:not([alt=""])')));
          if (!labelled) missing.push(element.outerHTML.slice(0, 120));
        }
        return missing;""")


def screenshot(driver, name):
    """The whole page at a desktop and a phone width (device metrics, so the phone gets its own layout)."""
    if not SHOTS:
        return
    os.makedirs(SHOTS, exist_ok=True)
    for label, width, height, mobile in (("desktop", 1280, 900, False), ("phone", 390, 844, True)):
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        time.sleep(0.3)
        metrics["height"] = max(height, driver.execute_script("return Math.min(document.documentElement.scrollHeight, 3200)"))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        time.sleep(0.3)
        image = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
        with open(os.path.join(SHOTS, f"{name}-{label}.png"), "wb") as handle:
            handle.write(base64.b64decode(image))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def open_page(driver, path, name=None):
    """Visits a page, and checks what every page owes: its budget, its labels, its CSP."""
    driver.get(BASE + path)
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    weight = page_weight(driver)
    assert weight < PAGE_BUDGET, f"{path} transferred {weight} bytes, over the {PAGE_BUDGET}-byte budget"
    print(f"     {path}: {weight:,} bytes", flush=True)
    missing = unlabeled_controls(driver)
    assert not missing, f"controls without a label on {path}: {missing}"
    no_csp_violations(driver)
    if name:
        screenshot(driver, name)


# ---------------------------------------------------------------- the flows

EMAIL = f"web-{secrets.token_hex(4)}@example.com"
PASSWORD = "Folio-" + secrets.token_urlsafe(12)


@check("sign up, open the verification link from the outbox, sign in")
def sign_up_verify_sign_in(driver):
    open_page(driver, "/signup", "signup")
    fill(driver, "#email", EMAIL)
    fill(driver, "#password", "short")
    unmet = driver.find_elements(By.CSS_SELECTOR, ".policy li.unmet")
    assert any("characters" in item.text for item in unmet), "the policy did not flag a short password as the user typed"
    fill(driver, "#password", PASSWORD)
    assert not driver.find_elements(By.CSS_SELECTOR, ".policy li.unmet"), "the policy still flags a good password"
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    visible(driver, "#signup-done")

    link = outbox_link(EMAIL, "/verify-email")
    driver.get(link)
    visible(driver, "main form button[type=submit]").click()
    wait(driver, EC.url_to_be(BASE + "/signin"))
    assert "verified" in visible(driver, "#confirmation").text

    # A wrong password is refused with the API's detail on the form.
    fill(driver, "#email", EMAIL)
    fill(driver, "#password", PASSWORD + "x")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    error = visible(driver, "[data-error-for='']")
    assert error.text, "a failed sign-in showed no error"
    fill(driver, "#password", PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, EC.url_to_be(BASE + "/"))
    assert visible(driver, "#total-value").text == "$100,000.00", "a new paper account should hold $100,000.00"


@check("the order ticket: labels and tab order, a live quote, the estimate, an error beside its field")
def order_ticket(driver):
    open_page(driver, "/orders")
    symbol = visible(driver, "#symbol")
    symbol.click()
    order = []
    for _ in range(12):
        element = driver.switch_to.active_element
        order.append(element.get_attribute("id") or element.get_attribute("name") or element.tag_name)
        label = driver.execute_script("const e = arguments[0]; return e.labels?.[0]?.textContent || e.textContent || e.getAttribute('aria-label') || ''", element)
        assert label.strip(), f"the focused control {order[-1]} has no label"
        if element.tag_name == "button":
            break
        element.send_keys(Keys.TAB)
    expected = ["symbol", "side-buy", "order_type", "quantity", "time_in_force"]
    positions = [order.index(name) for name in expected if name in order]
    assert len(positions) == len(expected) and positions == sorted(positions), f"tab order {order} does not reach {expected} in order"
    assert driver.switch_to.active_element.text == "Place order", f"the tab order ends at {order[-1]}, not the submit button"

    fill(driver, "#symbol", "AAPL")
    wait(driver, lambda d: "$" in d.find_element(By.ID, "quote").text, message="no live quote for AAPL")
    fill(driver, "#quantity", "abc")
    driver.find_element(By.CSS_SELECTOR, "#ticket button[type=submit]").click()
    error = visible(driver, "#quantity-error")
    assert error.text, "an invalid quantity showed no error beside the field"
    assert driver.find_element(By.ID, "quantity").get_attribute("aria-invalid") == "true"
    # A refusal names its figures beside the field, as the page without JavaScript does.
    driver.find_element(By.ID, "side-sell").click()
    fill(driver, "#quantity", "5")
    driver.find_element(By.CSS_SELECTOR, "#ticket button[type=submit]").click()
    wait(driver, lambda d: "You can sell at most" in d.find_element(By.ID, "quantity-error").text, message="the refusal's figures are not beside the quantity")
    assert "More shares than you hold" in driver.find_element(By.ID, "quantity-error").text
    driver.find_element(By.ID, "side-buy").click()
    # Once the quantity is changed, the refusal no longer stands beside it.
    fill(driver, "#quantity", "1")
    wait(driver, lambda d: d.find_element(By.ID, "quantity-error").text == "", message="the refusal stayed beside the quantity after it was changed")
    assert driver.find_element(By.ID, "quantity").get_attribute("aria-invalid") is None
    # A quantity Folio refuses has no estimate (it once showed "$0.-5").
    for refused in ["-1", "0", "-0.5"]:
        fill(driver, "#quantity", "1")
        wait(driver, lambda d: d.find_element(By.ID, "estimate").text.startswith("$"), message="no estimated cost for 1")
        fill(driver, "#quantity", refused)
        wait(driver, lambda d: d.find_element(By.ID, "estimate").text == "—", message=f"an estimate for quantity {refused}")
    # A market buy that costs less than the buying power but sets aside more (the market-buy margin) says so, as Folio would refuse it.
    power = Decimal(driver.find_element(By.ID, "buying-power").get_attribute("data-amount"))
    price = Decimal(re.search(r"\$([0-9.]+)", driver.find_element(By.ID, "quote").text).group(1))
    quantity = int(power / (price * Decimal("1.025")))
    assert quantity * price <= power < quantity * price * Decimal("1.05"), "no quantity between cost and reservation"
    fill(driver, "#quantity", str(quantity))
    wait(driver, lambda d: "more than your buying power" in d.find_element(By.ID, "estimate").text,
         message=f"no warning for {quantity} at {price} with {power} of buying power: {driver.find_element(By.ID, 'estimate').text}")
    assert "sets aside" in driver.find_element(By.ID, "estimate").text
    fill(driver, "#quantity", "2")
    wait(driver, lambda d: d.find_element(By.ID, "estimate").text.startswith("$") and "more than" not in d.find_element(By.ID, "estimate").text, message="no estimated cost")
    # Folio takes an exponent ("0.2e1" is 2); the estimate reads it the same way.
    two = driver.find_element(By.ID, "estimate").text
    fill(driver, "#quantity", "0.2e1")
    wait(driver, lambda d: d.find_element(By.ID, "estimate").text == two, message=f"the estimate for 0.2e1 is not {two}")
    fill(driver, "#quantity", "2")
    wait(driver, lambda d: d.find_element(By.ID, "estimate").text == two, message="no estimated cost")
    screenshot(driver, "orders")
    driver.find_element(By.CSS_SELECTOR, "#ticket button[type=submit]").click()
    wait_for_fill(driver, "AAPL")
    # A second holding, so the dashboard has something to divide.
    fill(driver, "#symbol", "MSFT")
    fill(driver, "#quantity", "3")
    driver.find_element(By.CSS_SELECTOR, "#ticket button[type=submit]").click()
    wait_for_fill(driver, "MSFT")


def wait_for_fill(driver, symbol):
    """The ticket sent the browser back to /orders, which confirmed the order; reload it until the order shows as filled in the history."""
    wait(driver, EC.url_to_be(BASE + "/orders"))
    assert "Order placed" in visible(driver, "#confirmation").text
    for _ in range(40):
        driver.get(BASE + "/orders")
        rows = driver.find_elements(By.CSS_SELECTOR, "#order-history tbody tr")
        if any(symbol in row.text and "filled" in row.text for row in rows):
            return
        time.sleep(0.5)
    raise AssertionError(f"the {symbol} order was not filled")


@check("the position shows on the dashboard, in the table and the charts")
def dashboard_shows_position(driver):
    open_page(driver, "/", "dashboard")
    visible(driver, "#positions tbody tr")
    rows = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#positions tbody tr")]
    assert any(row.startswith("AAPL 2 ") for row in rows), f"the positions table shows {rows!r}"
    titles = [element.get_attribute("textContent") for element in driver.find_elements(By.CSS_SELECTOR, "svg title")]
    assert "Allocation by symbol" in titles and "Allocation by asset class" in titles, f"chart titles: {titles}"
    assert any(title.startswith("AAPL") for title in titles), "the symbol donut has no AAPL slice"
    assert driver.find_elements(By.CSS_SELECTOR, "#history-chart svg path.stroke"), "the value chart has no line"
    driver.find_element(By.LINK_TEXT, "3M").click()
    wait(driver, EC.url_contains("range=3M"))
    assert "three months" in driver.find_element(By.CSS_SELECTOR, "#history-chart svg title").get_attribute("textContent")


@check("targets: the running sum, drift against the bands, a plan preview, and a run followed to its end")
def targets_and_rebalance(driver):
    open_page(driver, "/targets")
    fill(driver, "#symbol-0", "AAPL")
    fill(driver, "#percent-0", "30")
    fill(driver, "#symbol-1", "MSFT")
    fill(driver, "#percent-1", "30")
    fill(driver, "#cash_percent", "30")
    assert "under" in driver.find_element(By.ID, "weight-sum-note").text, "the running sum did not flag 90%"
    driver.find_element(By.CSS_SELECTOR, "#targets button[type=submit]").click()
    error = visible(driver, "#targets [data-error-for]:not(:empty)")
    assert "100" in error.text, f"weights that do not add up showed {error.text!r}"
    fill(driver, "#cash_percent", "40")
    assert driver.find_element(By.ID, "weight-sum").text == "100%", driver.find_element(By.ID, "weight-sum").text
    driver.find_element(By.CSS_SELECTOR, "#targets button[type=submit]").click()
    rows = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#drift tbody tr"), message="no drift table after saving targets")
    assert any("outside" in row.text for row in rows), "holdings far from their targets are not marked outside the band"
    assert driver.find_elements(By.CSS_SELECTOR, "#drift svg.drift rect.band"), "no drift bars"
    # A symbol left out: a mistyped one is refused beside its field; a real one stays out of the plan and goes with it to the run's form.
    fill(driver, "#excluded_symbols", "APPL")
    driver.find_element(By.CSS_SELECTOR, "#plan-form button[type=submit]").click()
    error = visible(driver, '#plan-form [data-error-for="excluded_symbols"]:not(:empty)')
    assert "APPL is neither held" in error.text, f"a mistyped symbol left out showed {error.text!r}"
    fill(driver, "#excluded_symbols", "msft")
    driver.find_element(By.CSS_SELECTOR, "#plan-form button[type=submit]").click()
    wait(driver, lambda d: "MSFT is left as it is" in text_of(d, "#plan-summary"), message="the plan does not say MSFT is left out")
    assert "MSFT" not in text_of(driver, "#plan-trades"), "the plan trades a symbol left out"
    assert driver.find_element(By.ID, "execute-excluded").get_attribute("value") == "msft", "the run's form lost the symbol left out"
    fill(driver, "#excluded_symbols", " ")
    driver.find_element(By.CSS_SELECTOR, "#plan-form button[type=submit]").click()
    trades = visible(driver, "#plan-trades")
    assert "buy" in trades.text and "AAPL" in trades.text, f"the plan shows {trades.text!r}"
    screenshot(driver, "targets")
    driver.find_element(By.CSS_SELECTOR, "#execute-form button[type=submit]").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#runs .run-status"), message="the run is not listed after executing")
    for _ in range(60):
        status = text_of(driver, "#runs .run-status")
        if status.startswith("done") or status.startswith("partially done") or status.startswith("failed"):
            break
        time.sleep(0.5)
    assert status.startswith("done"), f"the run ended {status!r}"
    no_csp_violations(driver)


@check("the linked-accounts page shows net worth, and says when Plaid is not configured")
def linked_accounts(driver):
    open_page(driver, "/linked", "linked")
    assert visible(driver, "#net-worth").text.startswith("$"), "no net worth"
    assert "Folio" in driver.find_element(By.ID, "net-worth-accounts").text
    assert "does not have configured" in driver.find_element(By.CSS_SELECTOR, ".notice.warn").text


def download_csv(driver, pattern):
    """Clicks the page's CSV link (#csv) and waits for the file: its path."""
    driver.find_element(By.ID, "csv").click()
    for _ in range(40):
        files = glob.glob(os.path.join(DOWNLOADS, pattern))
        if files:
            return files[0]
        time.sleep(0.25)
    raise AssertionError("no CSV was downloaded")


@check("the transactions page filters, and its CSV downloads")
def transactions_csv(driver):
    for stale in glob.glob(os.path.join(DOWNLOADS, "*")):
        os.remove(stale)
    open_page(driver, "/transactions", "transactions")
    rows = driver.find_elements(By.CSS_SELECTOR, "#transactions tbody tr")
    assert any("buy" in row.text for row in rows), "the buy is not listed"
    driver.find_element(By.CSS_SELECTOR, "#type option[value=buy]").click()
    driver.find_element(By.CSS_SELECTOR, ".filters button").click()
    wait(driver, EC.url_contains("type=buy"))
    with open(download_csv(driver, "*.csv")) as handle:
        lines = list(csv.DictReader(handle))
    assert lines and all(line["type"] == "buy" for line in lines), f"the CSV holds {lines}"
    assert any(line["symbol"] == "AAPL" and line["quantity"].startswith("2") for line in lines), f"no AAPL buy of 2 in {lines}"


@check("times are shown in the reader's time zone, the UTC time kept as each one's title")
def local_times(driver):
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    try:
        open_page(driver, "/transactions")
        times = driver.find_elements(By.CSS_SELECTOR, "#transactions tbody time")
        assert times, "no time in the transactions table was shown in local time"
        for element in times:
            written = element.get_attribute("title")
            utc = datetime.strptime(written, "%Y-%m-%d %H:%M UTC").replace(tzinfo=timezone.utc)
            expected = utc.astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%d %H:%M %Z")
            assert element.text == expected, f"{written!r} shown as {element.text!r}, not {expected!r}"
            assert element.get_attribute("datetime") == utc.strftime("%Y-%m-%dT%H:%MZ")
        assert "UTC" not in driver.find_element(By.ID, "transactions").text, "a UTC time was left in the table"
        # A day the filter names is the reader's day too: the form sends the browser's zone.
        day = times[0].text[:10]
        for field in ("from", "to"):
            driver.execute_script("arguments[0].value = arguments[1]", driver.find_element(By.ID, field), day)
        driver.find_element(By.CSS_SELECTOR, ".filters button").click()
        wait(driver, EC.url_contains("tz=America%2FNew_York"), message="the filter did not send the browser's time zone")
        shown = [element.text[:10] for element in driver.find_elements(By.CSS_SELECTOR, "#transactions tbody time")]
        assert shown and all(listed == day for listed in shown), f"filtered to {day}, the rows are of {shown}"
    finally:
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})


@check("the gains page lists the open lots, and its CSV downloads")
def gains_csv(driver):
    for stale in glob.glob(os.path.join(DOWNLOADS, "*")):
        os.remove(stale)
    open_page(driver, "/gains", "gains")
    lots = driver.find_element(By.ID, "lots").text
    assert "AAPL" in lots, f"no AAPL lot in {lots}"
    assert "Total" in driver.find_element(By.ID, "realized-totals").text
    with open(download_csv(driver, "realized-gains-*.csv")) as handle:
        header = handle.readline().strip()
    assert header == "account_id,symbol,quantity,acquired_at,sold_at,proceeds,cost,gain,term", header


@check("another origin cannot act with the user's session (CSRF)")
def cross_site_request_refused(driver, evil_port):
    before = count_orders(driver)
    driver.get(f"http://evil.test:{evil_port}/attack.html?target={urllib.parse.quote(BASE)}")
    wait(driver, lambda d: d.execute_script("return window.attackDone === true"), 20, "the attack page never finished")
    outcome = driver.execute_script("return window.attackOutcome")
    assert outcome != "placed", f"the cross-origin fetch placed an order: {outcome}"
    time.sleep(1)
    # The attack page framed Folio's answer: frame-ancestors 'none' refused that, as it should; those reports are not the app's.
    driver.get_log("browser")
    assert count_orders(driver) == before, "a cross-site request placed an order"


@check("an Alpaca account linked on the linked page, then chosen above the dashboard, its pages staying on it")
def alpaca_account(driver):
    open_page(driver, "/linked")
    fill(driver, "#alpaca-key-id", fake_alpaca.KEY_ID)
    fill(driver, "#alpaca-secret", fake_alpaca.SECRET_KEY)
    driver.find_element(By.CSS_SELECTOR, "#alpaca-link button[type=submit]").click()
    article = visible(driver, "article[aria-labelledby^='alpaca-']")
    assert fake_alpaca.ACCOUNT_NUMBER in article.text and "…0001" in article.text, article.text
    assert fake_alpaca.SECRET_KEY not in driver.page_source
    name = article.find_element(By.TAG_NAME, "h3").text
    assert name.startswith("Alpaca paper"), name
    assert "Alpaca account linked" in visible(driver, "#confirmation").text
    open_page(driver, "/linked", "linked-alpaca")

    open_page(driver, "/")
    picker = Select(visible(driver, "#account-pick"))
    assert [option.text for option in picker.options] == ["Paper brokerage", name], [option.text for option in picker.options]
    assert picker.first_selected_option.text == "Paper brokerage"
    picker.select_by_visible_text(name)
    driver.find_element(By.CSS_SELECTOR, "form.account-picker button[type=submit]").click()
    wait(driver, EC.url_contains("account_id="), message="choosing an account did not show it")
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    assert Select(driver.find_element(By.ID, "account-pick")).first_selected_option.text == name
    cash = driver.find_element(By.XPATH, "//div[@class='figure'][h2='Cash']/p[@class='big']").text
    assert cash == "$25,000.00", f"the Alpaca account's cash shows as {cash!r}"
    assert "MSFT" in driver.find_element(By.TAG_NAME, "main").text, "the shares held at Alpaca are not shown"
    screenshot(driver, "dashboard-alpaca")
    driver.find_element(By.CSS_SELECTOR, "nav[aria-label=Main] a[href^='/orders']").click()
    wait(driver, EC.url_contains("/orders?account_id="), message="the navigation left the chosen account")
    assert Select(visible(driver, "#account-pick")).first_selected_option.text == name
    assert "AAPL" not in driver.find_element(By.TAG_NAME, "main").text, "the paper account's orders are listed on the Alpaca account's page"
    no_csp_violations(driver)


@check("paper cash added and taken out on the dashboard; a withdrawal beyond the cash refused beside the amount")
def paper_cash(driver):
    open_page(driver, "/")
    def cash():
        # The page reloads under us once a form is done: read again until it settles.
        for _ in range(40):
            try:
                return driver.find_element(By.XPATH, "//div[@class='figure'][h2='Cash']/p[@class='big']").text
            except WebDriverException:  # stale, gone, or a node of the page being replaced
                time.sleep(0.25)
        raise AssertionError(f"the cash figure never settled on {driver.current_url}")
    before = cash()
    fill(driver, "#deposit-amount", "250.00")
    driver.find_element(By.CSS_SELECTOR, "#paper-deposit button[type=submit]").click()
    wait(driver, lambda d: cash() != before, message="the deposit did not show")
    cents = lambda text: int(re.sub(r"[^0-9]", "", text))
    assert cents(cash()) - cents(before) == 25000, f"cash went from {before} to {cash()}"
    assert "Deposit received" in visible(driver, "#confirmation").text
    driver.refresh()
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    assert not driver.find_elements(By.ID, "confirmation"), "a reload confirmed the deposit again"
    fill(driver, "#withdrawal-amount", "999999999.00")
    driver.find_element(By.CSS_SELECTOR, "#paper-withdrawal button[type=submit]").click()
    error = visible(driver, "#paper-withdrawal [data-error-for=amount]")
    wait(driver, lambda d: "exceeds the available cash" in error.text, message="the refusal is not shown beside the amount")
    assert driver.find_element(By.ID, "withdrawal-amount").get_attribute("aria-invalid") == "true"
    added = cash()
    fill(driver, "#withdrawal-amount", "50.00")
    driver.find_element(By.CSS_SELECTOR, "#paper-withdrawal button[type=submit]").click()
    wait(driver, lambda d: cash() != added, message="the withdrawal did not show")
    assert cents(added) - cents(cash()) == 5000, f"cash went from {added} to {cash()}"
    no_csp_violations(driver)


@check("a market buy of a dollar amount: the amount field only on market buys, its estimate, the order filled for a fraction of a share")
def notional_buy(driver):
    open_page(driver, "/orders")
    fill(driver, "#symbol", "KO")
    wait(driver, lambda d: "$" in d.find_element(By.ID, "quote").text, message="no live quote for KO")
    amount = visible(driver, "#notional")
    driver.find_element(By.ID, "side-sell").click()
    wait(driver, lambda d: not amount.is_displayed(), message="a sell offers an amount in dollars")
    driver.find_element(By.ID, "side-buy").click()
    Select(driver.find_element(By.ID, "order_type")).select_by_value("LIMIT")
    wait(driver, lambda d: not amount.is_displayed(), message="a limit order offers an amount in dollars")
    Select(driver.find_element(By.ID, "order_type")).select_by_value("MARKET")
    fill(driver, "#notional", "50")
    price = Decimal(re.search(r"\$([0-9.]+)", driver.find_element(By.ID, "quote").text).group(1))
    shares = (Decimal(50) / price).quantize(Decimal("0.0001"), rounding="ROUND_DOWN")
    wait(driver, lambda d: d.find_element(By.ID, "estimate").text == f"$50.00 for about {shares} shares",
         message=f"the estimate for $50 of KO at {price} reads {driver.find_element(By.ID, 'estimate').text!r}")
    quantity = fill(driver, "#quantity", "1")
    wait(driver, lambda d: "not both" in d.find_element(By.ID, "estimate").text, message="a quantity and an amount together are not flagged")
    quantity.send_keys(Keys.CONTROL, "a")
    quantity.send_keys(Keys.DELETE)
    wait(driver, lambda d: d.find_element(By.ID, "estimate").text.startswith("$50.00"), message="the estimate did not come back")
    driver.find_element(By.CSS_SELECTOR, "#ticket button[type=submit]").click()
    wait_for_fill(driver, "KO")
    row = next(row.text for row in driver.find_elements(By.CSS_SELECTOR, "#order-history tbody tr") if "KO" in row.text)
    assert "buy $50.00 of ko" in row.lower().replace("\n", " "), f"the order history shows {row!r}"
    open_page(driver, "/")
    position = next((row.text for row in driver.find_elements(By.CSS_SELECTOR, "#positions tbody tr") if row.text.startswith("KO ")), None)
    assert position and re.match(r"KO 0\.\d+ ", position), f"the dashboard shows the KO position as {position!r}"
    no_csp_violations(driver)


@check("notifications: the navigation's unread badge, the list, and mark all as read")
def notifications(driver):
    open_page(driver, "/notifications", "notifications")
    badge = driver.find_element(By.CSS_SELECTOR, "nav[aria-label=Main] a[href='/notifications'] .badge").text
    assert re.fullmatch(r"\d+ unread", badge.replace("\n", " ")) or re.fullmatch(r"\d+", badge), f"the badge reads {badge!r}"
    items = driver.find_elements(By.CSS_SELECTOR, "article.item")
    assert any("AAPL" in item.text for item in items), "the filled order is not among the notifications"
    driver.find_element(By.CSS_SELECTOR, "#read-all button[type=submit]").click()
    wait(driver, lambda d: "Nothing unread" in text_of(d, "#unread-summary"), message="mark all as read did not show")
    assert not driver.find_elements(By.CSS_SELECTOR, "nav[aria-label=Main] a[href='/notifications'] .badge"), "the badge stayed"
    assert not driver.find_elements(By.CSS_SELECTOR, "article.item.unread")
    no_csp_violations(driver)


@check("a mail's unsubscribe link: the page asks first, its button stops that kind of mail, and Settings shows it off")
def unsubscribe(driver):
    link = None
    for _ in range(40):
        text = subprocess.run([BINARY, "outbox", "--env", "development"], env=dict(os.environ, DATA_DIR=DATA_DIR),
                              capture_output=True, text=True, check=True).stdout
        blocks = [block for block in text.split("--- ")[1:] if f"to: {EMAIL}" in block]
        found = [re.search(r"(https?://\S+/unsubscribe\?token=[\w.-]+)", block) for block in blocks]
        found = [match.group(1) for match in found if match]
        if found:
            link = found[0]
            break
        time.sleep(0.5)
    assert link, f"no mail to {EMAIL} with an unsubscribe link in the outbox"
    category = link.split("token=")[1].split(".")[1]
    open_page(driver, "/unsubscribe?token=" + link.split("token=")[1], "unsubscribe")
    heading = driver.find_element(By.TAG_NAME, "h1").text
    assert heading.startswith("Stop ") and heading.endswith(" email?"), f"the page asks {heading!r}"
    before = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait(driver, replaced(before))
    done = visible(driver, "h1").text
    assert done.startswith("No more ") and done.endswith(" email"), f"after the button the page says {done!r}"
    no_csp_violations(driver)
    open_page(driver, "/settings")
    assert not driver.find_element(By.ID, f"pref-{category}").is_selected(), f"{category} mail is still on in Settings"
    assert driver.find_element(By.ID, "pref-security").is_selected()


def count_orders(driver):
    driver.get(BASE + "/orders")
    return len([row for row in driver.find_elements(By.CSS_SELECTOR, "#order-history tbody tr, #open-orders tbody tr") if "AAPL" in row.text])


@check("email preferences saved in place; two-factor enrolment, then signing in with a code; new recovery codes")
def two_factor(driver):
    open_page(driver, "/settings", "settings")
    # Email preferences with the script: saved in place, and kept on the next visit.
    driver.find_element(By.ID, "pref-drift").click()
    driver.find_element(By.XPATH, "//button[normalize-space()='Save preferences']").click()
    visible(driver, "#saved")
    open_page(driver, "/settings", "settings")
    assert not driver.find_element(By.ID, "pref-drift").is_selected(), "the unticked drift box came back ticked"
    driver.find_element(By.CSS_SELECTOR, "#enrol button").click()
    secret = visible(driver, "#totp-secret").text
    uri = driver.find_element(By.ID, "totp-uri").get_attribute("href")
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri, f"otpauth URI {uri}"
    qr = driver.find_element(By.CSS_SELECTOR, "#totp-qr svg")
    assert qr.size["width"] >= 150 and len(qr.find_element(By.TAG_NAME, "path").get_attribute("d")) > 500, "no QR code to scan"
    fill(driver, "#confirm-password", PASSWORD)
    fill(driver, "#confirm-code", totp(secret))
    driver.find_element(By.CSS_SELECTOR, "#confirm-enrolment button").click()
    codes = visible(driver, "#recovery").find_elements(By.CSS_SELECTOR, "#recovery-codes li")
    assert len(codes) >= 8, f"{len(codes)} recovery codes shown"
    recovery = [item.text for item in codes]
    assert driver.find_element(By.ID, "two-factor-state").text.startswith("On"), "the page still says two-factor is off"
    assert len(driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")) == 1, "sessions just ended still listed"
    sign_out(driver)
    # A code is accepted once: wait for the next period before signing in with one.
    time.sleep(30 - time.time() % 30 + 1)
    open_page(driver, "/signin", "signin")
    fill(driver, "#email", EMAIL)
    fill(driver, "#password", PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    code = visible(driver, "#totp_code")
    assert visible(driver, "#totp_code-error").text, "the second step did not say why it is asked for"
    code.send_keys(totp(secret))
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, EC.url_to_be(BASE + "/"))
    visible(driver, "#total-value")
    # New recovery codes, made with one of the old ones: shown where the form was, the count gone with the old codes.
    open_page(driver, "/settings", "settings")
    assert visible(driver, "#recovery-left").text == "10 recovery codes are left."
    driver.find_element(By.XPATH, "//summary[normalize-space()='Make new recovery codes']").click()
    fill(driver, "#codes-password", PASSWORD)
    driver.find_element(By.XPATH, "//form[@id='replace-recovery']//summary").click()
    fill(driver, "#codes-recovery", recovery[0])
    driver.find_element(By.CSS_SELECTOR, "#replace-recovery button[type=submit]").click()
    fresh = [item.text for item in visible(driver, "#new-recovery").find_elements(By.CSS_SELECTOR, "#new-recovery-codes li")]
    assert len(fresh) == 10 and not set(fresh) & set(recovery), f"new codes {fresh}"
    assert not driver.find_element(By.ID, "recovery-left").is_displayed(), "the old count stayed on screen"


def sign_out(driver):
    driver.get(BASE + "/")
    driver.find_element(By.CSS_SELECTOR, ".signout button").click()
    wait(driver, EC.url_contains("/signin"))


@check("sign out ends the session, also from a page older than the session (signed out and in again in another tab)")
def sign_out_check(driver):
    driver.get(BASE + "/orders")
    # The page's token is not the session's any more: sign-out still ends the session the browser holds.
    driver.execute_script("document.querySelector('meta[name=\"csrf-token\"]').content = 'a-token-of-an-older-session'")
    driver.find_element(By.CSS_SELECTOR, ".signout button").click()
    wait(driver, EC.url_contains("/signin"))
    assert "You are signed out." in visible(driver, "#confirmation").text
    driver.get(BASE + "/orders")
    wait(driver, EC.url_contains("/signin?next="))
    status = driver.execute_script("return fetch('/api/portfolio').then(r => r.status)")
    assert status == 401, f"the API answered {status} after signing out"


@check("the administrator's page, and each page's screenshots")
def admin_pages(driver):
    driver.get(BASE + "/signin")
    fill(driver, "#email", os.environ["FOLIO_ADMIN_EMAIL"])
    fill(driver, "#password", os.environ["FOLIO_ADMIN_PASSWORD"])
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, EC.url_to_be(BASE + "/"))
    open_page(driver, "/admin", "admin")
    assert EMAIL in driver.find_element(By.ID, "users").text
    assert driver.find_elements(By.CSS_SELECTOR, "#audit-events tbody tr"), "no audit events listed"
    sign_out(driver)
    open_page(driver, "/reset-password", "reset-password")
    open_page(driver, "/verify-email", "verify-email")


@check("without JavaScript: a refused sign-in shown on its form, sign in, a refused order shown with its field, an order placed and canceled, email preferences saved, a rebalance previewed and placed, two-factor enrolment, sign out")
def without_javascript():
    driver = browser(javascript=False)
    try:
        # A wrong password: the sign-in form again, with the reason and the address kept.
        driver.get(BASE + "/signin")
        fill(driver, "#email", os.environ["FOLIO_ADMIN_EMAIL"])
        fill(driver, "#password", "not the password, surely")
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        assert visible(driver, ".form-error").text == "The email or password is wrong."
        assert driver.find_element(By.ID, "email").get_attribute("value") == os.environ["FOLIO_ADMIN_EMAIL"]
        assert driver.find_element(By.ID, "password").get_attribute("value") == ""
        fill(driver, "#password", os.environ["FOLIO_ADMIN_PASSWORD"])
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        wait(driver, EC.url_to_be(BASE + "/"))
        assert visible(driver, "#total-value").text.startswith("$")
        driver.get(BASE + "/orders")
        fill(driver, "#symbol", "KO")
        fill(driver, "#quantity", "many")
        driver.find_element(By.CSS_SELECTOR, "#ticket button[type=submit]").click()
        error = visible(driver, ".field-errors")
        assert "Quantity must be" in error.text, f"the refusal page shows {error.text!r}"
        # Back to the ticket: the page is not cached (no-store), so the form starts empty again.
        driver.get(BASE + "/orders")
        fill(driver, "#symbol", "KO")
        fill(driver, "#quantity", "1")
        fill(driver, "#limit_price", "1.00")
        driver.find_element(By.CSS_SELECTOR, "#order_type option[value=LIMIT]").click()
        driver.find_element(By.CSS_SELECTOR, "#time_in_force option[value=GTC]").click()
        # The form comes back to the same URL: wait for the old page to go, not for the URL.
        before = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "#ticket button[type=submit]").click()
        wait(driver, replaced(before))
        wait(driver, EC.url_to_be(BASE + "/orders"))
        assert "Order placed" in visible(driver, "#confirmation").text
        row = visible(driver, "#open-orders tbody tr")
        assert "KO" in row.text, f"the open order row reads {row.text!r}"
        before = driver.find_element(By.TAG_NAME, "html")
        row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(driver, replaced(before))
        wait(driver, EC.url_to_be(BASE + "/orders"))
        history = wait(driver, EC.presence_of_element_located((By.ID, "order-history"))).text
        assert "KO" in history and "canceled" in history, f"the canceled order is not in the history: {history!r}"
        # Email preferences: untick one box and save; the page comes back with it unticked, the others as they were.
        driver.get(BASE + "/settings")
        assert driver.find_element(By.ID, "pref-cash").is_selected()
        driver.find_element(By.ID, "pref-cash").click()
        before = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.XPATH, "//button[normalize-space()='Save preferences']").click()
        wait(driver, replaced(before))
        wait(driver, EC.url_to_be(BASE + "/settings"))
        assert not driver.find_element(By.ID, "pref-cash").is_selected(), "the unticked box came back ticked"
        assert driver.find_element(By.ID, "pref-orders").is_selected() and driver.find_element(By.ID, "pref-security").is_selected()
        driver.find_element(By.ID, "pref-cash").click()
        before = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.XPATH, "//button[normalize-space()='Save preferences']").click()
        wait(driver, replaced(before))
        assert driver.find_element(By.ID, "pref-cash").is_selected(), "the ticked box came back unticked"
        assert "preferences saved" in visible(driver, "#confirmation").text, "no word that the preferences were saved"
        # Targets and a rebalance: save the weights, preview the plan on its own page, place it, and see the run.
        driver.get(BASE + "/targets")
        fill(driver, "#symbol-0", "KO")
        fill(driver, "#percent-0", "10")
        fill(driver, "#cash_percent", "90")
        before = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "#targets button[type=submit]").click()
        wait(driver, replaced(before))
        wait(driver, EC.url_to_be(BASE + "/targets"))
        before = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "#plan-form button[type=submit]").click()
        wait(driver, replaced(before))
        trades = visible(driver, "#plan-trades")
        assert "buy" in trades.text and "KO" in trades.text, f"the plan page shows {trades.text!r}"
        before = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "#execute-form button[type=submit]").click()
        wait(driver, replaced(before))
        wait(driver, EC.url_to_be(BASE + "/targets"))
        assert "Rebalance started" in visible(driver, "#confirmation").text
        assert driver.find_elements(By.CSS_SELECTOR, "#runs .run-status"), "the run is not listed after placing the plan"
        # Two-factor enrolment: the settings page shows the secret, and confirming shows the recovery codes once.
        driver.get(BASE + "/settings")
        before = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "#enrol button").click()
        wait(driver, replaced(before))
        secret = visible(driver, "#totp-secret").text
        uri = driver.find_element(By.ID, "totp-uri").get_attribute("href")
        assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri, f"otpauth URI {uri}"
        qr = driver.find_element(By.CSS_SELECTOR, ".qr svg")
        assert qr.size["width"] >= 150, "no QR code to scan"
        fill(driver, "#confirm-password", os.environ["FOLIO_ADMIN_PASSWORD"])
        fill(driver, "#confirm-code", totp(secret))
        driver.find_element(By.CSS_SELECTOR, "#confirm-enrolment button").click()
        codes = visible(driver, "#recovery").find_elements(By.CSS_SELECTOR, "#recovery-codes li")
        assert len(codes) >= 8, f"{len(codes)} recovery codes shown"
        driver.find_element(By.LINK_TEXT, "Done").click()
        wait(driver, EC.url_to_be(BASE + "/settings"))
        assert "Turn off two-factor authentication" in driver.page_source
        driver.find_element(By.CSS_SELECTOR, ".signout button").click()
        wait(driver, EC.url_contains("/signin"))
        assert "You are signed out." in visible(driver, "#confirmation").text
        driver.get(BASE + "/orders")
        wait(driver, EC.url_contains("/signin?next="))
    except Exception:
        driver.save_screenshot("/tmp/folio-browser-nojs-failure.png")
        print(f"FAIL without JavaScript at {driver.current_url}; screenshot /tmp/folio-browser-nojs-failure.png", flush=True)
        raise
    finally:
        driver.quit()


class AttackPage(http.server.BaseHTTPRequestHandler):
    """A page on another origin that tries to place an order with the visitor's Folio session."""
    def do_GET(self):
        target = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("target", [""])[0]
        body = f"""<!doctype html><title>Win a prize</title>
<form id="f" method="post" action="{target}/api/orders" enctype="text/plain" target="sink">
<input name='{{"symbol":"AAPL","quantity":"1","side":"BUY","order_type":"MARKET","x":"' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
document.getElementById('f').submit();
fetch('{target}/api/orders', {{method: 'POST', credentials: 'include', headers: {{'Content-Type': 'application/json'}},
  body: JSON.stringify({{symbol: 'AAPL', quantity: '1', side: 'BUY', order_type: 'MARKET'}})}})
  .then(r => {{ window.attackOutcome = r.status === 201 ? 'placed' : 'status ' + r.status; }})
  .catch(e => {{ window.attackOutcome = 'blocked: ' + e; }})
  .finally(() => setTimeout(() => {{ window.attackDone = true; }}, 1500));
</script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    alpaca = fake_alpaca.start(int(os.environ["FOLIO_FAKE_ALPACA_PORT"]))
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AttackPage)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    driver = browser()
    try:
        sign_up_verify_sign_in(driver)
        order_ticket(driver)
        dashboard_shows_position(driver)
        targets_and_rebalance(driver)
        linked_accounts(driver)
        transactions_csv(driver)
        local_times(driver)
        gains_csv(driver)
        cross_site_request_refused(driver, evil.server_address[1])
        alpaca_account(driver)
        paper_cash(driver)
        notional_buy(driver)
        notifications(driver)
        unsubscribe(driver)
        two_factor(driver)
        sign_out_check(driver)
        admin_pages(driver)
        without_javascript()
    except Exception:
        path = "/tmp/folio-browser-failure.png"
        driver.save_screenshot(path)
        print(f"FAIL at {driver.current_url}; screenshot {path}", flush=True)
        raise
    finally:
        driver.quit()
        evil.shutdown()
        alpaca.shutdown()
    print(f"browser tests: {len(passed)} passed")


if __name__ == "__main__":
    main()
