/* memory.c-hog: allocates 64 MiB per call when given any history.
 * world: memory-strategy */
#include "faults.h"

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) { info(ret, "memory.c-hog", 1); }

bool exports_nas_plugin_memory_select(exports_nas_plugin_memory_memory_input_t *input,
                                      exports_nas_plugin_memory_memory_selection_t *ret,
                                      exports_nas_plugin_memory_plugin_error_t *err) {
    (void)err;
    if (input->entries.len > 0) {
        volatile char *big = malloc(64u << 20);
        if (!big) __builtin_trap();
        big[12345] = 1;
    }
    return nothing(input, ret);
}
