/* memory.c-liar: says it was built against plugin API 2.0.
 * world: memory-strategy */
#include "faults.h"

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) { info(ret, "memory.c-liar", 2); }

bool exports_nas_plugin_memory_select(exports_nas_plugin_memory_memory_input_t *input,
                                      exports_nas_plugin_memory_memory_selection_t *ret,
                                      exports_nas_plugin_memory_plugin_error_t *err) {
    (void)err;
    return nothing(input, ret);
}
