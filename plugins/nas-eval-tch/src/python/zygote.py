"""The warm checker of eval.tch-one-epoch: a sandboxed Python that imported
torch once and gives each candidate a fresh child of itself running check.py.

Usage: python -I zygote.py CONFIG.json

Started by the evaluator in the same sandbox as a cold checker (its own PID,
mount, network, IPC and UTS namespaces, nobody, no capabilities, rlimits, a
control group, Landlock), with write access to the directory that holds the
candidates' directories. It is the first process (PID 1) of its PID
namespace. No candidate code ever runs in this process.

Descriptor 0 is a unix seqpacket socket: each message is one JSON request
with two descriptors attached (the write ends of the check's output pipe and
of its answer pipe, both read by the evaluator):

  {"id": ..., "dir": CANDIDATE_DIR, "argv": [CHECK_PY, REQUEST_JSON],
   "env": {...}, "cpu_s": N, "timeout_s": S}

For each request it forks a child that, before any candidate code runs:
starts its own session; dies with this process (PR_SET_PDEATHSIG); puts
/dev/null, the output pipe (twice) and the answer pipe at descriptors 0, 1,
2, 3 and closes every other descriptor (this process's request socket and
answer channel included); sets its CPU time limit and no POSIX message
queues; moves into the candidate's directory; and restricts itself with a
second Landlock ruleset stacked on the sandbox's: read and execute below
the toolchain (the cold checker's read rules), write only below its own
candidate directory. Then it runs check.py exactly as `python -I check.py
REQUEST_JSON` would, and exits as the interpreter would.

This process waits for the child (at most `timeout_s`), then kills every
other process of its PID namespace (`kill(-1, SIGKILL)`: whatever the
candidate started, in any session), reaps them, removes System V IPC
objects, and answers on descriptor 3, a pipe the children never hold:

  {"id": ..., "status": WAIT_STATUS, "cpu_s": ..., "timeout": bool}
  {"id": ..., "setup_error": ...}        the child failed before the candidate ran

Why a child cannot reach this process: it is non-dumpable
(PR_SET_DUMPABLE 0: no ptrace, no /proc/1/mem, /proc/1/fd or environ for a
process without CAP_SYS_PTRACE) and in a nested Landlock domain (which may
not ptrace its parent's domain); as PID 1 of the namespace with default
signal dispositions, the kernel drops every signal sent to it from inside
the namespace (SIGKILL and SIGSTOP included).
"""

import ctypes
import errno
import json
import os
import resource
import select
import signal
import socket
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
# As PID 1 of its namespace, a signal sent from inside it is only delivered
# when a handler is installed: keep none (Python installs one for SIGINT).
signal.signal(signal.SIGINT, signal.SIG_DFL)

CONFIG = json.load(open(sys.argv[1]))
ANSWERS = 3


def answer(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(ANSWERS, data):]


if os.getpid() != 1:
    answer({"ready": False, "error": f"not the first process of its PID namespace (pid {os.getpid()})"})
    sys.exit(1)

# What check.py imports, imported once here (the children inherit them).
import copy  # noqa: E402,F401
import importlib.util  # noqa: E402,F401
import inspect  # noqa: E402,F401
import traceback  # noqa: E402
import warnings  # noqa: E402,F401
import runpy  # noqa: E402
import random  # noqa: E402

import torch  # noqa: E402
import torch.nn  # noqa: E402,F401
import torch.nn.functional  # noqa: E402,F401

# --- Landlock (the same constants as the evaluator's landlock.rs) ----------------
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR, TRUNCATE = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 14
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE
READ_RIGHTS = EXECUTE | READ_FILE | READ_DIR
SCOPE_ABSTRACT_UNIX_SOCKET = 1


def handled_fs(abi):
    bits = (1 << 13) - 1
    if abi >= 2:
        bits |= 1 << 13
    if abi >= 3:
        bits |= TRUNCATE
    return bits


class RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


def landlock(abi, read, write):
    """Restricts this process (and what it starts) to reading `read` and writing `write`."""
    fs = handled_fs(abi)
    attr = RulesetAttr(fs, 0b11 if abi >= 4 else 0, SCOPE_ABSTRACT_UNIX_SOCKET if abi >= 6 else 0)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = LIBC.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    for paths, rights in ((read, READ_RIGHTS), (write, fs)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = rights if os.path.isdir(path) else rights & FILE_RIGHTS
                rule = PathBeneath(allowed & fs, fd)
                if LIBC.syscall(SYS_ADD_RULE, ruleset, 1, ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
    if LIBC.syscall(SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)


# --- the child ---------------------------------------------------------------------
def child(req, out_fd, ans_fd, setup_w):
    """Sets the child up, then runs check.py; never returns."""
    try:
        os.setsid()
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        null = os.open("/dev/null", os.O_RDWR)
        # Out of the way of 0..3 first, then into place.
        moved = [os.dup(fd) for fd in (null, out_fd, out_fd, ans_fd)]
        setup_w = os.dup(setup_w)
        for i, fd in enumerate(moved):
            os.dup2(fd, i, inheritable=True)
        for fd in os.listdir("/proc/self/fd"):
            fd = int(fd)
            if fd > 3 and fd != setup_w:
                try:
                    os.close(fd)
                except OSError:
                    pass
        cpu = int(req["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
        os.chdir(req["dir"])
        for k, v in req.get("env", {}).items():
            os.environ[k] = v
        abi = CONFIG.get("landlock_abi")
        if abi:
            landlock(int(abi), CONFIG["read"], [req["dir"]] + CONFIG["write"])
        # What a fresh interpreter would have.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        random.seed()
        np_random = sys.modules.get("numpy.random")
        if np_random is not None:
            np_random.seed()
        sys.argv = list(req["argv"])
        os.write(setup_w, b"ok")
        os.close(setup_w)
    except BaseException as e:  # noqa: BLE001 - reported as the warm checker's failure, not the candidate's
        try:
            os.write(setup_w, f"{type(e).__name__}: {e}".encode()[:2000])
        finally:
            os._exit(125)
    code = 0
    try:
        runpy.run_path(req["argv"][0], run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code & 0xFF
        else:
            try:
                print(e.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001
                pass
            code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


# --- this process ----------------------------------------------------------------
def kill_the_rest():
    """Kills every other process of this PID namespace and reaps them."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            pass


def remove_sysv_ipc():
    """Removes the System V IPC objects a candidate left in this IPC namespace."""
    for kind, call in (("shm", "shmctl"), ("msg", "msgctl"), ("sem", "semctl")):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 2:
                continue
            ident = int(fields[1])
            if kind == "sem":
                LIBC.semctl(ident, 0, 0, None)
            else:
                getattr(LIBC, call)(ident, 0, None)


def serve(req, fds):
    out_fd, ans_fd = fds
    setup_r, setup_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(setup_r)
        child(req, out_fd, ans_fd, setup_w)
        os._exit(125)
    os.close(setup_w)
    os.close(out_fd)
    os.close(ans_fd)
    pidfd = os.pidfd_open(pid)
    timeout = max(0.0, float(req["timeout_s"]))
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    timed_out = not poller.poll(int(min(timeout * 1000, 2**31 - 1)))
    if timed_out:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    _, status, usage = os.wait4(pid, 0)
    kill_the_rest()
    os.close(pidfd)
    remove_sysv_ipc()
    setup = b""
    while True:
        chunk = os.read(setup_r, 4096)
        if not chunk:
            break
        setup += chunk
    os.close(setup_r)
    if setup != b"ok" and not timed_out:
        return {"id": req["id"], "setup_error": setup.decode(errors="replace") or f"wait status {status}"}
    return {"id": req["id"], "status": status, "cpu_s": usage.ru_utime + usage.ru_stime, "timeout": timed_out}


def main():
    sock = socket.socket(fileno=0)
    answer({"ready": True, "torch": torch.__version__})
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        except InterruptedError:
            continue
        if not msg:
            return
        try:
            req = json.loads(msg)
        except ValueError as e:
            for fd in fds:
                os.close(fd)
            answer({"id": None, "setup_error": f"bad request: {e}"})
            continue
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            answer({"id": req.get("id"), "setup_error": f"expected 2 descriptors, got {len(fds)}"})
            continue
        answer(serve(req, fds))


try:
    main()
except OSError as e:
    if e.errno != errno.EPIPE:
        raise
