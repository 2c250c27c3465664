# Leaves a grandchild in its own session, then hangs; both must die with the
# host, however the host ends.
import os
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            time.sleep(1)
    os._exit(0)
while True:
    time.sleep(1)
