#!/usr/bin/env python3
"""Folio's benchmark harness: runs each scenario against SQLite and PostgreSQL
with wrk, pgbench and folio-bench, and prints one Markdown table plus the
ratios. Started by Benchmarks/run, which builds the release binaries and
starts PostgreSQL first. Standard library only."""

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PASSWORD = "correct horse battery staple"
SYMBOLS = ["AAPL", "MSFT", "KO", "T", "SPY"]
# Twenty positions for the portfolio read.
PORTFOLIO_SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "JNJ",
                     "WMT", "PG", "MA", "HD", "KO", "PEP", "DIS", "NFLX", "INTC", "CSCO"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Server:
    """One `folio serve` (or the bare router) on a free port; tracks its peak memory."""

    def __init__(self, command, env, name):
        self.port = free_port()
        self.name = name
        self.output = tempfile.NamedTemporaryFile(prefix=f"folio-bench-{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command + [str(self.port)] if command[-1] == "bare-router" else command + ["--port", str(self.port)],
                                        env=env, stdout=self.output, stderr=subprocess.STDOUT, cwd=env.get("BENCH_WORKDIR", ROOT))
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise SystemExit(f"{name} did not start; see {self.output.name}")

    def peak_memory_mib(self):
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def call(url, method="GET", body=None, token=None, expect=(200, 201)):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        payload, status = error.read(), error.code
    if status not in expect:
        raise SystemExit(f"seeding: {method} {url} answered {status}: {payload[:300]!r}")
    return json.loads(payload) if payload else {}


def user(server, email):
    call(server.url + "/api/auth/register", "POST", {"email": email, "password": PASSWORD}, expect=(201, 200, 202))
    return call(server.url + "/api/auth/login", "POST", {"email": email, "password": PASSWORD})["access_token"]


def parallel(function, items, workers=8):
    results = [None] * len(items)

    def run(index_range):
        for index in index_range:
            results[index] = function(items[index])
    threads = [threading.Thread(target=run, args=(range(start, len(items), workers),)) for start in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class Database:
    """Counts orders by status straight from the database, for fills per second."""

    def __init__(self, kind, location):
        self.kind, self.location = kind, location

    def open_orders(self):
        return self.count("status IN ('new', 'accepted', 'partially_filled')")

    def filled(self):
        return self.count("status = 'filled'")

    def pending_work(self):
        """Order submissions and mails still queued or running: every fill queues a mail."""
        return self.count("kind IN ('submit_order', 'send_mail') AND status IN ('queued', 'running')", table="jobs")

    def count(self, where, table="orders"):
        query = f"SELECT count(*) FROM {table} WHERE {where}"
        if self.kind == "sqlite":
            with sqlite3.connect(self.location) as connection:
                return connection.execute(query).fetchone()[0]
        out = subprocess.run(["psql", self.location, "-Atc", query], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())


def wait_until_idle(database, timeout):
    """Waits for the job queue's order and mail work to drain; returns the seconds waited."""
    started = time.time()
    while time.time() - started < timeout and database.pending_work() > 0:
        time.sleep(0.5)
    return time.time() - started


def wait_for_fills(database, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if database.open_orders() == 0:
            return True
        time.sleep(0.2)
    return False


WRK_SUMMARY = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")


def seconds(value, unit):
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[unit]


def latency_ms(text):
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return seconds(*match.groups()) * 1000 if match else None


def wrk(url, connections, duration, script=None, env_extra=None, threads=2):
    env = dict(os.environ, **(env_extra or {}))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script:
        command += ["-s", os.path.join(HERE, "wrk", script)]
    out = subprocess.run(command + [url], capture_output=True, text=True, env=env)
    text = out.stdout + out.stderr
    result = {"rps": None, "p50": None, "p99": None, "requests": 0, "errors": 0, "raw": text}
    if match := re.search(r"Requests/sec:\s+([\d.]+)", text):
        result["rps"] = float(match.group(1))
    if match := WRK_SUMMARY.search(text):
        result["requests"] = int(match.group(1))
    if match := re.search(r"^\s+50%\s+(\S+)", text, re.M):
        result["p50"] = latency_ms(match.group(1))
    if match := re.search(r"^\s+99%\s+(\S+)", text, re.M):
        result["p99"] = latency_ms(match.group(1))
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        result["errors"] += int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        result["errors"] += sum(int(group) for group in match.groups())
    if out.returncode != 0 or result["rps"] is None:
        result["errors"] += 1
        log(f"wrk failed: {text[-500:]}")
    return result


def probe(port, duration):
    """GET /health on one keep-alive connection every 10 ms; latency percentiles."""
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, errors = [], 0
    deadline = time.time() + duration
    while time.time() < deadline:
        started = time.perf_counter()
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    latencies.sort()

    def percentile(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else None
    return {"rps": len(latencies) / duration, "p50": percentile(0.5), "p99": percentile(0.99), "errors": errors, "requests": len(latencies)}


class Harness:
    def __init__(self, quick, postgres_url):
        self.quick = quick
        self.duration = 3 if quick else 15
        self.postgres_url = postgres_url
        self.rows = []
        self.ratios = []
        self.bin = os.path.join(ROOT, ".build", "release")

    def row(self, database, scenario, connections, result, note="", memory=None):
        failed = result.get("errors", 0) > 0
        self.rows.append({
            "database": database, "scenario": scenario, "connections": connections,
            "rps": result.get("rps"), "p50": result.get("p50"), "p99": result.get("p99"),
            "errors": result.get("errors", 0), "memory": memory, "note": ("FAILED " if failed else "") + note,
        })
        log(f"{database} {scenario}: {result.get('rps')} req/s, p99 {result.get('p99')} ms, errors {result.get('errors', 0)} {note}")

    def server_env(self, kind, workdir):
        env = dict(os.environ)
        for key in list(env):
            if key.startswith(("FOLIO_", "DATABASE_")):
                env.pop(key)
        env.update({
            "ENVIRONMENT": "development", "LOG_LEVEL": "info", "BENCH_WORKDIR": workdir,
            "SECRET_KEY": os.urandom(32).hex(), "REQUIRE_EMAIL_VERIFICATION": "false",
            "RATE_LIMIT_ENABLED": "false", "STARTING_CASH": "1000000000.00", "BCRYPT_COST": "12",
            "DATABASE_POOL_SIZE": "20", "PAPER_MARKET_HOURS": "false",
        })
        if kind == "postgres":
            env["DATABASE_URL"] = self.postgres_url
        return env

    def run_database(self, kind):
        workdir = tempfile.mkdtemp(prefix=f"folio-bench-{kind}-")
        env = self.server_env(kind, workdir)
        if kind == "postgres":
            subprocess.run(["psql", self.admin_url(), "-qc", "DROP DATABASE IF EXISTS folio_bench"], check=True, capture_output=True)
            subprocess.run(["psql", self.admin_url(), "-qc", "CREATE DATABASE folio_bench"], check=True, capture_output=True)
            database = Database("postgres", self.postgres_url)
        else:
            database = Database("sqlite", os.path.join(workdir, "var", "folio.sqlite"))
        subprocess.run([os.path.join(self.bin, "folio"), "migrate"], env=env, cwd=workdir, check=True, capture_output=True)
        server = Server([os.path.join(self.bin, "folio"), "serve"], env, f"folio-{kind}")
        try:
            seed = self.seed(server)
            # 1. Static ceiling through the whole middleware stack.
            self.row(kind, "GET /health (full middleware)", 64, wrk(server.url + "/health", 64, self.duration), memory=server.peak_memory_mib())
            # 2. Portfolio read, 20 positions, quotes cached.
            portfolio = wrk(server.url + "/api/portfolio", 64, self.duration, "authed-get.lua", {"BENCH_TOKENS": seed["portfolio"]})
            self.row(kind, "GET /api/portfolio (20 positions)", 64, portfolio, memory=server.peak_memory_mib())
            self.results[(kind, "portfolio")] = portfolio
            # 2b. The web app's dashboard for the same 20 positions, one request at a time: its server time.
            dashboard = wrk(server.url + "/", 1, self.duration, "authed-get.lua", {"BENCH_TOKENS": seed["portfolio"]}, threads=1)
            self.row(kind, "GET / dashboard page (20 positions), one at a time", 1, dashboard, "server time", memory=server.peak_memory_mib())
            self.results[(kind, "dashboard")] = dashboard
            # 3 and 4. Orders from one account, then from 64.
            for label, tokens, connections in (("one account", [seed["trader"]], 32), (f"{len(seed['traders'])} accounts", seed["traders"], 64)):
                filled_before = database.filled()
                started = time.time()
                result = wrk(server.url + "/api/orders", connections, self.duration, "orders.lua", {"BENCH_TOKENS": ",".join(tokens)})
                # Orders still open the moment the load stops: a backlog that grew during the run.
                backlog = database.open_orders()
                drained = wait_for_fills(database, timeout=300)
                elapsed = time.time() - started
                fills = database.filled() - filled_before
                accepted = result["requests"] - result["errors"]
                note = f"{fills / elapsed:.0f} fills/s; {accepted} accepted, {fills} filled; {backlog} open when the load stopped"
                if not drained:
                    result["errors"] += 1
                    note += "; orders still open after 300 s"
                self.row(kind, f"POST /api/orders ({label})", connections, result, note, memory=server.peak_memory_mib())
                self.results[(kind, "orders one account" if label == "one account" else "orders many accounts")] = dict(
                    result, fills_per_second=fills / elapsed, accepted_per_second=accepted / self.duration, backlog=backlog)
            # 5. Login storm at bcrypt cost 12, and /health meanwhile: a gentle
            # probe (one request every 10 ms), so that it measures the event
            # loops' responsiveness without taking CPU from bcrypt. The orders
            # above queued a mail per fill, which the worker sends for a minute
            # or more: the storm waits for that to drain, and bcrypt alone is
            # measured right before it, since the machine's speed drifts over a run.
            mail_wait = wait_until_idle(database, timeout=300)
            self.bcrypt_rates[kind] = self.bcrypt_alone()
            health_during = {}
            prober = threading.Thread(target=lambda: health_during.update(probe(server.port, self.duration)))
            prober.start()
            login = wrk(server.url + "/api/auth/login", 16, self.duration, "login.lua", {"BENCH_LOGIN_USERS": str(len(seed["logins"]))})
            prober.join()
            self.row(kind, "POST /api/auth/login (bcrypt 12)", 16, login,
                     f"after {mail_wait:.0f} s waiting for the fills' mail; bcrypt alone just before: {self.bcrypt_rates[kind]:.2f}/s",
                     memory=server.peak_memory_mib())
            self.row(kind, "GET /health during the login storm (1 every 10 ms)", 1, health_during)
            self.results[(kind, "login")] = login
            self.results[(kind, "health during login")] = health_during
            # 6. Request metrics on and off, each on a fresh server over the same data, in the order
            #    off, on, on, off: a machine that warms up or slows down during the runs favours neither side.
            server.stop()
            for round_, order in ((1, ("off", "on")), (2, ("on", "off"))):
                for metrics in order:
                    fresh = Server([os.path.join(self.bin, "folio"), "serve"], dict(env, METRICS_ENABLED="true" if metrics == "on" else "false"),
                                   f"folio-{kind}-metrics-{metrics}-{round_}")
                    try:
                        health = wrk(fresh.url + "/health", 64, self.duration)
                        self.row(kind, f"GET /health (metrics {metrics}, round {round_})", 64, health, memory=fresh.peak_memory_mib())
                        read = wrk(fresh.url + "/api/portfolio", 64, self.duration, "authed-get.lua", {"BENCH_TOKENS": seed["portfolio"]})
                        self.row(kind, f"GET /api/portfolio (metrics {metrics}, round {round_})", 64, read, memory=fresh.peak_memory_mib())
                    finally:
                        fresh.stop()
                    for key, result in (("health", health), ("portfolio", read)):
                        self.results.setdefault((kind, f"{key} metrics {metrics}"), {"runs": []})["runs"].append(result["rps"])
            return seed
        finally:
            server.stop()

    def admin_url(self):
        return re.sub(r"/[^/?]+(\?|$)", r"/postgres\1", self.postgres_url, count=1) if self.postgres_url else None

    def seed(self, server):
        log("seeding through the API")
        portfolio = user(server, "bench-portfolio@example.com")
        for symbol in PORTFOLIO_SYMBOLS:
            call(server.url + "/api/orders", "POST", {"symbol": symbol, "quantity": "10", "side": "BUY", "order_type": "MARKET"}, portfolio)
        # Each user costs two bcrypt hashes at cost 12: the quick run seeds fewer.
        users = 8 if self.quick else 64
        traders = parallel(lambda n: user(server, f"bench-trader-{n}@example.com"), list(range(users)))
        # Shares to sell: 100,000 of each symbol for every trader.
        for token in traders:
            for symbol in SYMBOLS:
                call(server.url + "/api/orders", "POST", {"symbol": symbol, "quantity": "100000", "side": "BUY", "order_type": "MARKET"}, token)
        # The login storm's 16 connections need 16 users at least: sign-in counts each attempt in flight as a
        # failure until it succeeds, so five at once on one account from one address lock it (docs/SECURITY.md).
        logins = parallel(lambda n: user(server, f"bench-login-{n}@example.com"), list(range(max(users, 32))))
        deadline = time.time() + 120
        while time.time() < deadline:
            positions = call(server.url + "/api/portfolio", token=portfolio).get("positions", [])
            last = call(server.url + "/api/portfolio", token=traders[-1]).get("positions", [])
            if len(positions) == len(PORTFOLIO_SYMBOLS) and len(last) == len(SYMBOLS):
                break
            time.sleep(0.5)
        else:
            raise SystemExit("seeding: orders did not fill")
        return {"portfolio": portfolio, "trader": traders[0], "traders": traders, "logins": logins}

    def bare_router(self):
        server = Server([os.path.join(self.bin, "folio-bench"), "bare-router"], dict(os.environ), "bare-router")
        try:
            result = wrk(server.url + "/health", 64, self.duration)
            self.row("none", "GET /health (bare Hummingbird router)", 64, result, memory=server.peak_memory_mib())
            self.results[("none", "bare")] = result
        finally:
            server.stop()

    def pgbench(self, script, clients, definitions):
        """Runs a pgbench script on a copy of the seeded database; returns transactions per second."""
        subprocess.run(["psql", self.admin_url(), "-qc", "DROP DATABASE IF EXISTS folio_bench_raw"], check=True, capture_output=True)
        subprocess.run(["psql", self.admin_url(), "-qc", "CREATE DATABASE folio_bench_raw TEMPLATE folio_bench"], check=True, capture_output=True)
        raw_url = re.sub(r"/folio_bench(\?|$)", r"/folio_bench_raw\1", self.postgres_url)
        command = ["pgbench", "-n", "-M", "extended", "-c", str(clients), "-j", "2", "-T", str(self.duration), "-f", os.path.join(HERE, "pgbench", script)]
        for name, value in definitions.items():
            command += ["-D", f"{name}={value}"]
        out = subprocess.run(command + [raw_url], capture_output=True, text=True)
        text = out.stdout + out.stderr
        tps = re.search(r"tps = ([\d.]+)", text)
        failed = re.search(r"number of failed transactions: (\d+)", text)
        errors = (int(failed.group(1)) if failed else 0) + (0 if out.returncode == 0 else 1)
        if out.returncode != 0:
            log(f"pgbench failed: {text[-800:]}")
        latency = re.search(r"latency average = ([\d.]+) ms", text)
        return {"rps": float(tps.group(1)) if tps else None, "p50": float(latency.group(1)) if latency else None, "p99": None, "errors": errors}

    def raw_sql(self):
        """The raw-SQL limits: the minimum statements of a portfolio read and of one fill, under pgbench."""
        def ids(email):
            return subprocess.run(["psql", self.postgres_url, "-Atc", f"""
                SELECT s.id, u.id, a.id FROM sessions s JOIN users u ON u.id = s.user_id JOIN accounts a ON a.user_id = u.id
                WHERE u.email = '{email}' ORDER BY s.created_at DESC LIMIT 1"""], capture_output=True, text=True, check=True).stdout.strip().split("|")
        reader, trader = ids("bench-portfolio@example.com"), ids("bench-trader-0@example.com")
        portfolio = self.pgbench("portfolio-minimum.sql", 64, {"session_id": reader[0], "user_id": reader[1]})
        self.row("postgres", "raw SQL: portfolio read, minimum statements (pgbench)", 64, portfolio, "identity lookup, then holdings joined with the account")
        fill = self.pgbench("fill-minimum.sql", 32, {"user_id": trader[1], "account_id": trader[2]})
        self.row("postgres", "raw SQL: one fill, minimum transaction, one account (pgbench)", 32, fill,
                 "lock, upsert holding, cash, fill, ledger row, audit row")
        self.results[("postgres", "raw portfolio")] = portfolio
        self.results[("postgres", "raw fill")] = fill

    def domain(self):
        out = subprocess.run([os.path.join(self.bin, "folio-bench"), "domain"] + (["--quick"] if self.quick else []), capture_output=True, text=True, check=True)
        self.domain_table = out.stdout

    def bcrypt_alone(self):
        """bcrypt cost 12 hashes per second on every core, with nothing else running."""
        bcrypt = subprocess.run([os.path.join(self.bin, "folio-bench"), "bcrypt", "3" if self.quick else "10"], capture_output=True, text=True, check=True)
        return float(bcrypt.stdout.strip())

    def run(self, databases):
        self.results = {}
        self.bcrypt_rates = {}
        self.domain()
        self.bare_router()
        for kind in databases:
            self.run_database(kind)
            if kind == "postgres":
                self.raw_sql()
        self.report(databases)
        return 1 if any(row["errors"] for row in self.rows) else 0

    def report(self, databases):
        def number(value, digits=0):
            return "–" if value is None else f"{value:,.{digits}f}"
        cores = os.cpu_count()
        with open("/proc/meminfo") as meminfo:
            memory = int(meminfo.readline().split()[1]) / 1024 / 1024
        print(f"## Folio benchmarks ({'quick' if self.quick else 'full'} run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
        print(f"Machine: {cores} cores, {memory:.0f} GiB memory; {self.duration} s per scenario; server built with `swift build -c release`.\n")
        print("| database | scenario | connections | requests/s | p50 ms | p99 ms | errors | peak RSS MiB | note |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in self.rows:
            print(f"| {row['database']} | {row['scenario']} | {row['connections']} | {number(row['rps'])} | {number(row['p50'], 2)} | {number(row['p99'], 2)} "
                  f"| {row['errors']} | {number(row['memory'])} | {row['note']} |")
        print("\n### Ratios (targets in parentheses)\n")
        bare = self.results.get(("none", "bare"), {}).get("rps")
        for kind in databases:
            def get(key, field="rps"):
                return self.results.get((kind, key), {}).get(field)
            full = next((row["rps"] for row in self.rows if row["database"] == kind and row["scenario"].startswith("GET /health (full")), None)
            lines = []
            if full and bare:
                lines.append(f"middleware stack ÷ bare router on GET /health: {full / bare:.0%} (≥ 80 %)")
            if kind == "postgres":
                raw_portfolio, raw_fill = get("raw portfolio"), get("raw fill")
                if get("portfolio") and raw_portfolio:
                    lines.append(f"portfolio read ÷ raw SQL minimum: {get('portfolio') / raw_portfolio:.0%} (≥ 30 %); p99 {number(get('portfolio', 'p99'), 2)} ms (< 25 ms)")
                if get("orders one account", "fills_per_second") and raw_fill:
                    lines.append(f"one-account fills/s ÷ raw SQL minimum fill: {get('orders one account', 'fills_per_second') / raw_fill:.0%} (≥ 80 %)")
            if get("dashboard", "p50") is not None:
                lines.append(f"dashboard page, 20 positions, one at a time: p50 {number(get('dashboard', 'p50'), 2)} ms (< 20 ms)")
            for key, label in (("orders one account", "one account"), ("orders many accounts", "many accounts")):
                if get(key, "accepted_per_second") and get(key, "fills_per_second"):
                    lines.append(f"{label}: accepted {get(key, 'accepted_per_second'):.0f}/s, filled {get(key, 'fills_per_second'):.0f}/s, "
                                 f"{get(key, 'backlog')} open when the load stopped (no growing backlog)")
            one, many = get("orders one account", "fills_per_second"), get("orders many accounts", "fills_per_second")
            if one and many:
                lines.append(f"fills/s, many accounts ÷ one account: {many / one:.2f}× (≥ 2×)")
            if get("login") and self.bcrypt_rates.get(kind):
                lines.append(f"logins/s ÷ bcrypt alone just before ({self.bcrypt_rates[kind]:.1f}/s on {cores} cores): {get('login') / self.bcrypt_rates[kind]:.0%} (≥ 90 %); "
                             f"GET /health p99 during the storm {number(get('health during login', 'p99'), 2)} ms (< 10 ms)")
            for key, label in (("health", "GET /health"), ("portfolio", "portfolio read")):
                on, off = get(f"{key} metrics on", "runs"), get(f"{key} metrics off", "runs")
                if on and off:
                    lines.append(f"{label} with request metrics ÷ without, mean of {len(on)} runs, off-on-on-off: "
                                 f"{statistics.mean(on) / statistics.mean(off):.0%} (≥ 95 %)")
            peaks = [row["memory"] for row in self.rows if row["database"] == kind and row["memory"] is not None]
            if peaks:
                lines.append(f"peak resident memory, highest scenario: {max(peaks):.0f} MiB (< 100 MiB)")
            for line in lines:
                print(f"- {kind}: {line}")
        print("\n### Domain micro-benchmarks\n")
        print(self.domain_table)
        failed = [row for row in self.rows if row["errors"]]
        if failed:
            print(f"**{len(failed)} scenario(s) had errors and are marked FAILED.**")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short scenarios, for a smoke run")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL"))
    parser.add_argument("--databases", default="sqlite,postgres")
    arguments = parser.parse_args()
    databases = [d for d in arguments.databases.split(",") if d]
    if "postgres" in databases and not arguments.postgres_url:
        raise SystemExit("--postgres-url (or BENCH_POSTGRES_URL) is needed for the PostgreSQL run")
    sys.exit(Harness(arguments.quick, arguments.postgres_url).run(databases))


if __name__ == "__main__":
    main()
