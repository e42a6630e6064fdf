import sys, random; sys.path.insert(0,'/tmp/helper5')
from h import *
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
ports=[int(p) for p in sys.argv[1].split(",")]
c=Client(ports[0])
clients=[]
for p in ports:
    x=Client.__new__(Client); x.base=f"http://127.0.0.1:{p}"; x.port=p; x.email=c.email; x.login(); x.acct=c.acct; clients.append(x)
q=c.quote("KO")
for rnd in range(3):
    avail=D(c.account()["available_cash"])
    per=(avail/10).quantize(D("0.01"))
    lim=(q*D("0.5")).quantize(D("0.01"))  # resting limit orders, don't fill: pure reservation race
    qty=(per/lim).quantize(D("0.000000001"))
    def go(i):
        x=clients[i%len(clients)]
        if i%5==4: return x.withdraw(str((per/2).quantize(D("0.01"))))
        return x.order(symbol="KO", quantity=str(qty), side="BUY", order_type="LIMIT", limit_price=str(lim), time_in_force="GTC", client_order_id=f"r{rnd}-{i%7}" if i%3==0 else None)
    with ThreadPoolExecutor(60) as ex: res=list(ex.map(go, range(60)))
    print(Counter((s, b.get("code") if s!=201 else b.get("type","order")) for s,b in res))
    check(c,f"round{rnd}")
# holdings oversell across processes
c.req("DELETE","/api/orders")
c.order(symbol="KO", quantity="100", side="BUY", order_type="MARKET", time_in_force="FOK"); time.sleep(2)
h=D([p for p in c.portfolio()["positions"] if p["symbol"]=="KO"][0]["available_quantity"])
def go2(i):
    x=clients[i%len(clients)]
    return x.order(symbol="KO", quantity=str((h/7).quantize(D("0.000000001"))), side="SELL", order_type="LIMIT", limit_price=str((q*2).quantize(D("0.01"))), time_in_force="GTC")
with ThreadPoolExecutor(60) as ex: res=list(ex.map(go2, range(60)))
print(Counter((s, b.get("code") if s!=201 else "ok") for s,b in res))
check(c,"oversell multi-proc")
c.req("DELETE","/api/orders"); check(c,"end")
