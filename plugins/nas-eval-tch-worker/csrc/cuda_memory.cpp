// The CUDA caching allocator's statistics for the worker (the trainee's own
// allocations, as torch.cuda.max_memory_allocated reports them), compiled
// against the headers of the libtorch the worker links. Each call catches
// every C++ exception and answers -1 (no CUDA allocator, no device).
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
