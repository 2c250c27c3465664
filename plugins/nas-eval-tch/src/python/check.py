"""Check and export one candidate network (the sandboxed child of eval.tch-one-epoch).

Usage: python check.py REQUEST.json

Reads the request (paths and the task), imports the candidate file (with
`torch`, `nn`, `F` and `Tensor` already defined, as the paper's contract has
it), checks the code contract, runs a forward and backward pass on a dummy batch, and exports
the network to TorchScript at the request's `model_path`. Writes one JSON
line on descriptor 3:

  {"ok": true, "contract": ..., "export": "script"|"trace", ...}
  {"ok": false, "stage": ..., "kind": ..., "message": ..., "exception": ..., "traceback": ...}

The candidate's code runs in this process, so nothing here is trusted by the
evaluator: the verdict is only a gate (a candidate can fail itself, never
pass itself), and what is measured (parameters, FLOPs, accuracy) is measured
afterwards by processes that run only the exported TorchScript.
"""

import copy
import ctypes
import errno
import hashlib
import importlib.util
import inspect
import json
import os
import sys
import traceback
import warnings

REQUEST = json.load(open(sys.argv[1]))
_written = False


def write(obj):
    global _written
    if _written:
        return
    _written = True
    os.write(3, (json.dumps(obj) + "\n").encode())


def tail(tb, limit=4000):
    return tb[-limit:]


SANDBOX_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENETUNREACH, errno.EROFS, errno.EHOSTUNREACH}


def fail(stage, kind, message, exc=None):
    tb = traceback.format_exc() if exc is not None else ""
    ename = type(exc).__name__ if exc is not None else None
    if exc is not None:
        if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
            kind = "out_of_memory"
        elif isinstance(exc, OSError) and exc.errno in SANDBOX_ERRNOS:
            kind = "sandbox"
        elif isinstance(exc, BlockingIOError) or (isinstance(exc, OSError) and exc.errno == errno.EAGAIN):
            kind = "sandbox"
    # Keep only the candidate's frames and the error for the Improver.
    write({"ok": False, "stage": stage, "kind": kind, "message": message[:2000], "exception": ename, "traceback": tail(tb)})
    sys.exit(0)


def first_line(exc):
    s = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {s[0] if s else ''}".strip()


warnings.filterwarnings("ignore")

# --- compile -----------------------------------------------------------------
code_path = REQUEST["code_path"]
source = open(code_path).read()
try:
    compile(source, code_path, "exec")
except (SyntaxError, ValueError) as e:
    line = getattr(e, "lineno", None)
    fail("check", "syntax", f"{type(e).__name__}: {getattr(e, 'msg', e)}" + (f" (line {line})" if line else ""), e)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# The paper's contract: generated code may use these names without importing
# them. They are set in the module's namespace before its code runs, so the
# file is executed as written and tracebacks keep its own line numbers.
CONTRACT_NAMES = {"torch": torch, "nn": nn, "F": F, "Tensor": torch.Tensor}

torch.set_num_threads(max(1, int(REQUEST.get("threads", 1))))
seed = int(REQUEST["seed"])
C, H, W = REQUEST["in_shape"]
num_classes = int(REQUEST["num_classes"])
batch_size = int(REQUEST["batch_size"])

# --- import --------------------------------------------------------------------
torch.manual_seed(seed)
try:
    spec = importlib.util.spec_from_file_location("candidate", code_path)
    mod = importlib.util.module_from_spec(spec)
    mod.__dict__.update(CONTRACT_NAMES)
    sys.modules["candidate"] = mod
    spec.loader.exec_module(mod)
except SystemExit as e:
    fail("check", "runtime", f"the code called exit({e.code}) while being imported", e)
except BaseException as e:  # noqa: BLE001 - any exception of the candidate is its failure
    fail("check", "runtime", f"importing the code raised {first_line(e)}", e)

# --- contract ------------------------------------------------------------------
Net = getattr(mod, "Net", None)
if Net is None or not inspect.isclass(Net):
    fail("check", "contract", "the code defines no `class Net`; the contract is `class Net(nn.Module)`")
if not issubclass(Net, nn.Module):
    fail("check", "contract", "`Net` is not a subclass of torch.nn.Module")

try:
    params = [p for p in inspect.signature(Net.__init__).parameters.values()][1:]
except (TypeError, ValueError):
    params = []
positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
required = [p for p in positional if p.default is p.empty]
has_var = any(p.kind == p.VAR_POSITIONAL for p in params)

hp = getattr(mod, "supported_hyperparameters", None)
lemur = callable(hp) and (len(positional) >= 4 or has_var)
torch.manual_seed(seed)
try:
    if lemur:
        names = hp()
        defaults = {"lr": REQUEST["lr"], "momentum": REQUEST["momentum"], "dropout": 0.2, "batch": batch_size}
        prm = {n: defaults.get(n, 0.5) for n in names}
        contract = "lemur"
        model = Net((batch_size, C, H, W), (num_classes,), prm, torch.device("cpu"))
    elif len(required) == 0 and len(positional) >= 2:
        contract = "paper(in_shape, num_classes)"
        model = Net((C, H, W), num_classes)
    elif len(required) == 0:
        contract = "paper()"
        model = Net()
    elif len(required) <= 2 and len(positional) >= 2:
        contract = "paper(in_shape, num_classes)"
        model = Net((C, H, W), num_classes)
    else:
        fail(
            "check",
            "contract",
            "`Net.__init__` takes (" + ", ".join(p.name for p in params) + "); accepted: Net(), Net(in_shape, num_classes), "
            "or Net(in_shape, out_shape, prm, device) with a module-level supported_hyperparameters()",
        )
except TypeError as e:
    if "argument" in str(e):
        fail("check", "contract", f"building Net failed: {first_line(e)}", e)
    fail("check", "runtime", f"building Net raised {first_line(e)}", e)
except SystemExit as e:
    fail("check", "runtime", f"the code called exit({e.code}) while building Net", e)
except BaseException as e:  # noqa: BLE001
    fail("check", "runtime", f"building Net raised {first_line(e)}", e)

if not isinstance(model, nn.Module):
    fail("check", "contract", "Net(...) did not return a torch.nn.Module")
model = model.float().cpu()
n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
if n_params == 0:
    fail("check", "contract", "the network has no trainable parameters")

# --- forward on a dummy batch ----------------------------------------------------
state = copy.deepcopy(model.state_dict())
gen = torch.Generator().manual_seed(seed)
dummy = torch.randn(2, C, H, W, generator=gen)
try:
    model.train()
    out = model(dummy)
except SystemExit as e:
    fail("check", "runtime", f"the code called exit({e.code}) in forward", e)
except BaseException as e:  # noqa: BLE001
    fail("check", "runtime", f"the forward pass on a dummy batch of shape [2, {C}, {H}, {W}] raised {first_line(e)}", e)
if not isinstance(out, torch.Tensor):
    fail("check", "shape", f"forward returned {type(out).__name__}, not a tensor of shape [batch, {num_classes}]")
if tuple(out.shape) != (2, num_classes):
    fail("check", "shape", f"forward on a batch of shape [2, {C}, {H}, {W}] returned shape {list(out.shape)}; expected [2, {num_classes}]")
try:
    out.float().logsumexp(-1).sum().backward()
except BaseException as e:  # noqa: BLE001
    fail("check", "runtime", f"the backward pass raised {first_line(e)}", e)
# A forward that binds layers to the network (`self.conv = nn.Conv2d(...)`
# inside forward) builds new, untrained weights on every call, which an
# optimizer made before it never sees: name them.
added = [k for k in model.state_dict() if k not in state]
if added:
    layers = sorted({k.rsplit(".", 1)[0] for k in added})
    fail(
        "check",
        "runtime",
        f"forward binds layers to the network as it runs ({', '.join(layers)}): they get new weights on every "
        "call, which training never updates; build them in __init__",
    )
# The forward in train mode moved BatchNorm statistics: export the initial state.
try:
    model.load_state_dict(state)
except BaseException as e:  # noqa: BLE001
    fail("check", "runtime", f"restoring the network's initial weights after the forward pass raised {first_line(e)}", e)
model.zero_grad(set_to_none=True)


# --- the network's fingerprint -----------------------------------------------------
# Two candidates that build the same network (the same parameters and buffers,
# initialised the same at this seed, in the same order, giving the same outputs
# in evaluation and in training mode) train to the same score, whatever their
# text: the search refuses to train such a network twice. Names are left out:
# a layer renamed is the same network.
#
# The outputs are computed in float64 and rounded to float32: in
# float32 their last bits depend on the order of the sums, which changes with
# the number of threads, the CPU and whether the check runs in a fork (the
# fourth target run trained one network twice, its check once at each of two
# fingerprints). A network that does not run in float64 (a tensor of a fixed
# dtype made in forward) is taken in float32, its outputs rounded to 8
# significant bits.
def tensor_bytes(t):
    # The raw bytes at once (a storage's bytes() reads them one by one in Python).
    t = t.detach().cpu().reshape(-1).clone()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""


def outputs(net, x):
    # The outputs in evaluation mode, then in training mode (dropout drawn at the seed).
    with torch.no_grad():
        net.eval()
        first = net(x)
        net.train()
        torch.manual_seed(seed)
        second = net(x)
    return first, second


def network_fingerprint():
    # Each tensor hashed alone and the hashes sorted: the order in which
    # `__init__` registers layers does not change what trains (a batch norm
    # bound before or after the next convolution initialises the same).
    tensors = sorted(
        hashlib.sha256(f"{t.dtype}{tuple(t.shape)};".encode() + tensor_bytes(t)).digest()
        for t in model.state_dict().values()
    )
    h = hashlib.sha256(b"".join(tensors))
    try:
        # In place (a copy would hold the parameters a third time); float32
        # values come back exactly from float64, and the state is restored.
        taken = [o.float() for o in outputs(model.double(), dummy.double())]
        h.update(b"float64")
    except BaseException:  # noqa: BLE001 - taken in float32 instead
        model.float()
        model.load_state_dict(state)
        taken = [o.float().bfloat16().float() for o in outputs(model, dummy)]
        h.update(b"float32")
    model.float()
    for o in taken:
        h.update(tensor_bytes(o))
    model.load_state_dict(state)
    return h.hexdigest()[:32]


try:
    fingerprint = network_fingerprint()
except BaseException:  # noqa: BLE001 - a network that runs once but not twice is judged by training
    fingerprint = None
    model.float()
    model.load_state_dict(state)

# --- export ------------------------------------------------------------------------
MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.modules.instancenorm._InstanceNorm)
export = None
script_error = None
model.train()
try:
    scripted = torch.jit.script(model)
    export = "script"
except BaseException as e:  # noqa: BLE001
    script_error = first_line(e)
    scripted = None

if scripted is None:
    # Trace, keeping train/eval behaviour: script the mode-dependent layers
    # (BatchNorm, Dropout) first, so that the trace calls them as script
    # modules with their `training` switch intact.
    try:
        traced_model = copy.deepcopy(model)
        for name, sub in list(traced_model.named_modules()):
            for cname, child in list(sub.named_children()):
                if isinstance(child, MODE_DEPENDENT):
                    setattr(sub, cname, torch.jit.script(child))
        traced_model.train()
        scripted = torch.jit.trace(traced_model, dummy, check_trace=False)
        export = "trace"
    except BaseException as e:  # noqa: BLE001
        fail("export", "export", f"TorchScript export failed: script: {script_error}; trace: {first_line(e)}", e)

try:
    scripted.save(REQUEST["model_path"])
    loaded = torch.jit.load(REQUEST["model_path"])
    loaded.train()
    state2 = copy.deepcopy(loaded.state_dict())
    out2 = loaded(dummy)
    loaded.load_state_dict(state2)
    if tuple(out2.shape) != (2, num_classes):
        fail("export", "export", f"the exported module returns shape {list(out2.shape)}; expected [2, {num_classes}]")
except SystemExit:
    raise
except BaseException as e:  # noqa: BLE001
    fail("export", "export", f"the exported TorchScript module does not run: {first_line(e)}", e)

write({"ok": True, "contract": contract, "export": export, "script_error": script_error, "network": fingerprint})
