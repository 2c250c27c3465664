# Talks to daemons outside the sandbox over unix sockets: a pathname socket
# (@PATH@) and an abstract one (@ABSTRACT@), both listened on by the test.
import socket

connected = []
for name, address in [("pathname", "@PATH@"), ("abstract", "\0@ABSTRACT@")]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(address)
        s.sendall(b"pwned")
        connected.append(name)
    except OSError:
        pass
    finally:
        s.close()
raise RuntimeError(f"connected: {', '.join(connected) or 'none'}")
