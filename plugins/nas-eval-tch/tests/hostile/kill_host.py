# Tries to kill the process that started it (the host).
import os
import signal

os.kill(os.getppid(), signal.SIGKILL)
