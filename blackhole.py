import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 8275)); s.listen(0)
fill = []
for i in range(5):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(('127.0.0.1', 8275))
    except BlockingIOError: pass
    fill.append(c)
time.sleep(3600)
