"""A fake Alpaca Trading API on loopback, for the browser tests.

It speaks the part of Alpaca's documented wire format that linking an account
and showing it use: the account (GET /v2/account), its positions, its orders
(none), fills (none), the clock and the calendar. Requests must carry the
keys in Alpaca's headers (APCA-API-KEY-ID, APCA-API-SECRET-KEY); others get
Alpaca's 401. Orders are not taken here: the Swift suite's FakeAlpaca covers
the order path.
"""
import datetime, http.server, json, threading, urllib.parse

KEY_ID = "PKBROWSERTEST0001"
SECRET_KEY = "browser-test-secret-0123456789abcdef"
ACCOUNT_NUMBER = "PA3BROWSER42"
CASH = "25000.00"
POSITIONS = [{"symbol": "MSFT", "qty": "4", "avg_entry_price": "310.25"}]


class FakeAlpaca(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("APCA-API-KEY-ID") != KEY_ID or self.headers.get("APCA-API-SECRET-KEY") != SECRET_KEY:
            return self.answer(401, {"code": 40110000, "message": "request is not authorized"})
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/v2/account":
            return self.answer(200, {
                "id": "0d7c8f5e-64a4-4921-8928-cadf02f92f98", "account_number": ACCOUNT_NUMBER, "status": "ACTIVE", "currency": "USD",
                "cash": CASH, "buying_power": CASH, "trading_blocked": False, "account_blocked": False, "trade_suspended_by_user": False,
                "pattern_day_trader": False, "created_at": "2026-01-05T14:00:00Z"})
        if url.path == "/v2/positions":
            return self.answer(200, [{
                "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": p["symbol"], "exchange": "NASDAQ", "asset_class": "us_equity",
                "qty": p["qty"], "side": "long", "avg_entry_price": p["avg_entry_price"], "market_value": "0", "cost_basis": "0"} for p in POSITIONS])
        if url.path in ("/v2/orders", "/v2/account/activities/FILL"):
            return self.answer(200, [])
        if url.path == "/v2/orders:by_client_order_id":
            return self.answer(404, {"code": 40410000, "message": "order not found"})
        if url.path == "/v2/clock":
            now = datetime.datetime.now(datetime.timezone.utc).isoformat()
            return self.answer(200, {"timestamp": now, "is_open": True, "next_open": now, "next_close": now})
        if url.path == "/v2/calendar":
            today = datetime.date.today()
            start = datetime.date.fromisoformat(query.get("start", [today.isoformat()])[0][:10])
            end = datetime.date.fromisoformat(query.get("end", [(today + datetime.timedelta(days=30)).isoformat()])[0][:10])
            days, day = [], start
            while day <= end:
                if day.weekday() < 5:
                    days.append({"date": day.isoformat(), "open": "09:30", "close": "16:00", "session_open": "0400",
                                 "session_close": "2000", "settlement_date": day.isoformat()})
                day += datetime.timedelta(days=1)
            return self.answer(200, days)
        return self.answer(404, {"code": 40410000, "message": "endpoint not found"})

    def log_message(self, *args):
        pass


def start(port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), FakeAlpaca)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
