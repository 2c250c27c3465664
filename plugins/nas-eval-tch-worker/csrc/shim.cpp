// What the worker needs from libtorch that tch does not offer, compiled
// against the headers of the libtorch the worker links: the CUDA caching
// allocator's statistics (the trainee's own allocations, as
// torch.cuda.max_memory_allocated reports them) and bfloat16 autocast. Each
// call catches every C++ exception and answers -1 (no CUDA allocator, no
// device).
#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <cstdint>

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
