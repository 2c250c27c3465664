# Writes through every descriptor it inherited, looking for a file outside the
# sandbox that the parent left open.
import os

wrote = []
for fd in range(3, 1024):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = "?"
    try:
        os.write(fd, b"pwned\n")
        wrote.append(f"{fd}->{target}")
    except OSError:
        pass
raise RuntimeError(f"wrote through: {', '.join(wrote) or 'none'}")
