# Tries what root's capabilities allow, harmlessly: a device node for the
# kernel log (and reads it), CAP_SYS_BOOT held, setting the host name (to the
# name it already has), a BPF map, realtime scheduling. Reports what worked.
import ctypes
import os
import platform
import socket
import stat

escaped = []
probes = 0

probes += 1
if os.getuid() == 0 or os.geteuid() == 0:
    escaped.append("uid 0")

probes += 1
try:
    os.mknod("kmsg", 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    fd = os.open("kmsg", os.O_RDONLY | os.O_NONBLOCK)
    line = os.read(fd, 200)
    os.close(fd)
    escaped.append(f"mknod + read /dev/kmsg ({len(line)} bytes)")
except OSError:
    pass

probes += 1
with open("/proc/self/status") as f:
    caps = {l.split(":")[0]: int(l.split()[1], 16) for l in f if l.startswith("Cap")}
if caps.get("CapEff", 0) & (1 << 22):
    escaped.append("CAP_SYS_BOOT")
if caps.get("CapEff", 0):
    escaped.append(f"capabilities {caps['CapEff']:#x}")

probes += 1
try:
    socket.sethostname(socket.gethostname())
    escaped.append("sethostname")
except OSError:
    pass

probes += 1
libc = ctypes.CDLL(None, use_errno=True)
nr_bpf = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
if nr_bpf is not None:
    attr = (ctypes.c_uint32 * 32)()
    attr[0], attr[1], attr[2], attr[3] = 2, 4, 4, 1  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
    fd = libc.syscall(nr_bpf, 0, ctypes.byref(attr), ctypes.sizeof(attr))  # BPF_MAP_CREATE
    if fd >= 0:
        os.close(fd)
        escaped.append("bpf map")

probes += 1
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    escaped.append("SCHED_FIFO")
except OSError:
    pass

raise RuntimeError(f"probes: {probes}; escaped: {', '.join(escaped) or 'none'}")
