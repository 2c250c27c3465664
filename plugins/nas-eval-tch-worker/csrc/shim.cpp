// What the worker needs from libtorch that tch does not offer, compiled
// against the headers of the libtorch the worker links: the CUDA caching
// allocator's statistics (the trainee's own allocations, as
// torch.cuda.max_memory_allocated reports them), bfloat16 autocast and
// deterministic algorithms with a record of the operations that have none.
// Each call catches every C++ exception and answers -1 (no CUDA allocator,
// no device).
#include <ATen/Context.h>
#include <algorithm>
#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/util/Exception.h>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

constexpr size_t kAggregate = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);

// Resets the peak statistics of `device`; answers the bytes allocated now.
extern "C" int64_t nas_cuda_reset_peak(int device) {
  try {
    auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    auto index = static_cast<c10::DeviceIndex>(device);
    allocator->resetPeakStats(index);
    return allocator->getDeviceStats(index).allocated_bytes[kAggregate].current;
  } catch (...) {
    return -1;
  }
}

// The peak bytes allocated on `device` since the last reset.
extern "C" int64_t nas_cuda_peak_allocated(int device) {
  try {
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return stats.allocated_bytes[kAggregate].peak;
  } catch (...) {
    return -1;
  }
}

// Turns bfloat16 autocast on (1) or off (0) for `device_type` (0: CPU,
// 1: CUDA) on the calling thread, as torch.autocast(dtype=torch.bfloat16)
// does on entry and exit.
extern "C" int64_t nas_autocast_bf16(int device_type, int enabled) {
  try {
    auto type = device_type == 1 ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
    if (enabled) {
      at::autocast::set_autocast_dtype(type, at::kBFloat16);
      at::autocast::set_autocast_enabled(type, true);
      at::autocast::increment_nesting();
    } else {
      at::autocast::set_autocast_enabled(type, false);
      if (at::autocast::decrement_nesting() == 0) {
        at::autocast::clear_cache();
      }
    }
    return 0;
  } catch (...) {
    return -1;
  }
}

// Deterministic algorithms on (1) or off (0), as
// torch.use_deterministic_algorithms(mode, warn_only=True) and
// torch.backends.cudnn.deterministic = mode do: where an operation has a
// deterministic implementation it is used; one that has none runs as before
// and says so through a warning (recorded below), instead of failing the
// candidate. Answers 0, or -1.
extern "C" int64_t nas_set_deterministic(int on) {
  try {
    at::globalContext().setDeterministicAlgorithms(on != 0, /*warn_only=*/true);
    at::globalContext().setDeterministicCuDNN(on != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Whether deterministic algorithms are on (1, 0), or -1.
extern "C" int64_t nas_deterministic() {
  try {
    return at::globalContext().deterministicAlgorithms() ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

namespace {
// Collects the operations that warn "X does not have a deterministic
// implementation" (once each) and passes every other warning on to the
// handler it replaced. The autograd engine replays its threads' warnings on
// the thread that called backward, so one handler on the training thread
// sees the backward passes' as well.
class NondeterministicOps : public c10::WarningHandler {
 public:
  void process(const c10::Warning& warning) override {
    const std::string& msg = warning.msg();
    auto at = msg.find(" does not have a deterministic implementation");
    if (at == std::string::npos) {
      if (previous != nullptr && previous != this) previous->process(warning);
      return;
    }
    std::lock_guard<std::mutex> lock(mutex);
    ops.insert(msg.substr(0, at));
  }
  c10::WarningHandler* previous = nullptr;
  std::mutex mutex;
  std::set<std::string> ops;
};

NondeterministicOps& recorder() {
  static NondeterministicOps* r = new NondeterministicOps();
  return *r;
}
}  // namespace

// Starts recording, on the calling thread, the operations that run without
// a deterministic implementation; forgets those recorded before.
extern "C" int64_t nas_nondeterministic_begin() {
  try {
    auto& r = recorder();
    {
      std::lock_guard<std::mutex> lock(r.mutex);
      r.ops.clear();
    }
    auto* current = c10::WarningUtils::get_warning_handler();
    if (current != &r) {
      r.previous = current;
      c10::WarningUtils::set_warning_handler(&r);
    }
    return 0;
  } catch (...) {
    return -1;
  }
}

// Stops recording on the calling thread and writes the operations recorded
// since nas_nondeterministic_begin, one per line, into `buf` (at most `cap`
// bytes, not terminated); answers the bytes the whole list takes (more than
// `cap`: it was cut), or -1.
extern "C" int64_t nas_nondeterministic_end(char* buf, int64_t cap) {
  try {
    auto& r = recorder();
    if (c10::WarningUtils::get_warning_handler() == &r) {
      c10::WarningUtils::set_warning_handler(r.previous);
    }
    std::string all;
    {
      std::lock_guard<std::mutex> lock(r.mutex);
      for (const auto& op : r.ops) {
        all += op;
        all += '\n';
      }
      r.ops.clear();
    }
    if (buf != nullptr && cap > 0) {
      std::memcpy(buf, all.data(), std::min<size_t>(all.size(), static_cast<size_t>(cap)));
    }
    return static_cast<int64_t>(all.size());
  } catch (...) {
    return -1;
  }
}
