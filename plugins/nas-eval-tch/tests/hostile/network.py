# Tries to reach the network at import time.
import socket

s = socket.create_connection(("1.1.1.1", 80), timeout=5)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
