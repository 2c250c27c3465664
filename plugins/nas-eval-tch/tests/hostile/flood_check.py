# Prints about 1 GiB on stdout while being checked, then hangs: the host must
# keep only a bounded tail of it.
import sys
import time

chunk = b"flood " * 10922 + b"\n"
for _ in range(16384):
    sys.stdout.buffer.write(chunk)
sys.stdout.flush()
while True:
    time.sleep(1)
