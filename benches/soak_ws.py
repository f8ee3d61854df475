"""A WebSocket client for the soak harness (standard library only): upgrade on
/api/modder/hooks/ws, read frames for a while, then vanish without a close frame (as a browser tab
that is killed does). Exits 1 when the upgrade is refused.

    python3 benches/soak_ws.py PORT SECONDS
"""
import base64, os, socket, sys, time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /api/modder/hooks/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
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
