/* memory.c-spin: loops forever when given any history.
 * world: memory-strategy */
#include "faults.h"

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) { info(ret, "memory.c-spin", 1); }

bool exports_nas_plugin_memory_select(exports_nas_plugin_memory_memory_input_t *input,
                                      exports_nas_plugin_memory_memory_selection_t *ret,
                                      exports_nas_plugin_memory_plugin_error_t *err) {
    (void)err;
    volatile uint64_t n = 0;
    while (input->entries.len > 0) n++;
    return nothing(input, ret);
}
