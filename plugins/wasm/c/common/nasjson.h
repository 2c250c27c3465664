/* A very small JSON reader and writer for nas C guests (no allocation
 * beyond malloc/realloc, no I/O, so a guest needs no WASI).
 *
 * Reader: functions take [p, e) and return a pointer just after what they
 * read, or NULL on malformed input. Writer: a growable byte buffer. */
#ifndef NAS_JSON_H
#define NAS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *nj_ws(const char *p, const char *e) {
    while (p && p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static const char *nj_skip_string(const char *p, const char *e) {
    if (!p || p >= e || *p != '"') return NULL;
    for (p++; p < e; p++) {
        if (*p == '\\') { p++; continue; }
        if (*p == '"') return p + 1;
    }
    return NULL;
}

/* Skips one value. */
static const char *nj_skip(const char *p, const char *e) {
    p = nj_ws(p, e);
    if (!p || p >= e) return NULL;
    if (*p == '"') return nj_skip_string(p, e);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = nj_ws(p + 1, e);
        if (p < e && *p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                p = nj_skip_string(nj_ws(p, e), e);
                p = nj_ws(p, e);
                if (!p || p >= e || *p != ':') return NULL;
                p++;
            }
            p = nj_ws(nj_skip(p, e), e);
            if (!p || p >= e) return NULL;
            if (*p == ',') { p++; continue; }
            if (*p == close) return p + 1;
            return NULL;
        }
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') p++;
    return p > s ? p : NULL;
}

/* Calls f(key, keylen, value, user) for each member of the object at p;
 * returns false on malformed input or when f returns false. */
typedef bool (*nj_member_fn)(const char *key, size_t keylen, const char *value, const char *e, void *user);
static bool nj_each(const char *p, const char *e, nj_member_fn f, void *user) {
    p = nj_ws(p, e);
    if (!p || p >= e || *p != '{') return false;
    p = nj_ws(p + 1, e);
    if (p < e && *p == '}') return true;
    for (;;) {
        const char *k = nj_ws(p, e);
        const char *ke = nj_skip_string(k, e);
        if (!ke) return false;
        p = nj_ws(ke, e);
        if (p >= e || *p != ':') return false;
        const char *v = nj_ws(p + 1, e);
        if (!f(k + 1, (size_t)(ke - k - 2), v, e, user)) return false;
        p = nj_ws(nj_skip(v, e), e);
        if (!p || p >= e) return false;
        if (*p == ',') { p++; continue; }
        return *p == '}';
    }
}

/* The value of `key` in the object at p, or NULL. */
static const char *nj_get(const char *p, const char *e, const char *key) {
    size_t kl = strlen(key);
    p = nj_ws(p, e);
    if (!p || p >= e || *p != '{') return NULL;
    p = nj_ws(p + 1, e);
    if (p < e && *p == '}') return NULL;
    for (;;) {
        const char *k = nj_ws(p, e);
        const char *ke = nj_skip_string(k, e);
        if (!ke) return NULL;
        p = nj_ws(ke, e);
        if (p >= e || *p != ':') return NULL;
        const char *v = nj_ws(p + 1, e);
        if ((size_t)(ke - k - 2) == kl && memcmp(k + 1, key, kl) == 0) return v;
        p = nj_ws(nj_skip(v, e), e);
        if (!p || p >= e || *p != ',') return NULL;
        p++;
    }
}

/* The i-th element of the array at p, or NULL. */
static const char *nj_index(const char *p, const char *e, size_t i) {
    p = nj_ws(p, e);
    if (!p || p >= e || *p != '[') return NULL;
    p = nj_ws(p + 1, e);
    if (p < e && *p == ']') return NULL;
    for (size_t n = 0;; n++) {
        if (n == i) return p;
        p = nj_ws(nj_skip(p, e), e);
        if (!p || p >= e || *p != ',') return NULL;
        p = nj_ws(p + 1, e);
    }
}

static void nj_utf8(char **o, uint32_t c) {
    char *w = *o;
    if (c < 0x80) *w++ = (char)c;
    else if (c < 0x800) { *w++ = (char)(0xC0 | (c >> 6)); *w++ = (char)(0x80 | (c & 0x3F)); }
    else if (c < 0x10000) { *w++ = (char)(0xE0 | (c >> 12)); *w++ = (char)(0x80 | ((c >> 6) & 0x3F)); *w++ = (char)(0x80 | (c & 0x3F)); }
    else { *w++ = (char)(0xF0 | (c >> 18)); *w++ = (char)(0x80 | ((c >> 12) & 0x3F)); *w++ = (char)(0x80 | ((c >> 6) & 0x3F)); *w++ = (char)(0x80 | (c & 0x3F)); }
    *o = w;
}

static int nj_hex4(const char *p, const char *e, uint32_t *out) {
    uint32_t v = 0;
    if (e - p < 4) return 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* Decodes the string at p into a malloc'd UTF-8 buffer (*out, *len). */
static bool nj_string(const char *p, const char *e, uint8_t **out, size_t *len) {
    p = nj_ws(p, e);
    const char *end = nj_skip_string(p, e);
    if (!end) return false;
    char *buf = malloc((size_t)(end - p) + 1), *w = buf;
    if (!buf) return false;
    for (const char *r = p + 1; r < end - 1; r++) {
        if (*r != '\\') { *w++ = *r; continue; }
        r++;
        switch (*r) {
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'u': {
            uint32_t c, lo;
            if (!nj_hex4(r + 1, end, &c)) { free(buf); return false; }
            r += 4;
            if (c >= 0xD800 && c < 0xDC00 && r + 6 < end && r[1] == '\\' && r[2] == 'u' && nj_hex4(r + 3, end, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                r += 6;
            }
            nj_utf8(&w, c);
            break;
        }
        default: *w++ = *r; break; /* \" \\ \/ */
        }
    }
    *out = (uint8_t *)buf;
    *len = (size_t)(w - buf);
    if (*len == 0) { free(buf); *out = NULL; }
    return true;
}

static bool nj_u64(const char *p, const char *e, uint64_t *out) {
    p = nj_ws(p, e);
    if (!p || p >= e || *p < '0' || *p > '9') return false;
    uint64_t v = 0;
    while (p < e && *p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return false;
    *out = v;
    return true;
}

static bool nj_is_null(const char *p, const char *e) {
    p = nj_ws(p, e);
    return p && e - p >= 4 && memcmp(p, "null", 4) == 0;
}

/* ---- writer ---- */
typedef struct { char *buf; size_t len, cap; bool oom; } nj_buf;

static void nj_put(nj_buf *b, const void *s, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) { b->oom = true; return; }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void nj_raw(nj_buf *b, const char *s) { nj_put(b, s, strlen(s)); }

static void nj_quote(nj_buf *b, const uint8_t *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    nj_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { run++; continue; }
        nj_put(b, s + i - run, run);
        run = 0;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"') nj_put(b, "\\\"", 2);
        else if (c == '\\') nj_put(b, "\\\\", 2);
        else if (c == '\n') nj_put(b, "\\n", 2);
        else if (c == '\t') nj_put(b, "\\t", 2);
        else if (c == '\r') nj_put(b, "\\r", 2);
        else nj_put(b, esc, 6);
    }
    nj_put(b, s + n - run, run);
    nj_put(b, "\"", 1);
}

static void nj_uint(nj_buf *b, uint64_t v) {
    char tmp[24];
    int i = 24;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    nj_put(b, tmp + i, (size_t)(24 - i));
}

/* Writes a float with the fewest decimals (up to 9) that read back as the
 * same f32, e.g. 0.7f as 0.7. No printf: stdio would need WASI. */
static void nj_f32(nj_buf *b, float v) {
    if (v != v || v == 1.0f / 0.0f || v == -1.0f / 0.0f) { nj_raw(b, "null"); return; }
    if (v < 0) { nj_put(b, "-", 1); v = -v; }
    double d = (double)v;
    uint64_t scale = 1;
    for (int dec = 0; dec <= 9; dec++, scale *= 10) {
        uint64_t n = (uint64_t)(d * (double)scale + 0.5);
        if ((float)((double)n / (double)scale) == v || dec == 9) {
            nj_uint(b, n / scale);
            if (dec > 0) {
                char frac[10];
                uint64_t f = n % scale;
                for (int i = dec - 1; i >= 0; i--) { frac[i] = (char)('0' + f % 10); f /= 10; }
                nj_put(b, ".", 1);
                nj_put(b, frac, (size_t)dec);
            }
            return;
        }
    }
}

/* A malloc'd copy of s (NULL for an empty string), for returning to the host. */
static uint8_t *nj_dup(const char *s, size_t *len) {
    *len = strlen(s);
    if (*len == 0) return NULL;
    uint8_t *d = malloc(*len);
    if (d) memcpy(d, s, *len);
    return d;
}

#endif
