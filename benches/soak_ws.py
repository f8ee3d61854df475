"""A WebSocket client for the soak harness (standard library only): upgrade on
/api/modder/hooks/ws, read frames for a while, then vanish without a close frame (as a browser tab
that is killed does). Exits 1 when the server answers the upgrade with anything but 101; a
connection closed with no answer at all (the harness killed the server) is noted, not a refusal.

    python3 benches/soak_ws.py PORT SECONDS
"""
import base64, os, socket, sys, time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
except OSError as e:
    print(f"soak_ws: cannot connect ({e}); server down or restarting", file=sys.stderr)
    sys.exit(0)
key = base64.b64encode(os.urandom(16)).decode()
try:
    s.sendall((f"GET /api/modder/hooks/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
except OSError as e:
    print(f"soak_ws: connection lost before the request was sent ({e})", file=sys.stderr)
    sys.exit(0)
head = b""
while b"\r\n\r\n" not in head:
    try:
        chunk = s.recv(4096)
    except OSError:
        chunk = b""
    if not chunk:
        break
    head += chunk
if not head:
    # No answer at all: the server was killed (the harness does that) while this client connected.
    print("soak_ws: no answer (server going down)", file=sys.stderr)
    sys.exit(0)
if not head.startswith(b"HTTP/1.1 101"):
    print("soak_ws: upgrade refused:", head.split(b"\r\n")[0].decode(errors="replace"), file=sys.stderr)
    sys.exit(1)
s.settimeout(0.2)
end = time.time() + seconds
while time.time() < end:
    try:
        if not s.recv(65536):
            break
    except socket.timeout:
        pass
s.close()
