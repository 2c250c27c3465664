# Tries to leave something behind for the candidate checked after it by the
# same warm checker, and to reach the warm checker (its parent) itself:
# files beside its own directory and in the toolchain, torch and Python
# monkeypatched, the environment, a process left running in its own session,
# a System V shared memory segment; the parent's memory, descriptors and
# environment, and ptrace. Reports what worked and what was refused.
import ctypes
import os
import sys
import time

import torch

MARK = "@MARK@"
done, refused = [], []

parent = os.path.dirname(os.getcwd())
for target in [
    os.path.join(parent, f"planted-{MARK}"),
    os.path.join(parent, f"cand-next-{MARK}", "candidate.py"),
    f"/tmp/planted-{MARK}",
    f"/dev/shm/planted-{MARK}",
    os.path.join(os.path.dirname(torch.__file__), f"planted_{MARK}.py"),
]:
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(MARK)
        done.append(f"wrote {target}")
    except OSError as e:
        refused.append(f"write {target} ({type(e).__name__})")


def tampered(self, x):
    raise RuntimeError(f"tampered Linear {MARK}")


# Python state: this process's own copy.
torch.nn.Linear.forward = tampered
torch.TAMPERED = MARK
sys.modules["json"].TAMPERED = MARK
os.environ["NAS_TAMPERED"] = MARK
done.append("monkeypatched torch, json and the environment in its own process")

# A process left running in its own session.
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            time.sleep(0.2)
    os._exit(0)
os.waitpid(pid, 0)
done.append("left a process running")

libc = ctypes.CDLL(None, use_errno=True)
if libc.shmget(0x4E4153, 4096, 0o1666) >= 0:
    done.append("created a System V shared memory segment")
else:
    refused.append("shmget")

parent_pid = os.getppid()
for path, mode in [(f"/proc/{parent_pid}/mem", "rb+"), (f"/proc/{parent_pid}/environ", "rb"), (f"/proc/{parent_pid}/fd/3", "wb")]:
    try:
        with open(path, mode) as f:
            if "w" in mode or "+" in mode:
                f.write(b"x")
            else:
                f.read(16)
        done.append(f"opened {path}")
    except OSError as e:
        refused.append(f"open {path} ({type(e).__name__})")
if libc.ptrace(16, parent_pid, None, None) == 0:  # PTRACE_ATTACH
    done.append(f"ptrace attached to {parent_pid}")
else:
    refused.append(f"ptrace {parent_pid} (errno {ctypes.get_errno()})")

raise RuntimeError(f"parent {parent_pid}; done: {'; '.join(done)} | refused: {'; '.join(refused)}")
