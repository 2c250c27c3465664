/* data.c-copy: a dataset loader for a dataset already in the prepared
 * format: `raw_dir` holds train.safetensors and test.safetensors, which it
 * checksums and copies into the cache directory through the host's `files`
 * import (reads only in the manifest's allowed_dirs, writes only into the
 * cache directory).
 * world: dataset-loader
 *
 * Settings: raw_dir (required, absolute), name (default "c-copy"),
 * also_write (optional absolute path it also tries to write: a fault knob). */
#include "dataset_loader.h"
#include "nasjson.h"

#define ID "data.c-copy"

static char *raw_dir = NULL, *name = NULL, *also_write = NULL;

static void set(dataset_loader_string_t *s, const char *text) { s->ptr = nj_dup(text, &s->len); }

static bool fail(nas_plugin_types_plugin_error_t *err, uint8_t code, const char *msg) {
    err->code = code;
    set(&err->message, msg);
    err->retry_after_s.is_some = false;
    return false;
}

/* Turns a host file error into a plugin error, taking its message. */
static bool file_fail(nas_plugin_types_plugin_error_t *err, nas_plugin_files_file_error_t *fe) {
    err->code = fe->kind == NAS_PLUGIN_FILES_FILE_ERROR_KIND_NOT_FOUND ? NAS_PLUGIN_TYPES_ERROR_CODE_NOT_FOUND
              : fe->kind == NAS_PLUGIN_FILES_FILE_ERROR_KIND_DENIED  ? NAS_PLUGIN_TYPES_ERROR_CODE_UNAUTHORIZED
                                                                     : NAS_PLUGIN_TYPES_ERROR_CODE_IO;
    err->message = fe->message;
    err->retry_after_s.is_some = false;
    return false;
}

void exports_nas_plugin_meta_info(exports_nas_plugin_meta_plugin_info_t *ret) {
    set(&ret->id, ID);
    ret->kind = NAS_PLUGIN_TYPES_PLUGIN_KIND_DATASET;
    set(&ret->version, "0.1.0");
    ret->api_version.major = 1;
    ret->api_version.minor = 0;
    set(&ret->description, "Copies an already prepared dataset into the cache, in C.");
}

static char *cstr(const char *v, const char *e) {
    uint8_t *s;
    size_t n;
    if (!nj_string(v, e, &s, &n)) return NULL;
    char *c = malloc(n + 1);
    if (n) memcpy(c, s, n);
    c[n] = 0;
    free(s);
    return c;
}

static bool member(const char *key, size_t kl, const char *v, const char *e, void *user) {
    bool *bad = user;
    if (kl == 7 && !memcmp(key, "raw_dir", 7)) raw_dir = cstr(v, e);
    else if (kl == 4 && !memcmp(key, "name", 4)) name = cstr(v, e);
    else if (kl == 10 && !memcmp(key, "also_write", 10)) also_write = cstr(v, e);
    else { *bad = true; return false; }
    return true;
}

bool exports_nas_plugin_dataset_init(dataset_loader_string_t *settings_json, exports_nas_plugin_dataset_host_context_t *ctx,
                                     exports_nas_plugin_dataset_plugin_error_t *err) {
    bool bad = false;
    const char *p = (const char *)settings_json->ptr;
    bool ok = nj_each(p, p + settings_json->len, member, &bad);
    dataset_loader_string_free(settings_json);
    nas_plugin_types_host_context_free(ctx);
    if (bad) return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG, "[" ID "] settings: unknown field, expected `raw_dir`, `name` or `also_write`");
    if (!ok || !raw_dir || raw_dir[0] != '/')
        return fail(err, NAS_PLUGIN_TYPES_ERROR_CODE_INVALID_CONFIG, "[" ID "] settings: `raw_dir` (an absolute path) is required");
    if (!name) name = strdup("c-copy");
    return true;
}

static const char *files[] = {"train.safetensors", "test.safetensors"};

static dataset_loader_string_t path_of(const char *dir, const char *file) {
    size_t dl = strlen(dir), fl = strlen(file);
    char *s = malloc(dl + fl + 2);
    memcpy(s, dir, dl);
    s[dl] = '/';
    memcpy(s + dl + 1, file, fl + 1);
    return (dataset_loader_string_t){(uint8_t *)s, dl + fl + 1};
}

bool exports_nas_plugin_dataset_describe(exports_nas_plugin_dataset_dataset_description_t *ret,
                                         exports_nas_plugin_dataset_plugin_error_t *err) {
    memset(ret, 0, sizeof *ret);
    nas_plugin_files_file_error_t fe;
    nas_plugin_types_source_file_t *src = calloc(2, sizeof *src);
    for (int i = 0; i < 2; i++) {
        dataset_loader_string_t path = path_of(raw_dir, files[i]);
        uint64_t size;
        dataset_loader_string_t sha;
        if (!nas_plugin_files_size(&path, &size, &fe) || !nas_plugin_files_sha256(&path, &sha, &fe)) {
            dataset_loader_string_free(&path);
            for (int j = 0; j < i; j++) nas_plugin_types_source_file_free(&src[j]);
            free(src);
            return file_fail(err, &fe);
        }
        dataset_loader_string_free(&path);
        set(&src[i].name, files[i]);
        src[i].sha256.is_some = true;
        src[i].sha256.val = sha;
        src[i].size.is_some = true;
        src[i].size.val = size;
        src[i].required = true;
    }
    set(&ret->name, name);
    set(&ret->title, "An already prepared dataset, copied");
    set(&ret->raw_dir, raw_dir);
    ret->sources.ptr = src;
    ret->sources.len = 2;
    return true;
}

bool exports_nas_plugin_dataset_prepare(exports_nas_plugin_dataset_prepare_request_t *req,
                                        exports_nas_plugin_dataset_dataset_manifest_t *ret,
                                        exports_nas_plugin_dataset_plugin_error_t *err) {
    char *cache = malloc(req->cache_dir.len + 1);
    memcpy(cache, req->cache_dir.ptr, req->cache_dir.len);
    cache[req->cache_dir.len] = 0;
    nas_plugin_types_prepare_request_free(req);
    nas_plugin_files_file_error_t fe;
    if (also_write) {
        dataset_loader_string_t p = {(uint8_t *)also_write, strlen(also_write)};
        dataset_loader_list_u8_t d = {(uint8_t *)"x", 1};
        if (!nas_plugin_files_append(&p, &d, &fe)) { free(cache); return file_fail(err, &fe); }
    }
    nas_plugin_types_split_manifest_t *splits = calloc(2, sizeof *splits);
    for (int i = 0; i < 2; i++) {
        dataset_loader_string_t from = path_of(raw_dir, files[i]), to = path_of(cache, files[i]);
        uint64_t off = 0;
        for (;;) {
            dataset_loader_list_u8_t chunk;
            if (!nas_plugin_files_read(&from, off, 1u << 20, &chunk, &fe)) { free(cache); return file_fail(err, &fe); }
            size_t n = chunk.len;
            bool okw = n == 0 || nas_plugin_files_append(&to, &chunk, &fe);
            dataset_loader_list_u8_free(&chunk);
            if (!okw) { free(cache); return file_fail(err, &fe); }
            if (n < (1u << 20)) break;
            off += n;
        }
        dataset_loader_string_free(&from);
        dataset_loader_string_free(&to);
        set(&splits[i].name, i == 0 ? "train" : "test");
        set(&splits[i].file, files[i]);
        splits[i].count = 0;
    }
    free(cache);
    memset(ret, 0, sizeof *ret);
    ret->format_version = 1;
    set(&ret->name, name);
    ret->input_shape.f0 = 1;
    ret->input_shape.f1 = 28;
    ret->input_shape.f2 = 28;
    ret->num_classes = 10;
    ret->mean.ptr = malloc(sizeof(float));
    ret->mean.ptr[0] = 0.2860f;
    ret->mean.len = 1;
    ret->std.ptr = malloc(sizeof(float));
    ret->std.ptr[0] = 0.3530f;
    ret->std.len = 1;
    ret->splits.ptr = splits;
    ret->splits.len = 2;
    return true;
}
