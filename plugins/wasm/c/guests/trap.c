/* memory.c-trap: traps (wasm `unreachable`) when asked at iteration 13,
 * selects nothing otherwise.
 * world: memory-strategy */
#include "faults.h"

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) { info(ret, "memory.c-trap", 1); }

bool exports_nas_plugin_memory_select(exports_nas_plugin_memory_memory_input_t *input,
                                      exports_nas_plugin_memory_memory_selection_t *ret,
                                      exports_nas_plugin_memory_plugin_error_t *err) {
    (void)err;
    if (input->iteration == 13) __builtin_trap();
    return nothing(input, ret);
}
